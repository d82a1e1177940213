"""Where blobs go: the default backend (``[storage]``), named backends, pools and placement.

``[storage]`` alone is the single default backend, as it always was. For more,
name backends and group them into pools::

    [backends.disk1]
    kind = "local"
    root = "/mnt/a/blobs"
    [backends.disk2]
    kind = "local"
    root = "/mnt/b/blobs"
    [pools.safe]
    kind = "mirror"            # or "tiered": hot, cold, after_days, hot_max_bytes
    members = ["disk1", "disk2"]
    write_quorum = 2
    [placement]
    default = "safe"           # plus tenants = {...} and buckets = {...}

A *placement target* is what an object's data is written to: a pool, a named
backend, or ``[storage]``'s backend, known by its backend kind (``"local"``:
the name the catalog has always recorded). Placement is decided when an
object is written and recorded in its catalog row, so a later change of the
rules moves no data and leaves every object readable from where it is, as
long as its target stays configured.

Credentials are secret *references* (``secret://...``), never values: the
S3 ``secret_key`` and the PostgreSQL ``dsn`` (which may hold a password)
must be references; the S3 ``access_key``, an identifier, may be either.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from dwray.config_base import Section as _Section
from dwray.config_base import Size
from dwray.secret_ref import SecretRefField, parse_secret_ref

__all__ = [
    "BACKEND_KINDS",
    "BackendConfig",
    "PlacementConfig",
    "PoolConfig",
    "ScrubConfig",
    "StorageConfig",
    "check_storage_names",
]

BackendKind = Literal["local", "memory", "s3", "sqlite", "postgres"]
BACKEND_KINDS: tuple[str, ...] = ("local", "memory", "s3", "sqlite", "postgres")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
# Which fields apply to which kind; a field set for another kind is an error, not ignored.
_FIELDS_OF: dict[str, frozenset[str]] = {
    "local": frozenset({"root"}),
    "memory": frozenset({"memory_max_bytes"}),
    "s3": frozenset({"endpoint", "bucket", "prefix", "region", "addressing_style", "access_key", "secret_key",
                     "ca_cert", "multipart_threshold"}),
    "sqlite": frozenset({"path"}),
    "postgres": frozenset({"dsn", "table", "max_connections"}),
}
_DEFAULTS = {"prefix": "", "addressing_style": "auto", "memory_max_bytes": 256 << 20, "table": "dwray_blobs",
             "max_connections": 8, "multipart_threshold": 8 << 20}


class _BackendFields(_Section):
    """The fields of every backend kind; ``_check_fields`` refuses those of another kind."""

    root: Path | None = Field(None, description="local: blob folder (default: DATA_DIR/blobs)")
    memory_max_bytes: Size = Field(256 << 20, gt=0, description="memory: byte cap of the LRU")
    endpoint: str | None = Field(None, pattern=r"^https?://", description="s3: endpoint URL (default: AWS)")
    bucket: str | None = Field(None, min_length=3, max_length=63, description="s3: the bucket blobs go to")
    prefix: str = Field("", max_length=512, description="s3: key prefix in the bucket")
    region: str | None = None
    addressing_style: Literal["auto", "path", "virtual"] = "auto"
    access_key: str | None = Field(None, description="s3: access key id, or a secret reference to it")
    secret_key: SecretRefField | None = Field(None, description="s3: secret reference to the secret key")
    ca_cert: Path | None = Field(None, description="s3: CA bundle to verify the endpoint's TLS certificate")
    multipart_threshold: Size = Field(8 << 20, ge=5 << 20, description="s3: blobs above this go in parts")
    path: Path | None = Field(None, description="sqlite: database file (default: DATA_DIR/blobs.sqlite)")
    dsn: SecretRefField | None = Field(None, description="postgres: secret reference to the connection string")
    table: str = Field("dwray_blobs", pattern=r"^[a-z_][a-z0-9_]{0,62}$", description="postgres: table name")
    max_connections: int = Field(8, ge=1, le=256, description="postgres: connection pool size")

    def _check_fields(self, kind: str, where: str) -> None:
        allowed = _FIELDS_OF[kind]
        for name in sorted(self.model_fields_set - allowed - {"kind", "backend"}):
            if name in _DEFAULTS and getattr(self, name) == _DEFAULTS[name]:
                continue
            if getattr(self, name) is None:
                continue
            kinds = [k for k, fields in _FIELDS_OF.items() if name in fields]
            raise ValueError(f"{where}: {name!r} applies to backend kind {' and '.join(kinds)}, not {kind!r}")
        if kind == "s3":
            if not self.bucket:
                raise ValueError(f"{where}: an s3 backend needs 'bucket'")
            if (self.access_key is None) != (self.secret_key is None):
                raise ValueError(f"{where}: give both 'access_key' and 'secret_key', or neither "
                                 "(then boto3's default credential chain is used)")
            if self.access_key is not None and self.access_key.startswith("secret://"):
                parse_secret_ref(self.access_key)
        if kind == "postgres" and not self.dsn:
            raise ValueError(f"{where}: a postgres backend needs 'dsn' (a secret reference)")

    def secret_refs(self) -> list[str]:
        """The secret references among this backend's fields."""
        refs = [self.secret_key, self.dsn]
        if self.access_key is not None and self.access_key.startswith("secret://"):
            refs.append(self.access_key)
        return [ref for ref in refs if ref]


