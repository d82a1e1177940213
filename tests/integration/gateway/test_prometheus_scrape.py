"""A real Prometheus scrapes the session gateway and Ray's metrics port, and evaluates cluster/prometheus's rules.

Prometheus (Debian's ``/usr/bin/prometheus``) runs from a temporary folder on a loopback port, scrapes
every second, loads ``rules.yml`` and ``slo_rules.yml``; the test sends S3 traffic, then reads the
recorded series back from Prometheus's HTTP API, checks every rule evaluated without error, and runs
``dw slo report --prometheus`` against it. Prometheus is stopped by its PID.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
import yaml

from dwray.core.ports import free_port
from tests.helpers import wait_until
from tests.integration.gateway.conftest import GatewayUnderTest

CLUSTER = Path(__file__).resolve().parents[3] / "cluster" / "prometheus"
# At most this many S3 requests are sent, over at most TRAFFIC_SECONDS.
TRAFFIC_REQUESTS = 60
TRAFFIC_SECONDS = 15.0


def _prometheus_binary() -> str:
    path = shutil.which("prometheus") or "/usr/bin/prometheus"
    if not Path(path).exists():
        pytest.fail("prometheus is missing: install Debian's prometheus package (apt-get install prometheus)")
    return path


@pytest.fixture(scope="module")
def prometheus(gateway: GatewayUnderTest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Prometheus scraping the gateway's /metrics and Ray's metrics export port; its URL."""
    import ray

    folder = tmp_path_factory.mktemp("prometheus")
    folder.chmod(0o700)
    gateway_address = urlsplit(gateway.endpoint)
    assert gateway_address.scheme == "http", "the session gateway serves plain HTTP"
    ray_port = ray._private.worker.global_worker.node.metrics_export_port
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(CLUSTER / "rules.yml"), str(CLUSTER / "slo_rules.yml")],
        "scrape_configs": [
            {"job_name": "dwray-gateway", "metrics_path": "/metrics",
             "static_configs": [{"targets": [gateway_address.netloc]}]},
            {"job_name": "ray", "static_configs": [{"targets": [f"127.0.0.1:{ray_port}"]}]},
        ],
    }
    config_file = folder / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config))
    config_file.chmod(0o600)
    port = free_port()
    log = (folder / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [_prometheus_binary(), f"--config.file={config_file}", f"--storage.tsdb.path={folder / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1h"],
        stdout=log, stderr=subprocess.STDOUT, cwd=folder)
    url = f"http://127.0.0.1:{port}"
    try:
        def ready() -> bool:
            assert process.poll() is None, (folder / "prometheus.log").read_text()[-3000:]
            try:
                return requests.get(f"{url}/-/ready", timeout=2).status_code == 200
            except requests.ConnectionError:
                return False
        wait_until(ready, timeout=60, interval=0.5, what="Prometheus to be ready")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)
        log.close()


def _query(url: str, expression: str) -> list[dict[str, Any]]:
    body = requests.get(f"{url}/api/v1/query", params={"query": expression}, timeout=10).json()
    assert body["status"] == "success", body
    return body["data"]["result"]


def _traffic(s3: Any, bucket: str) -> int:
    """PUTs, GETs and a 404 GET each round, until TRAFFIC_REQUESTS or TRAFFIC_SECONDS; requests sent."""
    sent = 0
    deadline = time.monotonic() + TRAFFIC_SECONDS
    while sent < TRAFFIC_REQUESTS and time.monotonic() < deadline:
        s3.put_object(Bucket=bucket, Key=f"k{sent}", Body=b"p" * 512)
        s3.get_object(Bucket=bucket, Key=f"k{sent}")["Body"].read()
        try:
            s3.get_object(Bucket=bucket, Key="missing")
        except s3.exceptions.NoSuchKey:
            pass
        sent += 3
        time.sleep(0.2)
    return sent


