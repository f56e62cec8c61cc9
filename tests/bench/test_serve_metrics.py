"""Unit tests of bench/serve.py and bench/datasets.py: the vLLM metric math on synthetic
timings, the SSE parsing, arrival times, the length models, the GGUF vocabulary reader, and one
run of the whole client against a small fake streaming server. Standard library + pytest only.
"""
import json
import math
import os
import random
import struct
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "bench"))
import datasets  # noqa: E402
import run_serving as rs  # noqa: E402
import serve  # noqa: E402


def out(ttft, itl, tokens=0, prompt_len=10, start=0.0, chunks=0, success=True):
    """A finished request whose last token event is at ttft + sum(itl)."""
    return serve.RequestOutput(success=success, ttft=ttft, itl=list(itl), latency=ttft + sum(itl),
                               output_tokens=tokens, text_chunks=chunks, prompt_len=prompt_len,
                               start_time=start)


# ---------------------------------------------------------------- statistics

@pytest.mark.parametrize("values,p,want", [
    ([1, 2, 3, 4], 50, 2.5), ([1, 2, 3, 4], 99, 3.97), ([1, 2, 3, 4], 0, 1), ([1, 2, 3, 4], 100, 4),
    ([4, 1, 3, 2], 25, 1.75), ([7], 99, 7), ([], 99, 0.0), ([10, 20], 90, 19.0),
])
def test_percentile_is_numpy_linear(values, p, want):
    assert serve.percentile(values, p) == pytest.approx(want)


def test_summarize_mean_median_population_std():
    s = serve.summarize([2, 4, 4, 4, 5, 5, 7, 9], [50, 99])
    assert s["mean"] == pytest.approx(5.0)
    assert s["median"] == pytest.approx(4.5)
    assert s["std"] == pytest.approx(2.0)  # ddof=0, as np.std
    assert s["percentiles"][0] == (50, pytest.approx(4.5))
    assert s["percentiles"][1][1] == pytest.approx(9 - 0.07 * 2)
    empty = serve.summarize([], [99])
    assert (empty["mean"], empty["median"], empty["std"], empty["percentiles"]) == (0.0, 0.0, 0.0, [(99, 0.0)])


# ---------------------------------------------------------------- calculate_metrics

def test_metrics_follow_vllm_definitions():
    a = out(0.100, [0.010, 0.020, 0.030], tokens=4, prompt_len=512, start=0.0)
    b = out(0.300, [0.050], tokens=2, prompt_len=500, start=0.5)
    m, lens = serve.calculate_metrics([a, b], duration=2.0, percentiles=[50.0, 99.0])
    assert lens == [4, 2]
    assert m["completed"] == 2 and m["failed"] == 0
    assert m["total_input_tokens"] == 1012 and m["total_output_tokens"] == 6
    assert m["request_throughput"] == pytest.approx(1.0)
    assert m["output_throughput"] == pytest.approx(3.0)
    assert m["total_token_throughput"] == pytest.approx(509.0)
    assert m["mean_ttft_ms"] == pytest.approx(200.0)
    assert m["median_ttft_ms"] == pytest.approx(200.0)
    assert m["std_ttft_ms"] == pytest.approx(100.0)
    # TPOT = (E2EL - TTFT) / (n - 1): a -> 0.060/3 = 20 ms, b -> 0.050/1 = 50 ms
    assert m["mean_tpot_ms"] == pytest.approx(35.0)
    assert m["p99_tpot_ms"] == pytest.approx(20 + 0.99 * 30)
    # ITL pooled over requests: 10, 20, 30, 50
    assert m["mean_itl_ms"] == pytest.approx(27.5)
    assert m["median_itl_ms"] == pytest.approx(25.0)
    assert m["p50_itl_ms"] == pytest.approx(25.0)
    assert m["mean_e2el_ms"] == pytest.approx((160 + 350) / 2)
    assert m["request_goodput"] is None


def test_failed_requests_and_short_outputs():
    ok = out(0.2, [], tokens=1)  # a single output token: no TPOT, no ITL
    bad = serve.RequestOutput(success=False, error="HTTP 500")
    m, lens = serve.calculate_metrics([ok, bad], duration=4.0)
    assert lens == [1, 0]
    assert (m["completed"], m["failed"]) == (1, 1)
    assert m["request_throughput"] == pytest.approx(0.25)
    assert m["mean_tpot_ms"] == 0.0 and m["p99_tpot_ms"] == 0.0
    assert m["mean_itl_ms"] == 0.0
    assert m["mean_ttft_ms"] == pytest.approx(200.0)
    assert m["total_input_tokens"] == 10  # failed requests' prompts do not count


