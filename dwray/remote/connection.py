"""One tenant's connection to a gateway: the boto3 client, how every call goes out and how its
failures come back as dwray errors, and which tenant the access key acts for.

boto3 does the S3 protocol (SigV4, retries, connection pooling) with path-style
addressing, so any host name works, and with ``standard`` retries. Checksums
are computed only where S3 requires them: the gateway verifies what it is sent
and stores what it verified, so a checksum boto3 added by itself would show up
among the object's stored headers, which the in-process warehouse does not have.

The secret key goes to botocore and nowhere else: no attribute, repr or error holds it.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from typing import Any, Self
from urllib.parse import urlsplit

from dwray.core.models import TenantContext
from dwray.errors import AccessDenied, InvalidArgument
from dwray.remote.errors import Target, from_client_error, from_transport_error

__all__ = ["DEFAULT_PART_SIZE", "GatewayConnection", "TenantArg"]

TenantArg = TenantContext | str | None
#: bodies over this size go as multipart uploads of parts this size (S3's minimum part is 5 MiB)
DEFAULT_PART_SIZE = 8 << 20


class GatewayConnection:
    """The boto3 client on a gateway, for one access key."""

    def __init__(self, url: str, access_key: str, secret_key: str, *, region: str = "us-east-1",
                 verify: bool | str = True, config: Any = None, part_size: int = DEFAULT_PART_SIZE) -> None:
        self.url = _check_url(url)
        for name, value in (("access_key", access_key), ("secret_key", secret_key), ("region", region)):
            if not isinstance(value, str) or not value:
                raise InvalidArgument(f"{name} must be a non-empty string")
        if not isinstance(verify, (bool, str)):
            raise InvalidArgument(f"verify must be True, False or the path of a CA bundle, not {type(verify).__name__}")
        if isinstance(verify, str) and not os.path.isfile(verify):
            raise InvalidArgument(f"verify names a CA bundle that is not a file: {verify!r}")
        if isinstance(part_size, bool) or not isinstance(part_size, int) or part_size < 5 << 20:
            raise InvalidArgument(f"part_size must be an integer of at least 5 MiB (S3's minimum), not {part_size!r}")
        self.access_key = access_key
        self.region = region
        self.verify = verify
        self.part_size = part_size
        self._extra = threading.local()
        self._tenant: str | None = None
        self._s3 = _client(self.url, access_key, secret_key, region, verify, config)
        self._s3.meta.events.register("before-sign.s3", self._add_headers)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(url={self.url!r}, access_key={self.access_key!r}, region={self.region!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Close the client's pooled connections."""
        self._s3.close()

    @property
    def s3(self) -> Any:
        """The boto3 S3 client itself, for what this API does not cover."""
        return self._s3

    @property
    def tenant(self) -> str:
        """The tenant the access key belongs to (the owner ListBuckets names), asked once."""
        if self._tenant is None:
            answer = self._call("list_buckets", Target("ListBuckets"), MaxBuckets=1)
            self._tenant = str(answer.get("Owner", {}).get("ID") or "")
        return self._tenant

    def _acting_as(self, tenant: TenantArg) -> None:
        """A tenant client acts as its key's tenant only: ``None`` or that tenant, else ``AccessDenied``."""
        if tenant is None:
            return
        name = tenant.tenant if isinstance(tenant, TenantContext) else tenant
        if not isinstance(name, str) or name != self.tenant:
            raise AccessDenied("act for another tenant (a gateway client acts as its access key's tenant, "
                               f"{self.tenant!r})", str(name))

    def _add_headers(self, request: Any, **_: Any) -> None:
        """Headers for this thread's current call (stored headers sent verbatim), before signing."""
        for name, value in (getattr(self._extra, "headers", None) or {}).items():
            request.headers[name] = value

    def _call(self, method: str, target: Target, *, headers: Mapping[str, str] | None = None,
              **params: Any) -> Any:
        """Call boto3's ``method``; every failure comes back as a dwray error."""
        from botocore.exceptions import BotoCoreError, ClientError

        self._extra.headers = headers
        try:
            return getattr(self._s3, method)(**params)
        except ClientError as error:
            raise from_client_error(error, target) from None
        except BotoCoreError as error:
            raise from_transport_error(error, target, self.url) from None
        finally:
            self._extra.headers = None


def _check_url(url: object) -> str:
    if not isinstance(url, str):
        raise InvalidArgument(f"url must be a string such as 'https://gateway:8000', not {type(url).__name__}")
    parts = urlsplit(url)
    # Credentials first, and the URL itself is never echoed past this point's checks of its parts:
    # a URL with a password or a signed query must not end up in an error message or a log.
    if parts.username or parts.password:
        raise InvalidArgument("url must not carry credentials: pass access_key and secret_key")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidArgument(f"url must be http:// or https:// and name a host, like 'https://gateway:8000' "
                              f"(its scheme is {parts.scheme!r})")
    if parts.query or parts.fragment:
        raise InvalidArgument("url must name only the gateway (scheme, host, port): it has a query or fragment")
    if parts.path not in ("", "/"):
        raise InvalidArgument(f"url must name only the gateway (scheme, host, port), not the path {parts.path!r}")
    try:
        parts.port
    except ValueError:
        raise InvalidArgument(f"url has an invalid port: {url!r}") from None
    return f"{parts.scheme}://{parts.netloc}"


def _client(url: str, access_key: str, secret_key: str, region: str, verify: bool | str, config: Any) -> Any:
    import boto3
    from botocore.config import Config

    base = Config(s3={"addressing_style": "path"}, retries={"mode": "standard", "max_attempts": 3},
                  signature_version="s3v4", request_checksum_calculation="when_required",
                  response_checksum_validation="when_required")
    if config is not None:
        if not isinstance(config, Config):
            raise InvalidArgument(f"config must be a botocore.config.Config, not {type(config).__name__}")
        base = base.merge(config)
    session = boto3.session.Session(aws_access_key_id=access_key, aws_secret_access_key=secret_key,
                                    region_name=region)
    return session.client("s3", endpoint_url=url, verify=verify, config=base)
