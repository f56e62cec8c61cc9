"""Fixtures for the API tests: a real sluice daemon on the default model, on the CPU.

`server` is one daemon shared by the whole session; tests that need their own flags (an API
key, a tiny queue) or that kill it (SIGTERM) start one with `start_server(...)`. The binary is
$SLUICE_BIN, else $SLUICE_BUILD/sluice (build/ by default). Each daemon gets a free port, is
waited for on /health/ready, and is stopped with SIGTERM (SIGKILL if it hangs); its log is
printed when a test fails.
"""
import sys
from pathlib import Path

import pytest

# the daemon helpers live in tests/daemon.py, shared with tests/deploy
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from daemon import BASE_ARGS, MODEL, ROOT, Server, binary, free_port  # noqa: E402,F401


@pytest.fixture(scope="session")
def start_server():
    started = []

    def start(*args, api_key=None, base_args=None):
        s = Server(list(args), api_key=api_key, base_args=base_args)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


@pytest.fixture(scope="session")
def server(start_server):
    return start_server()


@pytest.fixture
def client(server):
    return server.client()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    srv = item.funcargs.get("server") if hasattr(item, "funcargs") else None
    if rep.when == "call" and rep.failed and srv is not None:
        rep.sections.append(("sluice log (tail)", srv.log_text()))
