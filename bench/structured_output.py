#!/usr/bin/env python3
"""Structured output's cost: TPOT with a JSON-schema constraint against the same request without
one, at concurrency 1 and 8; grammar compile time for small, medium and large schemas; the TTFT
of the first request with a new schema against one whose grammar is cached.

    python3 bench/structured_output.py [--binary build/sluice] [--threads 2] [--rounds 5]

Starts the daemon itself (default model), runs the two request kinds interleaved round by round
(so drift on a shared machine hits both alike), and prints medians over rounds with the CPU model
and flags and the load average. TPOT per request = (last token - first token) / (tokens - 1)
from the SSE stream (bench/serve.py's definition); both kinds produce exactly --max-tokens tokens
(ignore_eos; the schema asks for far more than that, so the constrained one ends at the length).
"""
import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve import http_json, load_average, machine_info, stream_request  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPT = [{"role": "user", "content": "List one hundred fruits as JSON, each with a short note."}]
LONG_SCHEMA = {
    "type": "object",
    "properties": {"fruits": {"type": "array", "minItems": 100, "maxItems": 100, "items": {
        "type": "object", "properties": {"name": {"type": "string", "maxLength": 16},
                                         "note": {"type": "string", "maxLength": 40}},
        "required": ["name", "note"], "additionalProperties": False}}},
    "required": ["fruits"], "additionalProperties": False}