def test_output_tokens_fall_back_to_text_chunks_then_one():
    assert serve.output_len_of(out(0.1, [0.1] * 4, tokens=7, chunks=5)) == 7  # usage wins
    assert serve.output_len_of(out(0.1, [0.1] * 4, tokens=0, chunks=5)) == 5
    assert serve.output_len_of(out(0.1, [], tokens=0, chunks=0)) == 1
    m, _ = serve.calculate_metrics([out(0.1, [0.02] * 4, chunks=5)], duration=1.0)
    assert m["mean_tpot_ms"] == pytest.approx(20.0)


def test_goodput_counts_requests_within_every_slo():
    fast = out(0.05, [0.01] * 9, tokens=10)    # ttft 50 ms, tpot 10 ms
    slow_first = out(0.5, [0.01] * 9, tokens=10)
    slow_tokens = out(0.05, [0.1] * 9, tokens=10)
    one = out(0.05, [], tokens=1)              # tpot counts as 0 for goodput
    m, _ = serve.calculate_metrics([fast, slow_first, slow_tokens, one], duration=2.0,
                                   goodput={"ttft": 100, "tpot": 20})
    assert m["request_goodput"] == pytest.approx(1.0)  # fast and one
    m, _ = serve.calculate_metrics([fast, slow_first], duration=1.0, goodput={"e2el": 200})
    assert m["request_goodput"] == pytest.approx(1.0)


def test_peak_tokens_per_second_and_concurrency():
    # a: tokens at 0.5, 0.9, 1.2; b: tokens at 1.1, 1.3, 1.6, 2.5; c ends exactly when d starts
    a = out(0.5, [0.4, 0.3], start=0.0)
    b = out(0.6, [0.2, 0.3, 0.9], start=0.5)
    c = out(0.1, [], start=3.0)
    d = out(0.1, [], start=3.1)
    peak_tok, peak_conc = serve.peak_stats([a, b, c, d])
    assert peak_tok == 4.0  # bucket [1, 2): 1.2, 1.1, 1.3, 1.6
    assert peak_conc == 2   # a and b overlap; c and d only touch ([start, end) intervals)
    assert serve.peak_stats([serve.RequestOutput()]) == (0.0, 0)
    m, _ = serve.calculate_metrics([a, b, c, d], duration=4.0)
    assert (m["max_output_tokens_per_s"], m["max_concurrent_requests"]) == (4.0, 2)


# ---------------------------------------------------------------- arrivals

def test_infinite_rate_sends_everything_at_once():
    assert serve.arrival_times(5, float("inf")) == [0.0] * 5


@pytest.mark.parametrize("burstiness,cv", [(1.0, 1.0), (4.0, 0.5)])
def test_gamma_arrivals_rescaled_like_vllm(burstiness, cv):
    n, rate = 20000, 4.0
    t = serve.arrival_times(n, rate, burstiness, random.Random(1))
    assert all(y >= x for x, y in zip(t, t[1:]))
    assert t[-1] == pytest.approx(n / rate)  # rescaled so the last one leaves at n / rate
    gaps = [t[0]] + [y - x for x, y in zip(t, t[1:])]
    mean = sum(gaps) / n
    sd = math.sqrt(sum((g - mean) ** 2 for g in gaps) / n)
    assert mean == pytest.approx(1 / rate)
    assert sd / mean == pytest.approx(cv, abs=0.05)  # gamma shape k has CV 1/sqrt(k)


def test_arrivals_reject_bad_rates():
    with pytest.raises(ValueError):
        serve.arrival_times(3, 0.0)
    with pytest.raises(ValueError):
        serve.arrival_times(3, 1.0, burstiness=0.0)


# ---------------------------------------------------------------- SSE and token events

def feed_all(chunks, times):
    """Runs record_event over the SSE byte chunks; times[i] is the clock at the i-th payload."""
    o = serve.RequestOutput(prompt_len=99)
    parser, st, last, clock = serve.SSEParser(), 100.0, 100.0, iter(times)
    for c in chunks:
        for payload in parser.feed(c):
            last = serve.record_event(o, payload, st, last, next(clock))
    o.latency = last - st
    return o


def sse(obj):
    return ("data: " + json.dumps(obj, ensure_ascii=False) + "\n\n").encode()


