"""Helpers for the structured-output tests (test_structured_*.py): the JSON-schema corpus of
tests/data/json_schemas, a format checker that checks every format the corpus uses (jsonschema's
own FormatChecker skips date-time, time, uri and hostname unless optional packages are there, so
those would pass unchecked), and requests through a thread pool."""
import concurrent.futures
import json
import os
import re
import time

import jsonschema

from conftest import ROOT

SCHEMA_DIR = ROOT / "tests" / "data" / "json_schemas"
# `make san` sets SANITIZED=1: the instrumented daemon is several times slower, so the corpus
# runs on a fixed subset there (every 10th schema).
SANITIZED = os.environ.get("SANITIZED") == "1"
MAX_TOKENS = 256


def corpus():
    """[{"id", "task", "schema"}] from every tests/data/json_schemas/*.jsonl, ids unique."""
    out = []
    for path in sorted(SCHEMA_DIR.glob("*.jsonl")):
        out += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    ids = [c["id"] for c in out]
    assert len(set(ids)) == len(ids), "duplicate schema ids"
    return out


FORMATS = jsonschema.FormatChecker()  # its email, ipv6 and uuid checks stay
_OFFSET = r"(Z|z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])"
_TIME = r"([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?" + _OFFSET


def _day_exists(y, m, d):
    # RFC 3339 section 5.7 (proleptic Gregorian, year 0000 included, which Python's date lacks)
    leap = y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)
    return 1 <= m <= 12 and 1 <= d <= [31, 29 if leap else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][m - 1]


@FORMATS.checks("date")
def _date(s):
    if not isinstance(s, str):  # a format applies to strings only
        return True
    m = re.fullmatch(r"([0-9]{4})-([0-9]{2})-([0-9]{2})", s, re.ASCII)
    return m is not None and _day_exists(*map(int, m.groups()))


@FORMATS.checks("date-time")
def _date_time(s):
    # RFC 3339 section 5.6
    return not isinstance(s, str) or re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt]" + _TIME, s, re.ASCII) is not None and _date(s[:10])


@FORMATS.checks("time")
def _time(s):
    return not isinstance(s, str) or re.fullmatch(_TIME, s, re.ASCII) is not None


@FORMATS.checks("ipv4")
def _ipv4(s):
    # RFC 2673 section 3.2, as JSON Schema cites it: four decimal bytes of 1 to 3 digits each
    # (Python's ipaddress also refuses leading zeros, which that grammar allows)
    parts = s.split(".") if isinstance(s, str) else None
    return parts is None or len(parts) == 4 and all(re.fullmatch(r"[0-9]{1,3}", p) and int(p) <= 255 for p in parts)


@FORMATS.checks("uri")
def _uri(s):
    # RFC 3986: a scheme, a colon, then no whitespace, quotes or angle brackets
    return not isinstance(s, str) or re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*:[^\s\"<>]*", s) is not None


@FORMATS.checks("hostname")
def _hostname(s):
    label = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    return not isinstance(s, str) or len(s) <= 253 and re.fullmatch(rf"{label}(\.{label})*", s, re.ASCII) is not None


def schema_errors(schema, text):
    """Why `text` is not a JSON document valid under `schema` (strict JSON: no raw control
    characters in strings), or None."""
    try:
        value = json.loads(text)
    except ValueError as e:
        return f"not JSON: {e}"
    errors = sorted(jsonschema.Draft202012Validator(schema, format_checker=FORMATS).iter_errors(value), key=str)
    return "; ".join(e.message[:200] for e in errors[:3]) or None


def run_all(fn, items, workers=8):
    """fn over items through a pool of `workers` threads, results in order."""
    with concurrent.futures.ThreadPoolExecutor(workers) as ex:
        return list(ex.map(fn, items))


def patient_post(server, path, body):
    """POST with the patience of a client: a 408 (the grammar still compiling past
    --structured-output-compile-timeout, which a loaded or sanitized build can reach) is retried,
    as the error invites."""
    for _ in range(30):
        r = server.post(path, body, timeout=600)
        if r.status_code != 408:
            return r
        time.sleep(2)
    return r


def post(server, path, body):
    """patient_post's parsed 200 body."""
    r = patient_post(server, path, body)
    assert r.status_code == 200, r.text
    return r.json()


def chat(server, user, max_tokens=MAX_TOKENS, system="Reply with JSON only.", **extra):
    """One non-streamed chat completion; the parsed body."""
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
    return post(server, "/v1/chat/completions", {"model": server.model_id(), "messages": messages,
                                                 "max_tokens": max_tokens, **extra})


def complete(server, prompt, max_tokens=MAX_TOKENS, **extra):
    return post(server, "/v1/completions", {"model": server.model_id(), "prompt": prompt, "max_tokens": max_tokens,
                                            **extra})


def texts(body):
    """[(text, finish_reason)] of each choice of a chat or completions body."""
    out = []
    for c in body["choices"]:
        out.append((c["message"]["content"] if "message" in c else c["text"], c["finish_reason"]))
    return out


def stream(server, path, body):
    """The concatenated content deltas of each choice of a streamed request, and each choice's
    finish_reason: ({index: text}, {index: finish_reason})."""
    r = server.post(path, {**body, "stream": True}, stream=True, timeout=600)
    assert r.status_code == 200, r.text
    text, finish = {}, {}
    for line in r.iter_lines():
        if not line.startswith(b"data: ") or line == b"data: [DONE]":
            continue
        for c in json.loads(line[6:])["choices"]:
            piece = c["delta"].get("content") if "delta" in c else c.get("text")
            text[c["index"]] = text.get(c["index"], "") + (piece or "")
            if c.get("finish_reason"):
                finish[c["index"]] = c["finish_reason"]
    return text, finish
