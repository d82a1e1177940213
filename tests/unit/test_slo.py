"""SLO maths and config: burn rates, budgets, PromQL, the generated rules and the report (dwray.core.slo)."""
from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from dwray.cli.slo_cmds import rules_yaml
from dwray.config import load_config
from dwray.config_slo import LATENCY_THRESHOLDS, SloConfig, SloObjective
from dwray.core.slo import (
    ALERT_WINDOWS,
    OPERATION_CLASSES,
    budget_left,
    burn_rate,
    error_ratio_query,
    report,
    rules,
    window_label,
)
from dwray.errors import ConfigError, InvalidArgument
from serve_apps.metrics import DURATION_BUCKETS, OPERATIONS

CLUSTER = Path(__file__).resolve().parents[2] / "cluster" / "prometheus"


def test_burn_rate_and_budget() -> None:
    assert burn_rate(0.001, 0.999) == pytest.approx(1.0)
    assert burn_rate(0.0144, 0.999) == pytest.approx(14.4)
    assert burn_rate(0.0, 0.99) == 0.0
    assert burn_rate(None, 0.99) is None
    assert burn_rate(math.nan, 0.99) is None
    assert budget_left(0.0005, 0.999) == pytest.approx(0.5)
    assert budget_left(0.002, 0.999) == pytest.approx(-1.0)  # overspent
    assert budget_left(None, 0.999) is None
    with pytest.raises(InvalidArgument, match="target"):
        burn_rate(0.1, 1.0)
    with pytest.raises(InvalidArgument, match="error ratio"):
        burn_rate(1.5, 0.9)


def test_workbook_factors_for_thirty_days_and_scaled_for_others() -> None:
    assert [round(w.factor(30), 3) for w in ALERT_WINDOWS] == [14.4, 6.0, 3.0, 1.0]
    assert [round(w.factor(7), 3) for w in ALERT_WINDOWS] == [3.36, 1.4, 0.7, 0.233]
    assert [(w.severity, window_label(w.long), window_label(w.short)) for w in ALERT_WINDOWS] == [
        ("page", "1h", "5m"), ("page", "6h", "30m"), ("ticket", "1d", "2h"), ("ticket", "3d", "6h")]


def test_window_labels() -> None:
    assert [window_label(s) for s in (300, 3600, 5400, 86400, 30 * 86400)] == ["5m", "1h", "90m", "1d", "30d"]
    for bad in (0, -60, 90, 1.5, True):
        with pytest.raises(InvalidArgument, match="window"):
            window_label(bad)


def test_operation_classes_name_only_operations_the_metrics_know() -> None:
    for operations in OPERATION_CLASSES.values():
        assert set(operations) <= OPERATIONS
    assert DURATION_BUCKETS == LATENCY_THRESHOLDS


def test_queries() -> None:
    availability = SloObjective(kind="availability", operations="delete", target=0.999)
    query = error_ratio_query(availability, "1h")
    assert 'status=~"5.."' in query and "[1h]" in query
    assert 'operation=~"DeleteObject|DeleteObjects|DeleteBucket|AbortMultipartUpload"' in query
    everything = error_ratio_query(SloObjective(kind="availability", target=0.99), "5m")
    assert 'operation!~"admin|health|metrics"' in everything
    latency = error_ratio_query(SloObjective(kind="latency", operations="read", target=0.99, threshold=1), "6h")
    assert latency.startswith("1 - ") and 'le="1.0"' in latency and "_count{" in latency


def test_config_refuses_bad_objectives() -> None:
    with pytest.raises(ValidationError, match="needs threshold"):
        SloObjective(kind="latency", target=0.99)
    with pytest.raises(ValidationError, match="not a latency bucket bound"):
        SloObjective(kind="latency", target=0.99, threshold=0.3)
    with pytest.raises(ValidationError, match="latency objectives only"):
        SloObjective(kind="availability", target=0.99, threshold=1.0)
    with pytest.raises(ValidationError, match="target"):
        SloObjective(kind="availability", target=1.0)
    with pytest.raises(ValidationError, match="label value"):
        SloConfig(objectives={"bad name": SloObjective(kind="availability", target=0.9)})
    with pytest.raises(ValidationError, match="prometheus_url"):
        SloConfig(prometheus_url="ftp://x")


