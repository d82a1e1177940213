"""The hardening of Serve's HAProxy config, run on the config the installed Ray Serve renders.

Each test renders ``haproxy.cfg`` with Serve's own code (``HAProxyApi``, the
template of the installed Ray), hardens it, and where it matters hands the
result to the real HAProxy binary in check mode (``-c``), so a Serve upgrade
that changes the template, or a hardened config HAProxy would refuse, fails
here rather than at a gateway start.
"""
from __future__ import annotations

import datetime
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from serve_apps.haproxy_hardening import (
    CLIENT_ADDRESS_HEADER,
    ENV_REAL_BINARY,
    ENV_TLS_CERT,
    ENV_TLS_KEY,
    HardeningError,
    TlsFiles,
    harden,
    harden_file,
    real_binary,
)


def render_serve_config(folder: Path, *, port: int = 18123, host: str = "127.0.0.1", metrics: bool = True,
                        backend: bool = True) -> Path:
    """``haproxy.cfg`` as Ray Serve writes it for a gateway on ``host:port`` (one app, one replica)."""
    from ray.serve._private.haproxy import BackendConfig, HAProxyApi, HAProxyConfig, ServerConfig
    from ray.serve.config import HTTPOptions

    config = HAProxyConfig(http_options=HTTPOptions(host=host, port=port), socket_path=str(folder / "admin.sock"),
                           server_state_base=str(folder), server_state_file=str(folder / "server-state"),
                           metrics_socket_path=str(folder / "metrics.sock"), metrics_enabled=metrics,
                           stats_port=18404, metrics_port=19101, is_head=True)
    api = HAProxyApi(cfg=config, config_file_path=str(folder / "haproxy.cfg"))
    if backend:
        api.backend_configs = {"dwray": BackendConfig(
            name="dwray", path_prefix="/", app_name="dwray",
            servers=[ServerConfig(name="replica-1", host="127.0.0.1", port=18999)])}
    api._generate_config_file_internal()
    return folder / "haproxy.cfg"


def binds(config: str) -> list[str]:
    return [line.strip() for line in config.splitlines() if line.strip().startswith("bind ")]


def haproxy_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([real_binary(), "-c", "-f", str(path)], capture_output=True, text=True, timeout=60)


@pytest.fixture
def tls_files(tmp_path: Path) -> TlsFiles:
    """A self-signed certificate and its key for 127.0.0.1, written as PEM files (key 0600)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dwray test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return TlsFiles(cert_path, key_path)


@pytest.mark.parametrize("metrics", [True, False])
@pytest.mark.parametrize("backend", [True, False])
def test_side_listeners_go_to_loopback_and_the_admin_socket_closes(tmp_path: Path, metrics: bool,
                                                                    backend: bool) -> None:
    rendered = render_serve_config(tmp_path, metrics=metrics, backend=backend).read_text()
    assert "bind *:18404" in binds(rendered) and "bind :19101" in binds(rendered)  # Serve's own: every interface
    hardened = harden(rendered)
    assert sorted(binds(hardened)) == ["bind 127.0.0.1:18123", "bind 127.0.0.1:18404", "bind 127.0.0.1:19101"]
    socket_line = next(line for line in hardened.splitlines() if "stats socket" in line)
    assert " mode 600 " in socket_line and "666" not in socket_line and "level admin" in socket_line
    global_lines = [line.strip() for line in hardened.split("\ndefaults", 1)[0].splitlines()]
    assert "log 127.0.0.1:514 local0 info" in rendered  # Serve's: every request line to syslog
    assert not [line for line in global_lines if line.startswith("log ")]
    frontend = hardened.split("frontend http_frontend", 1)[1].split("\nbackend ", 1)[0]
    assert f"http-request set-header {CLIENT_ADDRESS_HEADER} %[src]" in frontend
    assert "ssl" not in frontend.split("\n")[1]
    assert harden(hardened) == hardened  # a second pass changes nothing


def test_a_public_client_frontend_keeps_its_address(tmp_path: Path) -> None:
    hardened = harden(render_serve_config(tmp_path, host="0.0.0.0").read_text())
    assert "bind *:18123" in binds(hardened)
    assert not [b for b in binds(hardened) if b != "bind *:18123" and not b.startswith("bind 127.0.0.1:")]


def test_tls_turns_on_for_the_client_frontend_only(tmp_path: Path, tls_files: TlsFiles) -> None:
    pem = tls_files.write_pem(tmp_path)
    assert stat.S_IMODE(pem.stat().st_mode) == 0o600
    assert pem.read_bytes() == (tls_files.cert.read_bytes().rstrip(b"\n") + b"\n" + tls_files.key.read_bytes())
    hardened = harden(render_serve_config(tmp_path).read_text(), pem=pem)
    tls_binds = [b for b in binds(hardened) if "ssl" in b]
    assert tls_binds == [f"bind 127.0.0.1:18123 ssl crt {pem} ssl-min-ver TLSv1.2 alpn http/1.1"]


@pytest.mark.parametrize("with_tls", [False, True])
def test_real_haproxy_accepts_the_hardened_config(tmp_path: Path, tls_files: TlsFiles, with_tls: bool) -> None:
    path = render_serve_config(tmp_path)
    harden_file(path, tls=tls_files if with_tls else None)
    checked = haproxy_check(path)
    assert checked.returncode == 0, checked.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert ("ssl crt" in path.read_text()) is with_tls


def test_unknown_listeners_are_refused_not_started(tmp_path: Path) -> None:
    rendered = render_serve_config(tmp_path).read_text()
    extra = rendered + "frontend other_frontend\n    bind *:19000 proto h2\n    mode http\n"
    with pytest.raises(HardeningError, match="other_frontend"):
        harden(extra)
    no_client = re.sub(r"(frontend http_frontend\n)\s+bind [^\n]+\n", r"\1", rendered)
    with pytest.raises(HardeningError, match="expected exactly one"):
        harden(no_client)


def test_tls_files_must_come_in_pairs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_TLS_CERT, raising=False)
    monkeypatch.delenv(ENV_TLS_KEY, raising=False)
    assert TlsFiles.from_env() is None
    monkeypatch.setenv(ENV_TLS_CERT, "/x/cert.pem")
    with pytest.raises(HardeningError, match="together"):
        TlsFiles.from_env()


def test_dwray_haproxy_hardens_then_runs_the_real_haproxy(tmp_path: Path, tls_files: TlsFiles) -> None:
    """The console script end to end: HAProxy's check mode (-c) runs on the config it rewrote."""
    path = render_serve_config(tmp_path)
    env = {**os.environ, ENV_TLS_CERT: str(tls_files.cert), ENV_TLS_KEY: str(tls_files.key),
           ENV_REAL_BINARY: real_binary()}
    command = Path(sys.executable).parent / "dwray-haproxy"
    done = subprocess.run([str(command), "-c", "-f", str(path)], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert "bind 127.0.0.1:18404" in path.read_text() and (tmp_path / "gateway.pem").exists()
    broken = tmp_path / "broken.cfg"
    broken.write_text(path.read_text().split("\n", 1)[1] + "frontend other\n    bind *:19002\n")
    refused = subprocess.run([str(command), "-c", "-f", str(broken)], env=env, capture_output=True, text=True,
                             timeout=60)
    assert refused.returncode == 78 and "not starting HAProxy" in refused.stderr and "other" in refused.stderr
