"""awscli (v1) against the gateway: ``aws s3 cp/ls/rm/sync`` and ``aws s3api``.

The headline check of the gateway issue is here: ``aws s3 sync`` of a
directory tree up to a bucket and back into a fresh folder gives a
byte-identical tree, and a second sync has nothing to do.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.integration.gateway.clients import (
    TREE_FILES,
    AwsCli,
    MiB,
    keys_in,
    make_tree,
    md5_hex,
    multipart_etag,
    random_bytes,
    tree_digests,
)

# awscli's default multipart threshold and part size.
AWSCLI_PART = 8 * MiB


@pytest.fixture
def aws(gateway: Any, tmp_path: Path) -> AwsCli:
    return AwsCli.for_gateway(gateway, tmp_path / "aws-home")


def _ls_keys(output: str) -> list[str]:
    """The keys (or PRE prefixes) of ``aws s3 ls`` output lines: date, time, size, key."""
    return [line.split(None, 3)[3] if not line.lstrip().startswith("PRE ") else line.split("PRE ", 1)[1]
            for line in output.splitlines() if line.strip()]


def test_cp_up_and_down(aws: AwsCli, s3: Any, bucket: str, tmp_path: Path) -> None:
    source = tmp_path / "small file.txt"
    source.write_bytes(random_bytes(4321, seed=20))
    aws.run("s3", "cp", str(source), f"s3://{bucket}/dir/small file.txt")
    head = s3.head_object(Bucket=bucket, Key="dir/small file.txt")
    assert head["ETag"] == f'"{md5_hex(source.read_bytes())}"'
    assert head["ContentType"] == "text/plain"

    target = tmp_path / "down" / "copy.txt"
    aws.run("s3", "cp", f"s3://{bucket}/dir/small file.txt", str(target))
    assert target.read_bytes() == source.read_bytes()


def test_cp_large_file_goes_multipart(aws: AwsCli, s3: Any, bucket: str, tmp_path: Path) -> None:
    data = random_bytes(9 * MiB + 17, seed=21)
    source = tmp_path / "large.bin"
    source.write_bytes(data)
    aws.run("s3", "cp", str(source), f"s3://{bucket}/large.bin")
    head = s3.head_object(Bucket=bucket, Key="large.bin")
    assert head["ETag"] == multipart_etag(data, AWSCLI_PART)
    assert head["ContentLength"] == len(data)

    target = tmp_path / "large.back"
    aws.run("s3", "cp", f"s3://{bucket}/large.bin", str(target))
    assert target.read_bytes() == data


def test_cp_missing_object_fails_cleanly(aws: AwsCli, bucket: str, tmp_path: Path) -> None:
    result = aws.run("s3", "cp", f"s3://{bucket}/no-such-key", str(tmp_path / "x"), check=False)
    assert result.returncode != 0
    assert "404" in result.stderr
    assert not (tmp_path / "x").exists()


def test_ls_buckets_and_objects(aws: AwsCli, s3: Any, bucket: str) -> None:
    for key, size in (("top.txt", 3), ("dir/a.txt", 10), ("dir/sub/b.txt", 20)):
        s3.put_object(Bucket=bucket, Key=key, Body=b"x" * size)

    buckets = aws.run("s3", "ls").stdout
    assert bucket in [line.split()[-1] for line in buckets.splitlines()]

    top = aws.run("s3", "ls", f"s3://{bucket}/").stdout
    assert _ls_keys(top) == ["dir/", "top.txt"]
    assert "       3 top.txt" in top

    under = aws.run("s3", "ls", f"s3://{bucket}/dir/").stdout
    assert _ls_keys(under) == ["sub/", "a.txt"]

    everything = aws.run("s3", "ls", "--recursive", f"s3://{bucket}").stdout
    assert [(line.split()[2], line.split(None, 3)[3]) for line in everything.splitlines()] == [
        ("10", "dir/a.txt"), ("20", "dir/sub/b.txt"), ("3", "top.txt")]


def test_rm_single_and_recursive(aws: AwsCli, s3: Any, bucket: str) -> None:
    for key in ("keep.txt", "gone.txt", "tree/a", "tree/b/c", "tree/b/d"):
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    aws.run("s3", "rm", f"s3://{bucket}/gone.txt")
    assert keys_in(s3, bucket) == ["keep.txt", "tree/a", "tree/b/c", "tree/b/d"]
    result = aws.run("s3", "rm", "--recursive", f"s3://{bucket}/tree/")
    assert result.stdout.count("delete: ") == 3
    assert keys_in(s3, bucket) == ["keep.txt"]


def test_sync_tree_up_and_back_is_byte_identical(aws: AwsCli, s3: Any, bucket: str, tmp_path: Path) -> None:
    source = tmp_path / "source"
    digests = make_tree(source)
    assert len(digests) == len(TREE_FILES)

    aws.run("s3", "sync", str(source), f"s3://{bucket}/tree")
    assert keys_in(s3, bucket) == sorted(f"tree/{relative}" for relative in digests)
    big = (source / "big" / "multipart.bin").read_bytes()
    assert s3.head_object(Bucket=bucket, Key="tree/big/multipart.bin")["ETag"] == multipart_etag(big, AWSCLI_PART)

    back = tmp_path / "back"
    back.mkdir()
    aws.run("s3", "sync", f"s3://{bucket}/tree", str(back))
    assert tree_digests(back) == digests

    again_up = aws.run("s3", "sync", str(source), f"s3://{bucket}/tree")
    assert "upload:" not in again_up.stdout, again_up.stdout
    again_down = aws.run("s3", "sync", f"s3://{bucket}/tree", str(back))
    assert "download:" not in again_down.stdout, again_down.stdout


def test_sync_uploads_changes_and_deletes(aws: AwsCli, s3: Any, bucket: str, tmp_path: Path) -> None:
    source = tmp_path / "source"
    make_tree(source, [("a.txt", 10), ("b/c.txt", 20), ("b/d.txt", 30)])
    aws.run("s3", "sync", str(source), f"s3://{bucket}")
    (source / "b" / "c.txt").write_bytes(b"changed and longer")
    (source / "b" / "d.txt").unlink()
    (source / "new.txt").write_bytes(b"new")

    result = aws.run("s3", "sync", "--delete", str(source), f"s3://{bucket}")
    assert result.stdout.count("upload:") == 2 and result.stdout.count("delete:") == 1
    assert keys_in(s3, bucket) == ["a.txt", "b/c.txt", "new.txt"]
    assert s3.get_object(Bucket=bucket, Key="b/c.txt")["Body"].read() == b"changed and longer"


def test_s3api_put_head_get_list(aws: AwsCli, bucket: str, tmp_path: Path) -> None:
    body = random_bytes(3000, seed=22)
    source = tmp_path / "body.bin"
    source.write_bytes(body)
    put = json.loads(aws.run("s3api", "put-object", "--bucket", bucket, "--key", "api/one.bin",
                             "--body", str(source), "--content-type", "application/x-test",
                             "--metadata", "colour=blue,size=small").stdout)
    assert put["ETag"] == f'"{md5_hex(body)}"'

    head = json.loads(aws.run("s3api", "head-object", "--bucket", bucket, "--key", "api/one.bin").stdout)
    assert head["ContentLength"] == len(body)
    assert head["ContentType"] == "application/x-test"
    assert head["Metadata"] == {"colour": "blue", "size": "small"}

    target = tmp_path / "range.bin"
    got = json.loads(aws.run("s3api", "get-object", "--bucket", bucket, "--key", "api/one.bin",
                             "--range", "bytes=100-199", str(target)).stdout)
    assert got["ContentRange"] == f"bytes 100-199/{len(body)}"
    assert target.read_bytes() == body[100:200]

    for index in range(5):
        aws.run("s3api", "put-object", "--bucket", bucket, "--key", f"api/more/{index}", "--body", str(source))
    listed = json.loads(aws.run("s3api", "list-objects-v2", "--bucket", bucket, "--prefix", "api/",
                                "--delimiter", "/").stdout)
    assert [item["Key"] for item in listed["Contents"]] == ["api/one.bin"]
    assert [p["Prefix"] for p in listed["CommonPrefixes"]] == ["api/more/"]

    paged = json.loads(aws.run("s3api", "list-objects-v2", "--bucket", bucket, "--prefix", "api/more/",
                               "--page-size", "2").stdout)
    assert [item["Key"] for item in paged["Contents"]] == [f"api/more/{index}" for index in range(5)]
    limited = json.loads(aws.run("s3api", "list-objects-v2", "--bucket", bucket, "--prefix", "api/more/",
                                 "--max-items", "3").stdout)
    assert len(limited["Contents"]) == 3 and "NextToken" in limited


def test_s3api_errors_name_the_s3_code(aws: AwsCli, bucket: str, tmp_path: Path) -> None:
    result = aws.run("s3api", "get-object", "--bucket", bucket, "--key", "missing", str(tmp_path / "o"),
                     check=False)
    assert result.returncode != 0 and "NoSuchKey" in result.stderr
    result = aws.run("s3api", "list-objects-v2", "--bucket", f"{bucket}-absent", check=False)
    assert result.returncode != 0 and "NoSuchBucket" in result.stderr
