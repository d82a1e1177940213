"""Every error dwray raises, in one tree.

Each class also inherits the built-in it is a kind of, so callers that know
nothing of dwray can still catch it (``except LookupError``). Every error keeps
its constructor arguments in ``args`` and rebuilds itself from them, so it
pickles across processes and Ray actors unchanged; ``str()`` names what was
wrong. No error ever carries secret material: pass names and ids, never keys.

::

    DwrayError(Exception)
    ├── ConfigError(ValueError)              a config file or DWRAY_* variable is invalid
    ├── InvalidArgument(ValueError)          a caller passed a bad value
    │   ├── InvalidBucketName                bucket name breaks S3's naming rules
    │   ├── InvalidObjectKey                 object key is empty, not UTF-8 or has bad characters
    │   │   └── KeyTooLong                   object key is over 1024 bytes of UTF-8
    │   ├── InvalidRange                     byte range does not fit the object
    │   ├── InvalidBlobId                    blob id could escape the backend's root
    │   ├── InvalidContinuationToken         list continuation token is not one we issued
    │   ├── EntityTooLarge                   object is over the configured maximum size
    │   ├── EntityTooSmall                   a multipart part other than the last is under the minimum
    │   ├── InvalidPart                      a completed part is missing or its ETag does not match
    │   ├── InvalidPartOrder                 completed parts are not in ascending order
    │   └── InvalidTag                       object tags break S3's limits (count, lengths, characters)
    ├── NotFound(LookupError)                something named does not exist
    │   ├── BucketNotFound                   no such bucket for this tenant
    │   ├── ObjectNotFound                   no such key (or version) in the bucket
    │   │   └── ObjectDeleted                the key's latest version is a delete marker
    │   ├── BlobNotFound                     the backend holds no blob with that id
    │   ├── UploadNotFound                   no such multipart upload
    │   ├── TenantNotFound                   no such tenant
    │   ├── AccessKeyNotFound                no such access key (or it was revoked)
    │   ├── BackendNotFound                  no storage backend of that name is registered
    │   └── PluginNotFound                   no plugin of that name is registered
    ├── AlreadyExists(FileExistsError)       something named exists and may not be replaced
    │   ├── BucketAlreadyExists              another tenant owns that bucket name (names are global)
    │   │   └── BucketAlreadyOwnedByYou      the tenant already owns that bucket
    │   ├── TenantAlreadyExists              a tenant of that name exists
    │   └── BlobExists                       blobs are immutable; that id is taken
    ├── BucketNotEmpty(OSError)              a bucket that still holds objects cannot go
    ├── DataDirInUse(OSError)                another warehouse holds the data dir's lock
    ├── QuotaExceeded(PermissionError)       a write would take a tenant or bucket over its quota
    ├── AccessDenied(PermissionError)        the access key's policy does not allow the action
    │   └── BucketAccessDenied               the bucket belongs to another tenant
    ├── PreconditionFailed(ValueError)       a conditional write's condition does not hold; nothing was stored
    │   └── ConditionalRequestConflict       the key changed while a conditional multipart upload was in progress
    ├── DeleteMarkerVersion(ValueError)      the version named is a delete marker: it has no bytes to read
    ├── StorageError(OSError)                a backend failed to store or return bytes
    │   ├── StorageFull                      no space left (ENOSPC, EFBIG, memory cap)
    │   └── DurabilityError                  fsync failed: the write is not durable
    ├── IntegrityError(ValueError)           stored bytes fail authentication; never returned
    ├── KeyringError(RuntimeError)           key-encryption keys are missing or unusable
    │   ├── KeyNotFound                      no such KEK id or version
    │   ├── KeyRetired                       KEK version is below the minimum for decryption
    │   ├── MasterKeyMissing                 the master key that seals the keyring is not there
    │   ├── KeyShredded                      the KEK was destroyed (crypto-shredding): data is gone
    │   └── KmsUnavailable                   the key service (e.g. Vault Transit) cannot be reached
    ├── SecretError(RuntimeError)            a secret reference cannot be resolved or stored
    │   ├── SecretNotFound                   no such secret (or version, or field)
    │   ├── SecretConflict                   a check-and-set write lost to another writer
    │   └── SecretUnavailable                the secret manager cannot be reached or refused access
    ├── CatalogError(RuntimeError)           the catalog database failed or is inconsistent
    │   ├── SchemaVersionError               catalog was written by a newer dwray
    │   └── BucketNameClash                  tenants share bucket names, which must be global to upgrade
    ├── PluginError(RuntimeError)            a plugin raised something that is not a dwray error
    │   └── PluginRefused                    a plugin's handshake does not fit its child spec
    ├── PluginTimeout(TimeoutError)          a plugin call or handshake passed its deadline
    ├── PluginUnavailable(ConnectionError)   a plugin's actor died or is being restarted
    │   ├── CircuitOpen                      its circuit breaker is open: failed fast
    │   └── BulkheadFull                     this caller has the most calls in flight it may have
    ├── Backpressure(RuntimeError)           the node is short of memory: new writes wait
    ├── NotReady(RuntimeError)               the warehouse is not (or no longer) ready to serve
    └── DependencyMissing(ImportError)       an optional dependency is not installed
"""
from __future__ import annotations

