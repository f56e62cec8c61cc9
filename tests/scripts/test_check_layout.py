"""scripts/check-layout.py, the tree's layout rules that `make test` checks: on small made-up trees,
each rule holds for what it allows and fails, naming the place, for what it forbids; and the real
tree passes."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "check-layout.py"

# A small tree that keeps every rule: the folders' headers, and includes that each rule allows.
BASE = {
    "common/common.h": "",
    "config/config.h": '#include "common/common.h"\n',
    "kernels/kernels.h": '#include "common/common.h"\n',
    "scheduler/scheduler.h": '#include "config/config.h"\n',
    "engine/engine.h": '#include "engine/sampling/sampler.h"\n#include "scheduler/scheduler.h"\n',
    "engine/runner.h": '#include "engine/model/model.h"\n#include "kernels/kernels.h"\n',
    "engine/model/model.h": '#include "kernels/kernels.h"\n#include "engine/model/gguf.h"\n',
    "engine/model/gguf.h": '#include "common/common.h"\n',
    "engine/tokenizer/tokenizer.h": '#include "engine/model/gguf.h"\n',
    "engine/tokenizer/bpe.c": '#include "tokenizer.h"\n',  # beside the file
    "engine/template/template.h": '#include "common/common.h"\n',
    "engine/sampling/sampler.h": '#include "engine/tokenizer/tokenizer.h"\n',
    "server/http.c": '#include "engine/engine.h"\n#include "engine/template/template.h"\n',
    "tests/unit/test_x.c": '#include "engine/runner.h"\n#include "server/http.c"\n',
}


def check(tmp_path, extra):
    for path, text in {**BASE, **extra}.items():
        f = tmp_path / path
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
    r = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], capture_output=True, text=True, timeout=60)
    return r.returncode, r.stdout


def test_clean_tree_passes(tmp_path):
    rc, out = check(tmp_path, {})
    assert rc == 0, out
    assert out.strip().endswith("4 passed, 0 failed")


@pytest.mark.parametrize("path,text,rule,where", [
    # a room includes the engine's own files, or the server
    ("engine/model/bad.c", '#include "engine/engine.h"\n', "includes point one way", "engine/model/bad.c:1"),
    ("engine/sampling/bad.c", '\n#include "engine/runner.h"\n', "includes point one way", "engine/sampling/bad.c:2"),
    ("engine/template/bad.c", '#include "server/http.c"\n', "includes point one way", "engine/template/bad.c:1"),
    # rooms among themselves: only the allowed order (tokenizer -> model, sampling -> tokenizer)
    ("engine/model/bad.c", '#include "engine/tokenizer/tokenizer.h"\n', "includes point one way", "bad.c:1"),
    ("engine/tokenizer/bad.c", '#include "engine/template/template.h"\n', "includes point one way", "bad.c:1"),
    # the engine never includes the server; the server sees no engine internals
    ("engine/bad.c", '#include "server/http.c"\n', "includes point one way", "engine/bad.c:1"),
    ("server/bad.c", '#include "engine/runner.h"\n', "includes point one way", "server/bad.c:1"),
    ("server/bad.c", '#include "engine/engine_impl.h"\n', "every #include names a file", "server/bad.c:1"),
    # the lower folders
    ("common/bad.c", '#include "config/config.h"\n', "includes point one way", "common/bad.c:1"),
    ("kernels/bad.c", '#include "scheduler/scheduler.h"\n', "includes point one way", "kernels/bad.c:1"),
    ("scheduler/bad.c", '#include "kernels/kernels.h"\n', "includes point one way", "scheduler/bad.c:1"),
    ("config/bad.c", '#include "engine/engine.h"\n', "includes point one way", "config/bad.c:1"),
    # product code never reaches into tests/
    ("engine/bad.c", '#include "tests/unit/test_x.c"\n', "includes point one way", "engine/bad.c:1"),
    # a stale path
    ("engine/bad.c", '#include "engine/gguf.h"\n', "every #include names a file", "engine/bad.c:1"),
    # size
    ("engine/big.c", "int x;\n" * 1001, "no source file over 1000 lines", "engine/big.c: 1001 lines"),
    # two objects of one name in one library (ar keeps base names only)
    ("engine/model/bpe.c", "", "no two objects", "engine/model/bpe.c"),
])
def test_each_rule_fails_on_a_breach(tmp_path, path, text, rule, where):
    rc, out = check(tmp_path, {path: text})
    assert rc == 1, out
    assert out.strip().endswith("3 passed, 1 failed"), out
    failing = [ln for ln in out.splitlines() if ln.startswith("FAIL ")]
    assert len(failing) == 1 and rule in failing[0], out
    assert where in out, out


def test_server_may_see_engine_private_headers_only_in_tests(tmp_path):
    # the same include is fine from tests/ (BASE has it) and a breach from server/
    rc, out = check(tmp_path, {"engine/engine_impl.h": "", "server/ok.c": '#include "engine/engine.h"\n'})
    assert rc == 0, out
    rc, out = check(tmp_path, {"server/bad.c": '#include "engine/engine_impl.h"\n'})
    assert rc == 1 and "server/bad.c:1" in out, out


def test_the_tree_passes():
    r = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout
