"""The secret manager conformance suite, and a plugin that uses a secret (for the rotation tests).

Every manager's tests subclass one of two classes and provide a ``manager``
fixture (in the spirit of fsspec's abstract tests):

``SecretManagerConformance``
    for managers dwray writes to (local, vault, aws): get, put, check-and-set,
    versions, rotation keeping the previous version, list, delete, fields,
    not-found, concurrent writers, and no value in any error or repr;
``ReadOnlySecretManagerConformance``
    for managers whose values are set outside dwray (env, file): the reading
    subset, and writes refused. They override ``provision`` (how a test sets a
    value outside dwray) and usually ``name``::

    class TestLocalStore(SecretManagerConformance):
        @pytest.fixture
        def manager(self, tmp_path):
            return LocalSecretStore(tmp_path / "secrets.json", key_file=make_key(tmp_path))

``SecretUser`` is a plugin that reads one secret through its own
``SecretResolver`` and reports fingerprints of what it sees, so tests can
watch a rotation reach a running plugin without the value crossing Ray.
"""
from __future__ import annotations

import hashlib
import json
import pickle
import threading
import uuid
from typing import Any

import pytest

from dwray.core.plugins import Manifest, Plugin
from dwray.errors import (
    DwrayError,
    InvalidArgument,
    SecretConflict,
    SecretNotFound,
)
from dwray.secret_ref import SecretValue
from dwray.secrets.base import ABSENT, SecretInput, SecretManager
from dwray.secrets.resolver import SecretResolver

__all__ = ["ReadOnlySecretManagerConformance", "SecretManagerConformance", "SecretUser", "value_fingerprint"]

#: versions no manager has: a number and a UUID (the two shapes of version ids)
MISSING_VERSIONS = ("987654", "00000000-0000-4000-8000-000000000000")
BAD_NAMES = ("", "a//b", "../up", "a b", "a/./b")


def value_fingerprint(value: str | bytes) -> str:
    """SHA-256 of a value, for tests that compare what a plugin sees without moving the value."""
    return hashlib.sha256(value.encode("utf-8") if isinstance(value, str) else value).hexdigest()


def _canary() -> str:
    return f"canary-{uuid.uuid4().hex}"


def _assert_hidden(canary: str, *things: Any) -> None:
    """Neither ``str`` nor ``repr`` of any of ``things`` (nor an error's args) shows ``canary``."""
    for thing in things:
        shown = [str(thing), repr(thing), format(thing)]
        if isinstance(thing, BaseException):
            shown += [repr(arg) for arg in thing.args]
        for text in shown:
            assert canary not in text, f"a secret value shows in {type(thing).__name__}: {text[:200]}"


class _Conformance:
    """What every manager passes, read-only or not."""

    #: names the manager must refuse with ``InvalidArgument``
    bad_names: tuple[str, ...] = BAD_NAMES

    @pytest.fixture
    def manager(self) -> SecretManager:
        raise NotImplementedError("subclasses provide a `manager` fixture")

    @pytest.fixture
    def name(self) -> str:
        """A fresh secret name for each test (subclasses adapt it to their naming rules)."""
        return f"dwray-conformance-{uuid.uuid4().hex[:12]}/secret"

    def provision(self, manager: SecretManager, name: str, value: SecretInput) -> None:
        """Make ``value`` the current value of ``name``, as the manager's users would."""
        manager.put(name, value)

    def test_get_returns_a_redacting_value_with_its_version(self, manager: SecretManager, name: str) -> None:
        canary = _canary()
        self.provision(manager, name, canary)
        value = manager.get(name)
        assert isinstance(value, SecretValue)
        assert value == canary and value.reveal() == canary
        assert value.version is not None and value.ref == f"secret://{manager.scheme}/{name}"
        assert value.version == manager.current_version(name)
        _assert_hidden(canary, value, manager)
        with pytest.raises(TypeError) as refused:
            pickle.dumps(value)
        _assert_hidden(canary, refused.value)

    def test_a_missing_secret_is_not_found(self, manager: SecretManager, name: str) -> None:
        for call in (lambda: manager.get(name), lambda: manager.versions(name),
                     lambda: manager.current_version(name)):
            with pytest.raises(SecretNotFound) as missing:
                call()
            assert name in str(missing.value)

    def test_a_version_that_is_not_kept_is_not_found(self, manager: SecretManager, name: str) -> None:
        self.provision(manager, name, "kept")
        for version in MISSING_VERSIONS:
            with pytest.raises(SecretNotFound):
                manager.get(name, version=version)

    def test_versions_mark_the_current_one(self, manager: SecretManager, name: str) -> None:
        self.provision(manager, name, "one")
        kept = manager.versions(name)
        assert [entry.current for entry in kept].count(True) == 1
        assert next(entry.version for entry in kept if entry.current) == manager.get(name).version

    def test_a_new_value_is_a_new_version(self, manager: SecretManager, name: str) -> None:
        self.provision(manager, name, "first")
        before = manager.current_version(name)
        self.provision(manager, name, "second")
        assert manager.current_version(name) != before
        assert manager.get(name) == "second"

    def test_list_finds_names_by_prefix(self, manager: SecretManager, name: str) -> None:
        siblings = [name, f"{name}_a", f"{name}_b"]
        for sibling in siblings:
            self.provision(manager, sibling, "x")
        listed = manager.list(name)
        assert listed == sorted(listed)
        assert set(siblings) <= set(listed)
        assert all(entry.startswith(name) for entry in listed)
        assert f"{name}_a" not in manager.list(f"{name}_b")

    def test_bad_names_are_refused(self, manager: SecretManager) -> None:
        for bad in self.bad_names:
            with pytest.raises(InvalidArgument):
                manager.get(bad)


