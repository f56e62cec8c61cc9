#!/usr/bin/env python3
"""Soak test (issue 21): the real daemon under mixed, partly abusive traffic for N minutes, then
the checks that catch what piles up slowly: leaked KV blocks, requests that never finish, memory
that grows, streams cut short.

  soak.py --minutes N [--clients C] [--seed S] [--only half_close,normal] [--skip half_close]   (`make soak SOAK_MINUTES=N`)

C client threads each loop over a random scenario, over raw sockets (HTTP/1.1, Connection:
close) so that a client can do what libraries will not: half-close, reset, read slowly, send
broken framing:
  chat / completions, streaming or not, n 1-3, random sampling and lengths, short prompts and
  long ones (which fill the KV cache and share prefixes); a stream cut by the client after a
  few bytes (FIN or RST), a request abandoned before its reply; a client that half-closes its
  writing side after the request (legal HTTP/1.1) and reads the whole reply; a slow reader (a
  small receive buffer, a few bytes at a time); pathological bodies (malformed JSON, bad
  escapes, invalid UTF-8, NUL, deep nesting, thousands of messages, a repetitive
  continue_final_message prompt, an over-size body, garbage and truncated requests).
One more thread probes /health every 0.2 s and records its latency.

What must hold, each a failure when not:
  * every reply the client read to the end is complete (chunked terminator / Content-Length) and
    has the expected status: 200 for valid requests, 4xx with OpenAI's error envelope for the
    pathological bodies; every completed stream ends with `data: [DONE]` and every event before
    it is JSON; the half-closed clients included;
  * /health always answers 200, within --health-max seconds (default 2);
  * no 5xx at all (sluice:http_responses_total, beyond the 503s of /health/ready at start-up);
  * once the load stops: within 30 s sluice:num_requests_running, num_requests_waiting and
    kv_cache_usage_perc are 0;
  * RSS at the end <= 1.25 x its warm value + 32 MiB (warm: the largest RSS seen in the first
    quarter of the run, at least 15 s, when the KV cache and the allocator have reached their
    working size; the bound leaves room for the allocator's fragmentation, not for a leak that
    grows with the request count);
  * the daemon exits 0 on SIGTERM (under ASan: no leak report).
--sanitized (`make soak SOAK_SAN=1`, the ASan + UBSan daemon of build-san/) keeps prompts short and
outputs at most 12 tokens (the -O1 sanitized forward is many times slower) and leaves the RSS bound
to LSan's leak check at exit.
Prints one line per scenario with its count and a last line "soak: N requests, N failures".
"""
import argparse
import json
import os
import random
import re
import socket
import struct
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from daemon import Server  # noqa: E402

SOAK_ARGS = ["--max-model-len", "2048", "--kv-cache-memory", "64M", "--max-num-seqs", "16", "--timeout", "20",
             "--max-body-size", "1M", "--keepalive-interval", "1"]

WORDS = ("the river sluice gate water flows under a bridge while the town sleeps and a clock strikes "
         "twelve times over quiet streets paved with old stones").split()


