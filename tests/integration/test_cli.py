"""The ``dw`` console script, run as a user would, on a real local warehouse."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest


def dw(data_dir: Path, *args: str, stdin: bytes | None = None, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "DWRAY_DATA_DIR": str(data_dir)}
    result = subprocess.run(["dw", *args], input=stdin, capture_output=True, env=env, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"dw {' '.join(args)} failed ({result.returncode}): {result.stderr.decode()}")
    return result


def dw_json(data_dir: Path, *args: str) -> object:
    return json.loads(dw(data_dir, *args, "--json").stdout)


def test_demo_round_trips_and_stores_no_plaintext(tmp_path: Path) -> None:
    report = dw_json(tmp_path / "data", "demo")
    assert report["round_trip_ok"] is True
    assert report["plaintext_in_blob"] is False
    blob = Path(report["blob_path"])
    assert blob.is_file() and blob.is_relative_to(tmp_path / "data")
    assert report["kek"]["version"] == 1
    human = dw(tmp_path / "data", "demo").stdout.decode()
    assert "plaintext found in blob: no" in human and "identical" in human


def test_bucket_and_object_commands(tmp_path: Path) -> None:
    data = tmp_path / "data"
    source = tmp_path / "report.csv"
    payload = os.urandom(300_000) + b"id,total\n" * 1000
    source.write_bytes(payload)
    assert dw_json(data, "mb", "sales")["name"] == "sales"
    put = dw_json(data, "put", str(source), "sales/2026/11/report.csv", "--meta", "owner=ana",
                  "--content-type", "text/csv")
    assert put["etag"] == hashlib.md5(payload).hexdigest() and put["size"] == len(payload)
    dw(data, "put", "-", "sales/2026/stdin.bin", stdin=b"from stdin")
    assert dw_json(data, "ls") [0]["name"] == "sales"
    level = dw_json(data, "ls", "sales/2026/")
    assert level["common_prefixes"] == ["2026/11/"]
    assert [o["key"] for o in level["objects"]] == ["2026/stdin.bin"]
    everything = dw_json(data, "ls", "-r", "sales")
    assert [o["key"] for o in everything["objects"]] == ["2026/11/report.csv", "2026/stdin.bin"]
    head = dw_json(data, "head", "sales/2026/11/report.csv")
    assert head["metadata"] == {"owner": "ana"} and head["content_type"] == "text/csv"
    out = tmp_path / "copy.csv"
    got = dw_json(data, "get", "sales/2026/11/report.csv", str(out))
    assert out.read_bytes() == payload and got["written"] == len(payload)
    assert not list(tmp_path.glob(".*partial"))
    assert dw(data, "get", "sales/2026/stdin.bin").stdout == b"from stdin"
    assert dw(data, "get", "sales/2026/11/report.csv", "-", "--range", "10-19").stdout == payload[10:20]
    dw(data, "cp", "sales/2026/stdin.bin", "sales/copied.bin")
    assert dw(data, "get", "sales/copied.bin").stdout == b"from stdin"
    assert dw_json(data, "rm", "sales/copied.bin")["existed"] is True
    # Keys may hold control characters (as in S3); a table must not hand them to the terminal.
    dw(data, "put", "-", "sales/2026/\x1b]0;owned\x07[red]x\ny", stdin=b"1")
    table = dw(data, "ls", "sales/2026/").stdout.decode()
    assert "PRE" in table and "stdin.bin" in table
    assert "\\x1b]0;owned\\x07[red]x\\x0ay" in table and "\x1b" not in table and "\x07" not in table


def test_errors_are_one_clear_line_and_exit_1(tmp_path: Path) -> None:
    data = tmp_path / "data"
    dw(data, "mb", "sales")
    missing = dw(data, "get", "sales/nope.txt", check=False)
    assert missing.returncode == 1
    assert missing.stderr.decode().strip() == "error: object 'nope.txt' does not exist in bucket 'sales'"
    assert b"Traceback" not in missing.stderr
    bad = dw(data, "mb", "Bad_Name", "--json", check=False)
    assert bad.returncode == 1
    assert json.loads(bad.stdout)["error"]["type"] == "InvalidBucketName"
    unreadable = dw(data, "put", str(tmp_path / "absent.bin"), "sales/x", check=False)
    assert unreadable.returncode == 1
    assert unreadable.stderr.decode().strip() == (
        f"error: cannot read {tmp_path / 'absent.bin'}: No such file or directory")
    no_key = dw(data, "get", "sales", check=False)
    assert no_key.returncode == 1 and b"names no object key" in no_key.stderr
    bad_range = dw(data, "get", "sales/x", "--range", "abc", check=False)
    assert bad_range.returncode == 1 and b"FIRST-LAST" in bad_range.stderr


def test_bad_config_is_reported_with_field(tmp_path: Path) -> None:
    config = tmp_path / "dwray.toml"
    config.write_text("[pipeline]\nframe_size = 3\n")
    result = dw(tmp_path / "data", "--config", str(config), "ls", check=False)
    assert result.returncode == 1
    assert b"pipeline.frame_size" in result.stderr and str(config).encode() in result.stderr


def test_progress_is_shown_for_large_transfers(tmp_path: Path) -> None:
    data = tmp_path / "data"
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(9 << 20))
    dw(data, "mb", "bulk")
    put = dw(data, "put", str(big), "bulk/big.bin", "--progress")
    assert b"put big.bin" in put.stderr and b"100%" in put.stderr or b"9.4" in put.stderr
    get = dw(data, "get", "bulk/big.bin", str(tmp_path / "back.bin"), "--progress")
    assert b"get big.bin" in get.stderr
    assert (tmp_path / "back.bin").read_bytes() == big.read_bytes()
    quiet = dw(data, "put", str(big), "bulk/again.bin")  # not a terminal: no bar by default
    assert quiet.stderr == b""


def test_key_commands(tmp_path: Path) -> None:
    data = tmp_path / "data"
    dw(data, "mb", "vault")
    dw(data, "put", "-", "vault/a", stdin=b"A")
    assert dw_json(data, "keys", "rotate") == {"primary": 2}
    refused = dw(data, "keys", "retire", "2", check=False)
    assert refused.returncode == 1 and b"rewrap first" in refused.stderr
    assert dw_json(data, "keys", "rewrap") == {"rewrapped": 1}
    assert dw_json(data, "keys", "retire", "2") == {"minimum": 2}
    assert dw(data, "get", "vault/a").stdout == b"A"


def test_tenant_option_isolates(tmp_path: Path) -> None:
    data = tmp_path / "data"
    dw(data, "--tenant", "acme", "mb", "books")
    assert dw_json(data, "--tenant", "acme", "ls") != []
    assert dw_json(data, "ls") == []


def test_bench_json_reports_ratios(tmp_path: Path) -> None:
    result = dw_json(tmp_path / "data", "bench", "--size", "4MiB", "--small-count", "10", "--repeat", "1",
                     "--dir", str(tmp_path))
    for name in ("put_MBps", "get_MBps", "small_put_ops"):
        assert result[name] > 0 and result["yardstick"][name] > 0
    assert result["put_ratio"] == pytest.approx(result["put_MBps"] / result["yardstick"]["put_MBps"], rel=0.02)
    assert result["size"] == 4 << 20 and result["mode"] == "inprocess"
    assert list(tmp_path.glob("tmp*")) == []  # scratch folders removed
    table = dw(tmp_path / "data", "bench", "--size", "2MiB", "--small-count", "5", "--repeat", "1").stdout
    assert b"ratio" in table and b"put" in table


def test_python_module_entry_is_the_same_cli(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-c", "from dwray.cli import main; main()", "--help"],
                            capture_output=True, timeout=60)
    assert result.returncode == 0 and b"dwray" in result.stdout


def test_a_data_dir_held_by_another_process_is_refused_naming_the_holder(tmp_path: Path) -> None:
    """One writer per data dir: while one ``dw`` command has it open, another is refused."""
    from dwray.core.datadir_lock import DataDirLock

    data = tmp_path / "data"
    dw(data, "mb", "sales")
    # 'dw put -' has the data dir open while it waits for its standard input.
    env = {**os.environ, "DWRAY_DATA_DIR": str(data)}
    writer = subprocess.Popen(["dw", "put", "-", "sales/slow.bin"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.monotonic() + 60
        while DataDirLock(data).holder() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        refused = dw(data, "ls", "--json", check=False)
        assert refused.returncode == 1
        error = json.loads(refused.stdout)["error"]
        assert error["type"] == "DataDirInUse"
        assert error["message"].startswith(f"data dir {data} is in use by an in-process Warehouse "
                                           f"(pid {writer.pid} on ")
        assert error["message"].endswith("command: dw put - sales/slow.bin)")
        _, err = writer.communicate(b"slow but sure", timeout=60)
        assert writer.returncode == 0, err
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait(30)
    # Released when the writer exits: the next command opens the data dir.
    assert dw(data, "get", "sales/slow.bin").stdout == b"slow but sure"