from typing import Any

__all__ = [
    "PreconditionFailed",
    "ObjectDeleted",
    "InvalidTag",
    "DeleteMarkerVersion",
    "ConditionalRequestConflict",
    "BucketNameClash",
    "BucketAlreadyOwnedByYou",
    "BucketAccessDenied",
    "AccessDenied",
    "AccessKeyNotFound",
    "AlreadyExists",
    "BackendNotFound",
    "BlobExists",
    "BlobNotFound",
    "BucketAlreadyExists",
    "BucketNotEmpty",
    "BucketNotFound",
    "CatalogError",
    "ConfigError",
    "DataDirInUse",
    "DependencyMissing",
    "DurabilityError",
    "DwrayError",
    "EntityTooLarge",
    "EntityTooSmall",
    "IntegrityError",
    "InvalidArgument",
    "InvalidBlobId",
    "InvalidBucketName",
    "InvalidContinuationToken",
    "InvalidObjectKey",
    "InvalidPart",
    "InvalidPartOrder",
    "InvalidRange",
    "KeyNotFound",
    "KeyRetired",
    "KeyTooLong",
    "KeyringError",
    "NotFound",
    "NotReady",
    "CircuitOpen",
    "BulkheadFull",
    "Backpressure",
    "ObjectNotFound",
    "PluginError",
    "PluginNotFound",
    "PluginRefused",
    "PluginTimeout",
    "PluginUnavailable",
    "QuotaExceeded",
    "SchemaVersionError",
    "StorageError",
    "StorageFull",
    "KeyShredded",
    "KmsUnavailable",
    "MasterKeyMissing",
    "SecretConflict",
    "SecretError",
    "SecretNotFound",
    "SecretUnavailable",
    "TenantAlreadyExists",
    "TenantNotFound",
    "UploadNotFound",
]


class DwrayError(Exception):
    """Root of every dwray error.

    Subclasses declare ``fields`` (the constructor's parameters, in order) and a
    ``template`` for ``str()``. Arguments may be passed by position or name;
    they are kept in order so that pickling, which rebuilds an exception as
    ``cls(*values)``, round-trips every subclass.
    """

    fields: tuple[str, ...] = ("message",)
    template: str = "{message}"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        values = list(args)
        for name in self.fields[len(values):]:
            if name in kwargs:
                values.append(kwargs.pop(name))
            else:
                break
        if kwargs:
            raise TypeError(f"{type(self).__name__} got unexpected arguments {sorted(kwargs)}")
        if len(values) < len(self.fields):
            missing = self.fields[len(values):]
            raise TypeError(f"{type(self).__name__} is missing {', '.join(missing)}")
        super().__init__(*values)
        # OSError rewrites ``args`` when given 2 to 5 of them (errno, strerror,
        # ...), so the values are kept here too and pickling uses these.
        self._values = tuple(values)
        for name, value in zip(self.fields, values):
            setattr(self, name, value)

    def __str__(self) -> str:
        return self.template.format(**dict(zip(self.fields, self._values)))

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), self._values, self.__dict__)


class ConfigError(DwrayError, ValueError):
    """A config file or DWRAY_* variable is invalid."""

    fields = ("problems", "source")
    template = "invalid configuration in {source}: {problems}"


class InvalidArgument(DwrayError, ValueError):
    """A caller passed a bad value."""


class InvalidBucketName(InvalidArgument):
    """Bucket name breaks S3's naming rules."""

    fields = ("bucket", "reason")
    template = "invalid bucket name {bucket!r}: {reason}"