class Soak:
    def __init__(self, srv, seed, health_max, only=(), sanitized=False, skip=()):
        self.only = only
        self.skip = skip
        self.sanitized = sanitized
        self.srv = srv
        self.port = srv.port
        self.seed = seed
        self.health_max = health_max
        self.lock = threading.Lock()
        self.counts = {}
        self.failures = []
        self.health_worst = 0.0
        self.stop = threading.Event()

    # ---- bookkeeping
    def count(self, name):
        with self.lock:
            self.counts[name] = self.counts.get(name, 0) + 1

    def fail(self, scenario, msg):
        with self.lock:
            self.failures.append(f"{scenario}: {msg}")
            if len(self.failures) <= 20:
                print(f"FAIL {scenario}: {msg}", flush=True)

    # ---- raw HTTP
    def connect(self, rcvbuf=None):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.settimeout(120)
        s.connect(("127.0.0.1", self.port))
        return s

    @staticmethod
    def request_bytes(path, body, method="POST", extra=b""):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        head = (f"{method} {path} HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n").encode()
        return head + extra + b"\r\n" + body

    @staticmethod
    def read_all(s, chunk=65536, delay=0.0):
        """The bytes until EOF (or a reset: what came before it, which parse_reply then judges)."""
        parts = []
        while True:
            try:
                b = s.recv(chunk)
            except ConnectionResetError:
                b = b""
            if not b:
                return b"".join(parts)
            parts.append(b)
            if delay:
                time.sleep(delay)

    @staticmethod
    def parse_reply(raw):
        """(status, body) of a whole reply, or raises ValueError naming what is incomplete.
        Interim 1xx responses before it are skipped, as HTTP/1.1 clients do."""
        rest = raw
        while True:
            head, sep, rest = rest.partition(b"\r\n\r\n")
            if not sep:
                raise ValueError(f"no end of headers in {len(raw)} bytes: {raw[:120]!r}")
            lines = head.decode("latin-1").split("\r\n")
            m = re.match(r"HTTP/1\.[01] (\d{3})", lines[0])
            if not m:
                raise ValueError(f"bad status line {lines[0]!r}")
            if not m.group(1).startswith("1"):
                break
        hdr = {}
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            hdr[k.strip().lower()] = v.strip()
        if hdr.get("transfer-encoding", "").lower() == "chunked":
            body, pos = [], 0
            while True:
                end = rest.find(b"\r\n", pos)
                if end < 0:
                    raise ValueError(f"chunked body cut off after {sum(map(len, body))} bytes (no last chunk)")
                size = int(rest[pos:end].split(b";")[0], 16)
                if size == 0:
                    break
                if end + 2 + size + 2 > len(rest):
                    raise ValueError("chunked body cut off inside a chunk")
                body.append(rest[end + 2:end + 2 + size])
                pos = end + 2 + size + 2
            return int(m.group(1)), b"".join(body)
        if "content-length" in hdr:
            n = int(hdr["content-length"])
            if len(rest) < n:
                raise ValueError(f"body of {len(rest)} bytes, Content-Length {n}")
            return int(m.group(1)), rest[:n]
        return int(m.group(1)), rest

    def check_stream(self, scenario, body):
        events = [e for e in body.decode("utf-8", "strict").split("\n\n") if e.strip()]
        datas = [e[len("data: "):] for e in events if e.startswith("data: ")]
        if not datas or datas[-1] != "[DONE]":
            self.fail(scenario, f"stream does not end with [DONE]: last event {events[-1][:200] if events else None!r}")
            return
        for d in datas[:-1]:
            j = json.loads(d)
            if "error" in j:
                self.fail(scenario, f"error event in a stream: {d[:200]}")

    def exchange(self, scenario, req, stream, expect=200, half_close=False, rcvbuf=None, delay=0.0, chunk=65536):
        """Sends req, reads the whole reply, checks it. Returns the status (None on a failure)."""
        s = self.connect(rcvbuf)
        try:
            try:
                s.sendall(req)
            except (BrokenPipeError, ConnectionResetError):
                pass  # a body refused before it is read (413): the reply is still there to read
            if half_close:
                s.shutdown(socket.SHUT_WR)
            raw = self.read_all(s, chunk, delay)
        finally:
            s.close()
        try:
            status, body = self.parse_reply(raw)
        except ValueError as e:
            self.fail(scenario, f"incomplete reply: {e}")
            return None
        ok = status == expect if isinstance(expect, int) else status in expect
        if not ok:
            self.fail(scenario, f"status {status}, expected {expect}: {body[:300]!r}")
            return None
        if status >= 400:
            err = json.loads(body).get("error", {})
            if not err.get("message") or "type" not in err:
                self.fail(scenario, f"error without OpenAI's envelope: {body[:300]!r}")
        elif stream:
            self.check_stream(scenario, body)
        else:
            j = json.loads(body)
            if not j.get("choices"):
                self.fail(scenario, f"no choices: {body[:300]!r}")
        return status

    # ---- requests
    def prompt(self, rng):
        # long: fills KV blocks; the shared start exercises the prefix cache (not under ASan, where
        # the unvectorized -O1 forward takes minutes over 1,000 tokens)
        if not self.sanitized and rng.random() < 0.1:
            return "Once upon a time " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(300, 1200)))
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 30)))

    def gen_body(self, rng, chat, stream):
        b = {"max_tokens": rng.randint(1, 12 if self.sanitized else 40), "temperature": rng.choice([0, 0.7, 1.2]), "stream": stream}
        if chat:
            b["messages"] = [{"role": "user", "content": self.prompt(rng)}]
            if rng.random() < 0.2:
                b["messages"] += [{"role": "assistant", "content": "The answer is"}]
                b.update(continue_final_message=True, add_generation_prompt=False)
        else:
            b["prompt"] = self.prompt(rng)
        if rng.random() < 0.3:
            b["n"] = rng.randint(2, 3)
        if rng.random() < 0.2:
            b["logprobs"] = True if chat else 2
            if chat:
                b["top_logprobs"] = 2
        if rng.random() < 0.2:
            b["stop"] = [rng.choice(WORDS)]
        if rng.random() < 0.2:
            b["seed"] = rng.randint(0, 1 << 30)
        if stream and rng.random() < 0.5:
            b["stream_options"] = {"include_usage": True}
        return b

    def sc_normal(self, rng):
        chat, stream = rng.random() < 0.5, rng.random() < 0.5
        name = f"{'chat' if chat else 'completions'}{' stream' if stream else ''}"
        path = "/v1/chat/completions" if chat else "/v1/completions"
        self.count(name)
        self.exchange(name, self.request_bytes(path, self.gen_body(rng, chat, stream)), stream)

    def sc_half_close(self, rng):
        chat, stream = rng.random() < 0.5, rng.random() < 0.5
        path = "/v1/chat/completions" if chat else "/v1/completions"
        name = f"half-close{' stream' if stream else ''}"
        self.count(name)
        self.exchange(name, self.request_bytes(path, self.gen_body(rng, chat, stream)), stream, half_close=True)

    def sc_slow_reader(self, rng):
        self.count("slow reader")
        body = self.gen_body(rng, True, True)
        body["max_tokens"] = rng.randint(16, 64)
        self.exchange("slow reader", self.request_bytes("/v1/chat/completions", body), True, rcvbuf=2048,
                      delay=0.01, chunk=rng.choice([61, 256, 1024]))

    def sc_disconnect(self, rng):
        """A client that goes away: before the reply, or mid-stream after a few bytes, with FIN or RST."""
        chat = rng.random() < 0.5
        body = self.gen_body(rng, chat, True)
        body["max_tokens"] = rng.randint(20, 200)
        s = self.connect()
        try:
            s.sendall(self.request_bytes("/v1/chat/completions" if chat else "/v1/completions", body))
            if rng.random() < 0.7:
                got, want = 0, rng.randint(1, 2000)
                while got < want:
                    b = s.recv(want - got)
                    if not b:
                        break
                    got += len(b)
            if rng.random() < 0.5:  # RST instead of FIN
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.count("disconnect")
        except OSError:
            self.count("disconnect")
        finally:
            s.close()

    def pathological(self, rng):
        """(name, request bytes, expected status or statuses)."""
        deep = rng.randint(1000, 100000)
        kinds = [
            ("bad json", self.request_bytes("/v1/completions", b'{"prompt": "a",'), 400),
            ("bad escape", self.request_bytes("/v1/completions", b'{"prompt":"abc\\uZZZZdef"}'), 400),
            ("invalid utf-8", self.request_bytes("/v1/chat/completions",
                                                 b'{"messages":[{"role":"user","content":"\xff\xfe"}]}'), 400),
            ("nul", self.request_bytes("/v1/completions", b'{"prompt":"a\\u0000b"}'), 400),
            ("deep nesting", self.request_bytes("/v1/completions", b"[" * deep + b"]" * deep), 400),
            ("many messages", self.request_bytes("/v1/chat/completions", {
                "messages": [{"role": "user" if i % 2 == 0 else "assistant", "content": "hi"}
                             for i in range(rng.randint(2000, 5000))], "max_tokens": 1}), 400),
            ("repetitive continue_final_message", self.request_bytes("/v1/chat/completions", {
                "messages": [{"role": "user", "content": "a" * 20000},
                             {"role": "assistant", "content": "a" * rng.randint(1, 3000)}],
                "continue_final_message": True, "add_generation_prompt": False, "max_tokens": 1}), 400),
            ("too large", self.request_bytes("/v1/completions", b'{"prompt":"' + b"x" * (1 << 20) + b'"}'), 413),
            ("wrong types", self.request_bytes("/v1/chat/completions", {
                "messages": "hi", "n": "two", "temperature": [1]}), 400),
            ("huge numbers", self.request_bytes("/v1/completions", b'{"prompt":"a","max_tokens":1e999,"n":-1}'), 400),
            ("unknown path", self.request_bytes("/v1/nothing", {"prompt": "a"}), 404),
        ]
        return rng.choice(kinds)

    def sc_pathological(self, rng):
        name, req, expect = self.pathological(rng)
        self.count("bad body: " + name)
        self.exchange("bad body: " + name, req, False, expect=expect)

    def sc_broken_http(self, rng):
        """Garbage, a cut-off request, a body shorter than its Content-Length: any answer or none,
        as long as the server stays up (the /health probe and the final checks see it)."""
        self.count("broken http")
        req = rng.choice([
            b"GARBAGE\r\n\r\n",
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"prompt\":",
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n",
            b"GET /health HTTP/1.1\r\nHost: x\r\nX-" + b"a" * 20000 + b": b\r\n\r\n",
            b"POST /v1/chat/completions HTTP/1.1\r\nHo",
        ])
        s = self.connect()
        try:
            s.settimeout(3)
            s.sendall(req)
            if rng.random() < 0.5:
                s.shutdown(socket.SHUT_WR)
            try:
                s.recv(4096)
            except OSError:
                pass
        except OSError:
            pass
        finally:
            s.close()

    def sc_tokenize(self, rng):
        self.count("tokenize")
        body = {"prompt": self.prompt(rng)} if rng.random() < 0.5 else {
            "messages": [{"role": "user", "content": self.prompt(rng)}]}
        s = self.connect()
        try:
            s.sendall(self.request_bytes("/tokenize", body))
            status, reply = self.parse_reply(self.read_all(s))
            if status != 200 or "tokens" not in json.loads(reply):
                self.fail("tokenize", f"status {status}: {reply[:200]!r}")
        except ValueError as e:
            self.fail("tokenize", f"incomplete reply: {e}")
        finally:
            s.close()

    SCENARIOS = [(sc_normal, 40), (sc_half_close, 10), (sc_slow_reader, 5), (sc_disconnect, 15),
                 (sc_pathological, 15), (sc_broken_http, 5), (sc_tokenize, 5)]

    def client(self, idx):
        rng = random.Random(self.seed * 1000 + idx)
        chosen = [(f, w) for f, w in self.SCENARIOS
                  if (not self.only or f.__name__[3:] in self.only) and f.__name__[3:] not in self.skip]
        funcs = [f for f, _ in chosen]
        weights = [w for _, w in chosen]
        while not self.stop.is_set():
            f = rng.choices(funcs, weights)[0]
            try:
                f(self, rng)
            except Exception as e:  # noqa: BLE001 - any client-side surprise is a finding
                self.fail(f.__name__, f"{type(e).__name__}: {e}")

    def health(self):
        while not self.stop.is_set():
            t0 = time.monotonic()
            try:
                s = self.connect()
                s.settimeout(10)
                s.sendall(b"GET /health HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n")
                status, _ = self.parse_reply(self.read_all(s))
                s.close()
                dt = time.monotonic() - t0
                self.health_worst = max(self.health_worst, dt)
                if status != 200:
                    self.fail("health", f"status {status}")
                elif dt > self.health_max:
                    self.fail("health", f"answered in {dt:.2f} s")
            except (OSError, ValueError) as e:
                self.fail("health", f"{type(e).__name__}: {e}")
            time.sleep(0.2)


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--clients", type=int, default=6)
    ap.add_argument("--seed", type=int, default=int(time.time()) % 100000)
    ap.add_argument("--health-max", type=float, default=2.0, help="slowest /health answer allowed, seconds")
    ap.add_argument("--sanitized", action="store_true",
                    help="the daemon is an ASan build: short prompts, and LSan at exit instead of the RSS bound "
                         "(ASan's quarantine grows RSS by design)")
    ap.add_argument("--only", default="", help="run only these scenarios, e.g. half_close,normal (to chase one)")
    ap.add_argument("--skip", default="", help="leave these scenarios out, e.g. half_close")
    a = ap.parse_args()
    duration = a.minutes * 60
    print(f"soak: {a.minutes:g} min, {a.clients} clients, seed {a.seed}", flush=True)
    # passive OpenMP waits: spinning barriers slow a loaded 2-core machine by 10x or more
    os.environ.setdefault("OMP_WAIT_POLICY", "passive")
    srv = Server(SOAK_ARGS, base_args=[])
    five_start = srv.metrics().get('sluice:http_responses_total{code="5xx"}', 0)  # /health/ready while loading
    soak = Soak(srv, a.seed, a.health_max, tuple(x for x in a.only.split(",") if x), a.sanitized,
                tuple(x for x in a.skip.split(",") if x))
    threads = [threading.Thread(target=soak.client, args=(i,), daemon=True) for i in range(a.clients)]
    threads.append(threading.Thread(target=soak.health, daemon=True))
    t0 = time.monotonic()
    for t in threads:
        t.start()
    warm_until = max(15.0, duration / 4)
    warm = 0
    while time.monotonic() - t0 < duration:
        time.sleep(1)
        if srv.proc.poll() is not None:
            soak.fail("daemon", f"exited with {srv.proc.returncode}:\n{srv.log_text()}")
            break
        if time.monotonic() - t0 <= warm_until:
            warm = max(warm, rss_bytes(srv.proc.pid))
    soak.stop.set()
    for t in threads:
        t.join(150)
        if t.is_alive():
            soak.fail("client", "a client thread still waits 150 s after the end")

    ok_quiet = False
    if srv.proc.poll() is None:
        deadline, m = time.monotonic() + 30, {}
        while time.monotonic() < deadline:
            m = srv.metrics()
            if (m.get("sluice:num_requests_running") == 0 and m.get("sluice:num_requests_waiting") == 0
                    and m.get("sluice:kv_cache_usage_perc") == 0):
                ok_quiet = True
                break
            time.sleep(0.5)
        if not ok_quiet:
            soak.fail("quiesce", "30 s after the load: running %s, waiting %s, kv usage %s" % (
                m.get("sluice:num_requests_running"), m.get("sluice:num_requests_waiting"),
                m.get("sluice:kv_cache_usage_perc")))
        five = m.get('sluice:http_responses_total{code="5xx"}', 0) - five_start
        if five:
            soak.fail("metrics", f"{five:g} responses with a 5xx status")
        final = rss_bytes(srv.proc.pid)
        bound = int(warm * 1.25) + (32 << 20)
        if a.sanitized:
            print(f"rss: warm {warm >> 20} MiB, final {final >> 20} MiB; not bounded under ASan (its quarantine "
                  "keeps freed memory): LSan checks leaks at exit", flush=True)
        else:
            print(f"rss: warm {warm >> 20} MiB, final {final >> 20} MiB, bound {bound >> 20} MiB", flush=True)
        if not a.sanitized and final > bound:
            soak.fail("rss", f"final RSS {final >> 20} MiB over the bound {bound >> 20} MiB (warm {warm >> 20} MiB)")
        print(f"health: slowest /health {soak.health_worst * 1000:.0f} ms", flush=True)
    rc = srv.stop(timeout=60)
    log_tail = srv.log_path.read_text(errors="replace")[-3000:]
    if rc != 0:
        soak.fail("exit", f"the daemon exited with {rc} on SIGTERM")
    total = sum(soak.counts.values())
    for name in sorted(soak.counts):
        print(f"  {soak.counts[name]:6d}  {name}")
    print(f"soak: {total} requests in {time.monotonic() - t0:.0f} s, {len(soak.failures)} failures", flush=True)
    if soak.failures:
        print("daemon log tail:\n" + log_tail)
    return 1 if soak.failures else 0


if __name__ == "__main__":
    sys.exit(main())