class ReadOnlySecretManagerConformance(_Conformance):
    """The conformance tests of a manager whose values are set outside dwray. Override ``provision``."""

    def provision(self, manager: SecretManager, name: str, value: SecretInput) -> None:
        raise NotImplementedError("read-only managers' tests say how a value is set outside dwray")

    def test_it_says_it_is_read_only(self, manager: SecretManager) -> None:
        assert manager.read_only is True and manager.keeps_versions is False

    def test_writes_are_refused_clearly(self, manager: SecretManager, name: str) -> None:
        canary = _canary()
        self.provision(manager, name, "set outside")
        for call in (lambda: manager.put(name, canary), lambda: manager.put(name, canary, cas=ABSENT),
                     lambda: manager.rotate(name, canary), lambda: manager.delete(name)):
            with pytest.raises(InvalidArgument, match="read-only") as refused:
                call()
            _assert_hidden(canary, refused.value)
        assert manager.get(name) == "set outside"

    def test_fields_are_refused(self, manager: SecretManager, name: str) -> None:
        self.provision(manager, name, json.dumps({"user": "u"}))
        with pytest.raises(InvalidArgument):
            manager.get(name, field="user")


class SecretManagerConformance(_Conformance):
    """The conformance tests of a manager dwray writes to."""

    def test_it_says_it_is_writable(self, manager: SecretManager) -> None:
        assert manager.read_only is False and manager.keeps_versions is True

    def test_put_returns_the_version_get_reads(self, manager: SecretManager, name: str) -> None:
        version = manager.put(name, "text value")
        assert isinstance(version, str) and version
        value = manager.get(name)
        assert value == "text value" and value.version == version

    def test_put_without_cas_overwrites(self, manager: SecretManager, name: str) -> None:
        first = manager.put(name, "one")
        second = manager.put(name, "two")
        assert second != first and manager.get(name) == "two"

    def test_binary_values_round_trip_or_are_refused(self, manager: SecretManager, name: str) -> None:
        blob = bytes(range(256))
        if manager.binary:
            manager.put(name, blob)
            assert manager.get(name).reveal_bytes() == blob
        else:
            with pytest.raises(InvalidArgument, match="binary"):
                manager.put(name, blob)
            with pytest.raises(SecretNotFound):
                manager.get(name)

    def test_fields_select_one_value_of_a_dict(self, manager: SecretManager, name: str) -> None:
        manager.put(name, {"user": "ana", "password": "p4ss"})
        assert manager.get(name, field="user") == "ana"
        assert manager.get(name, field="password") == "p4ss"
        selected = manager.get(name, field="user")
        assert selected.ref == f"secret://{manager.scheme}/{name}#user"
        assert json.loads(manager.get(name).reveal()) == {"user": "ana", "password": "p4ss"}
        with pytest.raises(SecretNotFound, match="no field 'missing'"):
            manager.get(name, field="missing")

    def test_a_field_of_a_text_value_is_not_found(self, manager: SecretManager, name: str) -> None:
        manager.put(name, "plain text")
        with pytest.raises(SecretNotFound):
            manager.get(name, field="user")

    def test_cas_absent_creates_only_once(self, manager: SecretManager, name: str) -> None:
        created = manager.put(name, "first", cas=ABSENT)
        with pytest.raises(SecretConflict):
            manager.put(name, "second", cas=ABSENT)
        assert manager.get(name) == "first" and manager.current_version(name) == created

    def test_cas_succeeds_on_the_current_version_and_conflicts_on_a_stale_one(
            self, manager: SecretManager, name: str) -> None:
        first = manager.put(name, "one")
        second = manager.put(name, "two", cas=first)
        with pytest.raises(SecretConflict) as lost:
            manager.put(name, "three", cas=first)
        assert name in str(lost.value)
        assert manager.get(name) == "two" and manager.current_version(name) == second
        with pytest.raises(SecretConflict):
            manager.put(name, "four", cas=MISSING_VERSIONS[1] if manager.scheme == "aws" else "987654")

    def test_of_concurrent_cas_writers_exactly_one_wins(self, manager: SecretManager, name: str) -> None:
        base = manager.put(name, "base")
        outcomes: list[str] = []
        lock = threading.Lock()

        def write(n: int) -> None:
            try:
                manager.put(name, f"writer {n}", cas=base)
                result = f"won {n}"
            except SecretConflict:
                result = "lost"
            with lock:
                outcomes.append(result)
        threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        winners = [outcome for outcome in outcomes if outcome.startswith("won")]
        assert len(outcomes) == 4 and len(winners) == 1, outcomes
        assert manager.get(name) == f"writer {winners[0].split()[1]}"

    def test_versions_are_kept_oldest_first(self, manager: SecretManager, name: str) -> None:
        written = [manager.put(name, f"value {n}") for n in range(3)]
        surely = min(3, manager.min_versions_kept)
        kept = manager.versions(name)
        assert [entry.version for entry in kept][-surely:] == written[-surely:]
        assert kept[-1].current and not any(entry.current for entry in kept[:-1])
        for n, version in list(enumerate(written))[-surely:]:
            assert manager.get(name, version=version) == f"value {n}"
            assert manager.get(name, version=version).version == version

    def test_rotate_keeps_the_previous_version_readable(self, manager: SecretManager, name: str) -> None:
        first = manager.put(name, "old")
        second = manager.rotate(name, "new")
        assert second != first
        assert manager.get(name) == "new" and manager.current_version(name) == second
        previous = manager.previous_version(name)
        assert previous is not None and previous.version == first and not previous.current
        assert manager.get(name, version=first) == "old"

    def test_rotating_a_missing_secret_is_not_found(self, manager: SecretManager, name: str) -> None:
        with pytest.raises(SecretNotFound):
            manager.rotate(name, "new")
        assert name not in manager.list(name)

    def test_delete_removes_every_version(self, manager: SecretManager, name: str) -> None:
        first = manager.put(name, "one")
        manager.put(name, "two")
        manager.delete(name)
        for call in (lambda: manager.get(name), lambda: manager.get(name, version=first),
                     lambda: manager.versions(name), lambda: manager.delete(name)):
            with pytest.raises(SecretNotFound):
                call()
        assert name not in manager.list(name)

    def test_bad_names_are_refused_for_writes(self, manager: SecretManager) -> None:
        for bad in self.bad_names:
            with pytest.raises(InvalidArgument):
                manager.put(bad, "x")

    def test_values_never_show_in_errors_or_reprs(self, manager: SecretManager, name: str) -> None:
        canary = _canary()
        version = manager.put(name, {"password": canary})
        errors: list[DwrayError] = []
        for call in (lambda: manager.get(name, field="nope"), lambda: manager.put(name, canary, cas=ABSENT),
                     lambda: manager.put(name, {"password": canary}, cas=MISSING_VERSIONS[1]),
                     lambda: manager.get(name, version=MISSING_VERSIONS[0]),
                     lambda: manager.put(name, {"password": 42}),  # type: ignore[dict-item]
                     lambda: manager.put(f"{name}//bad", canary)):
            with pytest.raises(DwrayError) as raised:
                call()
            errors.append(raised.value)
        value = manager.get(name, field="password")
        assert value == canary and manager.current_version(name) == version
        _assert_hidden(canary, manager, value, manager.get(name), *errors, *manager.versions(name))


