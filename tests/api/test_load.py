"""A short wrk smoke run (Debian's wrk, tests/load/chat.lua): 10 s on 8 connections against the
shared daemon, plain and streaming chat completions. Every response must be 2xx and no socket
may fail; the long load runs live in bench/."""
import re
import shutil
import subprocess
from pathlib import Path

import pytest

LUA = Path(__file__).resolve().parents[1] / "load" / "chat.lua"


@pytest.mark.parametrize("mode", ["plain", "stream"])
def test_wrk_smoke(server, mode):
    if shutil.which("wrk") is None:
        pytest.fail("wrk is missing: scripts/setup.sh installs it")
    cmd = ["wrk", "-t", "2", "-c", "8", "-d", "10s", "--timeout", "30s", "-s", str(LUA),
           server.url + "/v1/chat/completions"]
    if mode == "stream":
        cmd += ["--", "stream"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    requests_done = int(re.search(r"(\d+) requests in", out).group(1))
    assert requests_done > 0, out
    assert "Socket errors" not in out, out
    assert "Non-2xx" not in out, out
    m = re.search(r"non-2xx responses: (\d+)", out)
    assert m is None or int(m.group(1)) == 0, out
