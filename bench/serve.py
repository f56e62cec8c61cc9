#!/usr/bin/env python3
"""Serving benchmark for OpenAI-compatible servers, with vLLM's `vllm bench serve` metrics.

    python3 bench/serve.py --base-url http://127.0.0.1:8000 --backend openai \
        --dataset-name random --random-input-len 512 --random-output-len 128 \
        --max-concurrency 4 --num-prompts 32 --ignore-eos --save-result

Standard library only (threads + http.client), so it runs with any Python 3.9+.

Metric definitions are those of vllm/benchmarks/serve.py (calculate_metrics) and
vllm/benchmarks/lib/endpoint_request_func.py, reproduced here rather than imported:
  - every streamed SSE chunk whose `choices` is non-empty is a token event, even with empty
    text (a role-only or finish_reason-only chunk counts, as it does in vLLM's client);
  - TTFT = first token event - request sent; ITL = every gap between consecutive token
    events, pooled over requests; E2EL = last token event - request sent (a trailing
    usage-only chunk or [DONE] does not extend it);
  - TPOT per request = (E2EL - TTFT) / (output tokens - 1), only for requests with more than
    one output token;
  - output tokens = usage.completion_tokens (stream_options.include_usage);
  - duration = first request dispatched to last response finished, warm-ups excluded;
    request throughput = completed / duration; output throughput = sum(output tokens) /
    duration; total token throughput = (sum(input) + sum(output)) / duration, where input is
    usage.prompt_tokens when the server sends it, else the dataset's length;
  - mean, median, std (population) and linear-interpolated percentiles, as numpy computes them;
  - peak output tok/s over 1-s buckets and peak concurrent requests (a sweep over
    [start, end) intervals); goodput against --goodput SLOs.
Differences, all forced by having no tokenizer or by servers other than vLLM:
  - usage is read from any chunk that carries it (llama-server puts it on the last chunk
    with choices, which vLLM's client would skip);
  - without usage, output tokens = number of chunks with non-empty text (vLLM re-tokenizes
    the text); with neither, 1 (as vLLM without a tokenizer);
  - warm-up requests come from a separate seed instead of repeating the first prompt, so that
    a prompt cache cannot serve the first measured request;
  - a new connection per request (vLLM keeps a pool): one localhost connect per request.
"""
import argparse
import codecs
import http.client
import json
import math
import os
import platform
import random
import subprocess
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from datetime import datetime

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import datasets  # noqa: E402  (bench/datasets.py)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MODEL = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
METRICS = ("ttft", "tpot", "itl", "e2el")


@dataclass
class RequestOutput:
    success: bool = False
    latency: float = 0.0   # E2EL, seconds
    ttft: float = 0.0
    itl: list = field(default_factory=list)
    output_tokens: int = 0  # from usage; 0 when the server sent none
    text_chunks: int = 0    # token events that carried text (fallback count)
    prompt_len: int = 0
    start_time: float = 0.0
    error: str = ""
    generated_text: str = ""


# ---------------------------------------------------------------- metric math (unit-tested)

def percentile(values, p):
    """numpy.percentile(values, p) with the default 'linear' method; 0 for no values."""
    if not values:
        return 0.0
    s = sorted(values)
    pos = (len(s) - 1) * p / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def summarize(values, percentiles):
    """mean / median / std (ddof=0) / percentiles, in the unit of values; zeros when empty
    (vLLM computes np.mean(values or 0))."""
    if not values:
        return {"mean": 0.0, "median": 0.0, "std": 0.0, "percentiles": [(p, 0.0) for p in percentiles]}
    n = len(values)
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / n
    return {"mean": mean, "median": percentile(values, 50), "std": math.sqrt(var),
            "percentiles": [(p, percentile(values, p)) for p in percentiles]}


def output_len_of(o):
    if o.output_tokens:
        return o.output_tokens
    return o.text_chunks if o.text_chunks else 1