def test_completion_stream_with_usage_chunk():
    body = (b": keep-alive\n\n" + sse({"choices": [{"text": "Hel"}]}) + sse({"choices": [{"text": ""}]}) +
            sse({"choices": [{"text": "l\u00e9"}]}) +
            sse({"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 3}}) + b"data: [DONE]\n\n")
    # split at awkward places, including inside the two-byte UTF-8 of e-acute
    cut = body.index("\u00e9".encode()) + 1
    chunks = [body[:7], body[7:cut], body[cut:cut + 5], body[cut + 5:]]
    o = feed_all(chunks, [100.5, 100.6, 100.8, 100.9, 101.0])
    assert o.ttft == pytest.approx(0.5)
    assert o.itl == [pytest.approx(0.1), pytest.approx(0.2)]  # the empty-text chunk is a token event
    assert o.latency == pytest.approx(0.8)  # ends at the last chunk with choices, not at usage
    assert o.generated_text == "Hell\u00e9"
    assert (o.output_tokens, o.prompt_len, o.text_chunks) == (3, 12, 2)


def test_chat_stream_crlf_and_usage_on_the_final_choice_chunk():
    # llama-server style: role chunk, content chunks, then finish_reason + usage in one chunk
    msgs = [{"choices": [{"delta": {"role": "assistant", "content": None}}]},
            {"choices": [{"delta": {"content": "Hi"}}]},
            {"choices": [{"delta": {"content": " there"}}]},
            {"choices": [{"delta": {}, "finish_reason": "length"}],
             "usage": {"prompt_tokens": 30, "completion_tokens": 2}}]
    body = b"".join(sse(m).replace(b"\n", b"\r\n") for m in msgs) + b"data: [DONE]\r\n\r\n"
    o = feed_all([body[i:i + 9] for i in range(0, len(body), 9)], [100.2, 100.2, 100.3, 100.35, 100.4])
    assert o.ttft == pytest.approx(0.2)
    assert len(o.itl) == 3
    assert o.generated_text == "Hi there"
    assert (o.output_tokens, o.prompt_len) == (2, 30)
    assert o.latency == pytest.approx(0.35)


def test_a_last_message_without_its_blank_line_still_counts():
    p = serve.SSEParser()
    assert p.feed(b'data: {"choices": [{"text": "a"}]}\n\ndata: {"choices": [], "usage": {}}') == [
        '{"choices": [{"text": "a"}]}']
    assert p.close() == ['{"choices": [], "usage": {}}']
    assert p.close() == []


def test_error_event_marks_the_request():
    o = feed_all([sse({"error": {"message": "boom", "code": 500}})], [100.1])
    assert "boom" in o.error and o.ttft == 0.0


# ---------------------------------------------------------------- datasets

@pytest.mark.parametrize("length,ratio,at_least,want", [
    (512, 0.0, 1, (512, 512)), (100, 0.5, 1, (50, 150)), (3, 0.5, 1, (1, 5)), (1, 0.9, 1, (1, 2)),
])
def test_random_bounds_like_vllm(length, ratio, at_least, want):
    assert datasets.random_bounds(length, ratio, at_least) == want


def test_random_bounds_reject_ratio_one():
    with pytest.raises(ValueError):
        datasets.random_bounds(10, 1.0)


def small_vocab():
    toks = ["<|endoftext|>", "<|im_start|>", "a", "\u0120the", "\u0120cat", "\u0120x", "\u01201999", "\u2581sat",
            "<0x41>"]
    types = [3, 3, 1, 1, 1, 1, 1, 1, 6]
    return datasets.vocab_from_tokens([t.encode() for t in toks], types)


def test_vocab_keeps_normal_tokens_and_whole_words():
    v = small_vocab()
    assert v.size == 9
    assert v.ids == [2, 3, 4, 5, 6, 7]  # control (0, 1) and byte (8) tokens never appear in prompts
    assert v.words == ["the", "cat", "sat"]  # a space + 2 or more ASCII letters


def test_sample_random_lengths_and_seed():
    v = small_vocab()
    reqs = datasets.sample_random(v, 50, 40, 10, range_ratio=0.25, seed=3)
    assert all(30 <= r.prompt_len <= 50 and len(r.prompt_ids) == r.prompt_len for r in reqs)
    assert all(len(r.prompt_text.split(" ")) == r.prompt_len for r in reqs)
    assert all(7 <= r.expected_output_len <= 13 for r in reqs)
    assert all(i in v.ids for r in reqs for i in r.prompt_ids)
    assert len({r.prompt_len for r in reqs}) > 5
    again = datasets.sample_random(v, 50, 40, 10, range_ratio=0.25, seed=3)
    assert [r.prompt_ids for r in again] == [r.prompt_ids for r in reqs]
    other = datasets.sample_random(v, 50, 40, 10, range_ratio=0.25, seed=4)
    assert [r.prompt_ids for r in other] != [r.prompt_ids for r in reqs]
    fixed = datasets.sample_random(v, 5, 40, 10, seed=0)
    assert {(r.prompt_len, r.expected_output_len) for r in fixed} == {(40, 10)}


def test_sharegpt_like_lengths_follow_the_filter_and_the_documented_means():
    rng = random.Random(0)
    pairs = [datasets.sharegpt_lengths(rng) for _ in range(20000)]
    assert all(4 <= i <= 1024 and o >= 4 and i + o <= 2048 for i, o in pairs)
    ins = sorted(i for i, _ in pairs)
    outs = sorted(o for _, o in pairs)
    assert sum(ins) / len(ins) == pytest.approx(226, rel=0.05)
    assert sum(outs) / len(outs) == pytest.approx(201, rel=0.05)
    assert ins[len(ins) // 2] == pytest.approx(153, rel=0.06)
    assert outs[len(outs) // 2] == pytest.approx(148, rel=0.06)
    reqs = datasets.sample_sharegpt_like(small_vocab(), 10, seed=1, output_len=7)
    assert all(r.expected_output_len == 7 and len(r.prompt_ids) == r.prompt_len for r in reqs)


def write_gguf(path, tokens, types):
    """A GGUF v3 file with metadata only: a u32, a string, an array of strings to skip, the
    tokenizer arrays, and zero tensors."""
    def s(b):
        return struct.pack("<Q", len(b)) + b
    kv = [s(b"general.alignment") + struct.pack("<II", 4, 32),
          s(b"general.name") + struct.pack("<I", 8) + s(b"tiny"),
          s(b"tokenizer.ggml.merges") + struct.pack("<IIQ", 9, 8, 2) + s(b"a b") + s(b"c d"),
          s(b"tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, len(tokens)) + b"".join(s(t.encode()) for t in tokens),
          s(b"tokenizer.ggml.token_type") + struct.pack("<IIQ", 9, 5, len(types)) +
          struct.pack("<%di" % len(types), *types)]
    with open(path, "wb") as f:
        f.write(b"GGUF" + struct.pack("<IQQ", 3, 0, len(kv)) + b"".join(kv))


TINY_TOKENS = ["<s>", "\u0120hello", "\u0120world", "!", "\u0120again"]
TINY_TYPES = [3, 1, 1, 1, 1]


def test_gguf_vocab_reads_the_tokenizer_arrays(tmp_path):
    p = tmp_path / "tiny.gguf"
    write_gguf(p, TINY_TOKENS, TINY_TYPES)
    v = datasets.gguf_vocab(str(p))
    assert (v.size, v.ids, v.words) == (5, [1, 2, 3, 4], ["hello", "world", "again"])
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + b"\x05")
    with pytest.raises(ValueError):
        datasets.gguf_vocab(str(bad))
    with pytest.raises(ValueError):
        datasets.gguf_vocab(__file__)  # not a GGUF file


# ---------------------------------------------------------------- the client end to end

class FakeServer(BaseHTTPRequestHandler):
    """Streams max_tokens one-word chunks, then a usage chunk, over chunked transfer encoding."""
    protocol_version = "HTTP/1.1"
    seen = []

    def log_message(self, *a):
        pass

    def do_GET(self):
        body = json.dumps({"data": [{"id": "fake-model", "root": "x"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def chunk(self, b):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(b), b))
        self.wfile.flush()

    def do_POST(self):
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeServer.seen.append(req)
        n = req["max_tokens"]
        prompt = req["prompt"] if "prompt" in req else req["messages"][0]["content"].split(" ")
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        chat = "messages" in req
        for i in range(n):
            c = {"delta": {"content": "w%d " % i}} if chat else {"text": "w%d " % i}
            self.chunk(sse({"choices": [c]}))
        self.chunk(sse({"choices": [], "usage": {"prompt_tokens": len(prompt), "completion_tokens": n}}))
        self.chunk(b"data: [DONE]\n\n")
        self.chunk(b"")


@pytest.mark.parametrize("backend", ["openai", "openai-chat"])
def test_benchmark_against_a_fake_server(tmp_path, backend):
    gguf = tmp_path / "tiny.gguf"
    write_gguf(gguf, TINY_TOKENS, TINY_TYPES)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeServer)
    th = threading.Thread(target=httpd.serve_forever, daemon=True)
    th.start()
    FakeServer.seen = []
    try:
        args = serve.parse_args([
            "--port", str(httpd.server_address[1]), "--backend", backend, "--tokenizer-gguf", str(gguf),
            "--random-input-len", "20", "--random-output-len", "6", "--random-range-ratio", "0.5",
            "--num-prompts", "6", "--num-warmups", "2", "--max-concurrency", "3", "--request-rate", "200",
            "--ignore-eos", "--temperature", "0", "--save-result", "--result-dir", str(tmp_path),
            "--result-filename", "r.json", "--quiet"])
        res = serve.benchmark(args)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert (res["completed"], res["failed"]) == (6, 0)
    measured = FakeServer.seen[3:]  # 1 test request + 2 warm-ups come first
    assert len(measured) == 6
    assert res["total_output_tokens"] == sum(r["max_tokens"] for r in measured)
    assert all(r["stream"] and r["stream_options"] == {"include_usage": True} for r in measured)
    assert all(r["ignore_eos"] is True and r["temperature"] == 0 and r["model"] == "fake-model" for r in measured)
    if backend == "openai":
        assert all(isinstance(r["prompt"], list) for r in measured)
        assert res["total_input_tokens"] == sum(len(r["prompt"]) for r in measured)
    else:
        assert all(r["max_completion_tokens"] == r["max_tokens"] for r in measured)
    assert res["max_concurrent_requests"] <= 3
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["output_throughput"] == pytest.approx(res["output_throughput"])
    assert saved["machine"]["cores"] >= 1 and saved["git_commit"]


# ---------------------------------------------------------------- the comparison tables

def test_ratios_and_targets_of_the_comparison():
    keys = [k for k, _, _ in rs.COMPARED]
    peer = {"rand512-c1": dict.fromkeys(keys, 10.0), "rand512-c8": dict.fromkeys(keys, 10.0)}
    sluice = {"rand512-c1": dict.fromkeys(keys, 8.0), "rand512-c8": dict.fromkeys(keys, 20.0)}
    for d in (peer, sluice):
        for r in d.values():
            r.update(completed=4, failed=0)
    sluice["rand512-c1"]["median_ttft_ms"] = 12.0
    table = rs.ratio_table(peer, sluice, ["rand512-c1", "rand512-c8", "ttft2000"]).splitlines()
    assert len(table) == 4  # header, rule, two scenarios measured on both
    assert table[2].startswith("| rand512-c1 | 0.80 | 0.80 | 1.20 |")
    assert table[3].startswith("| rand512-c8 | 2.00 | 2.00 |")
    lines = rs.target_lines(peer, sluice)
    assert lines[0].startswith("- rand512-c8 output_throughput: sluice/peer = 2.00") and lines[0].endswith(": met")
    assert lines[1].startswith("- rand512-c1 median_tpot_ms: sluice/peer = 0.80") and lines[1].endswith(": met")
    assert lines[2].startswith("- rand512-c1 median_ttft_ms: sluice/peer = 1.20") and lines[2].endswith("NOT met")
    assert rs.target_lines(peer, {})[0].endswith("not measured on both servers")
    sluice["rand512-c1"]["others_cpu_share"] = 0.25
    rows = rs.server_table(sluice, ["rand512-c1", "missing"]).splitlines()
    assert len(rows) == 3 and rows[2].startswith("| rand512-c1 | 4/0 | 8.00 |") and rows[2].endswith("| 25% |")
    assert "up to 25%" in rs.busy_warning({"sluice": sluice})
    sluice["rand512-c1"]["others_cpu_share"] = 0.05
    assert rs.busy_warning({"sluice": sluice}) is None


def test_others_share_subtracts_server_and_client():
    # 2 cores for 10 s: 14 busy CPU-seconds, 8 of them the server's and 1 the client's -> 5 / 20
    assert rs.others_share((100, 50, 3, 1000), (114, 58, 4, 1010), 2) == pytest.approx(0.25)
    assert rs.others_share((0, 0, 0, 5), (1, 2, 0, 6), 2) == 0.0  # never negative


def test_every_scenario_parses_as_serve_flags():
    for table in (rs.FULL, rs.QUICK):
        for name, (flags, slots, ctx) in table.items():
            a = serve.parse_args(flags.split())
            need = (a.random_input_len + a.random_output_len if a.dataset_name == "random"
                    else datasets.SHAREGPT_MAX_TOTAL)
            assert ctx >= need, name  # a llama-server slot holds the longest request
            assert a.ignore_eos and slots >= (a.max_concurrency or 1)
