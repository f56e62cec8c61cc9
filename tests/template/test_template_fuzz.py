"""Randomized differential test of the template lexer's whitespace handling against jinja2.

Whitespace control is where renderers drift from jinja2: trim_blocks, lstrip_blocks, the
`-` and `+` markers, comments, raw blocks, CR/LF and Unicode spaces, a trailing newline. This
builds templates from those pieces with a fixed seed (the same cases every run) and checks
that $SLUICE_BUILD/tools/template_render prints exactly what jinja2 does, or fails where it
fails.
"""
import random
import subprocess
import tempfile
from pathlib import Path

import pytest

from test_template_diff import hf_environment, sluice_binary

SEED = 20241125
CASES = 400
DATA = ["", " ", "  ", "\t", "\n", "\n\n", " \n", "\n  ", "x", "a b", "\u3000", "\xa0", "\r\n", "\r", "é", "}", "{", "%", "#"]


def make_template(rnd):
    def mark():
        return rnd.choice(["", "", "-", "+"])

    def piece(depth):
        k = rnd.randrange(9)
        if k == 0:
            return "{{%s 1 %s}}" % (mark(), rnd.choice(["", "-"]))
        if k == 1:
            return "{#%s c %s#}" % (mark(), mark())
        if k == 2 and depth < 2:
            return "{%%%s if true %s%%}%s{%%%s endif %s%%}" % (mark(), mark(), body(depth + 1), mark(), mark())
        if k == 3 and depth < 2:
            return "{%%%s for i in [1, 2] %s%%}%s{%%%s endfor %s%%}" % (mark(), mark(), body(depth + 1), mark(), mark())
        if k == 4:
            raw = rnd.choice(DATA) + "{{ y }}" + rnd.choice(DATA)
            return "{%%%s raw %s%%}%s{%%%s endraw %s%%}" % (mark(), rnd.choice(["", "-"]), raw, mark(), mark())
        if k == 5:
            return "{%%%s set z = 1 %s%%}" % (mark(), mark())
        return rnd.choice(DATA)

    def body(depth):
        return "".join(piece(depth) for _ in range(rnd.randrange(1, 6)))

    return body(0) + rnd.choice(["", "\n", "\n\n", " "])


def test_whitespace_control_matches_jinja2():
    binary = sluice_binary()
    if not binary.exists():
        pytest.fail(f"{binary} is missing: build it (make, or SLUICE_BUILD=dir with tools/template_render)")
    env = hf_environment()
    rnd = random.Random(SEED)
    wrong = []
    with tempfile.TemporaryDirectory() as tmp:
        vars_path = Path(tmp) / "vars.json"
        vars_path.write_text("{}")
        tpl_path = Path(tmp) / "t.jinja"
        for _ in range(CASES):
            src = make_template(rnd)
            try:
                want = ("ok", env.from_string(src).render())
            except Exception as e:
                want = ("error", str(e))
            tpl_path.write_bytes(src.encode("utf-8"))
            proc = subprocess.run([str(binary), str(tpl_path), str(vars_path)], capture_output=True, timeout=60)
            got = ("ok", proc.stdout.decode("utf-8")) if proc.returncode == 0 else ("error", proc.stderr.decode())
            if want[0] != got[0] or (want[0] == "ok" and want[1] != got[1]):
                wrong.append(f"{src!r}: jinja2 {want!r}, sluice {got!r}")
    assert not wrong, f"{len(wrong)} of {CASES} templates differ:\n" + "\n".join(wrong[:10])
