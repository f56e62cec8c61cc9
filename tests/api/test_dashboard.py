"""docker/grafana-dashboard.json against a real /metrics, and --metrics-vllm-names.

Every PromQL expression in the dashboard (panel targets and template variables) is taken apart
for its series selectors (metric{label op "value"}) and its grouping labels (by (...)); each
metric must be on /metrics, each label it filters or groups by must be on that metric's
samples, and each exact label value must be one the server writes. The panels must cover what
an operator looks at (load, KV cache, prefix hits, TTFT / TPOT / e2e, tokens/s, 429s).

With --metrics-vllm-names the series vLLM's own example dashboard queries
(examples/observability/prometheus_grafana/grafana.json in vLLM) are there under vllm:, with
the same values as their sluice: twins.
"""
import json
import re

import pytest
import requests

from conftest import ROOT

DASHBOARD = ROOT / "docker" / "grafana-dashboard.json"

SELECTOR = re.compile(r"(?<![\w:])([a-zA-Z_][a-zA-Z0-9_]*:[a-zA-Z0-9_:]+)\s*(\{[^}]*\})?")
MATCHER = re.compile(r'\s*([a-zA-Z_]\w*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
LABEL_VALUES = re.compile(r"label_values\(\s*([a-zA-Z_:][\w:]*)\s*,\s*(\w+)\s*\)")
SAMPLE = re.compile(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')

# What vLLM's example dashboard queries (less the series only vLLM has: the per-sequence-group
# request_max_num_generation_tokens), and what each repeats of sluice's own (their twin).
VLLM_DASHBOARD = {
    "vllm:e2e_request_latency_seconds_bucket", "vllm:e2e_request_latency_seconds_sum",
    "vllm:e2e_request_latency_seconds_count", "vllm:prompt_tokens_total", "vllm:generation_tokens_total",
    "vllm:inter_token_latency_seconds_bucket", "vllm:inter_token_latency_seconds_sum",
    "vllm:inter_token_latency_seconds_count", "vllm:num_requests_running", "vllm:num_requests_waiting",
    "vllm:time_to_first_token_seconds_bucket", "vllm:time_to_first_token_seconds_sum",
    "vllm:time_to_first_token_seconds_count", "vllm:kv_cache_usage_perc", "vllm:request_prompt_tokens_bucket",
    "vllm:request_generation_tokens_bucket", "vllm:request_success_total", "vllm:request_queue_time_seconds_sum",
    "vllm:request_prefill_time_seconds_sum", "vllm:request_decode_time_seconds_sum",
    # the names older vLLM dashboards use for two of them
    "vllm:gpu_cache_usage_perc", "vllm:time_per_output_token_seconds_bucket",
}


def exposition(url):
    """{metric: [labels dict of each sample]} from /metrics."""
    out = {}
    for line in requests.get(url + "/metrics", timeout=10).text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, f"unparsable sample line: {line}"
        out.setdefault(m.group(1), []).append(dict(LABEL.findall(m.group(2) or "")))
    return out


def expressions(dash):
    """(where, PromQL) for every query in the dashboard."""
    out = []
    for p in dash["panels"]:
        for t in p["targets"]:
            out.append((f"panel '{p['title']}' {t['refId']}", t["expr"]))
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            out.append((f"variable {v['name']}", v["query"]["query"] if isinstance(v["query"], dict) else v["query"]))
    return out


def check_expression(where, expr, series):
    """The problems of one expression against the exposition (a list of strings)."""
    problems = []
    expr = expr.replace("$__rate_interval", "1m").replace("$model_name", ".*")
    used = []  # (metric, labels it filters on)
    for name, label in LABEL_VALUES.findall(expr):
        used.append((name, [(label, None, None)]))
    for m in SELECTOR.finditer(LABEL_VALUES.sub("", expr)):
        body = (m.group(2) or "{}")[1:-1]
        matchers = MATCHER.findall(body)
        if MATCHER.sub("", body).strip(" ,"):
            problems.append(f"{where}: cannot read the label matchers {{{body}}}")
        used.append((m.group(1), matchers))
    if not used:
        return [f"{where}: no metric in {expr}"]
    for name, matchers in used:
        samples = series.get(name)
        if not samples:
            problems.append(f"{where}: {name} is not on /metrics")
            continue
        for label, op, value in matchers:
            values = {s[label] for s in samples if label in s}
            if not values:
                problems.append(f"{where}: {name} has no label {label}")
            elif op == "=" and value not in values:
                problems.append(f"{where}: {name}{{{label}=\"{value}\"}} matches nothing (values: {sorted(values)})")
            elif op == "=~" and not any(re.fullmatch(value, v) for v in values):
                problems.append(f"{where}: {name}{{{label}=~\"{value}\"}} matches nothing")
    for group in GROUPING.findall(expr):
        for label in filter(None, (g.strip() for g in group.split(","))):
            if not any(label in s for name, _ in used for s in series.get(name, [])):
                problems.append(f"{where}: grouped by {label}, which none of its metrics has")
    return problems


@pytest.fixture(scope="module")
def dash():
    return json.loads(DASHBOARD.read_text())


def test_dashboard_queries_exist_on_metrics(server, client, dash):
    # one request first, so that every histogram and counter has been written at least once
    client.chat.completions.create(model=server.model_id(), messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
    series = exposition(server.url)
    assert not [k for k in series if k.startswith("vllm:")], "vllm: names without --metrics-vllm-names"
    exprs = expressions(dash)
    assert len(exprs) >= 20
    problems = [p for where, e in exprs for p in check_expression(where, e, series)]
    assert not problems, "\n".join(problems)
    queried = {m.group(1) for _, e in exprs for m in SELECTOR.finditer(e)}
    for wanted in ["sluice:num_requests_running", "sluice:num_requests_waiting", "sluice:kv_cache_usage_perc",
                   "sluice:prefix_cache_hits_total", "sluice:prefix_cache_queries_total",
                   "sluice:time_to_first_token_seconds_bucket", "sluice:inter_token_latency_seconds_bucket",
                   "sluice:e2e_request_latency_seconds_bucket", "sluice:generation_tokens_total",
                   "sluice:prompt_tokens_total", "sluice:requests_rejected_total"]:
        assert wanted in queried, f"the dashboard does not show {wanted}"
    assert {p["id"] for p in dash["panels"]} == set(range(1, len(dash["panels"]) + 1))


def test_the_checker_catches_what_it_should(server):
    series = exposition(server.url)
    ok = 'sum by (le) (rate(sluice:time_to_first_token_seconds_bucket{model_name=~"$model_name"}[5m]))'
    assert check_expression("ok", ok, series) == []
    bad = {
        'rate(sluice:no_such_metric_total[5m])': "not on /metrics",
        'sluice:num_requests_running{pod="x"}': "has no label pod",
        'sluice:requests_rejected_total{reason="quota"}': "matches nothing",
        'sum by (finished_reason) (sluice:num_requests_running)': "grouped by finished_reason",
        'label_values(sluice:num_requests_running, instance)': "has no label instance",
        'sluice:num_requests_running{model_name~"x"}': "cannot read",
    }
    for expr, want in bad.items():
        problems = check_expression("bad", expr, series)
        assert problems and want in problems[0], (expr, problems)


def test_vllm_names(start_server):
    srv = start_server("--metrics-vllm-names")
    srv.post("/v1/completions", {"prompt": "Hi", "max_tokens": 2}).raise_for_status()
    series = exposition(srv.url)
    missing = VLLM_DASHBOARD - set(series)
    assert not missing, f"vLLM's dashboard series missing: {sorted(missing)}"
    text = requests.get(srv.url + "/metrics", timeout=10).text
    values = dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    twins = 0
    for k, v in values.items():
        if k.startswith("vllm:"):
            twin = "sluice:" + k[5:].replace("gpu_cache_usage_perc", "kv_cache_usage_perc").replace(
                "time_per_output_token_seconds", "inter_token_latency_seconds")
            assert values.get(twin) == v, (k, v, twin, values.get(twin))
            twins += 1
    assert twins > 100
