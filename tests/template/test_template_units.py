"""Checks the expectations of the C unit tests (tests/unit/test_template.c) against jinja2.

The unit test's tables say what each small template must render to; this test asks jinja2
the same question, so a wrong expectation cannot hide in the C file. Outputs must be equal;
where the table expects an error jinja2 must fail too, with the same message for
raise_exception. Needs $SLUICE_BUILD/tests/test_template (default build/).
"""
import datetime
import json
import os
import subprocess
from pathlib import Path

import pytest
from jinja2.exceptions import TemplateError

from test_template_diff import ROOT, hf_environment

NOW = 1700000000  # the unit test's fixed clock, in UTC


def unit_binary():
    build = Path(os.environ.get("SLUICE_BUILD", "build"))
    if not build.is_absolute():
        build = ROOT / build
    return build / "tests" / "test_template"


def jinja2_result(env, template, vars):
    try:
        compiled = env.from_string(template)
    except SyntaxError as e:  # TemplateSyntaxError, and Python's own for a misplaced break
        return ("parse", str(e))
    except TemplateError as e:  # an unknown filter or test
        return ("parse", str(e))
    try:
        return ("ok", compiled.render(**vars))
    except TemplateError as e:
        return ("raised" if e.__class__ is TemplateError else "error", str(e))
    except Exception as e:
        return ("error", f"{type(e).__name__}: {e}")


@pytest.mark.filterwarnings("ignore:invalid escape sequence:DeprecationWarning")
def test_unit_expectations_match_jinja2():
    binary = unit_binary()
    if not binary.exists():
        pytest.fail(f"{binary} is missing: build it (make, or SLUICE_BUILD=dir with tests/test_template)")
    dump = subprocess.run([str(binary), "--dump-cases"], capture_output=True, check=True, timeout=60)
    cases = [json.loads(line) for line in dump.stdout.decode().splitlines()]
    assert len(cases) >= 150

    env = hf_environment()
    now = datetime.datetime.fromtimestamp(NOW, datetime.timezone.utc)
    env.globals["strftime_now"] = lambda fmt: now.strftime(fmt)
    wrong = []
    for c in cases:
        kind, text = jinja2_result(env, c["template"], c["vars"])
        want = c["want"]
        if want.startswith("RAISED:"):
            ok = (kind, text) == ("raised", want[len("RAISED:") :])
        elif want.startswith("PARSE:") and "'include'" in want:
            ok = kind != "ok"  # jinja2 parses it and fails at render, for want of a loader
        elif want.startswith("PARSE:"):
            ok = kind == "parse"
        elif want.startswith("ERR:"):
            ok = kind == "error"
        else:
            ok = (kind, text) == ("ok", want)
        if not ok:
            wrong.append(f"{c['template']!r}: table says {want!r}, jinja2 gives {kind} {text!r}")
    assert not wrong, f"{len(wrong)} of {len(cases)} unit expectations disagree with jinja2:\n" + "\n".join(wrong[:20])