class InvalidObjectKey(InvalidArgument):
    """Object key is empty, not UTF-8 or has forbidden characters."""

    fields = ("key", "reason")
    template = "invalid object key {key!r}: {reason}"


class KeyTooLong(InvalidObjectKey):
    """Object key is over 1024 bytes of UTF-8."""

    fields = ("key", "reason")
    template = "object key {key!r} is too long: {reason}"


class InvalidRange(InvalidArgument):
    """Byte range does not fit the object."""

    fields = ("range", "size")
    template = "range {range} is not satisfiable for an object of {size} bytes"


class InvalidBlobId(InvalidArgument):
    """Blob id is malformed or could escape the backend's root."""

    fields = ("blob_id", "reason")
    template = "invalid blob id {blob_id!r}: {reason}"


class InvalidContinuationToken(InvalidArgument):
    """A list continuation token is not one dwray issued."""

    fields = ("token",)
    template = "invalid continuation token {token!r}"


class EntityTooLarge(InvalidArgument):
    """Object is over the configured maximum size."""

    fields = ("size", "limit")
    template = "object of at least {size} bytes is over the limit of {limit} bytes"


class EntityTooSmall(InvalidArgument):
    """A multipart part other than the last is under the minimum part size."""

    fields = ("part_number", "size", "minimum")
    template = "part {part_number} is {size} bytes; every part but the last must be at least {minimum} bytes"


class InvalidPart(InvalidArgument):
    """A part named in a completion was never uploaded, or its ETag does not match."""

    fields = ("upload_id", "part_number", "reason")
    template = "part {part_number} of upload {upload_id!r}: {reason}"


class InvalidTag(InvalidArgument):
    """Object tags break S3's limits: at most 10, unique keys of 1-128 and values of 0-256 characters."""

    fields = ("problem",)
    template = "invalid tag: {problem}"


class InvalidPartOrder(InvalidArgument):
    """The parts named in a completion are not in ascending order (or repeat)."""

    fields = ("upload_id", "reason")
    template = "parts of upload {upload_id!r} are out of order: {reason}"


class NotFound(DwrayError, LookupError):
    """Something named does not exist."""


class BucketNotFound(NotFound):
    """No such bucket for this tenant."""

    fields = ("bucket",)
    template = "bucket {bucket!r} does not exist"


class ObjectNotFound(NotFound):
    """No such key (or version) in the bucket."""

    fields = ("bucket", "key", "version_id")
    template = "object {key!r} (version {version_id}) does not exist in bucket {bucket!r}"

    def __init__(self, bucket: str, key: str, version_id: str | None = None) -> None:
        super().__init__(bucket, key, version_id)

    def __str__(self) -> str:
        if self.version_id is None:
            return f"object {self.key!r} does not exist in bucket {self.bucket!r}"
        return super().__str__()


class ObjectDeleted(ObjectNotFound):
    """The key's latest version is a delete marker (``version_id`` is the marker's): S3 says so in its 404."""

    def __str__(self) -> str:
        return f"object {self.key!r} was deleted from bucket {self.bucket!r} (delete marker {self.version_id})"


class BlobNotFound(NotFound):
    """The backend holds no blob with that id."""

    fields = ("blob_id",)
    template = "blob {blob_id!r} does not exist"


class UploadNotFound(NotFound):
    """No such multipart upload."""

    fields = ("upload_id",)
    template = "multipart upload {upload_id!r} does not exist"


class TenantNotFound(NotFound):
    """No such tenant."""

    fields = ("tenant",)
    template = "tenant {tenant!r} does not exist"


class AccessKeyNotFound(NotFound):
    """No such access key, or it was revoked."""

    fields = ("access_key_id",)
    template = "access key {access_key_id!r} does not exist or was revoked"


class BackendNotFound(NotFound):
    """No storage backend of that name is registered."""

    fields = ("name", "known")
    template = "no storage backend named {name!r}; known backends: {known}"


class PluginNotFound(NotFound):
    """No plugin of that name is registered (or it is not allowed)."""

    fields = ("name", "known")
    template = "no plugin named {name!r}; registered plugins: {known}"


class AlreadyExists(DwrayError, FileExistsError):
    """Something named exists and may not be replaced."""


