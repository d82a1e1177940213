"""The AWS Secrets Manager manager against a real moto server: the conformance suite and AWS's own ways."""
from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from dwray.config import AwsSecretsConfig, DwrayConfig, SecretsConfig
from dwray.core.ports import free_port
from dwray.errors import InvalidArgument, SecretConflict, SecretNotFound, SecretUnavailable
from dwray.secrets import AwsSecretManager, SecretResolver
from dwray.secrets.base import SecretManager
from dwray.testing.secret_conformance import SecretManagerConformance

CREDENTIALS = {"access_key_id": "secret://env/DW_TEST_AWS_KEY", "secret_access_key": "secret://env/DW_TEST_AWS_SECRET"}


@pytest.fixture(autouse=True)
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DW_TEST_AWS_KEY", "testing")
    monkeypatch.setenv("DW_TEST_AWS_SECRET", "testing")


def aws_client(moto_aws: Any) -> Any:
    return boto3.client("secretsmanager", region_name="us-east-1", endpoint_url=moto_aws.address,
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def unique() -> str:
    return f"dwray-{uuid.uuid4().hex[:12]}/secret"


class TestAwsConformance(SecretManagerConformance):
    @pytest.fixture
    def manager(self, moto_aws: Any) -> Iterator[SecretManager]:
        manager = AwsSecretManager(region="us-east-1", endpoint_url=moto_aws.address, recovery_window_days=None,
                                   **CREDENTIALS)
        yield manager
        manager.close()


def test_versions_are_client_request_tokens_and_labels(moto_aws: Any) -> None:
    manager = AwsSecretManager(region="us-east-1", endpoint_url=moto_aws.address, **CREDENTIALS)
    name = unique()
    first = manager.put(name, "one")
    second = manager.rotate(name, "two")
    client = aws_client(moto_aws)
    assert client.get_secret_value(SecretId=name, VersionStage="AWSCURRENT")["VersionId"] == second
    assert client.get_secret_value(SecretId=name, VersionStage="AWSPREVIOUS")["VersionId"] == first
    assert manager.previous_version(name).version == first  # type: ignore[union-attr]
    previous = manager.get(name, version="AWSPREVIOUS")
    assert previous == "one" and previous.version == first


def test_a_lost_check_and_set_leaves_no_labelled_version(moto_aws: Any) -> None:
    manager = AwsSecretManager(region="us-east-1", endpoint_url=moto_aws.address, **CREDENTIALS)
    name = unique()
    first = manager.put(name, "one")
    manager.put(name, "two", cas=first)
    with pytest.raises(SecretConflict):
        manager.put(name, "three", cas=first)
    versions = aws_client(moto_aws).list_secret_version_ids(SecretId=name)["Versions"]
    labelled = [entry for entry in versions if entry.get("VersionStages")]
    assert len(labelled) == 2 and manager.get(name) == "two"
    assert [entry.version for entry in manager.versions(name)] == [first, manager.current_version(name)]


def test_delete_keeps_the_recovery_window_unless_forced(moto_aws: Any) -> None:
    manager = AwsSecretManager(region="us-east-1", endpoint_url=moto_aws.address, **CREDENTIALS)
    client = aws_client(moto_aws)
    name = unique()
    manager.put(name, "kept for a while")
    manager.delete(name)
    assert client.describe_secret(SecretId=name).get("DeletedDate") is not None
    with pytest.raises(SecretNotFound, match="scheduled for deletion"):
        manager.get(name)
    assert name not in manager.list(name)
    client.restore_secret(SecretId=name)
    assert manager.get(name) == "kept for a while"
    manager.delete(name, force=True)
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.describe_secret(SecretId=name)


def test_binary_values_go_to_secret_binary(moto_aws: Any) -> None:
    manager = AwsSecretManager(region="us-east-1", endpoint_url=moto_aws.address, **CREDENTIALS)
    name = unique()
    manager.put(name, b"\x00\xff binary")
    assert aws_client(moto_aws).get_secret_value(SecretId=name)["SecretBinary"] == b"\x00\xff binary"
    assert manager.get(name).reveal_bytes() == b"\x00\xff binary"


def test_an_unreachable_endpoint_is_unavailable() -> None:
    manager = AwsSecretManager(region="us-east-1", endpoint_url=f"http://127.0.0.1:{free_port()}", timeout=2,
                               **CREDENTIALS)
    with pytest.raises(SecretUnavailable, match="cannot be reached"):
        manager.get("x")


def test_credentials_must_come_from_env_or_file_and_come_in_pairs(moto_aws: Any) -> None:
    with pytest.raises(InvalidArgument, match=r"\[secrets.aws\] access_key_id must be a secret://env/"):
        AwsSecretManager(region="us-east-1", access_key_id="secret://aws/key",
                         secret_access_key="secret://env/DW_TEST_AWS_SECRET")
    with pytest.raises(InvalidArgument, match="set both"):
        AwsSecretManager(region="us-east-1", access_key_id="secret://env/DW_TEST_AWS_KEY")


def test_the_resolver_reads_json_fields_from_config(moto_aws: Any) -> None:
    config = DwrayConfig(secrets=SecretsConfig(aws=AwsSecretsConfig(region="us-east-1", endpoint_url=moto_aws.address,
                                                                    **CREDENTIALS)))
    resolver = SecretResolver(config)
    name = unique()
    resolver.manager("aws").put(name, {"user": "ana", "password": "pw"})
    assert resolver.get(f"secret://aws/{name}#password") == "pw"
    assert resolver.get(f"secret://aws/{name}").reveal() == '{"password":"pw","user":"ana"}'
