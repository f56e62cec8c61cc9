#!/usr/bin/env python3
"""Checks of a running sluice over HTTP for scripts/gpu-check.sh (standard library only):

  - streaming chat: /v1/chat/completions with stream=true parses as SSE, the first chunk carries
    the assistant role, content arrives in chunks, one finish_reason, and [DONE] ends it;
  - batch invariance: a greedy completion (temperature 0) alone, then the same request among
    BATCH - 1 others sent at once: the same text every time.

Prints "SUMMARY | ..." lines; exits 1 when a check fails.
"""
import argparse
import http.client
import json
import sys
import threading
import urllib.parse


def post(base, path, body, stream=False):
    u = urllib.parse.urlparse(base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
    conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        raise RuntimeError("%s: HTTP %d: %s" % (path, resp.status, resp.read()[:300]))
    if not stream:
        return json.loads(resp.read())
    events = []
    for raw in resp:
        line = raw.decode().strip()
        if line.startswith("data: "):
            events.append(line[6:])
    return events


def model_id(base):
    u = urllib.parse.urlparse(base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    conn.request("GET", "/v1/models")
    return json.loads(conn.getresponse().read())["data"][0]["id"]


def check_stream(base, model):
    events = post(base, "/v1/chat/completions", {
        "model": model, "stream": True, "max_tokens": 32, "temperature": 0,
        "messages": [{"role": "user", "content": "Write one sentence about the sea."}]}, stream=True)
    problems = []
    if not events or events[-1] != "[DONE]":
        problems.append("no [DONE] at the end")
    chunks = [json.loads(e) for e in events if e != "[DONE]"]
    with_choices = [c for c in chunks if c.get("choices")]
    if not with_choices or with_choices[0]["choices"][0].get("delta", {}).get("role") != "assistant":
        problems.append("the first chunk has no assistant role")
    text = "".join(c["choices"][0].get("delta", {}).get("content") or "" for c in with_choices)
    finishes = [c["choices"][0]["finish_reason"] for c in with_choices if c["choices"][0].get("finish_reason")]
    if len(finishes) != 1:
        problems.append("%d finish_reason chunks" % len(finishes))
    if not text:
        problems.append("no content")
    ok = not problems
    print("SUMMARY | streaming chat | %d chunks, %d chars, finish %s | %s" % (
        len(chunks), len(text), finishes[:1], "ok" if ok else "FAIL: " + "; ".join(problems)))
    return ok


def check_batch_invariance(base, model, batch):
    prompt = "The capital of France is"
    req = lambda p: {"model": model, "prompt": p, "max_tokens": 48, "temperature": 0}  # noqa: E731
    alone = post(base, "/v1/completions", req(prompt))["choices"][0]["text"]
    others = ["Once upon a time", "The best way to learn", "In 1969, the first", "Water boils at",
              "A list of prime numbers:", "def fibonacci(n):", "The quick brown fox", "Dear Sir or Madam,"]
    prompts = [prompt if i % 4 == 0 else others[i % len(others)] + " " * (i // len(others)) for i in range(batch)]
    out = [None] * batch

    def run(i):
        try:
            out[i] = post(base, "/v1/completions", req(prompts[i]))["choices"][0]["text"]
        except Exception as e:  # noqa: BLE001 (reported below)
            out[i] = "ERROR %s" % e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(batch)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    same = [out[i] == alone for i in range(batch) if prompts[i] == prompt]
    ok = all(same)
    print("SUMMARY | batch invariance (greedy, %d at once) | %d/%d copies equal the lone request | %s" % (
        batch, sum(same), len(same), "ok" if ok else "FAIL: alone %r, batched %r" % (
            alone[:60], [out[i][:60] for i in range(batch) if prompts[i] == prompt and out[i] != alone][:2])))
    return ok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url", default="http://127.0.0.1:8000")
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args()
    model = model_id(args.base_url)
    ok = check_stream(args.base_url, model)
    ok = check_batch_invariance(args.base_url, model, args.batch) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
