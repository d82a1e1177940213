"""The key service (KMS) conformance suite.

Every key service's tests subclass ``KmsConformance`` and provide a ``kms``
fixture returning a fresh KMS with no KEKs: a ``KmsService`` (the contract in
``dwray.core.contracts``: a ``KeyService`` plus ``wrap_many``), as every KMS
plugin is::

    from dwray.testing.kms_conformance import KmsConformance

    class TestLocalKms(KmsConformance):
        @pytest.fixture
        def kms(self, tmp_path):
            return LocalKmsPlugin(str(tmp_path / "keyring.json"), master_ref)

It checks what the warehouse relies on: a DEK comes back exactly as it was
wrapped, and only from its own KEK id and version; rotation keeps old versions
readable until they are retired; rewrap moves a DEK to the primary; a
destroyed KEK never unwraps again; altered wrappings raise ``IntegrityError``;
no call shows key material.
"""
from __future__ import annotations

import os
import threading
from typing import Any

import pytest

from dwray.errors import DwrayError, IntegrityError, InvalidArgument, KeyNotFound, KeyRetired, KeyShredded

__all__ = ["KmsConformance"]

KEK = "tenant:conformance"
OTHER = "tenant:other"


def _shows(secret: bytes, thing: Any) -> bool:
    text = f"{thing!s} {thing!r}"
    return secret.hex() in text or repr(secret) in text


