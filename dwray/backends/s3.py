"""Blobs as objects in an S3 bucket (AWS, SeaweedFS, moto, any S3-compatible server).

Blob id ``a/b`` is the key ``<prefix>a/b``. Keys under the prefix that are not
valid blob ids (a folder marker, another tool's files, the data of large
blobs) are not listed.

Writes. Every blob becomes visible by one conditional PutObject
(``If-None-Match: *``) of its key, so of several puts of one id exactly one
succeeds and the others get 412, turned into ``BlobExists``:

- a blob of at most ``multipart_threshold`` bytes is buffered and sent by that
  PutObject itself;
- a larger one is streamed by multipart upload to a data key of its own,
  ``<prefix>.large/<id>/<random token>`` (parts of ``multipart_chunk`` bytes,
  doubled every 1000 parts so 10,000 parts reach S3's 5 TiB limit; one part
  uploading while the next fills, so about two parts in memory), and then
  committed by the conditional PutObject of an empty *manifest* at the blob's
  key whose user metadata names the data key and the size. Reads follow it
  (one more request for a large blob); a put that loses the race deletes its
  data. An upload that fails for any reason, the caller's chunks included, is
  aborted, and an unfinished upload is never visible.

Why not ``If-None-Match`` on CompleteMultipartUpload? It is what AWS offers,
but tried here (2026-12, racing completions of one key): SeaweedFS 4.48 and
moto 5.2 accept it and refuse a completion when the key exists *before* it
starts, yet several racing completions all succeed, each replacing the last
(SeaweedFS: 4 of 15 rounds of 6 writers; moto: every round), because both
check and then store. Their conditional PutObject held (0 of 15 rounds each);
AWS documents both as atomic. moto's PutObject is still check-then-store in
its code, so this object also serialises its own commits of one id (writers in
one process never race there). A server that ignores ``If-None-Match``
altogether would silently replace blobs: the first put of a backend object
probes it (a conditional put of a scratch key twice, then a delete) and
refuses to write with ``StorageError`` when the second put is not refused.

SeaweedFS keeps keys in a filer, where ``a/b`` makes ``a`` a folder that its
``If-None-Match`` counts as taken (while a plain PutObject may write the file
``a`` beside it). A refused commit with nothing at the key is that case: the
writers of the id then take turns through a claim (a conditional PutObject
of the flat key ``<prefix>.claims/<sha256 of the id>``), and the holder checks
the key is free before it writes; see ``_commit_over_folder``.

Listing. AWS lists keys in byte order, which is the blobs' order, so without
an ``endpoint`` one flat listing streams them. Other servers need not
(SeaweedFS lists folder by folder: ``a/x`` before ``a-b``), so there the
listing walks one folder level at a time (``Delimiter="/"``), sorting each.

Each put tags its commit with a random token (user metadata ``dwray-put``): a
412, or an error, on an automatic retry of our own successful request is
recognised by the token and reported as the success it was. Taken ids are
found before reading far: a small put learns it from its PutObject, having
pulled at most ``multipart_threshold`` bytes; a large one asks (HeadObject)
before it uploads. A crash (or a server gone) between upload and commit, or
during a delete, leaves data under ``.large/`` that no manifest names, and an
abort that cannot reach the server leaves an upload's parts: ``sweep_temp_files``
(run by every sweep of the warehouse, after its grace period) removes both.

Errors. 404 -> ``BlobNotFound``; a missing bucket (checked once, on the first
call) -> ``StorageError`` naming it; refused connections, timeouts, 5xx and
everything else -> ``StorageError`` naming the operation, the blob id and the
reason. botocore retries (``max_attempts`` in all, standard mode) within
``connect_timeout``/``read_timeout`` per attempt, so a dead server fails a call
in bounded time, and the same object works again once the server is back. A
put whose request reached the server before a failure may still have stored
the blob (no client can know the outcome of a lost reply); it is then whole,
never partial. Credentials go to boto3 and never into this object's repr, its
errors or its logs.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import chain
from typing import Any
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from dwray.backends.base import (
    BlobStat,
    BytesLike,
    StorageBackend,
    as_byte_view,
    is_valid_blob_id,
    validate_blob_id,
    validate_prefix,
)
from dwray.backends.blob_locks import BlobLocks
from dwray.errors import (
    BlobExists,
    BlobNotFound,
    InvalidArgument,
    InvalidBucketName,
    StorageError,
)

__all__ = ["S3Backend"]

_log = logging.getLogger(__name__)

MiB = 1024 * 1024
_MIN_PART = 5 * MiB  # S3: every part but the last
_MAX_PART = 5 * 1024 * MiB
_MAX_PARTS = 10_000
_PARTS_PER_SIZE = 1000  # the part size doubles after every this many parts
_POOL_CONNECTIONS = 32
_PART_UPLOADERS = 16
_TOKEN = "dwray-put"  # user metadata: which put wrote the object
_DATA = "dwray-data"  # user metadata of a manifest: the key of its data, under the prefix
_SIZE = "dwray-size"  # user metadata of a manifest: the blob's size
_LARGE_FOLDER = ".large/"  # data of large blobs; a dot: no blob id starts with one
_CLAIMS_FOLDER = ".claims/"  # see _commit_over_folder
_CLAIM_LEASE = 60.0
_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_STYLES = ("auto", "path", "virtual")
_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}


class _Refused(Exception):
    """A conditional write found the key taken (HTTP 412)."""


class S3Backend(StorageBackend):
    """Blobs in an S3 bucket under an optional key prefix; see the module docstring."""

    name = "s3"

    def __init__(self, bucket: str, *, endpoint: str | None = None, region: str | None = None, prefix: str = "",
                 access_key: str | None = None, secret_key: str | None = None, session_token: str | None = None,
                 addressing_style: str = "auto", multipart_threshold: int = 8 * MiB, multipart_chunk: int = 8 * MiB,
                 connect_timeout: float = 5.0, read_timeout: float = 30.0, max_attempts: int = 3,
                 verify: bool | str = True, create_bucket: bool = False) -> None:
        _check_arguments(bucket, endpoint, addressing_style, multipart_threshold, multipart_chunk,
                         connect_timeout, read_timeout, max_attempts)
        if (access_key is None) != (secret_key is None):
            raise InvalidArgument("S3 backend: give both access_key and secret_key, or neither (boto3's default chain)")
        validate_prefix(prefix)
        self.bucket, self.endpoint, self.region, self.addressing_style = bucket, endpoint, region, addressing_style
        self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        self.multipart_threshold, self.multipart_chunk = multipart_threshold, multipart_chunk
        self.create_bucket = create_bucket
        #: a small put pulls at most this much before its conditional PutObject can refuse a taken id
        self.read_ahead_before_put_check = multipart_threshold
        # Only to blank them out of any text a server sends back; never shown.
        self._hidden = tuple(value for value in (secret_key, session_token) if value)
        config = Config(region_name=region, connect_timeout=connect_timeout, read_timeout=read_timeout,
                        retries={"mode": "standard", "total_max_attempts": max_attempts},
                        max_pool_connections=_POOL_CONNECTIONS, s3={"addressing_style": addressing_style})
        session = boto3.session.Session(aws_access_key_id=access_key, aws_secret_access_key=secret_key,
                                        aws_session_token=session_token, region_name=region)
        self._client = session.client("s3", endpoint_url=endpoint, config=config, verify=verify)
        self._lock = threading.Lock()  # guards the fields below; never held across a request
        self._ready_lock = threading.Lock()  # held while the first call checks the bucket and the server
        self._bucket_checked = False
        self._writes_checked = False
        self._uploaders: ThreadPoolExecutor | None = None
        # Serialises this process's commits of one id: closes, for writers in one process, the window
        # between check and store of a server whose conditional PutObject is not atomic (moto).
        self._id_locks = BlobLocks()
        self._sorted_listing = endpoint is None  # AWS's listing is in byte order; see the module docstring

    def __repr__(self) -> str:
        return (f"S3Backend(bucket={self.bucket!r}, prefix={self.prefix!r}, endpoint={self.endpoint!r}, "
                f"region={self.region!r})")

    # Writes ------------------------------------------------------------------

    def put_blob(self, blob_id: str, chunks: Iterable[BytesLike]) -> int:
        key = self._key(blob_id)
        self._ready("put", blob_id, writing=True)
        token = uuid.uuid4().hex
        buffer = bytearray()
        source = iter(chunks)
        for chunk in source:
            view = as_byte_view(chunk)
            if len(buffer) + len(view) > self.multipart_threshold:
                return self._put_large(blob_id, key, token, chain([memoryview(buffer), view], source))
            buffer += view
        self._commit(blob_id, key, token, Body=bytes(buffer))
        return len(buffer)

    def _commit(self, blob_id: str, key: str, token: str, **request: Any) -> None:
        """The one conditional PutObject that makes a blob visible; ``BlobExists`` if another put made it first."""
        request["Metadata"] = {_TOKEN: token, **request.get("Metadata", {})}
        with self._id_locks.hold(blob_id):
            try:
                self._call("put", blob_id, self._client.put_object, Bucket=self.bucket, Key=key, IfNoneMatch="*",
                           **request)
            except _Refused:
                head = self._head(key, "put", blob_id)
                if head is None:  # refused, yet nothing there: a filer-backed server's folder (SeaweedFS)
                    self._commit_over_folder(blob_id, key, request)
                elif head.get("Metadata", {}).get(_TOKEN) != token:
                    raise BlobExists(blob_id) from None
            except StorageError:
                # An automatic retry may have failed after the first attempt stored the blob.
                if not self._written_by(key, token, blob_id):
                    raise

    def _commit_over_folder(self, blob_id: str, key: str, request: dict[str, Any]) -> None:
        """Commit a blob whose key is also a folder of other blobs' keys, on a server that counts the folder
        as an object for ``If-None-Match`` (SeaweedFS) but lets a plain PutObject write there.

        Writers of the id first take a claim (a conditional PutObject of a flat key, which the server does
        keep atomic); the holder checks the key is free, writes it and drops the claim. Others wait for the
        claim to go, then look again. A claim left by a crash is broken after ``_CLAIM_LEASE`` seconds.
        """
        claim = f"{self.prefix}{_CLAIMS_FOLDER}{hashlib.sha256(blob_id.encode()).hexdigest()}"
        deadline = time.monotonic() + 2 * _CLAIM_LEASE
        while True:
            try:
                self._call("put", blob_id, self._client.put_object, Bucket=self.bucket, Key=claim, Body=b"",
                           IfNoneMatch="*")
                break
            except _Refused:
                held = self._head(claim, "put", blob_id)
                if held is not None and time.time() - held["LastModified"].timestamp() > _CLAIM_LEASE:
                    self._delete_quietly(blob_id, claim)
                elif time.monotonic() > deadline:
                    raise StorageError("put", blob_id, "another writer's claim on this id did not go") from None
                time.sleep(0.05)
            if self._head(key, "put", blob_id) is not None:
                raise BlobExists(blob_id)
        try:
            if self._head(key, "put", blob_id) is not None:
                raise BlobExists(blob_id)
            self._call("put", blob_id, self._client.put_object, Bucket=self.bucket, Key=key, **request)
        finally:
            self._delete_quietly(blob_id, claim)

    def _put_large(self, blob_id: str, key: str, token: str, chunks: Iterator[Any]) -> int:
        """Multipart-upload the bytes to a data key of this put's own, then commit a manifest at ``key``."""
        if self._head(key, "put", blob_id) is not None:
            raise BlobExists(blob_id)
        data = f"{_LARGE_FOLDER}{blob_id}/{token}"
        size = self._upload(blob_id, self.prefix + data, chunks)
        try:
            self._commit(blob_id, key, token, Body=b"", Metadata={_DATA: data, _SIZE: str(size)})
        except BlobExists:
            self._delete_data(blob_id, data)
            raise
        except StorageError:
            try:
                # Unknown whether the manifest was stored: the data is removed only when it surely was not.
                if not self._written_by(key, token, blob_id):
                    self._delete_data(blob_id, data)
            except StorageError:
                pass
            raise
        return size

    def _upload(self, blob_id: str, key: str, chunks: Iterator[Any]) -> int:
        """Stream ``chunks`` to ``key`` by multipart upload, one part in flight while the next fills;
        aborted on any failure."""
        upload = self._call("put", blob_id, self._client.create_multipart_upload, Bucket=self.bucket,
                            Key=key)["UploadId"]
        parts: list[dict[str, Any]] = []
        pending: Future[dict[str, Any]] | None = None
        try:
            size, buffer = 0, bytearray()
            for chunk in chunks:
                view = as_byte_view(chunk)
                while view:
                    part_size = self._part_size(len(parts) + (pending is not None) + 1)
                    room = part_size - len(buffer)
                    buffer += view[:room]
                    view = view[room:]
                    if len(buffer) == part_size:
                        pending = self._send_part(blob_id, key, upload, parts, pending, buffer)
                        size, buffer = size + len(buffer), bytearray()
            if buffer or not (parts or pending):
                pending = self._send_part(blob_id, key, upload, parts, pending, buffer)
                size += len(buffer)
            if pending is not None:
                parts.append(pending.result())
                pending = None
            self._call("put", blob_id, self._client.complete_multipart_upload, Bucket=self.bucket, Key=key,
                       UploadId=upload, MultipartUpload={"Parts": parts})
        except BaseException:
            self._abort(blob_id, key, upload, pending)
            raise
        return size

    def _part_size(self, number: int) -> int:
        return min(self.multipart_chunk << min((number - 1) // _PARTS_PER_SIZE, 20), _MAX_PART)

    def _send_part(self, blob_id: str, key: str, upload: str, parts: list[dict[str, Any]],
                   pending: Future[dict[str, Any]] | None, buffer: bytearray) -> Future[dict[str, Any]]:
        """Wait for the part in flight, then start uploading ``buffer`` as the next one."""
        if pending is not None:
            parts.append(pending.result())
        number = len(parts) + 1
        if number > _MAX_PARTS:
            raise StorageError("put", blob_id, f"more than {_MAX_PARTS} parts: raise multipart_chunk")
        body = bytes(buffer)

        def upload_part() -> dict[str, Any]:
            reply = self._call("put", blob_id, self._client.upload_part, Bucket=self.bucket, Key=key,
                               UploadId=upload, PartNumber=number, Body=body)
            return {"PartNumber": number, "ETag": reply["ETag"]}

        return self._part_pool().submit(upload_part)

    def _abort(self, blob_id: str, key: str, upload: str, pending: Future[dict[str, Any]] | None) -> None:
        """Abort a failed upload (best effort: the original error is what the caller sees)."""
        if pending is not None and not pending.cancel():
            # The part's own failure is not the one being reported.
            with contextlib.suppress(BaseException):
                pending.result()
        try:
            self._call("abort", blob_id, self._client.abort_multipart_upload, Bucket=self.bucket, Key=key,
                       UploadId=upload)
        except (StorageError, BlobNotFound, _Refused) as exc:
            _log.warning("could not abort the multipart upload of blob %r in bucket %r (%s); its parts stay "
                         "until a lifecycle rule removes them", blob_id, self.bucket, exc)

    def _delete_data(self, blob_id: str, data: str) -> None:
        self._delete_quietly(blob_id, self.prefix + data)

    def _delete_quietly(self, blob_id: str, key: str) -> None:
        """Delete a helper key (a large blob's data, a claim); a failure leaves an orphan and is logged."""
        try:
            self._call("delete", blob_id, self._client.delete_object, Bucket=self.bucket, Key=key)
        except (StorageError, BlobNotFound, _Refused) as exc:
            _log.warning("could not delete %r (of blob %r) in bucket %r: %s; it stays as an orphan",
                         key, blob_id, self.bucket, exc)

    def _written_by(self, key: str, token: str, blob_id: str) -> bool:
        head = self._head(key, "put", blob_id)
        return head is not None and head.get("Metadata", {}).get(_TOKEN) == token

    def delete_blob(self, blob_id: str) -> None:
        key = self._key(blob_id)
        self._ready("delete", blob_id)
        head = self._head(key, "delete", blob_id)
        if head is None:
            return
        try:
            self._call("delete", blob_id, self._client.delete_object, Bucket=self.bucket, Key=key)
        except BlobNotFound:
            pass
        data = head.get("Metadata", {}).get(_DATA)
        if data is not None:
            self._delete_data(blob_id, data)

    # Reads ---------------------------------------------------------------------

    def get_blob(self, blob_id: str, start: int = 0, end: int | None = None) -> bytes:
        key = self._key(blob_id)
        self.check_range(start, end)
        self._ready("get", blob_id)
        if end == start:
            self.stat_blob(blob_id)
            return b""
        ranged = {"Range": f"bytes={start}-{'' if end is None else end - 1}"} if start or end is not None else {}
        try:
            reply = self._call("get", blob_id, self._client.get_object, Bucket=self.bucket, Key=key, **ranged)
            data = reply.get("Metadata", {}).get(_DATA)
            if data is None:
                return self._call("get", blob_id, reply["Body"].read)
            reply["Body"].close()
        except _Refused:  # 416: the range starts at or past the end (of a manifest, which is empty)
            head = self._head(key, "get", blob_id)
            if head is None:
                raise BlobNotFound(blob_id) from None
            data = head.get("Metadata", {}).get(_DATA)
            if data is None:
                return b""
        try:  # a large blob: its manifest names its data
            reply = self._call("get", blob_id, self._client.get_object, Bucket=self.bucket, Key=self.prefix + data,
                               **ranged)
        except _Refused:
            return b""
        return self._call("get", blob_id, reply["Body"].read)

    def stat_blob(self, blob_id: str) -> BlobStat:
        key = self._key(blob_id)
        self._ready("stat", blob_id)
        head = self._head(key, "stat", blob_id)
        if head is None:
            raise BlobNotFound(blob_id)
        size = head.get("Metadata", {}).get(_SIZE, head["ContentLength"])
        return BlobStat(blob_id, int(size), head["LastModified"].timestamp())

    def list_blobs(self, prefix: str = "") -> Iterator[str]:
        validate_prefix(prefix)
        self._ready("list", prefix)
        return self._listed(prefix)

    def _listed(self, prefix: str) -> Iterator[str]:
        if self._sorted_listing:  # AWS lists keys in UTF-8 byte order: Python's order for blob ids' ASCII
            for key, _ in self._level(self.prefix + prefix, prefix, delimiter=False):
                if is_valid_blob_id(key[len(self.prefix):]):
                    yield key[len(self.prefix):]
            return
        # Not every other server does (SeaweedFS lists folder by folder: "a/x" before "a-b"), so walk one
        # level at a time and sort each, a folder "a/" sorting as that string.
        yield from self._walk(self.prefix + prefix, prefix)

    def _walk(self, key_prefix: str, target: str) -> Iterator[str]:
        for name, is_folder in sorted(self._level(key_prefix, target, delimiter=True)):
            blob_id = name[len(self.prefix):]
            if is_folder and "/." not in "/" + blob_id:  # .large/, .claims/: no blobs there
                yield from self._walk(name, target)
            elif not is_folder and is_valid_blob_id(blob_id):
                yield blob_id

    def _level(self, key_prefix: str, target: str, *, delimiter: bool) -> Iterator[tuple[str, bool]]:
        """(key, False) for the objects and, with ``delimiter``, (folder, True) for the folders under
        ``key_prefix``."""
        options = {"Delimiter": "/"} if delimiter else {}
        pages = iter(self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=key_prefix,
                                                                              **options))
        while (page := self._call("list", target, next, pages, None)) is not None:
            for item in page.get("Contents", []):
                yield item["Key"], False
            for folder in page.get("CommonPrefixes", []):
                yield folder["Prefix"], True

    def sweep_temp_files(self, older_than_seconds: float) -> int:
        """Remove what a crash or a lost connection leaves under the prefix, once older than
        ``older_than_seconds``: large-blob data no manifest names, stale claims, and multipart uploads
        never completed or aborted. Returns how many were removed (``Warehouse.sweep`` calls this)."""
        self._ready("sweep", self.prefix)
        cutoff = time.time() - older_than_seconds
        removed = 0
        for key, modified in self._objects_under(self.prefix + _LARGE_FOLDER):
            data = key[len(self.prefix):]  # .large/<blob id>/<token>
            blob_id = data[len(_LARGE_FOLDER):].rpartition("/")[0]
            if modified > cutoff or not is_valid_blob_id(blob_id):
                continue
            head = self._head(self._key(blob_id), "sweep", blob_id)
            if head is None or head.get("Metadata", {}).get(_DATA) != data:
                self._delete_quietly(blob_id, key)
                removed += 1
        for key, modified in self._objects_under(self.prefix + _CLAIMS_FOLDER):
            if modified <= cutoff:
                self._delete_quietly(key, key)
                removed += 1
        pages = iter(self._client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket,
                                                                                     Prefix=self.prefix))
        while (page := self._call("sweep", self.prefix, next, pages, None)) is not None:
            for upload in page.get("Uploads", []):
                if upload["Initiated"].timestamp() <= cutoff:
                    try:
                        self._call("sweep", upload["Key"], self._client.abort_multipart_upload, Bucket=self.bucket,
                                   Key=upload["Key"], UploadId=upload["UploadId"])
                    except BlobNotFound:
                        continue  # completed or aborted meanwhile
                    removed += 1
        return removed

    def _objects_under(self, key_prefix: str) -> Iterator[tuple[str, float]]:
        """(key, modification time) of every object under ``key_prefix``."""
        pages = iter(self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=key_prefix))
        while (page := self._call("sweep", key_prefix, next, pages, None)) is not None:
            for item in page.get("Contents", []):
                yield item["Key"], item["LastModified"].timestamp()

    def close(self) -> None:
        with self._lock:
            uploaders, self._uploaders = self._uploaders, None
        if uploaders is not None:
            uploaders.shutdown(wait=True)
        self._client.close()

    # Plumbing ------------------------------------------------------------------

    def _key(self, blob_id: str) -> str:
        return self.prefix + validate_blob_id(blob_id)

    def _part_pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._uploaders is None:
                self._uploaders = ThreadPoolExecutor(_PART_UPLOADERS, thread_name_prefix="dwray-s3-part")
            return self._uploaders

    def _head(self, key: str, operation: str, blob_id: str) -> dict[str, Any] | None:
        try:
            return self._call(operation, blob_id, self._client.head_object, Bucket=self.bucket, Key=key)
        except BlobNotFound:
            return None

    def _ready(self, operation: str, target: str, *, writing: bool = False) -> None:
        """Check once that the bucket exists (creating it if asked) and, before the first write, that the
        server honours ``If-None-Match: *``."""
        if self._bucket_checked and (self._writes_checked or not writing):
            return
        with self._ready_lock:
            if not self._bucket_checked:
                self._check_bucket(operation, target)
                self._bucket_checked = True
            if writing and not self._writes_checked:
                self._check_conditional_writes(operation, target)
                self._writes_checked = True

    def _check_bucket(self, operation: str, target: str) -> None:
        try:
            self._call(operation, target, self._client.head_bucket, Bucket=self.bucket)
            return
        except BlobNotFound:
            if not self.create_bucket:
                raise StorageError(operation, target, f"the bucket {self.bucket!r} does not exist"
                                   f"{self._at()}; create it, or set create_bucket") from None
        options: dict[str, Any] = {}
        region = self._client.meta.region_name
        if self.endpoint is None and region and region != "us-east-1":
            options["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            self._call(operation, target, self._client.create_bucket, Bucket=self.bucket, **options)
        except StorageError as exc:
            if "BucketAlreadyOwnedByYou" not in str(exc):
                raise
        _log.info("created bucket %r%s", self.bucket, self._at())

    def _check_conditional_writes(self, operation: str, target: str) -> None:
        probe = f"{self.prefix}.dwray-conditional-write-probe-{uuid.uuid4().hex}"
        put = self._client.put_object
        try:
            try:
                self._call(operation, target, put, Bucket=self.bucket, Key=probe, Body=b"1", IfNoneMatch="*")
            except _Refused:
                raise StorageError(operation, target, "the server refused a conditional put of a new key") from None
            try:
                self._call(operation, target, put, Bucket=self.bucket, Key=probe, Body=b"2", IfNoneMatch="*")
            except _Refused:
                return
            raise StorageError(operation, target, f"the S3 server{self._at()} ignores If-None-Match: * on "
                               "PutObject, so it cannot keep blobs immutable; use a server that honours it")
        finally:
            try:
                self._call(operation, target, self._client.delete_object, Bucket=self.bucket, Key=probe)
            except (StorageError, BlobNotFound, _Refused) as exc:
                _log.warning("could not delete the probe key %r in bucket %r: %s", probe, self.bucket, exc)

    def _call(self, operation: str, target: str, function: Any, *args: Any, **kwargs: Any) -> Any:
        """``function(*args, **kwargs)`` with every failure turned into a dwray error (or ``_Refused``)."""
        try:
            return function(*args, **kwargs)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code == "NoSuchBucket":
                raise StorageError(operation, target, f"the bucket {self.bucket!r} does not exist{self._at()}") \
                    from None
            if code in _NOT_FOUND or status == 404:
                raise BlobNotFound(target) from None
            if status in (412, 416) or code in ("PreconditionFailed", "InvalidRange"):
                raise _Refused(code) from None
            reason = f"{code or 'error'} (HTTP {status}) from the S3 server{self._at()}: {error.get('Message', '')}"
            raise StorageError(operation, target, self._clean(reason)) from None
        except NoCredentialsError:
            raise StorageError(operation, target, "no S3 credentials: give access_key and secret_key, or set "
                               "them up for boto3 (environment, ~/.aws, instance role)") from None
        except BotoCoreError as exc:
            raise StorageError(operation, target, self._clean(f"{type(exc).__name__}: {exc}")) from None
        except (OSError, ValueError) as exc:  # urllib3 and http.client errors that botocore lets through
            raise StorageError(operation, target, self._clean(f"{type(exc).__name__}: {exc}")) from None

    def _at(self) -> str:
        return f" at {self.endpoint}" if self.endpoint else ""

    def _clean(self, text: str) -> str:
        for hidden in self._hidden:
            text = text.replace(hidden, "***")
        return text




def _check_arguments(bucket: object, endpoint: object, addressing_style: object, threshold: object, chunk: object,
                     connect_timeout: object, read_timeout: object, max_attempts: object) -> None:
    """InvalidArgument (or InvalidBucketName) naming the first bad argument."""
    if not isinstance(bucket, str) or not _BUCKET_NAME.fullmatch(bucket) or ".." in bucket:
        raise InvalidBucketName(bucket, "3-63 characters of a-z, 0-9, '.' and '-', starting and ending with a "
                                "letter or digit")
    if endpoint is not None:
        parts = urlsplit(endpoint) if isinstance(endpoint, str) else None
        if parts is not None and "@" in parts.netloc:  # not echoed: it may hold a password
            raise InvalidArgument("S3 backend: the endpoint URL must not hold credentials; "
                                  "give access_key and secret_key")
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidArgument(f"S3 backend: endpoint must be an http(s) URL, got {endpoint!r}")
    if addressing_style not in _STYLES:
        raise InvalidArgument(f"S3 backend: addressing_style must be one of {', '.join(_STYLES)}, "
                              f"got {addressing_style!r}")
    if not isinstance(chunk, int) or isinstance(chunk, bool) or not _MIN_PART <= chunk <= _MAX_PART:
        raise InvalidArgument(f"S3 backend: multipart_chunk must be {_MIN_PART} to {_MAX_PART} bytes (S3's part "
                              f"sizes), got {chunk!r}")
    if not isinstance(threshold, int) or isinstance(threshold, bool) or not 0 <= threshold <= _MAX_PART:
        raise InvalidArgument(f"S3 backend: multipart_threshold must be 0 to {_MAX_PART} bytes, got {threshold!r}")
    for name, value in (("connect_timeout", connect_timeout), ("read_timeout", read_timeout)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
            raise InvalidArgument(f"S3 backend: {name} must be a number of seconds above 0, got {value!r}")
    if not isinstance(max_attempts, int) or isinstance(max_attempts, bool) or max_attempts < 1:
        raise InvalidArgument(f"S3 backend: max_attempts must be an integer of at least 1, got {max_attempts!r}")
