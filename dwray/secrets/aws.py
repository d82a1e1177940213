"""``secret://aws/NAME[#FIELD]``: secrets in AWS Secrets Manager, through boto3.

Versions are Secrets Manager's: each write is a new version whose id is the
``ClientRequestToken`` dwray sends (a UUID, so a retried request cannot make
two versions); the current one carries the ``AWSCURRENT`` label, the one
before it ``AWSPREVIOUS`` (what ``previous_version`` returns; ``get`` takes
either label as a version too). ``#FIELD`` parses the ``SecretString`` as a
JSON object and takes one field. Text goes in ``SecretString``, other bytes
in ``SecretBinary``.

Check-and-set, which the service has no parameter for, is built from its
labels: the new version is put under a label of dwray's own
(``dwray-pending``), then ``UpdateSecretVersionStage`` moves ``AWSCURRENT`` to
it *from the expected version*, which the service refuses atomically if
``AWSCURRENT`` has moved meanwhile. The loser's version loses its label, so
the service treats it as deprecated and removes it in time.
``cas=ABSENT`` is ``CreateSecret``, which fails if the name exists.

``delete`` schedules deletion with the service's recovery window (the name
stays taken meanwhile) unless the manager was made with
``recovery_window_days=None`` or ``delete(name, force=True)`` is asked for:
then ``ForceDeleteWithoutRecovery``.

Credentials: ``access_key_id`` and ``secret_access_key`` references
(``secret://env/`` or ``secret://file/``) when given, else boto3's own chain
(environment, profile, instance role).
"""
from __future__ import annotations

import builtins
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Self, TypeVar

import boto3
import botocore.config
import botocore.exceptions

from dwray.errors import InvalidArgument, SecretConflict, SecretNotFound, SecretUnavailable
from dwray.secret_ref import SecretValue
from dwray.secrets.base import ABSENT, SecretInput, SecretManager, SecretVersion, encode_value
from dwray.secrets.credentials import read_credential

if TYPE_CHECKING:
    from dwray.config import DwrayConfig

__all__ = ["AwsSecretManager"]

T = TypeVar("T")
PENDING = "dwray-pending"
# Labels ``get`` also takes for a version: the current one and the one before it.
_STAGES = ("AWSCURRENT", "AWSPREVIOUS")
_NOT_FOUND = {"ResourceNotFoundException"}
_REFUSED = {"AccessDeniedException", "UnrecognizedClientException", "InvalidSignatureException",
            "ExpiredTokenException", "AccessDenied"}


