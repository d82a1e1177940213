"""The plugin kit end to end: every kind's template, rendered, installed and tested as its author would.

For each kind, ``dw plugin new`` renders a package into the test's folder,
``pip install --no-deps --no-build-isolation`` installs it into a fresh venv
that sees this environment's packages (dwray, pytest), and that venv's Python
runs the package's own tests. They must all pass, and the conformance suite of
dwray.testing must really have run in them (counted in pytest's JUnit report).
Then ``dw plugin test`` runs the suite on a rendered folder (passes) and on one
with a deliberate bug (fails), and the signing set-up the README describes
signs and verifies the installed distribution.
"""
from __future__ import annotations

import inspect
import json
import os
import queue
import signal
import site
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from dwray.core.ports import free_port
from dwray.testing.backend_conformance import BackendConformance
from dwray.testing.kms_conformance import KmsConformance
from dwray.testing.secret_conformance import SecretManagerConformance
from dwray.testing.stage_conformance import StageConformance

SUITES = {"storage": BackendConformance, "stage": StageConformance, "secrets": SecretManagerConformance,
          "kms": KmsConformance}


def dw(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dwray.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, check=False)


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv whose Python also sees this environment's site-packages (dwray, pytest, pip, setuptools).

    ``--system-site-packages`` alone would show the base interpreter's packages, not this (virtual)
    environment's, so a ``.pth`` adds them as a site dir (which runs their own ``.pth`` files, e.g.
    an editable dwray's). Without a pip of its own (``--without-pip``) the venv has no old bundled
    setuptools either: this environment's pip and setuptools install into it.
    """
    where = tmp_path_factory.mktemp("venv") / "env"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(where)],
                   check=True, timeout=120)
    purelib = subprocess.run([str(where / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path("
                              "'purelib'))"], capture_output=True, text=True, check=True).stdout.strip()
    lines = [f"import site; site.addsitedir({path!r})\n" for path in site.getsitepackages()]
    Path(purelib, "dwray_test_parent.pth").write_text("".join(lines))
    return where


def _junit_counts(report: Path, module: str) -> dict[str, int]:
    cases = [case for case in ET.parse(report).getroot().iter("testcase") if module in case.get("classname", "")]
    failed = [case for case in cases if case.find("failure") is not None or case.find("error") is not None]
    skipped = [case for case in cases if case.find("skipped") is not None]
    return {"ran": len(cases), "failed": len(failed), "skipped": len(skipped)}


@pytest.mark.parametrize("kind", sorted(SUITES))
def test_rendered_plugin_installs_and_passes_its_tests(kind: str, tmp_path: Path, venv: Path) -> None:
    made = dw("plugin", "new", "--kind", kind, f"kit-{kind}", "--dir", str(tmp_path))
    assert made.returncode == 0, made.stderr
    package = tmp_path / f"dwray-plugin-kit-{kind}"
    python = str(venv / "bin" / "python")
    installed = subprocess.run([python, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--quiet",
                                str(package)], capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    report = tmp_path / "report.xml"
    ran = subprocess.run([python, "-m", "pytest", "-p", "no:cacheprovider", "-q", f"--junitxml={report}", "tests"],
                         cwd=package, capture_output=True, text=True, timeout=600)
    assert ran.returncode == 0, ran.stdout[-4000:] + ran.stderr[-2000:]
    suite_tests = [name for name, _ in inspect.getmembers(SUITES[kind], inspect.isfunction)
                   if name.startswith("test_")]
    conformance = _junit_counts(report, "test_conformance")
    assert conformance["failed"] == 0 and conformance["skipped"] == 0
    assert conformance["ran"] >= len(suite_tests) > 5, conformance  # parametrized tests count once per case
    own = _junit_counts(report, "test_plugin")
    assert own["ran"] >= 3 and own["failed"] == 0 and own["skipped"] == 0, own


def test_signing_as_the_readme_says(tmp_path: Path, venv: Path) -> None:
    assert dw("plugin", "new", "--kind", "kms", "kit-signed", "--dir", str(tmp_path)).returncode == 0
    python = str(venv / "bin" / "python")
    subprocess.run([python, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--quiet",
                    str(tmp_path / "dwray-plugin-kit-signed")], check=True, capture_output=True, timeout=300)
    key = tmp_path / "kit-signed.key"

    def venv_dw(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([python, "-m", "dwray.cli", *args], capture_output=True, text=True, timeout=120,
                              env={"PATH": "/usr/bin:/bin", "XDG_CONFIG_HOME": str(tmp_path / "config")})
    assert venv_dw("plugin", "keygen", str(key)).returncode == 0
    signed = venv_dw("plugin", "sign", "--dist", "dwray-plugin-kit-signed", "--key", str(key))
    assert signed.returncode == 0, signed.stderr
    verified = venv_dw("plugin", "verify", "--dist", "dwray-plugin-kit-signed", "--trusted-key", f"{key}.pub")
    assert verified.returncode == 0 and "verified:" in verified.stdout, verified.stdout + verified.stderr


def test_dw_plugin_test_passes_a_rendered_plugin_and_fails_a_broken_one(tmp_path: Path) -> None:
    assert dw("plugin", "new", "--kind", "storage", "kit-good", "--dir", str(tmp_path)).returncode == 0
    good = dw("plugin", "test", str(tmp_path / "dwray-plugin-kit-good"), "--", "-q", "-k", "not large_blob")
    assert good.returncode == 0, good.stdout[-3000:] + good.stderr
    assert " passed" in good.stdout and "failed" not in good.stdout

    assert dw("plugin", "new", "--kind", "storage", "kit-broken", "--dir", str(tmp_path)).returncode == 0
    plugin = tmp_path / "dwray-plugin-kit-broken" / "src" / "dwray_plugin_kit_broken" / "plugin.py"
    source = plugin.read_text()
    bug = "return source.read() if end is None"
    assert bug in source
    plugin.write_text(source.replace(bug, "return source.read()[::-1] if end is None"))  # reads come back reversed
    broken = dw("plugin", "test", str(tmp_path / "dwray-plugin-kit-broken"), "--", "-q", "-x")
    assert broken.returncode == 1, broken.stdout[-3000:] + broken.stderr
    assert "test_put_get_round_trip FAILED" in broken.stdout or "failed" in broken.stdout


def test_dw_plugin_test_runs_the_suite_on_an_installed_entry_point() -> None:
    ran = dw("plugin", "test", "stage.frames", "--", "-q")
    assert ran.returncode == 0 and " passed" in ran.stdout, ran.stdout[-3000:] + ran.stderr


def test_dw_plugin_new_and_test_refuse_bad_input_clearly(tmp_path: Path) -> None:
    bad = dw("plugin", "new", "--kind", "kms", "Not_Valid", "--dir", str(tmp_path))
    assert bad.returncode == 1 and "'Not_Valid' must be lowercase" in bad.stderr
    taken = dw("plugin", "new", "--kind", "storage", "local", "--dir", str(tmp_path))
    assert taken.returncode == 1 and "'storage.local' is already a plugin" in taken.stderr
    assert dw("plugin", "new", "--kind", "stage", "twice", "--dir", str(tmp_path)).returncode == 0
    again = dw("plugin", "new", "--kind", "stage", "twice", "--dir", str(tmp_path))
    assert again.returncode == 1 and "already exists" in again.stderr
    missing = dw("plugin", "test", str(tmp_path / "no-such-plugin"))
    assert missing.returncode == 2 and "neither a folder nor" in missing.stderr
    service = dw("plugin", "test", "service.catalog")
    assert service.returncode == 2 and "kind 'service'" in service.stderr


GATEWAY_FIXTURE_TESTS = '''
def test_s3_round_trip(dwray_s3_client):
    dwray_s3_client.create_bucket(Bucket="kit-fixtures")
    dwray_s3_client.put_object(Bucket="kit-fixtures", Key="k", Body=b"through the gateway")
    assert dwray_s3_client.get_object(Bucket="kit-fixtures", Key="k")["Body"].read() == b"through the gateway"


def test_the_gateway_object(dwray_gateway):
    assert dwray_gateway.endpoint.startswith("http://127.0.0.1:")
    assert dwray_gateway.access_key_id and dwray_gateway.region == "us-east-1"
    assert dwray_gateway.secret_access_key not in repr(dwray_gateway)
'''


def test_the_gateway_fixtures_in_a_plugin_authors_pytest(tmp_path: Path) -> None:
    """``dwray_gateway`` and ``dwray_s3_client`` in a pytest of their own, as a plugin author's suite uses them:
    no Ray runs in that process, so the fixture starts a local one and stops it after."""
    (tmp_path / "test_gateway_fixtures.py").write_text(GATEWAY_FIXTURE_TESTS)
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    ran = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-o", "addopts=", "-q",
                          "test_gateway_fixtures.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert ran.returncode == 0 and "2 passed" in ran.stdout, ran.stdout[-4000:] + ran.stderr[-2000:]


class DevProcess:
    """A ``dw dev --json`` process and the JSON lines it prints, read on a thread."""

    def __init__(self, tmp_path: Path, watched: Path) -> None:
        env = {key: value for key, value in os.environ.items() if not key.startswith(("RAY_", "DWRAY_"))}
        env.update(XDG_CONFIG_HOME=str(tmp_path / "config"), DWRAY_RUNTIME__NAMESPACE=f"dwray-dev-{os.getpid()}")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dwray.cli", "dev", "--port", str(free_port()), "--data-dir",
             str(tmp_path / "data"), "--watch", str(watched), "--json"],
            stdout=subprocess.PIPE, text=True, env=env, cwd=tmp_path, start_new_session=True)
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(json.loads(line))

    def next(self, event: str, timeout: float) -> dict[str, Any]:
        """The next line of ``event`` (others before it are skipped)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            if line["event"] == event:
                return line
        raise AssertionError(f"dw dev printed no {event!r} line within {timeout} s (exit code "
                             f"{self.process.poll()})")

    def stop(self) -> int:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                return self.process.wait(120)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(30)
        return self.process.returncode


