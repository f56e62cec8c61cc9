"""--config FILE on the daemon: a YAML file of flags (vLLM's form) starts a server with those
settings, the command line wins over it and it over SLUICE_* variables; a bad file stops the
daemon before it listens, with exit status 2 and the file and line in the message.
(Every key and error case is in tests/unit/test_config.c; this is the whole program.)
"""
import os
import subprocess

import requests

from conftest import BASE_ARGS, MODEL, binary, free_port


def test_config_file_settings_and_precedence(start_server, tmp_path):
    cfg = tmp_path / "sluice.yaml"
    cfg.write_text("# vLLM-style keys\n"
                   "served-model-name: [from-file, other]\n"
                   "max-num-seqs: 3\n"
                   "metrics_vllm_names: true\n"
                   "max-n: 2\n")
    os.environ["SLUICE_MAX_N"] = "5"  # the file wins over the variable
    try:
        srv = start_server("--config", str(cfg), "--max-num-seqs", "2")  # the command line wins over the file
    finally:
        del os.environ["SLUICE_MAX_N"]
    assert [m["id"] for m in srv.get("/v1/models").json()["data"]] == ["from-file", "other"]
    assert "vllm:num_requests_running" in requests.get(srv.url + "/metrics", timeout=10).text
    assert "max_num_seqs=2 " in srv.log_text() and f"config={cfg}" in srv.log_text()
    r = srv.post("/v1/completions", {"model": "other", "prompt": "Hi", "max_tokens": 1, "n": 3})
    assert r.status_code == 400 and r.json()["error"]["param"] == "n", r.text  # --max-n 2 from the file


def test_bad_config_file_exits_2_with_file_and_line(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("max-num-seqs: 8\nport: eighty\n")
    p = subprocess.run([str(binary()), "--model", str(MODEL), "--port", str(free_port()), *BASE_ARGS,
                        "--config", str(cfg)], capture_output=True, text=True, timeout=30)
    assert p.returncode == 2
    assert f"{cfg}:2: --port: expected an integer, got 'eighty'" in p.stderr, p.stderr
