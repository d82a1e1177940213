"""Plugins from folders, signed, on a real supervisor (the session Ray cluster) and through the real ``dw``.

A signed folder plugin is admitted and serves calls; a tampered one is
refused, and the supervisor's status says why. The CLI makes the key, signs
and verifies in subprocesses, as a plugin author would.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import ray

from dwray.builtins.audit_service import AuditLogPlugin
from dwray.config import DwrayConfig
from dwray.core.audit import AuditLocations
from dwray.core.audit.reader import AuditReader
from dwray.core.plugin_trust import PluginTrust
from dwray.core.plugin_trust.operations import sign_target
from dwray.core.plugin_trust.signing import generate_key_pair
from tests.integration.test_supervisor import Supervised, supervisors
from tests.unit.test_plugin_trust import make_plugin


@pytest.fixture
def supervise(ray_session: Any) -> Iterator[Callable[..., Supervised]]:
    with supervisors() as make:
        yield make


def dw(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dwray.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


def test_a_signed_folder_plugin_runs_and_a_tampered_one_is_refused(supervise: Callable[..., Supervised],
                                                                   tmp_path: Path) -> None:
    folder = tmp_path / "plugins"
    key = tmp_path / "author.key"
    _, public = generate_key_pair(key)
    for name in ("acme.signed", "acme.tampered"):
        sign_target(key, folder=make_plugin(folder, name, cls="AcmeEcho"))
    (folder / "acme.tampered" / "helper.py").write_text("def tag(value):\n    return ['evil', value]\n")
    trust = PluginTrust(folders=(str(folder),), trusted_keys=(public,), require_signed=True)

    def child(child_id: str, plugin: str, **options: Any) -> dict[str, Any]:
        return {"id": child_id, "plugin": plugin, "kind": "service", "required": False, "plugin_trust": trust,
                **options}

    # An audit log first, so the refusal below is audited as it happens.
    locations = AuditLocations.of(DwrayConfig(data_dir=tmp_path / "data"))
    audit = {"id": "audit", "plugin": "service.audit", "kind": "service",
             "config": AuditLogPlugin.config_of(locations, 1, 1, 60.0)}
    # "signed" runs sandboxed (a third-party plugin), "in-host" in its host's own process.
    sup = supervise([audit, child("signed", "acme.signed"), child("tampered", "acme.tampered"),
                     child("in-host", "acme.signed", sandbox={"mode": "never"})])
    tampered = sup.child("tampered")
    for child_id in ("signed", "in-host"):
        running = sup.child(child_id)
        assert running["state"] == "running" and running["manifest"]["name"] == "acme.signed", \
            running["last_failure"]
        assert list(sup.handle(child_id).call("echo", 7)) == ["acme", 7]
    # Checked by the host, then loaded again (and checked again) in the sandbox, its folder bound read-only.
    assert ray.get(sup.host("signed").sandbox_info.remote(), timeout=30)["isolation"] != "in-process"
    assert ray.get(sup.host("in-host").sandbox_info.remote(), timeout=30)["isolation"] == "in-process"
    assert tampered["state"] == "refused"
    assert "tampered: file(s) changed since signing: helper.py" in tampered["last_failure"]
    refused = [e for e in sup.events() if e["kind"] == "refused" and e["child"] == "tampered"]
    assert refused and "changed since signing: helper.py" in refused[0]["reason"]
    # ... and audited, as a denied admission, in the signed log.
    deadline = time.monotonic() + 30
    while not (records := _admissions(locations)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [(r["resource"], r["outcome"]) for r in records] == [("plugin:tampered:acme.tampered", "denied")]
    assert "changed since signing: helper.py" in records[0]["error"]


def _admissions(locations: AuditLocations) -> list[dict[str, Any]]:
    if not locations.database.exists():
        return []
    with AuditReader(locations) as reader:
        return [r for r in reader.tail(100) if r["action"] == "dwray:AdmitPlugin"]


def test_dw_plugin_keygen_sign_verify(tmp_path: Path) -> None:
    plugin = make_plugin(tmp_path / "plugins", "acme.cli")
    made = dw("plugin", "keygen", "author.key", "--json", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    keygen = json.loads(made.stdout)
    assert (tmp_path / "author.key").stat().st_mode & 0o777 == 0o600
    assert keygen["public_key"] == (tmp_path / "author.key.pub").read_text().strip()
    signed = dw("plugin", "sign", str(plugin), "--key", "author.key", cwd=tmp_path)
    assert signed.returncode == 0 and "signed acme.cli 1.0.0 (3 files)" in signed.stdout, signed.stderr
    ok = dw("plugin", "verify", str(plugin), "--trusted-key", "author.key.pub", cwd=tmp_path)
    assert ok.returncode == 0 and f"signed by {keygen['fingerprint']}, a trusted key" in ok.stdout, ok.stderr
    (plugin / "helper.py").unlink()
    (plugin / "backdoor.py").write_text("import socket\n")
    bad = dw("plugin", "verify", str(plugin), "--json", cwd=tmp_path)
    assert bad.returncode == 1
    report = json.loads(bad.stdout)
    assert report["ok"] is False and report["trusted"] is False and report["signer"] == keygen["fingerprint"]
    assert report["problems"] == [f"wrongly signed: signed by key {keygen['fingerprint']}, which is not a trusted key",
                                  "tampered: file(s) added since signing: backdoor.py",
                                  "tampered: file(s) removed since signing: helper.py"]