class AwsSecretManager(SecretManager):
    """AWS Secrets Manager in ``region`` (or at ``endpoint_url``); see the module docstring."""

    scheme = "aws"
    # Versions without a label are deprecated: the service may remove them at any time.
    min_versions_kept = 2

    def __init__(self, *, region: str | None = None, endpoint_url: str | None = None,
                 access_key_id: str | None = None, secret_access_key: str | None = None,
                 recovery_window_days: int | None = 7, timeout: float = 10.0) -> None:
        """``access_key_id`` and ``secret_access_key``: ``secret://env/`` or ``secret://file/`` references."""
        if (access_key_id is None) != (secret_access_key is None):
            raise InvalidArgument("set both [secrets.aws] access_key_id and secret_access_key, or neither "
                                  "(boto3's credential chain)")
        if recovery_window_days is not None and not 7 <= recovery_window_days <= 30:
            raise InvalidArgument(f"recovery_window_days must be 7 to 30 (or None), not {recovery_window_days}")
        credentials = {}
        if access_key_id is not None and secret_access_key is not None:
            credentials = {"aws_access_key_id": read_credential(access_key_id, "[secrets.aws] access_key_id"),
                           "aws_secret_access_key": read_credential(secret_access_key,
                                                                    "[secrets.aws] secret_access_key")}
        self.region = region
        self.endpoint_url = endpoint_url
        self.recovery_window_days = recovery_window_days
        session = boto3.session.Session(region_name=region, **credentials)
        if session.region_name is None:
            raise InvalidArgument("AWS Secrets Manager needs a region: set [secrets.aws] region "
                                  "(or AWS_DEFAULT_REGION)")
        self._client = session.client(
            "secretsmanager", endpoint_url=endpoint_url,
            config=botocore.config.Config(connect_timeout=timeout, read_timeout=timeout,
                                          retries={"max_attempts": 2, "mode": "standard"}))

    @classmethod
    def from_config(cls, config: DwrayConfig) -> Self:
        aws = config.secrets.aws
        return cls(region=aws.region, endpoint_url=aws.endpoint_url, access_key_id=aws.access_key_id,
                   secret_access_key=aws.secret_access_key)

    def __repr__(self) -> str:
        where = self.endpoint_url or self.region
        return f"AwsSecretManager({where!r})"

    # -- one request, with errors handled ------------------------------------------------------

    def _call(self, ref: str, request: Callable[[], T], missing: str = "no such secret") -> T:
        try:
            return request()
        except botocore.exceptions.ClientError as exc:
            raise self._refusal(ref, exc, missing) from None
        except botocore.exceptions.ParamValidationError:
            # Its text may quote a parameter, and a parameter may be the value: say less.
            raise InvalidArgument(f"secret {ref}: AWS Secrets Manager refuses a parameter of this request "
                                  f"(a malformed name or version id?)") from None
        except botocore.exceptions.NoCredentialsError:
            raise SecretUnavailable(ref, "no AWS credentials: set [secrets.aws] access_key_id and "
                                         "secret_access_key, or configure boto3's chain") from None
        except (botocore.exceptions.ConnectionError, botocore.exceptions.ReadTimeoutError,
                botocore.exceptions.ConnectTimeoutError) as exc:
            raise SecretUnavailable(ref, f"AWS Secrets Manager ({self._where}) cannot be reached "
                                         f"({type(exc).__name__})") from None

    @property
    def _where(self) -> str:
        return self.endpoint_url or f"region {self._client.meta.region_name}"

    def _refusal(self, ref: str, exc: botocore.exceptions.ClientError, missing: str = "no such secret") -> Exception:
        """The dwray error for the service's error answer (its code only: messages are not ours to pass on)."""
        code = exc.response.get("Error", {}).get("Code", "")
        if code in _NOT_FOUND:
            return SecretNotFound(ref, f"{missing} in AWS Secrets Manager ({self._where})")
        if code == "InvalidRequestException" and "delet" in str(exc).lower():
            return SecretNotFound(ref, f"it is scheduled for deletion in AWS Secrets Manager ({self._where})")
        if code in _REFUSED:
            return SecretUnavailable(ref, f"AWS Secrets Manager ({self._where}) refused access ({code})")
        return SecretUnavailable(ref, f"AWS Secrets Manager ({self._where}) failed: {code or 'error'}")

    def _version_list(self, name: str) -> builtins.list[dict[str, Any]]:
        def read() -> builtins.list[dict[str, Any]]:
            versions: builtins.list[dict[str, Any]] = []
            paging: dict[str, str] = {}
            while True:
                page = self._client.list_secret_version_ids(SecretId=name, **paging)
                versions.extend(page.get("Versions", []))
                if not page.get("NextToken"):
                    return versions
                paging = {"NextToken": page["NextToken"]}
        return self._call(self.ref(name), read)

    # -- the contract -----------------------------------------------------------------------------

    def get(self, name: str, field: str | None = None, version: str | None = None) -> SecretValue:
        self.check_name(name, field)
        ref = self.ref(name, field)
        if version is None or version in _STAGES:
            which = {"VersionStage": version or "AWSCURRENT"}
        elif _is_version_id(version):
            which = {"VersionId": version}
        else:
            raise SecretNotFound(ref, f"{version!r} is neither an AWS Secrets Manager version id nor a stage "
                                      f"({', '.join(_STAGES)})")
        answer = self._call(ref, lambda: self._client.get_secret_value(SecretId=name, **which),
                            "no such secret" if version is None else f"no version {version!r} of it")
        text = answer.get("SecretString")
        raw = text.encode("utf-8") if text is not None else bytes(answer.get("SecretBinary") or b"")
        return self.value(raw, name, field, answer["VersionId"])

    def versions(self, name: str) -> builtins.list[SecretVersion]:
        self.current_version(name)  # a clear SecretNotFound for a missing or deleted secret
        listed = [entry for entry in self._version_list(name) if entry.get("VersionStages")]
        # Oldest first (the service lists them in no stated order); of equal times the current is newest.
        listed.sort(key=lambda entry: (entry["CreatedDate"].timestamp() if entry.get("CreatedDate") else 0.0,
                                       "AWSCURRENT" in entry["VersionStages"]))
        return [SecretVersion(entry["VersionId"],
                              entry["CreatedDate"].timestamp() if entry.get("CreatedDate") else None,
                              "AWSCURRENT" in entry["VersionStages"]) for entry in listed]

    def current_version(self, name: str) -> str:
        self.check_name(name)
        answer = self._call(self.ref(name), lambda: self._client.describe_secret(SecretId=name))
        if answer.get("DeletedDate"):
            raise SecretNotFound(self.ref(name), "it is scheduled for deletion in AWS Secrets Manager")
        for version_id, stages in (answer.get("VersionIdsToStages") or {}).items():
            if "AWSCURRENT" in stages:
                return version_id
        raise SecretNotFound(self.ref(name), "it has no current version")

    def previous_version(self, name: str) -> SecretVersion | None:
        self.current_version(name)
        for entry in self._version_list(name):
            if "AWSPREVIOUS" in entry.get("VersionStages", []):
                created = entry.get("CreatedDate")
                return SecretVersion(entry["VersionId"], created.timestamp() if created else None, False)
        return None

    def list(self, prefix: str = "") -> builtins.list[str]:
        def read() -> builtins.list[str]:
            filters = {"Filters": [{"Key": "name", "Values": [prefix]}]} if prefix else {}
            names = []
            for page in self._client.get_paginator("list_secrets").paginate(**filters):
                names.extend(entry["Name"] for entry in page.get("SecretList", []) if not entry.get("DeletedDate"))
            return names
        return sorted(name for name in self._call(self.ref(prefix or "*"), read) if name.startswith(prefix))

    def put(self, name: str, value: SecretInput, cas: str | None = None) -> str:
        self.check_name(name)
        ref = self.ref(name)
        raw = encode_value(value, ref)
        try:
            payload: dict[str, Any] = {"SecretString": raw.decode("utf-8")}
        except UnicodeDecodeError:
            payload = {"SecretBinary": raw}
        token = str(uuid.uuid4())
        if cas is not None and str(cas) == ABSENT:
            return self._create(name, payload, token, conflict=True)
        if cas is not None and not _is_version_id(str(cas)):
            raise SecretConflict(ref, f"expected version {cas!r}, which is not an AWS version id")
        if cas is None:
            try:
                self._call(ref, lambda: self._client.put_secret_value(SecretId=name, ClientRequestToken=token,
                                                                      **payload))
            except SecretNotFound:
                return self._create(name, payload, token, conflict=False)
            return token
        self._call(ref, lambda: self._client.put_secret_value(SecretId=name, ClientRequestToken=token,
                                                              VersionStages=[PENDING], **payload))
        try:
            self._client.update_secret_version_stage(SecretId=name, VersionStage="AWSCURRENT",
                                                     MoveToVersionId=token, RemoveFromVersionId=str(cas))
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "InvalidParameterException":
                raise self._refusal(ref, exc) from None
            self._unlabel(name, token)
            raise SecretConflict(ref, f"expected version {cas}, but another version is current") from None
        return token

    def _unlabel(self, name: str, version_id: str) -> None:
        """Take the pending label off a version that lost, so that the service retires it.

        Another writer's pending version may have taken the label already (a
        label is on one version at a time): then there is nothing to take off.
        """
        try:
            self._client.update_secret_version_stage(SecretId=name, VersionStage=PENDING,
                                                     RemoveFromVersionId=version_id)
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "InvalidParameterException":
                raise self._refusal(self.ref(name), exc) from None

    def _create(self, name: str, payload: dict[str, Any], token: str, *, conflict: bool) -> str:
        ref = self.ref(name)
        try:
            self._client.create_secret(Name=name, ClientRequestToken=token, **payload)
        except botocore.exceptions.ClientError as exc:
            if conflict and exc.response.get("Error", {}).get("Code") == "ResourceExistsException":
                raise SecretConflict(ref, "expected no secret, but it exists") from None
            raise self._refusal(ref, exc) from None
        return token

    def delete(self, name: str, *, force: bool | None = None) -> None:
        """Delete ``name``: with the recovery window, or at once when ``force`` (default: as constructed)."""
        self.check_name(name)
        self.current_version(name)
        window = self.recovery_window_days
        at_once = window is None if force is None else force
        options: dict[str, Any] = ({"ForceDeleteWithoutRecovery": True} if at_once
                                   else {"RecoveryWindowInDays": window or 7})
        self._call(self.ref(name), lambda: self._client.delete_secret(SecretId=name, **options))

    def close(self) -> None:
        self._client.close()


def _is_version_id(text: str) -> bool:
    return 32 <= len(text) <= 64