def peak_stats(outputs):
    """(max output tokens in any 1-s bucket, peak concurrent requests) over successful requests."""
    ok = [o for o in outputs if o.success]
    if not ok:
        return 0.0, 0
    t0 = min(o.start_time for o in ok)
    t1 = max(o.start_time + o.latency for o in ok)
    nbuckets = int(math.ceil(t1 - t0)) + 1
    buckets = [0] * nbuckets
    for o in ok:
        t = o.start_time + o.ttft
        times = [t]
        for gap in o.itl:
            t += gap
            times.append(t)
        for t in times:
            b = int(t - t0)
            if 0 <= b < nbuckets:
                buckets[b] += 1
    events = sorted([(o.start_time, 1) for o in ok] + [(o.start_time + o.latency, -1) for o in ok])
    cur = peak = 0
    for _, d in events:  # ties: -1 sorts before +1, so [start, end) intervals
        cur += d
        peak = max(peak, cur)
    return float(max(buckets)), peak


def calculate_metrics(outputs, duration, percentiles=(99.0,), goodput=None):
    """The vLLM BenchmarkMetrics fields as a flat dict (latencies in ms)."""
    ttfts, tpots, all_tpots, itls, e2els, out_lens = [], [], [], [], [], []
    total_input = completed = 0
    for o in outputs:
        if not o.success:
            out_lens.append(0)
            continue
        n = output_len_of(o)
        out_lens.append(n)
        total_input += o.prompt_len
        tpot = 0.0
        if n > 1:
            tpot = (o.latency - o.ttft) / (n - 1)
            tpots.append(tpot)
        all_tpots.append(tpot)
        itls += o.itl
        ttfts.append(o.ttft)
        e2els.append(o.latency)
        completed += 1
    good = 0
    if goodput:
        for ttft, tpot, e2el in zip(ttfts, all_tpots, e2els):
            got = {"ttft": ttft, "tpot": tpot, "e2el": e2el}
            if all(got[k] <= v / 1000.0 for k, v in goodput.items()):
                good += 1
    peak_tok, peak_conc = peak_stats(outputs)
    total_output = sum(out_lens)
    m = {
        "completed": completed, "failed": len(outputs) - completed,
        "total_input_tokens": total_input, "total_output_tokens": total_output,
        "request_throughput": completed / duration, "request_goodput": good / duration if goodput else None,
        "output_throughput": total_output / duration,
        "total_token_throughput": (total_input + total_output) / duration,
        "max_output_tokens_per_s": peak_tok, "max_concurrent_requests": peak_conc,
    }
    for name, vals in (("ttft", ttfts), ("tpot", tpots), ("itl", itls), ("e2el", e2els)):
        s = summarize(vals, percentiles)
        m["mean_%s_ms" % name] = s["mean"] * 1000
        m["median_%s_ms" % name] = s["median"] * 1000
        m["std_%s_ms" % name] = s["std"] * 1000
        for p, v in s["percentiles"]:
            m["p%s_%s_ms" % (pct_word(p), name)] = v * 1000
    return m, out_lens


def pct_word(p):
    return str(int(p)) if int(p) == p else str(p)


def arrival_times(n, rate, burstiness=1.0, rng=None):
    """Send offsets (s) for n requests: all 0 for rate inf; else gamma gaps with shape
    burstiness and mean 1/rate (Poisson for burstiness 1), rescaled, as vLLM does, so the
    last request leaves at exactly n / rate."""
    if rate == float("inf"):
        return [0.0] * n
    if rate <= 0 or burstiness <= 0:
        raise ValueError("request rate and burstiness must be positive")
    rng = rng or random.Random(0)
    theta = 1.0 / (rate * burstiness)
    t, out = 0.0, []
    for _ in range(n):
        t += rng.gammavariate(burstiness, theta)
        out.append(t)
    if out and out[-1] > 0:
        k = (n / rate) / out[-1]
        out = [x * k for x in out]
    return out


