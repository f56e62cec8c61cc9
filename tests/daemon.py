"""A real sluice daemon for the Python tests (tests/api through its conftest.py, tests/deploy):
the binary is $SLUICE_BIN, else $SLUICE_BUILD/sluice (build/ by default); each daemon gets a free
port, is waited for on /health/ready, and is stopped with SIGTERM (SIGKILL if it hangs).
"""
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
# Small enough for a shared 2-core CI machine; every test keeps its outputs short.
# --cpu-activations int16: the exact path on every host. The default (auto) takes 8-bit
# activations where the CPU has AMX, and many tests compare greedy text with exact references,
# across tensor-parallel sizes or between file formats, or rely on what this model writes on the
# exact path (an EOS, a finished JSON object); test_activations.py runs the default.
# $SLUICE_TEST_ARGS adds flags to every daemon (e.g. "--log-level debug" when chasing a failure).
BASE_ARGS = ["--max-model-len", "2048", "--kv-cache-memory", "256M", "--max-num-seqs", "32", "--timeout", "20",
             "--cpu-activations", "int16", *os.environ.get("SLUICE_TEST_ARGS", "").split()]


def binary():
    if os.environ.get("SLUICE_BIN"):
        return Path(os.environ["SLUICE_BIN"])
    return ROOT / os.environ.get("SLUICE_BUILD", "build") / "sluice"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A daemon on the default model with base_args (BASE_ARGS unless given), then args."""

    def __init__(self, args, api_key=None, base_args=None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api_key = api_key
        self.log_path = ROOT / "build" / f"sluice-test-{self.port}.log"
        self.log_path.parent.mkdir(exist_ok=True)
        base = BASE_ARGS if base_args is None else base_args
        cmd = [str(binary()), "--model", str(MODEL), "--port", str(self.port), *base, *args]
        if api_key:
            cmd += ["--api-key", api_key]
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT)
        self.wait_ready()

    def wait_ready(self, timeout=60):
        t0 = time.time()
        while time.time() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sluice exited with {self.proc.returncode}:\n{self.log_text()}")
            try:
                if requests.get(self.url + "/health/ready", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"sluice not ready after {timeout} s:\n{self.log_text()}")

    def log_text(self):
        self.log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

    def headers(self):
        h = {"Content-Type": "application/json"}
        if self.api_key:
            h["Authorization"] = f"Bearer {self.api_key}"
        return h

    def post(self, path, body=None, data=None, headers=None, **kw):
        h = self.headers() if headers is None else headers
        return requests.post(self.url + path, json=body, data=data, headers=h, timeout=kw.pop("timeout", 120), **kw)

    def get(self, path, **kw):
        return requests.get(self.url + path, headers=self.headers(), timeout=kw.pop("timeout", 30), **kw)

    def metrics(self):
        """The sluice: samples as {name_with_labels_minus_model: value}."""
        out = {}
        for line in requests.get(self.url + "/metrics", timeout=10).text.splitlines():
            if line.startswith("sluice:"):
                name, value = line.rsplit(" ", 1)
                out[name.replace('model_name="%s"' % self.model_id(), "").replace("{,", "{").replace("{}", "")] = float(value)
        return out

    def model_id(self):
        if not hasattr(self, "_model_id"):
            self._model_id = requests.get(self.url + "/v1/models", headers=self.headers(), timeout=10).json()["data"][0]["id"]
        return self._model_id

    def client(self, api_key=None, **kw):
        import httpx
        import openai
        # Our own httpx client: openai 1.54's default one passes `proxies`, which httpx >= 0.28 lacks.
        return openai.OpenAI(base_url=self.url + "/v1", api_key=api_key or self.api_key or "none", max_retries=0,
                             http_client=httpx.Client(timeout=300), **kw)

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


