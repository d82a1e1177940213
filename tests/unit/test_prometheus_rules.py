"""cluster/prometheus: `promtool check` on the config and rules, `promtool test rules` on made-up series.

promtool comes with Debian's ``prometheus`` package (``.ci/run`` installs it); its absence fails the
test rather than skipping it, so CI cannot pass without the rules having been checked.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from dwray.config import load_config
from dwray.core.slo import rules as slo_rules

CLUSTER = Path(__file__).resolve().parents[2] / "cluster" / "prometheus"
RULES = CLUSTER / "rules.yml"
SLO_RULES = CLUSTER / "slo_rules.yml"


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool") or ("/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None)
    if path is None:
        pytest.fail("promtool is missing: install Debian's prometheus package (apt-get install prometheus)")
    return path


def _run(promtool: str, *args: str | Path) -> str:
    done = subprocess.run([promtool, *map(str, args)], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"promtool {' '.join(map(str, args))} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_promtool_checks_the_rules_and_the_config(promtool: str) -> None:
    out = _run(promtool, "check", "rules", RULES, SLO_RULES)
    assert "SUCCESS: 19 rules found" in out and "SUCCESS: 33 rules found" in out
    assert "SUCCESS" in _run(promtool, "check", "config", CLUSTER / "prometheus.yml")


def _series(name: str, values: str, **labels: str) -> dict[str, str]:
    inner = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    return {"series": f"{name}{{{inner}}}", "values": values}


def _slo_alerts(objective: str, long_windows: list[str]) -> list[dict[str, Any]]:
    """The alerts ``slo_rules.yml`` says fire for ``objective`` over ``long_windows``, labels and annotations."""
    content = yaml.safe_load(SLO_RULES.read_text())
    recording, alerting = content["groups"]
    series_labels = next(r["labels"] for r in recording["rules"] if r["labels"]["slo"] == objective)
    return [{"exp_labels": {**series_labels, **a["labels"]}, "exp_annotations": a["annotations"]}
            for a in alerting["rules"]
            if a["labels"]["slo"] == objective and a["labels"]["long_window"] in long_windows]


def _test_file(tmp_path: Path, tests: list[dict[str, Any]]) -> Path:
    path = tmp_path / "rules_test.yml"
    path.write_text(yaml.safe_dump({"rule_files": [str(RULES), str(SLO_RULES)], "evaluation_interval": "1m",
                                    "tests": tests}, sort_keys=False))
    return path


def test_burn_rate_alerts_fire_on_fast_burn_and_stay_quiet_within_budget(promtool: str, tmp_path: Path) -> None:
    ok = {"operation": "GetObject", "status": "200", "replica": "r1"}
    failed = {**ok, "status": "503"}
    fast_burn = {
        "interval": "1m",
        # 1 request in 11 fails: 9 % errors, 91x the 0.1 % budget of the availability SLO.
        "input_series": [_series("dwray_s3_requests_total", "0+100x180", **ok),
                         _series("dwray_s3_requests_total", "0+10x180", **failed),
                         _series("dwray_s3_requests_total", "0+1000x180", operation="health", status="503",
                                 replica="r1")],
        "promql_expr_test": [{
            "expr": 'dwray:slo_error_ratio:rate5m{slo="availability"}', "eval_time": "60m",
            "exp_samples": [{"labels": 'dwray:slo_error_ratio:rate5m{kind="availability",operations="all",'
                                       'slo="availability"}', "value": 10 / 110}]}, {
            "expr": "dwray:s3_errors:ratio_rate5m", "eval_time": "60m",
            "exp_samples": [{"labels": "dwray:s3_errors:ratio_rate5m", "value": 10 / 110}]}],
        "alert_rule_test": [
            {"eval_time": "120m", "alertname": "DwraySloBurnRate",
             "exp_alerts": _slo_alerts("availability", ["1h", "6h", "1d", "3d"])},
            {"eval_time": "120m", "alertname": "DwrayHighErrorRatio",
             "exp_alerts": [{"exp_labels": {"severity": "page"},
                             "exp_annotations": {"summary": "9.091% of S3 requests answered 5xx over 5 minutes"}}]},
        ],
    }
    within_budget = {
        "interval": "1m",
        # 1 in 4000 fails: a burn rate of 0.25, under every alert's factor.
        "input_series": [_series("dwray_s3_requests_total", "0+3999x180", **ok),
                         _series("dwray_s3_requests_total", "0+1x180", **failed)],
        "alert_rule_test": [{"eval_time": "120m", "alertname": "DwraySloBurnRate", "exp_alerts": []},
                            {"eval_time": "120m", "alertname": "DwrayHighErrorRatio", "exp_alerts": []}],
    }
    slow_reads = {
        "interval": "1m",
        # 100 reads a minute, 80 within 0.25 s: 20 % slow against a 1 % budget (read-latency, 0.25 s, 99 %).
        "input_series": [
            _series("dwray_s3_request_duration_seconds_bucket", "0+80x180", operation="GetObject", le="0.25",
                    replica="r1"),
            _series("dwray_s3_request_duration_seconds_bucket", "0+100x180", operation="GetObject", le="+Inf",
                    replica="r1"),
            _series("dwray_s3_request_duration_seconds_count", "0+100x180", operation="GetObject", replica="r1")],
        "promql_expr_test": [{
            # round(): 1 - 80/100 is 0.2000000000000007 in floating point.
            "expr": 'round(dwray:slo_error_ratio:rate1h{slo="read-latency"}, 0.0001)', "eval_time": "90m",
            "exp_samples": [{"labels": '{kind="latency",operations="read",slo="read-latency"}', "value": 0.2}]}],
        "alert_rule_test": [{"eval_time": "120m", "alertname": "DwraySloBurnRate",
                             "exp_alerts": _slo_alerts("read-latency", ["1h", "6h", "1d", "3d"])}],
    }
    no_errors = {
        "interval": "1m",
        # No 5xx series at all: the error ratio is 0, not missing (a missing ratio would hide the SLO).
        "input_series": [_series("dwray_s3_requests_total", "0+50x30", **ok)],
        "promql_expr_test": [
            {"expr": 'dwray:slo_error_ratio:rate5m{slo="availability"}', "eval_time": "20m",
             "exp_samples": [{"labels": 'dwray:slo_error_ratio:rate5m{kind="availability",operations="all",'
                                        'slo="availability"}', "value": 0}]},
            {"expr": "dwray:s3_errors:ratio_rate5m", "eval_time": "20m",
             "exp_samples": [{"labels": "dwray:s3_errors:ratio_rate5m", "value": 0}]}],
    }
    out = _run(promtool, "test", "rules", _test_file(tmp_path, [fast_burn, within_budget, slow_reads, no_errors]))
    assert "SUCCESS" in out


def test_operational_alerts(promtool: str, tmp_path: Path) -> None:
    plugin = {
        "interval": "1m",
        "input_series": [
            _series("dwray_plugin_state", "1x20", child="kms", state="running"),
            _series("dwray_plugin_state", "0x5 1x15", child="catalog", state="running"),
            _series("dwray_plugin_restarts_total", "0+1x20", child="catalog"),
            _series("dwray_plugin_breaker_state", "0x3 1x17", child="catalog", state="open"),
            _series("up", "1x3 0x17", job="dwray-gateway", instance="gw:9000"),
            _series("dwray_scrub_last_pass_unrepairable", "0x3 2x17"),
        ],
        "alert_rule_test": [
            {"eval_time": "4m", "alertname": "DwrayPluginNotRunning",
             "exp_alerts": [{"exp_labels": {"severity": "page", "child": "catalog"},
                             "exp_annotations": {"summary": "plugin catalog has not been running for 2 minutes"}}]},
            {"eval_time": "10m", "alertname": "DwrayPluginNotRunning", "exp_alerts": []},
            {"eval_time": "18m", "alertname": "DwrayPluginRestarting",
             "exp_alerts": [{"exp_labels": {"severity": "ticket", "child": "catalog"},
                             "exp_annotations": {"summary": "plugin catalog restarted 15 times in 15 minutes"}}]},
            {"eval_time": "6m", "alertname": "DwrayBreakerOpen",
             "exp_alerts": [{"exp_labels": {"severity": "ticket", "child": "catalog"},
                             "exp_annotations": {"summary": "a caller's circuit breaker for plugin catalog is "
                                                            "open"}}]},
            {"eval_time": "6m", "alertname": "DwrayGatewayDown",
             "exp_alerts": [{"exp_labels": {"severity": "page", "job": "dwray-gateway", "instance": "gw:9000"},
                             "exp_annotations": {"summary": "dwray gateway gw:9000 does not answer /metrics"}}]},
            {"eval_time": "5m", "alertname": "DwrayScrubUnrepairable",
             "exp_alerts": [{"exp_labels": {"severity": "page"},
                             "exp_annotations": {"summary": "the last scrub pass found 2 blob(s) with no good copy "
                                                            "left"}}]},
        ],
    }
    assert "SUCCESS" in _run(promtool, "test", "rules", _test_file(tmp_path, [plugin]))


def test_a_failing_expectation_fails_promtool(promtool: str, tmp_path: Path) -> None:
    """The harness can fail: an alert that must not fire on a healthy warehouse is expected and is missing."""
    quiet = {"interval": "1m",
             "input_series": [_series("dwray_s3_requests_total", "0+100x100", operation="GetObject", status="200")],
             "alert_rule_test": [{"eval_time": "90m", "alertname": "DwraySloBurnRate",
                                  "exp_alerts": _slo_alerts("availability", ["1h"])}]}
    done = subprocess.run([promtool, "test", "rules", str(_test_file(tmp_path, [quiet]))], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode != 0 and "FAILED" in done.stdout + done.stderr


def test_slo_rules_file_matches_the_example_objectives() -> None:
    config = load_config(CLUSTER / "slo.toml", env={})
    assert yaml.safe_load(SLO_RULES.read_text()) == slo_rules(config.slo)


# -- the Grafana dashboard ----------------------------------------------------------

DASHBOARD = CLUSTER.parent / "grafana" / "dwray.json"


def _page_names() -> set[str]:
    """Every series name the gateway's page can carry, from a page built with every part present."""
    from prometheus_client.parser import text_string_to_metric_families

    from actors.call_metrics import PLUGIN_CALLS
    from dwray.errors import InvalidArgument
    from serve_apps.metrics import GatewayMetrics, render

    metrics = GatewayMetrics(guards=lambda: {"catalog": {"state": "closed"}},
                             memory=lambda: {"level": "normal", "used": 1, "limit": 2})
    metrics.observe("PutObject", 200, 0.01, 1, 1)
    PLUGIN_CALLS.observe("catalog", "get", 0.001, InvalidArgument("a bad name"))
    storage = {"targets": {"pool": {"members": {"a": {"up": True}}, "blobs": 1, "bytes": 1, "hints_pending": 0,
                                    "repairs": 0, "moves": 0, "tiers": {"hot": {"bytes": 1}}}},
               "scrubber": {"rounds": 1, "found": {}, "running": False,
                            "last_pass": {"finished": 1.0, "unrepairable": {}}}}
    plugins = [{"id": "catalog", "state": "running", "restarts": 0, "breaker": "closed"}]
    text = render({"r": metrics.exposition()}, plugins=plugins, tenants={"t": {"objects": 1, "bytes": 1}},
                  draining=False, supervisor={"state": "running", "tree_restarts": 0}, storage=storage)
    return {sample.name for family in text_string_to_metric_families(text.decode()) for sample in family.samples}


def _recorded_names() -> set[str]:
    return {rule["record"] for path in (RULES, SLO_RULES) for group in yaml.safe_load(path.read_text())["groups"]
            for rule in group["rules"] if "record" in rule}


def test_dashboard_is_valid_json_and_its_panels_use_series_that_exist(promtool: str, tmp_path: Path) -> None:
    import json
    import re

    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "dwray-overview" and dashboard["panels"]
    known = _page_names() | _recorded_names()
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    assert len(exprs) >= 20
    for expr in exprs:
        for name in re.findall(r"\b(?:ray_)?dwray[a-zA-Z0-9_:]*", expr):
            # Ray's port shows the same series prefixed ray_ (serve_apps.metrics_ray, actors.call_metrics).
            assert name.removeprefix("ray_") in known, f"{name} in {expr!r} is on no page and in no rule"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    # Every expression parses as PromQL: promtool checks them as recording rules.
    check = tmp_path / "dashboard_rules.yml"
    check.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:panel_{i}", "expr": expr} for i, expr in enumerate(exprs)]}]}))
    assert f"SUCCESS: {len(exprs)} rules found" in _run(promtool, "check", "rules", check)