def test_dw_dev_logs_each_request_and_reloads_on_a_code_change(tmp_path: Path) -> None:
    import boto3
    from botocore.config import Config

    watched = tmp_path / "src"
    (watched / "acme_plugin").mkdir(parents=True)
    (watched / "acme_plugin" / "plugin.py").write_text("VERSION = 1\n")
    dev = DevProcess(tmp_path, watched)
    try:
        ready = dev.next("ready", 240)
        first = ready["first_start"]
        assert ready["watching"] == [str(watched)]
        client = boto3.client("s3", endpoint_url=ready["endpoint"], region_name="us-east-1",
                              aws_access_key_id=first["access_key_id"],
                              aws_secret_access_key=first["secret_access_key"],
                              config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 8}))
        client.create_bucket(Bucket="before-reload")
        logged = dev.next("request", 30)
        assert (logged["method"], logged["path"], logged["status"]) == ("PUT", "/before-reload", 200)
        assert logged["duration_ms"] > 0 and len(logged["request_id"]) >= 8

        (watched / "acme_plugin" / "plugin.py").write_text("VERSION = 2\n")
        reload = dev.next("reload", 30)
        assert reload["changed"] and reload["changed"][0].endswith("plugin.py")
        dev.next("reloaded", 240)
        client.put_object(Bucket="before-reload", Key="after", Body=b"served by the restarted gateway")
        logged = dev.next("request", 30)
        assert (logged["method"], logged["path"], logged["status"]) == ("PUT", "/before-reload/after", 200)
        assert client.get_object(Bucket="before-reload", Key="after")["Body"].read() == \
            b"served by the restarted gateway"
    finally:
        code = dev.stop()
    assert code == 0
