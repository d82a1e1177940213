"""The master key: where it comes from, the forms it may take, the file made on first start, and its secrecy."""
from __future__ import annotations

import base64
import os
import pickle
import stat
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest

from dwray.config import DwrayConfig
from dwray.core.keyring import LocalKeyring
from dwray.core.master_key import load_master_key, parse_master_key
from dwray.errors import MasterKeyMissing

ROOT = Path(__file__).resolve().parents[2]
KEY = bytes(range(32))


def mode(p: Path) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def write_key(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    path.chmod(0o600)
    return f"secret://file/{path}"


@pytest.mark.parametrize("form", [
    KEY, KEY.hex().encode(), KEY.hex().upper().encode() + b"\n", base64.b64encode(KEY),
    base64.b64encode(KEY) + b"\n", base64.b64encode(KEY).rstrip(b"="), base64.urlsafe_b64encode(KEY),
    b"  " + KEY.hex().encode() + b"\r\n",
], ids=["raw", "hex", "HEX-newline", "base64", "base64-newline", "base64-unpadded", "urlsafe", "hex-spaces"])
def test_accepted_forms_of_a_key_file(tmp_path: Path, form: bytes) -> None:
    key = load_master_key(write_key(tmp_path / "k", form))
    assert key.reveal_bytes() == KEY


def test_32_raw_bytes_are_taken_as_they_are_even_if_they_end_in_whitespace(tmp_path: Path) -> None:
    raw = os.urandom(31) + b"\n"
    assert load_master_key(write_key(tmp_path / "k", raw)).reveal_bytes() == raw


@pytest.mark.parametrize("form", [
    b"", b"\n", KEY[:31], KEY + b"\x00", KEY.hex()[:-2].encode(), ("z" * 64).encode(),
    # (the text is 33 bytes: 32 would be a raw key)
    base64.b64encode(KEY[:31]), base64.b64encode(KEY + b"!"), b"not a key at all, only some words",
], ids=["empty", "newline", "31-bytes", "33-bytes", "hex-short", "not-hex", "base64-31", "base64-33", "text"])
def test_anything_else_is_a_clear_error_that_does_not_echo_it(tmp_path: Path, form: bytes) -> None:
    ref = write_key(tmp_path / "k", form)
    with pytest.raises(MasterKeyMissing, match="must hold 32 raw bytes, 64 hex digits or the base64") as caught:
        load_master_key(ref)
    message = str(caught.value)
    assert ref in message
    if len(form) > 4:
        assert form.decode("latin-1").strip() not in message


def test_the_default_file_is_made_on_first_start_0600_in_0700_folders(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o755)
    path = tmp_path / "xdg" / "dwray" / "master.key"
    previous = os.umask(0)  # privacy must not depend on the umask
    try:
        key = load_master_key(f"secret://file/{path}", create=True)
    finally:
        os.umask(previous)
    assert base64.b64decode(path.read_bytes()) == key.reveal_bytes() and len(key.reveal_bytes()) == 32
    assert [mode(path), mode(path.parent), mode(path.parent.parent)] == [0o600, 0o700, 0o700]
    assert mode(tmp_path) == 0o755
    assert [p.name for p in path.parent.iterdir()] == ["master.key"]  # no temp file left
    # Later starts read the same key; two keys made apart differ.
    assert load_master_key(f"secret://file/{path}", create=True) == key
    other = load_master_key(f"secret://file/{tmp_path / 'other.key'}", create=True)
    assert other.reveal_bytes() != key.reveal_bytes()


def test_a_missing_file_is_not_made_unless_asked(tmp_path: Path) -> None:
    path = tmp_path / "absent" / "master.key"
    with pytest.raises(MasterKeyMissing, match=f"the master key secret://file/{path} is not usable: "
                                               f"the file {path} does not exist"):
        load_master_key(f"secret://file/{path}")
    assert not path.parent.exists()


def test_a_key_file_is_refused_when_others_may_read_it(tmp_path: Path) -> None:
    ref = f"secret://file/{tmp_path / 'master.key'}"
    load_master_key(ref, create=True)
    (tmp_path / "master.key").chmod(0o644)
    with pytest.raises(MasterKeyMissing, match=f"chmod 600 {tmp_path / 'master.key'}"):
        load_master_key(ref, create=True)
    # One the operator named is held to the same rule as every secret://file/ reference
    # (a Kubernetes secret volume needs defaultMode 0400).
    with pytest.raises(MasterKeyMissing, match="chmod 600"):
        load_master_key(ref, create=False)
    (tmp_path / "master.key").chmod(0o400)
    assert len(load_master_key(ref, create=False).reveal_bytes()) == 32


def test_not_a_regular_file_or_far_too_big(tmp_path: Path) -> None:
    (tmp_path / "folder").mkdir()
    with pytest.raises(MasterKeyMissing, match="is a folder, not a file"):
        load_master_key(f"secret://file/{tmp_path / 'folder'}")
    big = write_key(tmp_path / "big", b"x" * 5000)
    with pytest.raises(MasterKeyMissing, match="not 5000 bytes of something else"):
        load_master_key(big)


def test_an_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DWRAY_TEST_MASTER", KEY.hex())
    assert load_master_key("secret://env/DWRAY_TEST_MASTER").reveal_bytes() == KEY
    monkeypatch.delenv("DWRAY_TEST_MASTER")
    with pytest.raises(MasterKeyMissing, match="the environment variable DWRAY_TEST_MASTER is not set"):
        load_master_key("secret://env/DWRAY_TEST_MASTER")
    monkeypatch.setenv("DWRAY_TEST_MASTER", "too short")
    with pytest.raises(MasterKeyMissing, match="must hold 32 raw bytes") as caught:
        load_master_key("secret://env/DWRAY_TEST_MASTER")
    assert "too short" not in str(caught.value)


def test_a_value_where_a_reference_belongs_is_refused_unquoted() -> None:
    with pytest.raises(MasterKeyMissing, match="expected a secret reference") as caught:
        load_master_key(KEY.hex())
    assert KEY.hex() not in str(caught.value)


def test_the_key_never_shows_and_cannot_be_pickled(tmp_path: Path) -> None:
    key = load_master_key(write_key(tmp_path / "k", KEY))
    for text in (repr(key), str(key), f"{key}", f"{key!r}"):
        assert "**********" in text
        for form in (KEY.hex(), repr(KEY), base64.b64encode(KEY).decode()):
            assert form not in text
    with pytest.raises(TypeError, match="may not be pickled"):
        pickle.dumps(key)


def test_parse_master_key_names_its_source() -> None:
    with pytest.raises(MasterKeyMissing, match="the master key somewhere is not usable"):
        parse_master_key("somewhere", b"xyz")


RACER = textwrap.dedent("""
    import sys, time
    from dwray.core.master_key import load_master_key
    start = float(sys.argv[2])
    while time.time() < start:
        pass
    print(load_master_key("secret://file/" + sys.argv[1], create=True).reveal_bytes().hex())
""")


def test_processes_starting_at_once_agree_on_one_key(tmp_path: Path) -> None:
    """Only one of many racing creators publishes a key; every one of them reads that key."""
    import time

    for attempt in range(3):
        path = tmp_path / f"race{attempt}" / "dwray" / "master.key"
        start = time.time() + 1.5
        procs = [subprocess.Popen([sys.executable, "-c", RACER, str(path), str(start)], cwd=ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(6)]
        outputs = [p.communicate(timeout=60) for p in procs]
        assert all(p.returncode == 0 for p in procs), [err for _, err in outputs]
        keys = {out.strip() for out, _ in outputs}
        assert keys == {base64.b64decode(path.read_bytes()).hex()}
        assert [p.name for p in path.parent.iterdir()] == ["master.key"]


def test_temp_files_of_dead_creators_are_removed(tmp_path: Path) -> None:
    folder = tmp_path / "dwray"
    folder.mkdir(mode=0o700)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    left = folder / f".master.key.{pid}.abcd1234.tmp"
    left.write_bytes(os.urandom(32))
    mine = folder / f".master.key.{os.getpid()}.feed0000.tmp"  # a live creator's: not touched
    mine.write_bytes(b"")
    load_master_key(f"secret://file/{folder / 'master.key'}", create=True)
    assert not left.exists() and mine.exists()


def test_a_key_kept_in_vault(openbao: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Any other reference goes through the secret managers: here Vault/OpenBao KV v2 (a real server)."""
    import hvac

    path = f"dwray-test/master-{uuid.uuid4().hex[:8]}"
    key = os.urandom(32)
    hvac.Client(url=openbao.address, token=openbao.token).secrets.kv.v2.create_or_update_secret(
        path=path, secret={"key": key.hex()}, mount_point="secret")
    monkeypatch.setenv("DWRAY_TEST_BAO_TOKEN", openbao.token)
    config = DwrayConfig(secrets={"vault": {"address": openbao.address, "timeout": 2,
                                            "token": "secret://env/DWRAY_TEST_BAO_TOKEN"}})
    ref = f"secret://vault/{path}#key"
    assert load_master_key(ref, config=config).reveal_bytes() == key
    keyring = LocalKeyring(tmp_path / "keys" / "keyring.json", ref, create_master=False, config=config)
    keyring.ensure("tenant:v")
    dek = os.urandom(32)
    assert keyring.unwrap("tenant:v", *keyring.wrap("tenant:v", dek)) == dek
    with pytest.raises(MasterKeyMissing, match=f"the master key secret://vault/{path}#nope is not usable"):
        load_master_key(f"secret://vault/{path}#nope", config=config)
    openbao.pause()
    try:
        with pytest.raises(MasterKeyMissing, match=f"secret://vault/{path}-other#key is not usable") as caught:
            load_master_key(f"secret://vault/{path}-other#key", config=config)
    finally:
        openbao.resume()
    assert openbao.token not in str(caught.value) and key.hex() not in str(caught.value)