class SSEParser:
    """Splits a byte stream into SSE messages (blank-line separated), like vLLM's
    StreamedResponseHandler, and returns each message's data payloads."""

    def __init__(self):
        self.buf = ""
        self.dec = codecs.getincrementaldecoder("utf-8")()

    def feed(self, data):
        # normalise CRLF on the whole buffer: a CR and its LF may arrive in different reads
        self.buf = (self.buf + self.dec.decode(data)).replace("\r\n", "\n")
        out = []
        while "\n\n" in self.buf:
            msg, self.buf = self.buf.split("\n\n", 1)
            lines = [ln[5:].lstrip(" ") for ln in msg.split("\n") if ln.startswith("data:")]
            if lines:  # comments (":...") and other fields carry no data
                out.append("\n".join(lines))
        return out

    def close(self):
        """The payloads of a last message that the stream ended without a blank line after."""
        return self.feed(b"\n\n") if self.buf.strip() else []


def record_event(o, payload, st, last, now):
    """Applies one SSE data payload to o; returns the new time of the last token event."""
    if payload == "[DONE]":
        return last
    data = json.loads(payload)
    if isinstance(data, dict) and data.get("error") and not data.get("choices"):
        o.error = json.dumps(data["error"])[:300]
    choices = data.get("choices") if isinstance(data, dict) else None
    if choices:
        c = choices[0]
        text = c.get("text")
        if text is None:
            text = (c.get("delta") or {}).get("content")
        if last == st:  # the first token event
            o.ttft = now - st
        else:
            o.itl.append(now - last)
        last = now
        if text:
            o.generated_text += text
            o.text_chunks += 1
    usage = data.get("usage") if isinstance(data, dict) else None
    if usage:
        o.output_tokens = usage.get("completion_tokens") or 0
        if usage.get("prompt_tokens") is not None:
            o.prompt_len = usage["prompt_tokens"]
    return last


# ---------------------------------------------------------------- HTTP

def http_json(base_url, method, path, body=None, timeout=10.0):
    u = urllib.parse.urlsplit(base_url)
    conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"}
        if os.environ.get("OPENAI_API_KEY"):
            headers["Authorization"] = "Bearer " + os.environ["OPENAI_API_KEY"]
        conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        r = conn.getresponse()
        raw = r.read()
        return r.status, (json.loads(raw) if raw else None)
    finally:
        conn.close()


def stream_request(base_url, path, payload, prompt_len, timeout):
    u = urllib.parse.urlsplit(base_url)
    o = RequestOutput(prompt_len=prompt_len)
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
    if os.environ.get("OPENAI_API_KEY"):
        headers["Authorization"] = "Bearer " + os.environ["OPENAI_API_KEY"]
    body = json.dumps(payload)
    st = time.perf_counter()
    o.start_time = st
    last = st
    conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=timeout)
    try:
        conn.request("POST", path, body=body, headers=headers)
        r = conn.getresponse()
        if r.status != 200:
            o.error = "HTTP %d: %s" % (r.status, r.read()[:300].decode("utf-8", "replace"))
            return o
        parser = SSEParser()
        while True:
            data = r.read1(65536)
            if not data:
                break
            for payload in parser.feed(data):
                last = record_event(o, payload, st, last, time.perf_counter())
        for payload in parser.close():
            last = record_event(o, payload, st, last, time.perf_counter())
        if last == st:
            o.error = o.error or "Never received a valid chunk to calculate TTFT."
        else:
            o.success = not o.error
        o.latency = last - st
    except Exception as e:  # a failed request is data, not a crash
        o.error = "%s: %s" % (type(e).__name__, e)
    finally:
        conn.close()
    return o


