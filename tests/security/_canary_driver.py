"""The canary test's warehouse: run as a child process by ``test_secret_canary.py``.

It starts a Ray cluster of its own (so its session logs hold only this run),
the warehouse with Vault Transit as its key service (the Vault token a
``secret://local`` reference) and the gateway with a bearer-protected
``/metrics`` (the token a ``secret://env`` reference), drives every surface an
operator or tenant sees, and writes what each surface showed into the output
folder for the parent to scan. It never prints a secret itself.

    python -m tests.security._canary_driver OUT_DIR
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import boto3
import ray
import requests
from botocore.config import Config
from botocore.exceptions import ClientError


def _save(out: Path, name: str, content: Any) -> None:
    text = content if isinstance(content, (str, bytes)) else json.dumps(content, default=repr, indent=1)
    (out / name).write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))


def _errors(out: Path) -> None:
    """The text of errors that involve secrets: a bad reference, a value where a reference belongs."""
    from dwray.config import load_config
    from dwray.errors import DwrayError
    from dwray.secrets import resolve_secret

    config = load_config()
    texts = []
    for ref in ("secret://local/no/such/secret", "secret://env/DWRAY_NO_SUCH_VAR"):
        try:
            resolve_secret(ref, config)
        except DwrayError as error:
            texts.append(f"{type(error).__name__}: {error!s} {error!r}")
    # The canary as a value where a reference belongs: the error must not echo it.
    for variable in ("DWRAY_KMS__TOKEN", "DWRAY_GATEWAY__METRICS_TOKEN"):
        try:
            load_config(env={**os.environ, variable: os.environ["CANARY_METRICS_TOKEN"]})
        except DwrayError as error:
            texts.append(f"{type(error).__name__}: {error!s} {error!r}")
    assert len(texts) == 4, texts
    _save(out, "errors.txt", "\n".join(texts))


def main(out: Path) -> None:
    from dwray.config import load_config
    from serve_apps.launch import start_gateway, stop_gateway

    config = load_config()
    running = start_gateway(config, address="local", started_by="canary")
    try:
        session_dir = ray._private.worker._global_node.get_session_dir_path()
        _save(out, "session_dir", session_dir)
        first = running.first_start
        endpoint = running.endpoint
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id=first.access_key.access_key_id,
                          aws_secret_access_key=first.access_key.secret_access_key,
                          config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
        s3.create_bucket(Bucket="canary")
        s3.put_object(Bucket="canary", Key="a.txt", Body=b"hello canary")
        assert s3.get_object(Bucket="canary", Key="a.txt")["Body"].read() == b"hello canary"
        wrong = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                             aws_access_key_id=first.access_key.access_key_id, aws_secret_access_key="x" * 40,
                             config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
        try:
            wrong.get_object(Bucket="canary", Key="a.txt")
            raise AssertionError("a wrong secret key was accepted")
        except ClientError as error:
            _save(out, "s3-error.json", error.response)

        token = os.environ["CANARY_METRICS_TOKEN"]
        refused = requests.get(f"{endpoint}/metrics", timeout=30)
        assert refused.status_code == 401, refused.status_code
        wrong_token = requests.get(f"{endpoint}/metrics", headers={"Authorization": "Bearer nope"}, timeout=30)
        assert wrong_token.status_code == 401, wrong_token.status_code
        metrics = requests.get(f"{endpoint}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert metrics.status_code == 200, metrics.status_code
        _save(out, "metrics-refused.txt", refused.content + wrong_token.content)
        _save(out, "metrics.txt", metrics.content)

        admin = {"Authorization": f"Bearer {first.admin_token}"}
        for path in ("/tenants", "/keys", "/plugins", "/admin-tokens"):
            reply = requests.get(f"{endpoint}/admin{path}", headers=admin, timeout=30)
            _save(out, f"admin{path.replace('/', '-')}.json", {"status": reply.status_code, "body": reply.text})
        for probe in ("/healthz/live", "/healthz/ready", "/healthz/startup"):
            _save(out, f"probe{probe.replace('/', '-')}.txt", requests.get(f"{endpoint}{probe}", timeout=30).text)

        status = subprocess.run([sys.executable, "-m", "dwray.cli", "status", "--json"], capture_output=True,
                                env={**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address},
                                timeout=120, check=False)
        assert status.returncode == 0, status.stderr.decode()[-2000:]
        _save(out, "dw-status.json", status.stdout + status.stderr)

        # Ray's actor table, as the dashboard lists it (this Ray runs no dashboard, so straight from the GCS).
        from ray._private.state import actors as actor_table

        table = actor_table()
        assert any("PluginHost" in str(entry) for entry in table.values()), "the plugin hosts must be listed"
        _save(out, "actors.json", table)
        _save(out, "supervisor-status.json", ray.get(running.supervisor.status.remote(), timeout=30))
        _save(out, "config-dump.json", running.config.model_dump(mode="json"))
        # What every plugin actor is created with: its child spec (the Ray dashboard shows actors by these).
        from actors.bootstrap import supervisor_spec

        children = supervisor_spec(running.config).children
        _save(out, "child-specs.json", [child.model_dump(mode="json") for child in children])
        # The secrets this run made, for the parent to look for (kept outside the scanned folder).
        _save(out.parent, "needles.json", {"access_secret": first.access_key.secret_access_key,
                                           "admin_token": first.admin_token})
        _save(out, "reprs.txt", "\n".join(repr(thing) for thing in (running.config, running, first)))
        _errors(out)
    finally:
        stop_gateway(running, timeout=10)


if __name__ == "__main__":
    folder = Path(sys.argv[1])
    folder.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("DWRAY_RUNTIME__NAMESPACE", f"dwray-canary-{uuid.uuid4().hex[:8]}")
    main(folder)
