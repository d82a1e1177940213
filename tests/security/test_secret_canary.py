"""The canary: a unique secret set for a real warehouse never shows up anywhere an operator or tenant can look.

A child process (``_canary_driver.py``) runs a warehouse on a Ray of its own
with Vault Transit as its key service (the Vault token kept in the encrypted
local store, referenced as ``secret://local/...``) and a gateway whose
``/metrics`` needs a bearer token (``secret://env/...``). It drives S3,
metrics, the admin API, the probes, ``dw status --json``, errors about
secrets and config, and dumps the config, reprs, the plugins' child specs
(their actors' arguments) and Ray's actor and task tables. The test then
scans all of that, Ray's whole session folder (every process's log), the data
dir and the processes' own output for each secret: raw, base64 (every
alignment, both alphabets) and hex.
"""
from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from dwray.core.ports import free_port

REPO = Path(__file__).resolve().parents[2]


def encodings(secret: str) -> Iterator[bytes]:
    """The byte patterns under which ``secret`` could appear in a file."""
    raw = secret.encode("utf-8")
    yield raw
    yield raw.hex().encode()
    yield raw.hex().upper().encode()
    for skip in range(3):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            # Whatever precedes the secret, one of these three runs appears intact in the encoding.
            pattern = encode(raw[skip:]).rstrip(b"=")[:-3]
            if len(pattern) >= 16:
                yield pattern


def scan(paths: Iterable[Path], secrets: dict[str, str]) -> list[str]:
    """Every (file, secret name) where a secret appears in any encoding."""
    found = []
    for root in paths:
        files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]
        for path in files:
            try:
                content = path.read_bytes()
            except OSError:
                continue  # sockets and vanished files
            for name, secret in secrets.items():
                if any(pattern in content for pattern in encodings(secret)):
                    found.append(f"{path}: {name}")
    return found


def test_encodings_find_a_secret_however_it_is_written(tmp_path: Path) -> None:
    secret = f"canary-{uuid.uuid4().hex}"
    for prefix in (b"", b"x", b"xy"):
        for encoded in (prefix + secret.encode(), base64.b64encode(prefix + secret.encode()),
                        base64.urlsafe_b64encode(prefix + secret.encode()), (prefix + secret.encode()).hex().encode()):
            (tmp_path / "f").write_bytes(b"<" + encoded + b">")
            assert scan([tmp_path], {"s": secret}) == [f"{tmp_path / 'f'}: s"], encoded
    (tmp_path / "f").write_bytes(b"nothing here")
    assert scan([tmp_path], {"s": secret}) == []


def test_no_secret_appears_anywhere(tmp_path: Path, openbao: Any) -> None:
    metrics_token = f"canary-metrics-{uuid.uuid4().hex}"
    data_dir = tmp_path / "data"
    env = {
        **os.environ,
        "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
        "DWRAY_DATA_DIR": str(data_dir),
        "DWRAY_SECRETS__LOCAL__PATH": str(tmp_path / "xdg" / "dwray" / "secrets.json"),
        "DWRAY_KMS__PLUGIN": "vault-transit",
        "DWRAY_KMS__ADDRESS": openbao.address,
        "DWRAY_KMS__TOKEN": "secret://local/canary/vault-token",
        "DWRAY_KMS__KEY_PREFIX": f"canary-{uuid.uuid4().hex[:8]}-",
        "DWRAY_GATEWAY__PORT": str(free_port()),
        "DWRAY_GATEWAY__METRICS_TOKEN": "secret://env/CANARY_METRICS_TOKEN",
        "CANARY_METRICS_TOKEN": metrics_token,
    }
    env.pop("RAY_ADDRESS", None)
    stored = subprocess.run([sys.executable, "-m", "dwray.cli", "secret", "set", "canary/vault-token"],
                            input=openbao.token.encode(), capture_output=True, env=env, cwd=REPO, timeout=120)
    assert stored.returncode == 0, stored.stderr.decode()
    listed = subprocess.run([sys.executable, "-m", "dwray.cli", "secret", "list", "--json"],
                            capture_output=True, env=env, cwd=REPO, timeout=120)
    assert listed.returncode == 0 and "canary/vault-token" in listed.stdout.decode(), listed.stderr.decode()

    out = tmp_path / "surfaces"
    driver = subprocess.run([sys.executable, "-m", "tests.security._canary_driver", str(out)],
                            capture_output=True, env=env, cwd=REPO, timeout=600)
    (tmp_path / "driver.out").write_bytes(driver.stdout + driver.stderr)
    assert driver.returncode == 0, driver.stderr.decode()[-4000:]

    needles = json.loads((tmp_path / "needles.json").read_text())
    secrets = {"metrics token": metrics_token, "vault token": openbao.token, **needles}
    session_dir = Path((out / "session_dir").read_text())
    surfaces = sorted(p.name for p in out.iterdir())
    assert {"metrics.txt", "actors.json", "child-specs.json", "dw-status.json", "errors.txt"} <= set(surfaces)
    assert b"dwray_" in (out / "metrics.txt").read_bytes(), "the scrape with the token must carry metrics"
    assert (session_dir / "logs").is_dir() and any((session_dir / "logs").iterdir())
    found = scan([out, session_dir, data_dir, tmp_path / "driver.out"], secrets)
    found += [f"dw secret set/list output: {name}" for name, secret in secrets.items()
              if any(p in stored.stdout + stored.stderr + listed.stdout + listed.stderr for p in encodings(secret))]
    assert found == [], found