class BucketAlreadyExists(AlreadyExists):
    """Another tenant owns that bucket name: bucket names are global, as in S3."""

    fields = ("bucket",)
    template = "the bucket name {bucket!r} is taken: bucket names are shared by every tenant; choose another"


class BucketAlreadyOwnedByYou(BucketAlreadyExists):
    """The tenant already owns that bucket."""

    template = "bucket {bucket!r} already exists and is yours"


class TenantAlreadyExists(AlreadyExists):
    """A tenant of that name exists."""

    fields = ("tenant",)
    template = "tenant {tenant!r} already exists"


class BlobExists(AlreadyExists):
    """Blobs are immutable; that blob id is already taken."""

    fields = ("blob_id",)
    template = "blob {blob_id!r} already exists; blobs are immutable"


class BucketNotEmpty(DwrayError, OSError):
    """A bucket that still holds objects cannot be deleted."""

    fields = ("bucket",)
    template = "bucket {bucket!r} is not empty"


class QuotaExceeded(DwrayError, PermissionError):
    """A write would take a tenant or a bucket over one of its hard quotas; nothing was committed.

    Checked in the catalog transaction that commits the write, so concurrent
    writers cannot overstep it together. ``scope`` is ``tenant 'T'`` or
    ``bucket 'B' of tenant 'T'``; ``what`` is ``bytes``, ``objects`` or ``buckets``.
    """

    fields = ("scope", "what", "limit", "usage")
    template = "quota exceeded: {scope} may hold at most {limit} {what}; this write would make it {usage}"


class AccessDenied(DwrayError, PermissionError):
    """The access key's policy does not allow this action on this resource; nothing was done.

    Names the IAM action (``s3:PutObject``) and the resource (``bucket/key``),
    never the policy itself: the caller learns what was refused, not why.
    """

    fields = ("action", "resource")
    template = "access denied: this access key may not {action} on {resource!r}"


class BucketAccessDenied(AccessDenied):
    """The bucket belongs to another tenant (S3 answers 403, not 404, for a name that exists)."""

    fields = ("bucket",)
    template = "access denied: bucket {bucket!r} belongs to another account"

    def __init__(self, bucket: str) -> None:
        super().__init__(bucket)
        self.action, self.resource = "s3:*", bucket


class PreconditionFailed(DwrayError, ValueError):
    """A conditional write's condition (``If-None-Match: *``, ``If-Match: etag``) does not hold: nothing was stored."""

    fields = ("bucket", "key", "condition")
    template = "at least one of the preconditions you specified did not hold ({condition}) for {key!r} in {bucket!r}"


class ConditionalRequestConflict(PreconditionFailed):
    """The key was written while a conditional multipart upload of it was in progress: begin a new upload."""

    template = ("{key!r} in {bucket!r} was written while this conditional multipart upload was in progress "
                "({condition}): begin a new upload and upload its parts again")


class DeleteMarkerVersion(DwrayError, ValueError):
    """The version named is a delete marker: there is nothing to read (S3: 405 MethodNotAllowed).

    ``last_modified`` (epoch seconds) is when the marker was made, which S3's answer names."""

    fields = ("bucket", "key", "version_id", "last_modified")
    template = "version {version_id} of {key!r} in {bucket!r} is a delete marker"


class DataDirInUse(DwrayError, OSError):
    """Another warehouse holds the data dir's lock: one writer per data dir."""

    fields = ("data_dir", "holder")
    template = "data dir {data_dir} is in use by {holder}"


class StorageError(DwrayError, OSError):
    """A storage backend failed to store or return bytes."""

    fields = ("operation", "target", "reason")
    template = "storage {operation} of {target!r} failed: {reason}"


class StorageFull(StorageError):
    """No space left: ENOSPC, EFBIG or a memory cap."""

    template = "storage {operation} of {target!r} failed, no space left: {reason}"


class DurabilityError(StorageError):
    """fsync failed, so the write cannot be called durable."""

    template = "storage {operation} of {target!r} is not durable: {reason}"


class IntegrityError(DwrayError, ValueError):
    """Stored bytes fail authentication; they are never returned."""

    fields = ("what", "reason")
    template = "integrity check failed for {what}: {reason}"


class KeyringError(DwrayError, RuntimeError):
    """Key-encryption keys are missing or unusable."""


