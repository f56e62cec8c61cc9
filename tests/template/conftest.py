"""Prints the differential test's pass count at the end of the pytest run."""


def pytest_terminal_summary(terminalreporter):
    try:
        from test_template_diff import CASES, CONTEXTS, SUMMARY, TEMPLATES
    except ImportError:
        return
    if not SUMMARY["cases"]:
        return
    terminalreporter.write_line(
        f"chat templates vs jinja2: {len(TEMPLATES)} templates x {len(CONTEXTS)} contexts = {len(CASES)} cases; "
        f"ran {SUMMARY['cases']}: {SUMMARY['identical']} byte-identical, {SUMMARY['both_failed']} failing in both"
    )