def test_prometheus_scrapes_the_gateway_and_the_rules_evaluate(prometheus: str, s3: Any, bucket: str,
                                                              tmp_path: Path) -> None:
    wait_until(lambda: [r for r in _query(prometheus, 'up{job="dwray-gateway"}') if r["value"][1] == "1"],
               timeout=60, interval=0.5, what="Prometheus to scrape the gateway")
    assert _traffic(s3, bucket) >= 9

    def recorded() -> list[dict[str, Any]]:
        return [r for r in _query(prometheus, 'dwray:s3_requests:rate5m{operation="PutObject",status="200"}')
                if float(r["value"][1]) > 0]
    wait_until(recorded, timeout=60, interval=1.0, what="the recording rule dwray:s3_requests:rate5m")
    wait_until(lambda: _query(prometheus, 'dwray:slo_error_ratio:rate5m{slo="availability"}'), timeout=30,
               interval=1.0, what="the SLO recording rule for availability")
    (ratio,) = _query(prometheus, 'dwray:slo_error_ratio:rate5m{slo="availability"}')
    assert 0.0 <= float(ratio["value"][1]) <= 1.0
    assert ratio["metric"] == {"__name__": "dwray:slo_error_ratio:rate5m", "slo": "availability",
                               "kind": "availability", "operations": "all"}
    latency = _query(prometheus, 'dwray:s3_request_duration_seconds:p99_rate5m{operation="PutObject"}')
    assert latency and 0 < float(latency[0]["value"][1]) <= 60
    assert _query(prometheus, 'dwray:plugin_restarts:increase1h{child="catalog"}')

    # Every rule of both files loaded and evaluated without error.
    groups = requests.get(f"{prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert {g["name"] for g in groups} == {"dwray-gateway-recording", "dwray-alerts", "dwray-slo-recording",
                                           "dwray-slo-alerts"}
    assert len(rules) == 19 + 33
    wait_until(lambda: all(r["health"] == "ok" for r in requests.get(
        f"{prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"][0]["rules"]), timeout=20,
        what="the gateway's recording rules to evaluate")
    bad = [(r["name"], r.get("lastError")) for r in rules if r["health"] == "err"]
    assert not bad, bad

    # Ray's metrics port, scraped by the same Prometheus, carries the gateway replicas' requests too.
    wait_until(lambda: _query(prometheus, 'ray_dwray_s3_requests_total{operation="PutObject"}'), timeout=90,
               interval=2.0, what="ray_dwray_s3_requests_total scraped from Ray's metrics port")

    # dw slo report asks this Prometheus for the example objectives.
    config = tmp_path / "dwray.toml"
    config.write_text((CLUSTER / "slo.toml").read_text())
    done = subprocess.run([sys.executable, "-m", "dwray.cli", "--config", str(config), "slo", "report",
                           "--prometheus", prometheus, "--json"], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["prometheus"] == prometheus and report["window_days"] == 30
    objectives = {o["name"]: o for o in report["objectives"]}
    assert set(objectives) == {"availability", "read-latency", "write-latency"}
    availability = objectives["availability"]
    assert 0.0 <= availability["sli"] <= 1.0
    assert availability["budget_left"] <= 1.0
    assert set(availability["burn_rates"]) == {"1h", "6h"}
    assert all(rate is not None and rate >= 0 for rate in availability["burn_rates"].values())
    write = objectives["write-latency"]
    assert write["threshold"] == 1.0 and write["sli"] is not None and 0.0 <= write["sli"] <= 1.0

    text = subprocess.run([sys.executable, "-m", "dwray.cli", "--config", str(config), "slo", "report",
                           "--prometheus", prometheus], capture_output=True, text=True, timeout=120, check=False)
    assert text.returncode == 0, text.stderr
    assert "availability" in text.stdout and "burn 1h" in text.stdout


def test_slo_report_names_an_unreachable_prometheus(tmp_path: Path) -> None:
    config = tmp_path / "dwray.toml"
    config.write_text((CLUSTER / "slo.toml").read_text())
    url = f"http://127.0.0.1:{free_port()}"
    done = subprocess.run([sys.executable, "-m", "dwray.cli", "--config", str(config), "slo", "report",
                           "--prometheus", url, "--json"], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1
    error = json.loads(done.stdout)["error"]
    assert error["type"] == "InvalidArgument" and url in error["message"] and "cannot be reached" in error["message"]