class KeyNotFound(KeyringError):
    """No such KEK id or version in the keyring."""

    fields = ("kek_id", "version")
    template = "key-encryption key {kek_id!r} version {version} is not in the keyring"


class KeyRetired(KeyringError):
    """KEK version is below the keyring's minimum decryption version."""

    fields = ("kek_id", "version", "minimum")
    template = (
        "key-encryption key {kek_id!r} version {version} is retired "
        "(minimum decryption version is {minimum})"
    )


class MasterKeyMissing(KeyringError):
    """The master key that seals the keyring cannot be found or does not open it."""

    fields = ("source", "reason")
    template = "the master key {source} is not usable: {reason}"


class KeyShredded(KeyringError):
    """The KEK was destroyed on purpose (crypto-shredding); what it wrapped is unreadable for good."""

    fields = ("kek_id",)
    template = "key-encryption key {kek_id!r} was destroyed (crypto-shredded); its data cannot be decrypted"


class KmsUnavailable(KeyringError):
    """The key service cannot be reached or refused the call; nothing was wrapped or unwrapped."""

    fields = ("service", "reason")
    template = "key service {service} is unavailable: {reason}"


class SecretError(DwrayError, RuntimeError):
    """A secret reference cannot be resolved or a secret cannot be stored. Never carries a value."""


class SecretNotFound(SecretError, LookupError):
    """No such secret, version or field."""

    fields = ("ref", "reason")
    template = "secret {ref} not found: {reason}"


class SecretConflict(SecretError):
    """A check-and-set write found another version than it expected."""

    fields = ("ref", "reason")
    template = "secret {ref} was changed by another writer: {reason}"


class SecretUnavailable(SecretError):
    """The secret manager cannot be reached, or refused access."""

    fields = ("ref", "reason")
    template = "secret {ref} is unavailable: {reason}"


class CatalogError(DwrayError, RuntimeError):
    """The catalog database failed or is inconsistent."""


class SchemaVersionError(CatalogError):
    """The catalog was written by a newer dwray than this one."""

    fields = ("found", "supported")
    template = "catalog schema version {found} is newer than this dwray supports ({supported})"


class BucketNameClash(CatalogError):
    """Tenants share bucket names, which this dwray keeps global (as S3 does): the catalog cannot upgrade."""

    fields = ("clashes", "remedy")
    template = ("bucket names must be unique across tenants, and this catalog has names owned by several "
                "tenants: {clashes}. {remedy}")


class PluginError(DwrayError, RuntimeError):
    """A plugin raised an exception that is not a dwray error."""

    fields = ("plugin", "method", "reason")
    template = "plugin {plugin!r} failed in {method}: {reason}"


class PluginRefused(PluginError):
    """A plugin's handshake does not fit what its child spec expects."""

    fields = ("plugin", "reason")
    template = "plugin {plugin!r} refused: {reason}"


class PluginTimeout(DwrayError, TimeoutError):
    """A plugin call or handshake passed its deadline."""

    fields = ("plugin", "method", "seconds")
    template = "plugin {plugin!r} did not answer {method} within {seconds} s"


class PluginUnavailable(DwrayError, ConnectionError):
    """A plugin's actor died or is being restarted."""

    fields = ("plugin", "reason")
    template = "plugin {plugin!r} is unavailable: {reason}"


class CircuitOpen(PluginUnavailable):
    """A plugin's circuit breaker is open: the call failed fast without reaching the plugin."""

    fields = ("plugin", "reason")
    template = "plugin {plugin!r} is unavailable: circuit breaker open ({reason})"


class BulkheadFull(PluginUnavailable):
    """This caller already has the most calls in flight to a plugin that it may have."""

    fields = ("plugin", "reason")
    template = "plugin {plugin!r} is unavailable: bulkhead full ({reason})"


class Backpressure(DwrayError, RuntimeError):
    """The node is short of memory: new writes and large reads wait until it recovers."""

    fields = ("reason", "retry_after")
    template = "the warehouse is refusing new work for now: {reason}; retry after {retry_after} s"


class NotReady(DwrayError, RuntimeError):
    """The warehouse is not (or no longer) ready to serve."""

    fields = ("reason",)
    template = "the warehouse is not ready: {reason}"


class DependencyMissing(DwrayError, ImportError):
    """An optional dependency is not installed."""

    fields = ("feature", "install")
    template = "{feature} needs an optional dependency: pip install '{install}'"