def build_payload(args, model_id, req):
    if args.backend == "openai-chat":
        p = {"model": model_id, "messages": [{"role": "user", "content": req.prompt_text}],
             "max_completion_tokens": req.expected_output_len,
             # llama-server (this version) reads only max_tokens
             "max_tokens": req.expected_output_len}
    else:
        prompt = req.prompt_ids if args.prompt_format == "ids" else req.prompt_text
        p = {"model": model_id, "prompt": prompt, "repetition_penalty": 1.0,
             "max_tokens": req.expected_output_len, "logprobs": None}
    p["stream"] = True
    p["stream_options"] = {"include_usage": True}
    if args.ignore_eos:
        p["ignore_eos"] = True
    if args.temperature is not None:
        p["temperature"] = args.temperature
    if args.extra_body:
        p.update(json.loads(args.extra_body))
    return p


def run_requests(args, model_id, reqs, offsets):
    """Sends reqs at the given offsets with at most args.max_concurrency in flight; returns
    (outputs in request order, duration)."""
    outputs = [None] * len(reqs)
    sem = threading.Semaphore(args.max_concurrency) if args.max_concurrency else None
    threading.stack_size(512 * 1024)

    def one(i):
        if sem:
            sem.acquire()
        try:
            payload = build_payload(args, model_id, reqs[i])
            outputs[i] = stream_request(args.base_url, args.endpoint, payload, reqs[i].prompt_len,
                                        args.request_timeout)
        finally:
            if sem:
                sem.release()

    threads = []
    t0 = time.perf_counter()
    for i, off in enumerate(offsets):
        wait = t0 + off - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        th = threading.Thread(target=one, args=(i,), daemon=True)
        th.start()
        threads.append(th)
    for th in threads:
        th.join()
    return outputs, time.perf_counter() - t0


# ---------------------------------------------------------------- provenance

def git_commit():
    try:
        sha = subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("-dirty" if dirty else "") if sha else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine_info():
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = 0
    try:
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu, "cores": cores, "mem_bytes": mem, "kernel": platform.release(),
            "python": platform.python_version(), "hostname": platform.node()}


def load_average():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


# ---------------------------------------------------------------- CLI

def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--base-url", default=None, help="server URL (default http://HOST:PORT)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--backend", choices=["openai", "openai-chat"], default="openai",
                    help="openai: /v1/completions; openai-chat: /v1/chat/completions")
    ap.add_argument("--endpoint", default=None, help="path (default from --backend)")
    ap.add_argument("--model", default=None, help="model id to send (default: first of /v1/models)")
    ap.add_argument("--label", default=None, help="name of this server in the results (default backend)")
    ap.add_argument("--tokenizer-gguf", default=DEFAULT_MODEL,
                    help="GGUF file whose vocabulary the prompts are drawn from")
    ap.add_argument("--dataset-name", choices=["random", "sharegpt-like"], default="random")
    ap.add_argument("--prompt-format", choices=["ids", "text"], default="ids",
                    help="completions prompt as token ids (exact lengths) or text (chat is always text)")
    ap.add_argument("--random-input-len", type=int, default=1024)
    ap.add_argument("--random-output-len", type=int, default=128)
    ap.add_argument("--random-range-ratio", type=float, default=0.0)
    ap.add_argument("--sharegpt-output-len", type=int, default=None, help="override every output length")
    ap.add_argument("--num-prompts", type=int, default=1000)
    ap.add_argument("--num-warmups", type=int, default=0)
    ap.add_argument("--request-rate", type=float, default=float("inf"), help="req/s, Poisson (inf: all at t=0)")
    ap.add_argument("--burstiness", type=float, default=1.0, help="gamma shape of the gaps (1: Poisson)")
    ap.add_argument("--max-concurrency", type=int, default=None)
    ap.add_argument("--ignore-eos", action="store_true")
    ap.add_argument("--temperature", type=float, default=None, help="sent when given (server default otherwise)")
    ap.add_argument("--extra-body", default=None, help="JSON object merged into every request")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--percentile-metrics", default="ttft,tpot,itl,e2el")
    ap.add_argument("--metric-percentiles", default="99")
    ap.add_argument("--goodput", nargs="+", default=None, help="SLOs as KEY:MS, KEY in ttft,tpot,e2el")
    ap.add_argument("--request-timeout", type=float, default=1800.0, help="socket timeout per request (s)")
    ap.add_argument("--save-result", action="store_true")
    ap.add_argument("--save-detailed", action="store_true", help="also per-request lengths, TTFTs, ITLs, errors")
    ap.add_argument("--result-dir", default=os.path.join(ROOT, "bench", "results"))
    ap.add_argument("--result-filename", default=None)
    ap.add_argument("--metadata", nargs="*", default=[], help="KEY=VALUE pairs stored in the result")
    ap.add_argument("--quiet", action="store_true", help="print only the result table")
    a = ap.parse_args(argv)
    a.base_url = (a.base_url or "http://%s:%d" % (a.host, a.port)).rstrip("/")
    a.endpoint = a.endpoint or ("/v1/chat/completions" if a.backend == "openai-chat" else "/v1/completions")
    a.label = a.label or a.backend
    a.percentiles = [float(p) for p in a.metric_percentiles.split(",") if p]
    a.shown_metrics = [m for m in a.percentile_metrics.split(",") if m]
    for m in a.shown_metrics:
        if m not in METRICS:
            ap.error("unknown metric %r in --percentile-metrics" % m)
    a.goodput_slos = None
    if a.goodput:
        a.goodput_slos = {}
        for kv in a.goodput:
            k, _, v = kv.partition(":")
            if k not in ("ttft", "tpot", "e2el") or not v:
                ap.error("bad --goodput item %r (want ttft:MS, tpot:MS or e2el:MS)" % kv)
            a.goodput_slos[k] = float(v)
    return a


