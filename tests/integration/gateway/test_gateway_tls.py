"""The gateway over TLS, started by ``dw up`` as an operator would, and used by real clients.

One ``dw up`` (its own local Ray, a fresh data dir) with a certificate from a
private CA made here, a metrics token (a ``secret://env/`` reference), tenant
names on ``/metrics`` and a small limit on failed authentications. boto3 and
awscli trust the CA and work; clients that do not trust it refuse the
gateway. The same gateway shows the per-address limit on failing requests,
from distinct loopback source addresses (127.0.0.2, ...), through HAProxy.

The checks of a TLS setup itself (:func:`serve_apps.launch.check_listener`)
need no gateway and run first.
"""
from __future__ import annotations

import http.client
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import psutil
import pytest
import requests
from botocore.config import Config
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from prometheus_client.parser import text_string_to_metric_families

from dwray.config import GatewayConfig
from dwray.core.ports import free_port
from dwray.errors import ConfigError
from serve_apps.launch import check_listener
from tests.integration.gateway.clients import AwsCli, error_code, sign
from tests.integration.gateway.tls_files import TlsMaterial, make_tls_material

START_TIMEOUT = 240
METRICS_TOKEN_VARIABLE = "METRICS_TOKEN_FOR_THE_TLS_TEST"  # not DWRAY_*: those are config fields
AUTH_FAILURE_BURST = 4


# -- the checks before anything starts ----------------------------------------------------------


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> TlsMaterial:
    return make_tls_material(tmp_path_factory.mktemp("tls"))


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.5", "::1", "[::1]", "localhost"])
def test_plain_http_on_loopback_is_allowed(host: str) -> None:
    check_listener(GatewayConfig(host=host))


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "gateway.example.com"])
def test_plain_http_elsewhere_needs_tls_or_an_explicit_yes(host: str) -> None:
    with pytest.raises(ConfigError) as refused:
        check_listener(GatewayConfig(host=host))
    assert "not a loopback address" in str(refused.value) and "allow_plain_http" in str(refused.value)
    check_listener(GatewayConfig(host=host, allow_plain_http=True))


def test_a_good_certificate_and_key_pass(material: TlsMaterial) -> None:
    check_listener(GatewayConfig(host="0.0.0.0", tls_cert=material.cert, tls_key=material.key))


def test_bad_tls_setups_are_refused_clearly(material: TlsMaterial, tmp_path: Path) -> None:
    def refused(**fields: Any) -> str:
        with pytest.raises(ConfigError) as caught:
            check_listener(GatewayConfig(host="0.0.0.0", **fields))
        return str(caught.value)

    assert "both tls_cert and tls_key" in refused(tls_cert=material.cert)
    assert "both tls_cert and tls_key" in refused(tls_key=material.key)
    open_key = tmp_path / "open.pem"
    open_key.write_bytes(material.key.read_bytes())
    open_key.chmod(0o644)
    assert "chmod 600" in refused(tls_cert=material.cert, tls_key=open_key)
    other = tmp_path / "other.pem"
    other.touch(mode=0o600)
    other.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    assert "is not the key of the first certificate" in refused(tls_cert=material.cert, tls_key=other)
    locked = tmp_path / "locked.pem"
    locked.touch(mode=0o600)
    locked.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase")))
    assert "encrypted" in refused(tls_cert=material.cert, tls_key=locked)
    assert "holds no PEM certificate" in refused(tls_cert=material.key, tls_key=material.key)
    assert "cannot be read" in refused(tls_cert=tmp_path / "missing.pem", tls_key=material.key)
    text = refused(tls_cert=material.cert, tls_key=other)
    assert "PRIVATE KEY" not in text  # paths only, never key material


def test_dw_up_refuses_plain_http_on_all_interfaces_before_starting_ray(tmp_path: Path) -> None:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "dwray.cli", "up", "--host", "0.0.0.0", "--port", str(free_port()),
                           "--data-dir", str(tmp_path / "data"), "--address", "local"],
                          capture_output=True, text=True, timeout=120, env=clean_env())
    assert done.returncode == 1
    assert "not a loopback address" in done.stderr and "tls_cert" in done.stderr
    assert "Traceback" not in done.stderr
    assert time.monotonic() - started < 60  # no Ray was started


# -- a TLS gateway started by dw up -----------------------------------------------------------------


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "DWRAY_", "DW_HAPROXY_"))}
    env.update(extra)
    return env


@dataclass
class TlsGateway:
    process: subprocess.Popen[str] = field(repr=False)
    endpoint: str
    port: int
    tenant: str
    access_key_id: str
    secret_access_key: str = field(repr=False)
    admin_token: str = field(repr=False)
    metrics_token: str = field(repr=False)
    material: TlsMaterial
    region: str = "us-east-1"

    def client(self, **options: Any) -> Any:
        return boto3.client("s3", endpoint_url=self.endpoint, region_name=self.region,
                            aws_access_key_id=self.access_key_id, aws_secret_access_key=self.secret_access_key,
                            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}), **options)

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.material.ca))