class KmsConformance:
    """Tests every key service must pass. Subclass and define ``kms``."""

    @pytest.fixture
    def kms(self) -> Any:
        raise NotImplementedError("subclasses provide a `kms` fixture returning a key service with no KEKs")

    # Versions -------------------------------------------------------------------

    def test_ensure_creates_version_one_once(self, kms: Any) -> None:
        assert kms.ensure(KEK) == 1
        assert kms.ensure(KEK) == 1
        assert KEK in kms.kek_ids()

    def test_kek_ids_are_sorted(self, kms: Any) -> None:
        for kek_id in ("tenant:b", "tenant:a", "tenant:c"):
            kms.ensure(kek_id)
        ids = kms.kek_ids()
        assert ids == sorted(ids) and {"tenant:a", "tenant:b", "tenant:c"} <= set(ids)

    def test_rotate_adds_a_primary_version(self, kms: Any) -> None:
        kms.ensure(KEK)
        assert kms.rotate(KEK) == 2
        assert kms.ensure(KEK) == 2
        described = kms.describe(KEK)
        assert described["primary"] == 2 and list(described["versions"]) == [1, 2]
        assert described["minimum"] == 1

    def test_unknown_kek_ids_are_not_found(self, kms: Any) -> None:
        with pytest.raises(KeyNotFound):
            kms.wrap("tenant:never", os.urandom(32))
        with pytest.raises(KeyNotFound):
            kms.rotate("tenant:never")
        with pytest.raises(KeyNotFound):
            kms.describe("tenant:never")

    # Wrapping -------------------------------------------------------------------

    def test_wrap_unwrap_round_trip(self, kms: Any) -> None:
        kms.ensure(KEK)
        dek = os.urandom(32)
        version, wrapped = kms.wrap(KEK, dek)
        assert version == 1 and isinstance(wrapped, bytes)
        assert dek not in wrapped
        assert kms.unwrap(KEK, version, wrapped) == dek

    def test_a_repeated_wrap_still_unwraps(self, kms: Any) -> None:
        kms.ensure(KEK)
        dek = os.urandom(32)
        first, second = kms.wrap(KEK, dek), kms.wrap(KEK, dek)
        assert kms.unwrap(KEK, *first) == dek and kms.unwrap(KEK, *second) == dek

    def test_a_wrapping_opens_only_under_its_own_kek_and_version(self, kms: Any) -> None:
        kms.ensure(KEK)
        kms.ensure(OTHER)
        dek = os.urandom(32)
        version, wrapped = kms.wrap(KEK, dek)
        with pytest.raises((IntegrityError, KeyNotFound)):
            kms.unwrap(OTHER, version, wrapped)
        kms.rotate(KEK)
        with pytest.raises(IntegrityError):
            kms.unwrap(KEK, 2, wrapped)

    def test_a_missing_version_is_not_found(self, kms: Any) -> None:
        kms.ensure(KEK)
        version, wrapped = kms.wrap(KEK, os.urandom(32))
        with pytest.raises(KeyNotFound):
            kms.unwrap(KEK, version + 5, wrapped)

    def test_altered_wrappings_fail_authentication(self, kms: Any) -> None:
        kms.ensure(KEK)
        version, wrapped = kms.wrap(KEK, os.urandom(32))
        for position in (0, len(wrapped) // 2, len(wrapped) - 1):
            damaged = bytearray(wrapped)
            damaged[position] ^= 0x01
            with pytest.raises(IntegrityError):
                kms.unwrap(KEK, version, bytes(damaged))
        for damaged in (wrapped[:-1], wrapped + b"\x00", b""):
            with pytest.raises(IntegrityError):
                kms.unwrap(KEK, version, damaged)

    def test_a_short_dek_is_refused(self, kms: Any) -> None:
        kms.ensure(KEK)
        with pytest.raises(InvalidArgument):
            kms.wrap(KEK, b"short")

    def test_bad_kek_ids_are_refused(self, kms: Any) -> None:
        for bad in ("", None, 42):
            with pytest.raises(InvalidArgument):
                kms.ensure(bad)

    # Rotation, retirement, rewrap -----------------------------------------------------

    def test_old_versions_unwrap_after_rotation(self, kms: Any) -> None:
        kms.ensure(KEK)
        old_dek = os.urandom(32)
        old = kms.wrap(KEK, old_dek)
        kms.rotate(KEK)
        new_dek = os.urandom(32)
        new = kms.wrap(KEK, new_dek)
        assert new[0] == 2
        assert kms.unwrap(KEK, *old) == old_dek and kms.unwrap(KEK, *new) == new_dek

    def test_retired_versions_no_longer_unwrap(self, kms: Any) -> None:
        kms.ensure(KEK)
        old = kms.wrap(KEK, os.urandom(32))
        kms.rotate(KEK)
        new_dek = os.urandom(32)
        new = kms.wrap(KEK, new_dek)
        kms.retire_below(KEK, 2)
        with pytest.raises(KeyRetired):
            kms.unwrap(KEK, *old)
        assert kms.unwrap(KEK, *new) == new_dek
        assert kms.describe(KEK)["minimum"] == 2

    def test_retirement_cannot_pass_the_primary(self, kms: Any) -> None:
        kms.ensure(KEK)
        kms.rotate(KEK)
        for minimum in (3, 0):
            with pytest.raises(InvalidArgument):
                kms.retire_below(KEK, minimum)
        assert kms.describe(KEK)["minimum"] == 1

    def test_rewrap_moves_a_dek_to_the_primary(self, kms: Any) -> None:
        kms.ensure(KEK)
        dek = os.urandom(32)
        old = kms.wrap(KEK, dek)
        kms.rotate(KEK)
        version, wrapped = kms.rewrap(KEK, *old)
        assert version == 2
        kms.retire_below(KEK, 2)
        assert kms.unwrap(KEK, version, wrapped) == dek
        with pytest.raises(KeyRetired):
            kms.rewrap(KEK, *old)

    # Shredding ---------------------------------------------------------------------

    def test_destroy_shreds_every_version_for_good(self, kms: Any) -> None:
        kms.ensure(KEK)
        first = kms.wrap(KEK, os.urandom(32))
        kms.rotate(KEK)
        second = kms.wrap(KEK, os.urandom(32))
        kms.destroy(KEK)
        for wrapping in (first, second):
            with pytest.raises(KeyShredded):
                kms.unwrap(KEK, *wrapping)
        with pytest.raises(KeyShredded):
            kms.wrap(KEK, os.urandom(32))
        with pytest.raises(KeyShredded):
            kms.ensure(KEK)
        kms.destroy(KEK)  # a repeat is safe
        assert kms.describe(KEK)["shredded"] is True

    def test_destroying_an_unknown_id_is_fine_and_final(self, kms: Any) -> None:
        kms.destroy("tenant:never")
        with pytest.raises(KeyShredded):
            kms.ensure("tenant:never")

    # Concurrency, batches, secrecy ---------------------------------------------------------

    def test_concurrent_wraps_all_unwrap(self, kms: Any) -> None:
        kms.ensure(KEK)
        results: list[tuple[bytes, tuple[int, bytes]]] = []
        errors: list[BaseException] = []
        lock = threading.Lock()

        def work() -> None:
            try:
                for _ in range(10):
                    dek = os.urandom(32)
                    wrapped = kms.wrap(KEK, dek)
                    with lock:
                        results.append((dek, wrapped))
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
        threads = [threading.Thread(target=work) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not errors and len(results) == 40
        assert all(kms.unwrap(KEK, *wrapped) == dek for dek, wrapped in results)

    def test_wrap_many_wraps_each_in_order(self, kms: Any) -> None:
        kms.ensure(KEK)
        kms.ensure(OTHER)
        items = [(KEK, os.urandom(32)), (OTHER, os.urandom(32)), (KEK, os.urandom(32))]
        wrapped = kms.wrap_many(items)
        assert len(wrapped) == 3
        assert [kms.unwrap(kek_id, *pair) for (kek_id, _), pair in zip(items, wrapped, strict=True)] == \
            [dek for _, dek in items]

    def test_no_key_material_in_describe_reprs_or_errors(self, kms: Any) -> None:
        kms.ensure(KEK)
        dek = os.urandom(32)
        version, wrapped = kms.wrap(KEK, dek)
        errors: list[DwrayError] = []
        for call in (lambda: kms.unwrap(KEK, version, wrapped[:-1] + bytes([wrapped[-1] ^ 1])),
                     lambda: kms.unwrap(KEK, version + 5, wrapped), lambda: kms.wrap(KEK, dek[:5])):
            with pytest.raises(DwrayError) as raised:
                call()
            errors.append(raised.value)
        for thing in (kms, kms.describe(KEK), *errors):
            assert not _shows(dek, thing), f"a DEK shows in {type(thing).__name__}"