def make_requests(args, vocab, num, seed):
    if args.dataset_name == "random":
        return datasets.sample_random(vocab, num, args.random_input_len, args.random_output_len,
                                      args.random_range_ratio, seed)
    return datasets.sample_sharegpt_like(vocab, num, seed, args.sharegpt_output_len)


def print_table(args, res):
    w = lambda k, v, fmt="{:<10}": print(("{:<40} " + fmt).format(k, v))  # noqa: E731
    print("{:=^50}".format(" Serving Benchmark Result "))
    w("Server:", res["label"])
    w("Successful requests:", res["completed"])
    w("Failed requests:", res["failed"])
    if args.max_concurrency:
        w("Maximum request concurrency:", args.max_concurrency)
    if args.request_rate != float("inf"):
        w("Request rate configured (RPS):", args.request_rate, "{:<10.2f}")
    w("Benchmark duration (s):", res["duration"], "{:<10.2f}")
    w("Total input tokens:", res["total_input_tokens"])
    w("Total generated tokens:", res["total_output_tokens"])
    w("Request throughput (req/s):", res["request_throughput"], "{:<10.2f}")
    if res.get("request_goodput") is not None:
        w("Request goodput (req/s):", res["request_goodput"], "{:<10.2f}")
    w("Output token throughput (tok/s):", res["output_throughput"], "{:<10.2f}")
    w("Peak output token throughput (tok/s):", res["max_output_tokens_per_s"], "{:<10.2f}")
    w("Peak concurrent requests:", res["max_concurrent_requests"], "{:<10.2f}")
    w("Total Token throughput (tok/s):", res["total_token_throughput"], "{:<10.2f}")
    titles = {"ttft": "Time to First Token", "tpot": "Time per Output Token (excl. 1st token)",
              "itl": "Inter-token Latency", "e2el": "End-to-end Latency"}
    for m in args.shown_metrics:
        print("{:-^50}".format(titles[m]))
        up = m.upper()
        w("Mean %s (ms):" % up, res["mean_%s_ms" % m], "{:<10.2f}")
        w("Median %s (ms):" % up, res["median_%s_ms" % m], "{:<10.2f}")
        w("Std %s (ms):" % up, res["std_%s_ms" % m], "{:<10.2f}")
        for p in args.percentiles:
            w("P%s %s (ms):" % (pct_word(p), up), res["p%s_%s_ms" % (pct_word(p), m)], "{:<10.2f}")
    print("=" * 50)