class SecretUser(Plugin):
    """Reads the secret ``ref`` through a resolver of its own; reports fingerprints of the values it sees.

    ``settings``: ``dwray.secrets.resolver_settings(config)`` of the process that starts it.
    """

    manifest = Manifest(name="test.secret-user", kind="service", version="0.1",
                        config_schema={"type": "object", "required": ["ref", "settings"],
                                       "properties": {"ref": {"type": "string", "pattern": "^secret://"},
                                                      "settings": {"type": "object"}},
                                       "additionalProperties": False})

    def __init__(self, ref: str, settings: dict[str, Any]) -> None:
        self.ref = ref
        self.secret_resolver = SecretResolver.from_settings(settings)
        self.told: list[str] = []
        self.fingerprint()

    def secret_refs(self) -> list[str]:
        return [self.ref]

    def on_secret_rotated(self, ref: str) -> None:
        self.told.append(ref)
        super().on_secret_rotated(ref)

    def fingerprint(self) -> str:
        """The fingerprint of the value this plugin would use now."""
        return value_fingerprint(self.secret_resolver.get(self.ref).reveal_bytes())

    def accepted_fingerprints(self) -> list[str]:
        """Fingerprints of the values it accepts now: current first, then the previous within the grace period."""
        return [value_fingerprint(value.reveal_bytes()) for value in self.secret_resolver.accepted(self.ref)]

    def rotations_told(self) -> list[str]:
        """The references it was told were rotated (by an event or its host's watch)."""
        return list(self.told)