class StorageConfig(_BackendFields):
    """``[storage]``: the default backend, known in the catalog by its kind (``"local"``, ``"s3"``...)."""

    backend: BackendKind = "local"

    @model_validator(mode="after")
    def _fields_fit_the_kind(self) -> StorageConfig:
        self._check_fields(self.backend, "storage")
        return self

    @property
    def kind(self) -> str:
        return self.backend


class BackendConfig(_BackendFields):
    """``[backends.NAME]``: a named backend, a pool's member or a placement target of its own."""

    kind: BackendKind

    @model_validator(mode="after")
    def _fields_fit_the_kind(self) -> BackendConfig:
        self._check_fields(self.kind, f"backend of kind {self.kind!r}")
        return self


class PoolConfig(_Section):
    """``[pools.NAME]``: a mirror (N replicas on different backends) or a hot/cold tiered pair."""

    kind: Literal["mirror", "tiered"]
    members: list[str] = Field(default_factory=list, description="mirror: the backends holding replicas")
    write_quorum: int | None = Field(None, ge=1, description="mirror: replicas durable before a put is "
                                                              "acknowledged (default: all)")
    hot: str | None = Field(None, description="tiered: the backend new blobs go to")
    cold: str | None = Field(None, description="tiered: the backend blobs move to")
    after_days: float | None = Field(None, gt=0, description="tiered: move blobs older than this")
    hot_max_bytes: Size | None = Field(None, gt=0, description="tiered: move the oldest while hot holds more")
    move_interval: float = Field(300.0, gt=0, description="tiered: seconds between the mover's rounds")

    @model_validator(mode="after")
    def _fields_fit_the_kind(self) -> PoolConfig:
        if self.kind == "mirror":
            if len(self.members) < 2:
                raise ValueError("a mirror pool needs at least 2 members")
            if len(set(self.members)) != len(self.members):
                raise ValueError("a mirror pool's members must be different backends")
            if self.write_quorum is not None and self.write_quorum > len(self.members):
                raise ValueError(f"write_quorum {self.write_quorum} is more than the {len(self.members)} members")
            extra = [f for f in ("hot", "cold", "after_days", "hot_max_bytes") if getattr(self, f) is not None]
        else:
            if not self.hot or not self.cold:
                raise ValueError("a tiered pool needs 'hot' and 'cold'")
            if self.hot == self.cold:
                raise ValueError("a tiered pool's hot and cold must be different backends")
            if self.after_days is None and self.hot_max_bytes is None:
                raise ValueError("a tiered pool needs 'after_days', 'hot_max_bytes' or both")
            extra = [f for f in ("members", "write_quorum") if getattr(self, f)]
        if extra:
            raise ValueError(f"{', '.join(extra)} do not apply to a {self.kind} pool")
        return self

    @property
    def backends(self) -> list[str]:
        """The named backends this pool is built on."""
        return list(self.members) if self.kind == "mirror" else [str(self.hot), str(self.cold)]


class PlacementConfig(_Section):
    """``[placement]``: which target new objects of a bucket go to.

    Most specific first: ``buckets["TENANT/BUCKET"]``, ``buckets["BUCKET"]`` (in
    every tenant), ``tenants["TENANT"]``, ``default``, then ``[storage]``.
    """

    default: str | None = None
    tenants: dict[str, str] = Field(default_factory=dict)
    buckets: dict[str, str] = Field(default_factory=dict)

    def targets(self) -> list[str]:
        names = [self.default] if self.default else []
        return names + list(self.tenants.values()) + list(self.buckets.values())


class ScrubConfig(_Section):
    """``[scrub]``: the scrubber verifies every blob of every pool on a schedule, at a bounded rate."""

    interval: float = Field(7 * 86400.0, ge=0, description="seconds between passes; 0 = only 'dw scrub'")
    rate: Size = Field(32 << 20, gt=0, description="bytes read per second at most")
    grace_seconds: float = Field(3600.0, ge=0, description="a replica no index row knows is removed after this")


def check_storage_names(storage: StorageConfig, backends: dict[str, BackendConfig], pools: dict[str, PoolConfig],
                        placement: PlacementConfig) -> None:
    """Raise ``ValueError`` naming the first bad or dangling name among backends, pools and placement."""
    for section, names in (("backends", backends), ("pools", pools)):
        for name in names:
            if not _NAME.fullmatch(name):
                raise ValueError(f"{section}.{name}: a name is 1-32 of a-z, 0-9, '_' and '-', starting with a "
                                 "letter or digit")
            if name in ("inline", storage.backend):
                raise ValueError(f"{section}.{name}: the name is taken ({name!r} names "
                                 + ("objects kept in the catalog)" if name == "inline" else "[storage]'s backend)"))
    for name in set(backends) & set(pools):
        raise ValueError(f"{name!r} names both a backend and a pool")
    used_by: dict[str, str] = {}
    for pool_name, pool in pools.items():
        for member in pool.backends:
            if member not in backends:
                raise ValueError(f"pools.{pool_name}: {member!r} is not a backend ([backends.{member}])")
            if member in used_by:
                raise ValueError(f"pools.{pool_name}: backend {member!r} is already in pool {used_by[member]!r}")
            used_by[member] = pool_name
    known = {storage.backend, *backends, *pools}
    for target in placement.targets():
        if target not in known:
            raise ValueError(f"placement: {target!r} is not a pool or backend (known: {', '.join(sorted(known))})")
        if target in used_by:
            raise ValueError(f"placement: backend {target!r} is a member of pool {used_by[target]!r}; "
                             "place data on the pool")