def benchmark(args):
    """Runs one benchmark against a live server; returns the result dict (vLLM's key names)."""
    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, flush=True))
    vocab = datasets.gguf_vocab(args.tokenizer_gguf)
    reqs = make_requests(args, vocab, args.num_prompts, args.seed)
    warm = make_requests(args, vocab, args.num_warmups + 1, args.seed + 1000003)
    model_id = args.model
    if not model_id:
        try:
            status, body = http_json(args.base_url, "GET", "/v1/models")
        except (OSError, ValueError) as e:
            raise RuntimeError("cannot reach %s: %s" % (args.base_url, e)) from e
        if status != 200 or not body or not body.get("data"):
            raise RuntimeError("GET %s/v1/models answered %s" % (args.base_url, status))
        model_id = body["data"][0]["id"]

    say("Starting initial single prompt test run...")
    test = stream_request(args.base_url, args.endpoint, build_payload(args, model_id, warm[0]),
                          warm[0].prompt_len, args.request_timeout)
    if not test.success:
        raise RuntimeError("initial test request failed: " + test.error)
    if args.num_warmups:
        say("Warming up with %d requests..." % args.num_warmups)
        run_requests(args, model_id, warm[1:], [0.0] * args.num_warmups)

    say("Traffic request rate: %s, burstiness %s, max concurrency %s, %d prompts" %
        (args.request_rate, args.burstiness, args.max_concurrency, len(reqs)))
    load_before = load_average()
    offsets = arrival_times(len(reqs), args.request_rate, args.burstiness, random.Random(args.seed))
    outputs, duration = run_requests(args, model_id, reqs, offsets)
    metrics, out_lens = calculate_metrics(outputs, duration, args.percentiles, args.goodput_slos)
    errors = [o.error for o in outputs if not o.success]
    for i, e in enumerate(errors[:10]):
        say("Error %d: %s" % (i, e))

    res = {"date": datetime.now().strftime("%Y-%m-%d %H:%M:%S"), "label": args.label,
           "backend": args.backend, "endpoint": args.endpoint, "base_url": args.base_url,
           "model_id": model_id, "git_commit": git_commit(), "machine": machine_info(),
           "load_average_before": load_before, "load_average_after": load_average(),
           "dataset_name": args.dataset_name, "num_prompts": args.num_prompts,
           "request_rate": args.request_rate if args.request_rate != float("inf") else "inf",
           "burstiness": args.burstiness, "max_concurrency": args.max_concurrency,
           "duration": duration, "flags": {k: v for k, v in vars(args).items() if k != "goodput_slos"}}
    res["flags"]["request_rate"] = res["request_rate"]
    for kv in args.metadata:
        k, _, v = kv.partition("=")
        res[k] = v
    res.update(metrics)
    if args.save_detailed:
        res.update({"input_lens": [o.prompt_len for o in outputs], "output_lens": out_lens,
                    "ttfts": [o.ttft for o in outputs], "itls": [o.itl for o in outputs],
                    "start_times": [o.start_time - outputs[0].start_time for o in outputs],
                    "errors": [o.error for o in outputs]})
    print_table(args, res)
    if args.save_result:
        os.makedirs(args.result_dir, exist_ok=True)
        name = args.result_filename or "%s-%s-%s.json" % (
            args.label, args.dataset_name, datetime.now().strftime("%Y%m%d-%H%M%S"))
        path = os.path.join(args.result_dir, name)
        with open(path, "w") as f:
            json.dump(res, f, indent=1)
        say("result saved to " + path)
    return res


def main(argv=None):
    try:
        benchmark(parse_args(argv))
    except (RuntimeError, OSError, ValueError) as e:
        print("serve.py: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
