"""Crash safety of sealing a plaintext keyring in place, and of crypto-shredding a KEK.

A child process opens a format-1 (plaintext) keyring, which seals it, or
destroys a KEK of a sealed one, and SIGKILLs itself at an injected point of
the atomic write (``_keyring_crash_child.py``): half-way through writing the
temp file, around its fsync, around the rename, around the folder's fsync,
right after removing a stale temp. Afterwards the keyring must be the old file
or the new one, never anything else, and never lost:

- migration: every KEK is intact (DEKs wrapped before still unwrap) and, once
  reopened, the file is sealed and no plaintext copy of any KEK is left in the
  keys folder (stale temps included);
- destroy: the KEK is either fully there or shredded for good, the other KEKs
  untouched, and once reopened nothing but the keyring and its lock is left.
"""
from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from dwray.core.keyring import LocalKeyring
from dwray.errors import KeyShredded
from tests.chaos import _keyring_crash_child as child

ROOT = Path(__file__).resolve().parents[2]
CHILD = Path(child.__file__)
KEKS = ("tenant:a", "tenant:b", "system:access-keys")


@pytest.fixture
def master(tmp_path: Path) -> str:
    key = tmp_path / "config" / "master.key"
    key.parent.mkdir(mode=0o700)
    key.write_bytes(os.urandom(32))
    key.chmod(0o600)
    return f"secret://file/{key}"


class PlaintextKeyring:
    """A format-1 keyring as releases before the sealing left it, with DEKs wrapped under each version."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.keks = {kek_id: {v: os.urandom(32) for v in range(1, n + 2)} for n, kek_id in enumerate(KEKS)}
        self.deks = {(kek_id, v): os.urandom(32) for kek_id, versions in self.keks.items() for v in versions}
        self.wrapped = {where: _gcm_wrap(self.keks[where[0]][where[1]], *where, dek)
                        for where, dek in self.deks.items()}
        path.parent.mkdir(mode=0o700, parents=True)
        doc = {"format": 1, "keks": {
            kek_id: {"primary": max(versions), "minimum": 1,
                     "versions": {str(v): base64.b64encode(k).decode() for v, k in versions.items()}}
            for kek_id, versions in self.keks.items()}}
        path.write_text(json.dumps(doc, indent=1))
        path.chmod(0o600)
        self.original = path.read_bytes()
        # A temp file an old writer left when it was killed: a plaintext copy.
        stale = path.with_name(f".{path.name}.4242.1.tmp")
        stale.write_bytes(self.original)
        stale.chmod(0o600)

    def all_keks(self) -> list[bytes]:
        return [k for versions in self.keks.values() for k in versions.values()]

    def check_intact(self, keyring: LocalKeyring, except_kek: str | None = None) -> None:
        for (kek_id, version), wrapped in self.wrapped.items():
            if kek_id != except_kek:
                assert keyring.unwrap(kek_id, version, wrapped) == self.deks[(kek_id, version)], (kek_id, version)
        for kek_id, versions in self.keks.items():
            if kek_id != except_kek:
                assert keyring.describe(kek_id)["versions"] == sorted(versions)


def _gcm_wrap(kek: bytes, kek_id: str, version: int, dek: bytes) -> bytes:
    nonce = os.urandom(12)
    aad = b"dwray-kek-wrap-v1" + len(kek_id).to_bytes(4, "big") + kek_id.encode() + version.to_bytes(8, "big")
    return nonce + AESGCM(kek).encrypt(nonce, dek, aad)


def run_child(path: Path, master: str, op: str, point: str, nth: int = 1) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, str(CHILD), str(path), master, op, point, str(nth)], capture_output=True,
                          text=True, timeout=60, env=env, cwd=ROOT, check=False)


def assert_killed(proc: subprocess.CompletedProcess[str], point: str) -> None:
    assert proc.returncode == -signal.SIGKILL, f"{point} did not fire: rc {proc.returncode}, {proc.stderr[-2000:]}"
    assert proc.stdout.splitlines()[-1] == f"KILL {point}"


def no_plaintext_left(folder: Path, keks: list[bytes]) -> None:
    assert sorted(p.name for p in folder.iterdir()) == ["keyring.json", "keyring.json.lock"]
    everything = b"".join(p.read_bytes() for p in folder.iterdir())
    for kek in keks:
        for form in (kek, kek.hex().encode(), base64.b64encode(kek)):
            assert form not in everything


@pytest.mark.parametrize("point", child.POINTS)
def test_a_migration_killed_at_any_point_loses_nothing(tmp_path: Path, master: str, point: str) -> None:
    path = tmp_path / "keys" / "keyring.json"
    plain = PlaintextKeyring(path)

    assert_killed(run_child(path, master, "open", point), point)

    on_disk = path.read_bytes()
    assert on_disk == plain.original or json.loads(on_disk)["format"] == 2, "neither the old nor the sealed file"
    if point in ("write_mid", "fsync_file_before", "fsync_file_after", "replace_before", "unlink_stale_after"):
        assert on_disk == plain.original  # killed before the rename: the plaintext file stands
    else:
        assert json.loads(on_disk)["format"] == 2  # killed after it: the sealed one does
    keyring = LocalKeyring(path, master, create_master=False)
    plain.check_intact(keyring)
    assert json.loads(path.read_bytes())["format"] == 2
    no_plaintext_left(path.parent, plain.all_keks())


def test_repeated_crashes_then_a_clean_run(tmp_path: Path, master: str) -> None:
    path = tmp_path / "keys" / "keyring.json"
    plain = PlaintextKeyring(path)
    for point in ("write_mid", "replace_before", "fsync_file_after"):
        assert_killed(run_child(path, master, "open", point), point)
        assert path.read_bytes() == plain.original
    done = run_child(path, master, "open", "none")
    assert done.returncode == 0 and done.stdout.strip() == "DONE", done.stderr
    plain.check_intact(LocalKeyring(path, master, create_master=False))
    no_plaintext_left(path.parent, plain.all_keks())


@pytest.mark.parametrize("point", [p for p in child.POINTS if p != "unlink_stale_after"])
def test_a_destroy_killed_at_any_point_is_all_or_nothing(tmp_path: Path, master: str, point: str) -> None:
    path = tmp_path / "keys" / "keyring.json"
    plain = PlaintextKeyring(path)
    LocalKeyring(path, master, create_master=False)  # sealed first
    sealed = path.read_bytes()

    assert_killed(run_child(path, master, "destroy:tenant:b", point), point)

    keyring = LocalKeyring(path, master, create_master=False)
    plain.check_intact(keyring, except_kek="tenant:b")
    if point in ("write_mid", "fsync_file_before", "fsync_file_after", "replace_before"):
        assert path.read_bytes() == sealed
        plain.check_intact(keyring)  # not acknowledged: every version of tenant:b still there
    else:
        assert keyring.describe("tenant:b")["shredded"] is True
        for version in plain.keks["tenant:b"]:
            with pytest.raises(KeyShredded):
                keyring.unwrap("tenant:b", version, plain.wrapped[("tenant:b", version)])
    keyring.destroy("tenant:b")  # the caller's retry completes it
    assert keyring.describe("tenant:b")["shredded"] is True
    doc = json.loads(path.read_bytes())
    assert doc["keks"]["tenant:b"] == {"shredded": True}
    no_plaintext_left(path.parent, plain.all_keks())