def first_line(process: subprocess.Popen[str]) -> str:
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(process.stdout.readline()), daemon=True)  # type: ignore
    reader.start()
    reader.join(START_TIMEOUT)
    if not lines or not lines[0].strip():
        os.killpg(process.pid, signal.SIGKILL)
        raise AssertionError(f"dw up printed nothing: {process.stderr.read()[-3000:]}")  # type: ignore[union-attr]
    return lines[0]


@pytest.fixture(scope="module")
def tls_gateway(material: TlsMaterial, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsGateway]:
    folder = tmp_path_factory.mktemp("tls-gateway")
    port = free_port()
    metrics_token = uuid.uuid4().hex
    config = folder / "dwray.toml"
    config.write_text(f"""
[runtime]
namespace = "dwray-tls-{uuid.uuid4().hex[:8]}"

[gateway]
port = {port}
metrics_tenant_labels = true
metrics_token = "secret://env/{METRICS_TOKEN_VARIABLE}"

[gateway.auth_failures]
rate = 0.05
burst = {AUTH_FAILURE_BURST}
""")
    process = subprocess.Popen(
        [sys.executable, "-m", "dwray.cli", "--config", str(config), "up", "--data-dir", str(folder / "data"),
         "--address", "local", "--json", "--tls-cert", str(material.cert), "--tls-key", str(material.key)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        env=clean_env(**{METRICS_TOKEN_VARIABLE: metrics_token}))
    try:
        info = json.loads(first_line(process))
        first = info["first_start"]
        yield TlsGateway(process, info["endpoint"], port, first["tenant"], first["access_key_id"],
                         first["secret_access_key"], first["admin_token"], metrics_token, material)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(180)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(30)


def test_the_endpoint_is_https(tls_gateway: TlsGateway) -> None:
    assert tls_gateway.endpoint == f"https://127.0.0.1:{tls_gateway.port}"


def test_boto3_trusting_the_ca_puts_gets_and_lists(tls_gateway: TlsGateway) -> None:
    s3 = tls_gateway.client(verify=str(tls_gateway.material.ca))
    bucket = f"tls-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    body = os.urandom(300_000)
    put = s3.put_object(Bucket=bucket, Key="over/tls.bin", Body=body)
    got = s3.get_object(Bucket=bucket, Key="over/tls.bin")
    assert got["Body"].read() == body
    # [gateway] server_timing is off by default: no Server-Timing header (the session gateway has it on).
    for response in (put, got):
        assert "server-timing" not in response["ResponseMetadata"]["HTTPHeaders"]
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["over/tls.bin"]
    assert s3.get_object(Bucket=bucket, Key="over/tls.bin", Range="bytes=10-19")["Body"].read() == body[10:20]


def test_awscli_with_the_ca_bundle_copies_and_lists(tls_gateway: TlsGateway, tmp_path: Path) -> None:
    aws = AwsCli.for_gateway(tls_gateway, tmp_path)
    ca = str(tls_gateway.material.ca)
    bucket = f"tls-cli-{uuid.uuid4().hex[:12]}"
    aws.run("s3", "mb", f"s3://{bucket}", "--ca-bundle", ca)
    source = tmp_path / "upload.bin"
    source.write_bytes(os.urandom(9 << 20))  # above awscli's multipart threshold
    aws.run("s3", "cp", str(source), f"s3://{bucket}/cli/upload.bin", "--ca-bundle", ca)
    listed = aws.run("s3", "ls", f"s3://{bucket}/cli/", "--ca-bundle", ca)
    assert "upload.bin" in listed.stdout
    back = tmp_path / "back.bin"
    aws.run("s3", "cp", f"s3://{bucket}/cli/upload.bin", str(back), "--ca-bundle", ca)
    assert back.read_bytes() == source.read_bytes()
    untrusted = aws.run("s3", "ls", f"s3://{bucket}/", check=False)
    assert untrusted.returncode != 0 and "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr


def test_clients_that_do_not_trust_the_ca_refuse_the_gateway(tls_gateway: TlsGateway) -> None:
    with pytest.raises(botocore.exceptions.SSLError):
        tls_gateway.client().list_buckets()
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{tls_gateway.endpoint}/healthz/live", timeout=10)
    other = make_tls_material(Path(os.environ.get("TMPDIR", "/tmp")) / f"other-ca-{uuid.uuid4().hex[:8]}")
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{tls_gateway.endpoint}/healthz/live", timeout=10, verify=str(other.ca))
    assert requests.get(f"{tls_gateway.endpoint}/healthz/live", timeout=10,
                        verify=str(tls_gateway.material.ca)).status_code == 200


def test_plain_http_on_the_tls_port_gets_no_answer_from_the_gateway(tls_gateway: TlsGateway) -> None:
    try:
        response = requests.get(f"http://127.0.0.1:{tls_gateway.port}/healthz/live", timeout=10)
    except requests.exceptions.ConnectionError:
        return
    assert response.status_code == 400 and "alive" not in response.text


def test_metrics_need_the_token_and_name_tenants_when_configured(tls_gateway: TlsGateway) -> None:
    url, ca = f"{tls_gateway.endpoint}/metrics", str(tls_gateway.material.ca)
    tls_gateway.client(verify=ca).list_buckets()
    missing = requests.get(url, timeout=30, verify=ca)
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert tls_gateway.metrics_token not in missing.text
    wrong = requests.get(url, timeout=30, verify=ca, headers={"Authorization": "Bearer not-the-token"})
    assert wrong.status_code == 401
    page = requests.get(url, timeout=30, verify=ca, headers={"Authorization": f"Bearer {tls_gateway.metrics_token}"})
    assert page.status_code == 200
    tenants = {sample.labels["tenant"] for family in text_string_to_metric_families(page.text)
               for sample in family.samples if family.name == "dwray_tenant_objects"}
    assert tls_gateway.tenant in tenants
    assert tls_gateway.metrics_token not in page.text and tls_gateway.secret_access_key not in page.text


def https_request(gateway: TlsGateway, source: str, method: str, target: str,
                  headers: Mapping[str, str] | None = None) -> tuple[int, Mapping[str, str], bytes]:
    """One request over TLS from the loopback address ``source`` (HAProxy sees that address)."""
    connection = http.client.HTTPSConnection("127.0.0.1", gateway.port, context=gateway.context(),
                                             source_address=(source, 0), timeout=30)
    try:
        connection.request(method, target, headers=dict(headers or {}))
        response = connection.getresponse()
        return response.status, response.headers, response.read()  # headers: case-insensitive
    finally:
        connection.close()


def signed_headers(gateway: TlsGateway, method: str, target: str) -> dict[str, str]:
    return dict(sign(gateway, method, target).headers)


def test_failing_requests_are_limited_per_source_address(tls_gateway: TlsGateway) -> None:
    attacker, bystander = "127.0.0.2", "127.0.0.3"
    for _ in range(AUTH_FAILURE_BURST):
        status, _, body = https_request(tls_gateway, attacker, "GET", "/")
        assert (status, error_code(body)) == (403, "AccessDenied")
    status, headers, body = https_request(tls_gateway, attacker, "GET", "/")
    assert (status, error_code(body)) == (503, "SlowDown") and int(headers["Retry-After"]) >= 1
    # Even a correctly signed request from that address waits; another address is served.
    status, _, body = https_request(tls_gateway, attacker, "GET", "/", signed_headers(tls_gateway, "GET", "/"))
    assert (status, error_code(body)) == (503, "SlowDown")
    status, _, body = https_request(tls_gateway, bystander, "GET", "/", signed_headers(tls_gateway, "GET", "/"))
    assert status == 200 and b"ListAllMyBucketsResult" in body


def test_admin_token_guessing_is_limited_per_source_address(tls_gateway: TlsGateway) -> None:
    guesser = "127.0.0.4"
    for attempt in range(AUTH_FAILURE_BURST):
        status, _, _ = https_request(tls_gateway, guesser, "GET", "/admin/tenants",
                                     {"Authorization": f"Bearer guess-{attempt}"})
        assert status == 401
    status, headers, body = https_request(tls_gateway, guesser, "GET", "/admin/tenants",
                                          {"Authorization": f"Bearer {tls_gateway.admin_token}"})
    assert status == 503 and json.loads(body)["error"]["code"] == "SlowDown" and "Retry-After" in headers
    status, _, _ = https_request(tls_gateway, "127.0.0.5", "GET", "/admin/tenants",
                                 {"Authorization": f"Bearer {tls_gateway.admin_token}"})
    assert status == 200


def test_haproxy_serves_tls_from_a_private_copy_of_the_key(tls_gateway: TlsGateway) -> None:
    processes = [p for p in psutil.Process(tls_gateway.process.pid).children(recursive=True) if p.name() == "haproxy"]
    assert processes
    config = Path(next(arg for arg in processes[0].cmdline() if arg.endswith("haproxy.cfg")))
    pem = config.parent / "gateway.pem"
    assert f"ssl crt {pem}" in config.read_text()
    assert pem.stat().st_mode & 0o777 == 0o600 and config.parent.stat().st_mode & 0o777 == 0o700
    listeners = {(c.laddr.ip, c.laddr.port) for p in processes for c in p.net_connections(kind="inet")
                 if c.status == psutil.CONN_LISTEN}
    assert ("127.0.0.1", tls_gateway.port) in listeners and {ip for ip, _ in listeners} == {"127.0.0.1"}