def test_config_file_errors_name_the_field(tmp_path: Path) -> None:
    path = tmp_path / "dwray.toml"
    path.write_text('[slo.objectives.read]\nkind = "latency"\ntarget = 0.99\nthreshold = 0.3\n')
    with pytest.raises(ConfigError, match=r"slo\.objectives\.read .*dwray\.toml.*latency bucket bound"):
        load_config(path, env={})


def _config() -> SloConfig:
    return SloConfig(objectives={
        "avail": SloObjective(kind="availability", target=0.999),
        "reads": SloObjective(kind="latency", operations="read", target=0.99, threshold=0.25),
    })


def test_report_from_a_query_function() -> None:
    asked: list[str] = []

    def query(expression: str) -> float | None:
        asked.append(expression)
        if "le=" in expression:
            return None  # no read traffic
        window = re.search(r"\[(\w+)\]", expression)
        assert window is not None
        return {"30d": 0.0005, "1h": 0.0144, "6h": 0.003}[window.group(1)]

    reports = report(_config(), query)
    assert [r.name for r in reports] == ["avail", "reads"]
    avail, reads = reports
    assert avail.sli == pytest.approx(0.9995)
    assert avail.budget_left == pytest.approx(0.5)
    assert avail.burn_rates == {"1h": pytest.approx(14.4), "6h": pytest.approx(3.0)}
    assert reads.sli is None and reads.budget_left is None and reads.burn_rates == {"1h": None, "6h": None}
    assert reads.to_dict()["threshold"] == 0.25
    assert len(asked) == 6


def test_rules_cover_every_objective_and_window() -> None:
    content = rules(_config())
    recording, alerting = content["groups"]
    windows = {"5m", "30m", "1h", "2h", "6h", "1d", "3d"}
    for name in ("avail", "reads"):
        recorded = {r["record"] for r in recording["rules"] if r["labels"]["slo"] == name}
        assert recorded == {f"dwray:slo_error_ratio:rate{w}" for w in windows}
        alerts = [a for a in alerting["rules"] if a["labels"]["slo"] == name]
        assert [(a["labels"]["severity"], a["labels"]["long_window"]) for a in alerts] == [
            ("page", "1h"), ("page", "6h"), ("ticket", "1d"), ("ticket", "3d")]
    first = alerting["rules"][0]["expr"]
    assert first == ('dwray:slo_error_ratio:rate1h{slo="avail"} > 0.0144 and '
                     'dwray:slo_error_ratio:rate5m{slo="avail"} > 0.0144')
    assert rules(SloConfig()) == {"groups": []}


def test_cluster_slo_rules_are_what_dw_slo_rules_prints_for_the_example() -> None:
    config = load_config(CLUSTER / "slo.toml", env={})
    assert (CLUSTER / "slo_rules.yml").read_text() == rules_yaml(rules(config.slo))
    assert yaml.safe_load((CLUSTER / "slo_rules.yml").read_text()) == rules(config.slo)


def _dw(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dwray.cli", *args], capture_output=True, text=True, timeout=120,
                          check=False)


def test_dw_slo_rules_prints_the_rules_and_refuses_without_objectives(tmp_path: Path) -> None:
    done = _dw("--config", str(CLUSTER / "slo.toml"), "slo", "rules", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == rules(load_config(CLUSTER / "slo.toml", env={}).slo)
    empty = tmp_path / "empty.toml"
    empty.write_text("[slo]\nwindow_days = 7\n")
    done = _dw("--config", str(empty), "slo", "rules")
    assert done.returncode == 1 and "no objectives" in done.stderr
    done = _dw("--config", str(empty), "slo", "report", "--json")
    assert done.returncode == 1
    assert "--prometheus URL" in json.loads(done.stdout)["error"]["message"]
    done = _dw("--config", str(empty), "slo", "report", "--prometheus", "file:///etc/passwd")
    assert done.returncode == 1 and "http://" in done.stderr
