"""Requantized copies of the default model (issue 16 item 5): the K-quant and IQ4 files load and
give the exact forward's text, on both activation paths.

At test time llama.cpp's llama-quantize (scripts/build-llama-quantize.sh: the pinned
llama-cpp-python sdist, built once into $SLUICE_CACHE) requantizes
models/SmolLM2-135M-Instruct.Q4_1.gguf into each of TYPES. The files mix types: the model's
576-wide rows are not whole 256s, so llama-quantize falls back to Q5_0 / Q5_1 / Q8_0 / IQ4_NL
for many tensors (Q4_K_M: 16 Q4_K, 14 Q6_K, 166 Q5_0, 15 Q8_0 tensors). Each file must be the
bytes tests/data/requant/<TYPE>.txt was made from (its sha256; scripts/make-golden-requant.py
computed that file's exact float64 forward, teacher-forced along each golden prompt and the
exact greedy continuation of tests/data/golden/exact.txt).

sluice ($SLUICE_BUILD/tools/forward_dump --top 2, one prefill per prompt) along the same text,
with 16-bit and with 8-bit activations (--int8): at every step whose exact top-1/top-2 margin is
at least the path's tie margin, our top-1 must be the exact one (so a greedy run follows the
exact text until a near tie), at least MIN_AGREE of all steps must agree, and where the top-1
agrees its logit must be within the path's tolerance. The margins and tolerances are
tests/unit/test_model.c's for the default model: EXACT_TIE_MARGIN 0.2 / logit 0.1 for int16
(only float rounding: the K-quants and the fallback types are dequantized, Q8_0 meets 16-bit
activations), INT8_TIE_MARGIN 1.0 / LOGIT_MAX_TOL 2.0 for int8 (activations rounded to 8 bits,
amax/254 per element, as llama.cpp does).

Cost: building llama-quantize ~10 minutes on 2 cores, once per cache; requantizing ~4 minutes
(Q3_K_M, Q2_K and IQ4_XS search their scales); the comparisons ~2 minutes.
SLUICE_SKIP_REQUANT=1 skips the module (say so wherever it is set).
"""
import hashlib
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / os.environ.get("SLUICE_BUILD", "build")
SOURCE = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
TYPES = ["Q4_K_M", "Q5_K_M", "Q6_K", "Q3_K_M", "Q2_K", "IQ4_XS"]
PATHS = {"int16": ([], 0.2, 0.1, 0.99), "int8": (["--int8"], 1.0, 2.0, 0.95)}

# make san (SANITIZED=1) skips the module: its sanitized forwards over 768 steps per file take
# many minutes of CI, and the sanitizers already watch every kernel these files use through
# test_matmul_q8 and test_quant (make test runs the module).
pytestmark = [pytest.mark.skipif(os.environ.get("SLUICE_SKIP_REQUANT") == "1",
                                 reason="SLUICE_SKIP_REQUANT=1: requantized-model tests skipped"),
              pytest.mark.skipif(os.environ.get("SANITIZED") == "1", reason="make test runs the requant module")]


@pytest.fixture(scope="module")
def quantize():
    out = subprocess.run(["bash", str(ROOT / "scripts" / "build-llama-quantize.sh")], check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    return out.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def requant_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("requant")


def golden(t):
    g, cur = {"prompts": []}, None
    for line in (ROOT / "tests" / "data" / "requant" / f"{t}.txt").read_text().splitlines():
        w = line.split()
        if not w or w[0].startswith("#"):
            continue
        if w[0] == "sha256":
            g["sha256"] = w[1]
        elif w[0] == "prompt":
            cur = {"index": int(w[1]), "n": int(w[3]), "top": []}
        elif w[0] == "seq":
            cur["seq"] = [int(x) for x in w[1:]]
        elif w[0] == "top":
            cur["top"].append((int(w[2]), float(w[3]), int(w[4]), float(w[5])))
        elif w[0] == "end":
            g["prompts"].append(cur)
    return g


def requantized(quantize, requant_dir, t):
    path = requant_dir / f"{t}.gguf"
    if not path.exists():
        tmp = requant_dir / f"{t}.tmp.gguf"
        subprocess.run(["nice", quantize, "--allow-requantize", str(SOURCE), str(tmp), t, "2"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        tmp.rename(path)
    return path


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("qtype", TYPES)
def test_requantized_matches_exact(quantize, requant_dir, qtype, path):
    g = golden(qtype)
    model = requantized(quantize, requant_dir, qtype)
    assert hashlib.sha256(model.read_bytes()).hexdigest() == g["sha256"], \
        f"{qtype}: llama-quantize made other bytes than the golden's: rerun scripts/make-golden-requant.py"
    flags, tie, logit_tol, min_agree = PATHS[path]
    agree = total = 0
    for p in g["prompts"]:
        first = p["n"] - 1
        out = subprocess.run([str(BUILD / "tools" / "forward_dump"), "--top", "2", *flags, str(model), str(first),
                              *map(str, p["seq"])], check=True, capture_output=True, text=True).stdout
        ours = [l.split() for l in out.splitlines()]
        assert len(ours) == len(p["top"]), f"{qtype} prompt {p['index']}: {len(ours)} rows"
        for step, (row, (id1, l1, _, l2)) in enumerate(zip(ours, p["top"])):
            top, logit = int(row[2]), float(row[3])
            total += 1
            if top == id1:
                agree += 1
                assert abs(logit - l1) <= logit_tol, \
                    f"{qtype} {path} prompt {p['index']} step {step}: logit {logit:.4f}, exact {l1:.4f}"
            else:
                assert l1 - l2 < tie, (f"{qtype} {path} prompt {p['index']} step {step}: ours {top}, exact {id1} "
                                       f"by a margin of {l1 - l2:.3f}")
    print(f"{qtype} {path}: top-1 agreement with the exact forward {agree}/{total}")
    assert agree >= min_agree * total, f"{qtype} {path}: {agree}/{total}"