def schema_of_size(n_props, title):
    """n_props properties of mixed kinds (strings with patterns and formats, bounded numbers,
    enums, nested objects, arrays, a $ref), so that compile time grows with n_props."""
    props, defs = {}, {"addr": {"type": "object", "properties": {
        "street": {"type": "string", "maxLength": 40}, "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
        "required": ["street", "zip"]}}
    for i in range(n_props):
        k = i % 6
        props["f%d" % i] = [
            {"type": "string", "pattern": "^[a-z]{%d,%d}$" % (1 + i % 3, 4 + i % 5)},
            {"type": "integer", "minimum": -i, "maximum": 1000 + i},
            {"enum": ["a%d" % i, "b%d" % i, "c%d" % i]},
            {"type": "string", "format": ["date-time", "email", "uuid", "ipv4"][i % 4]},
            {"type": "array", "items": {"type": "number"}, "minItems": 1, "maxItems": 1 + i % 4},
            {"$ref": "#/$defs/addr"},
        ][k]
    return {"title": title, "type": "object", "properties": props, "required": sorted(props)[: n_props // 2],
            "additionalProperties": False, "$defs": defs}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(binary, threads):
    port = free_port()
    env = dict(os.environ, OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "passive"))
    p = subprocess.Popen([binary, "--port", str(port), "--threads", str(threads)], cwd=ROOT, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = "http://127.0.0.1:%d" % port
    for _ in range(600):
        try:
            if http_json(base, "GET", "/health/ready", timeout=1)[0] == 200:
                return p, base
        except OSError:
            pass
        time.sleep(0.1)
    p.kill()
    sys.exit("the daemon did not become ready")


def tpot_of(o):
    n = o.output_tokens
    if not o.success or n < 2:
        raise RuntimeError(o.error or "one token")
    return (o.latency - o.ttft) / (n - 1)


def one(base, constrained, max_tokens, seed):
    body = {"messages": PROMPT, "max_tokens": max_tokens, "temperature": 0, "seed": seed, "stream": True,
            "ignore_eos": True, "stream_options": {"include_usage": True}}
    if constrained:
        body["response_format"] = {"type": "json_schema", "json_schema": {"name": "fruits", "schema": LONG_SCHEMA}}
    o = stream_request(base, "/v1/chat/completions", body, 0, 600)
    if o.output_tokens != max_tokens:
        raise RuntimeError("%d tokens, not %d: %s" % (o.output_tokens, max_tokens, o.error))
    return tpot_of(o)


def tpot_rounds(base, conc, rounds, max_tokens):
    med = {False: [], True: []}
    with ThreadPoolExecutor(conc) as pool:
        for r in range(rounds):
            for constrained in ((False, True) if r % 2 == 0 else (True, False)):
                xs = list(pool.map(lambda i: one(base, constrained, max_tokens, 100 + i), range(conc)))
                med[constrained].append(statistics.median(xs))
    return {k: statistics.median(v) for k, v in med.items()}


def compile_sum(base):
    text = urllib.request.urlopen(base + "/metrics", timeout=10).read().decode()
    for line in text.splitlines():
        if line.startswith("sluice:structured_output_compile_seconds_sum"):
            return float(line.split()[-1])
    return 0.0


def ttft(base, schema):
    body = {"messages": PROMPT, "max_tokens": 1, "temperature": 0, "stream": True,
            "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}}
    o = stream_request(base, "/v1/chat/completions", body, 0, 600)
    if not o.success:
        raise RuntimeError(o.error)
    return o.ttft


def compile_rounds(base, rounds):
    out = {}
    for name, n in (("small", 3), ("medium", 30), ("large", 300)):
        comp, new, cached = [], [], []
        for r in range(rounds):
            schema = schema_of_size(n, "%s-%d-%d" % (name, r, random.getrandbits(32)))
            size = len(json.dumps(schema))
            before = compile_sum(base)
            new.append(ttft(base, schema))
            comp.append(compile_sum(base) - before)
            cached.append(ttft(base, schema))
        out[name] = {"bytes": size, "compile_s": statistics.median(comp), "ttft_new_s": statistics.median(new),
                     "ttft_cached_s": statistics.median(cached)}
    return out


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    fl = line.split(":", 1)[1].split()
                    return " ".join(x for x in fl if x.startswith(("avx", "amx")))
    except OSError:
        pass
    return ""


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--binary", default=os.path.join(ROOT, "build", "sluice"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--result", help="write the numbers here as JSON")
    args = ap.parse_args()
    p, base = start(args.binary, args.threads)
    try:
        one(base, True, 8, 1)  # warm-up: the vocabulary, the grammar, the prefix
        one(base, False, 8, 1)
        res = {"machine": machine_info(), "cpu_flags": cpu_flags(), "threads": args.threads,
               "max_tokens": args.max_tokens, "rounds": args.rounds, "load_before": load_average()}
        for conc in (1, 8):
            res["tpot_c%d" % conc] = tpot_rounds(base, conc, args.rounds, args.max_tokens)
        res["compile"] = compile_rounds(base, args.rounds)
        res["load_after"] = load_average()
    finally:
        p.terminate()
        p.wait()
    m = res["machine"]
    print("CPU: %s, %d cores (%s); load %s -> %s; --threads %d; %d rounds, medians" %
          (m["cpu"], m["cores"], res["cpu_flags"], res["load_before"], res["load_after"], args.threads, args.rounds))
    print("| concurrency | TPOT unconstrained (ms) | TPOT json_schema (ms) | ratio |")
    print("|---|---|---|---|")
    for conc in (1, 8):
        t = res["tpot_c%d" % conc]
        print("| %d | %.2f | %.2f | %.3fx |" % (conc, t[False] * 1e3, t[True] * 1e3, t[True] / t[False]))
    print("| schema | bytes | compile (ms) | TTFT new schema (ms) | TTFT cached (ms) |")
    print("|---|---|---|---|---|")
    for name, c in res["compile"].items():
        print("| %s | %d | %.1f | %.1f | %.1f |" % (name, c["bytes"], c["compile_s"] * 1e3, c["ttft_new_s"] * 1e3,
                                                   c["ttft_cached_s"] * 1e3))
    if args.result:
        for conc in (1, 8):
            t = res["tpot_c%d" % conc]
            res["tpot_c%d" % conc] = {"unconstrained": t[False], "json_schema": t[True]}
        with open(args.result, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
