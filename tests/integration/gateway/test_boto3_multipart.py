"""boto3 multipart uploads against the gateway: through the transfer manager
(``upload_file``/``download_file``) and call by call, with S3's part rules."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from boto3.s3.transfer import TransferConfig

from tests.integration.gateway.clients import (
    MiB,
    assert_s3_error,
    keys_in,
    md5_hex,
    multipart_etag,
    random_bytes,
)

# --- multipart -------------------------------------------------------------------------------

def test_upload_file_goes_multipart_and_downloads_identically(s3: Any, bucket: str, tmp_path: Path) -> None:
    data = random_bytes(12 * MiB, seed=5)
    source = tmp_path / "big.bin"
    source.write_bytes(data)
    config = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB, max_concurrency=2)
    s3.upload_file(str(source), bucket, "big.bin", Config=config)

    head = s3.head_object(Bucket=bucket, Key="big.bin")
    assert head["ETag"] == multipart_etag(data, 5 * MiB)
    assert head["ETag"].endswith('-3"')
    assert head["ContentLength"] == len(data)

    target = tmp_path / "back.bin"
    s3.download_file(bucket, "big.bin", str(target), Config=config)
    assert hashlib.sha256(target.read_bytes()).digest() == hashlib.sha256(data).digest()


def test_multipart_call_by_call(s3: Any, bucket: str) -> None:
    first, last = random_bytes(5 * MiB, seed=6), random_bytes(1024, seed=7)
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp", Metadata={"kind": "multipart"},
                                        ContentType="application/x-mp")["UploadId"]
    etag1 = s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=1, Body=first)["ETag"]
    etag2 = s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=2, Body=last)["ETag"]
    assert (etag1, etag2) == (f'"{md5_hex(first)}"', f'"{md5_hex(last)}"')

    parts = s3.list_parts(Bucket=bucket, Key="mp", UploadId=upload)["Parts"]
    assert [(p["PartNumber"], p["Size"], p["ETag"]) for p in parts] == [(1, len(first), etag1), (2, len(last), etag2)]
    uploads = s3.list_multipart_uploads(Bucket=bucket)["Uploads"]
    assert [(u["Key"], u["UploadId"]) for u in uploads] == [("mp", upload)]
    # An upload in progress is not an object yet.
    assert keys_in(s3, bucket) == []

    done = s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": etag1}, {"PartNumber": 2, "ETag": etag2}]})
    assert done["ETag"] == multipart_etag(first + last, 5 * MiB)
    got = s3.get_object(Bucket=bucket, Key="mp")
    assert got["Body"].read() == first + last
    assert got["Metadata"] == {"kind": "multipart"} and got["ContentType"] == "application/x-mp"
    assert "Uploads" not in s3.list_multipart_uploads(Bucket=bucket)


def test_multipart_list_parts_paginates(s3: Any, bucket: str) -> None:
    upload = s3.create_multipart_upload(Bucket=bucket, Key="lp")["UploadId"]
    for number in range(1, 6):
        s3.upload_part(Bucket=bucket, Key="lp", UploadId=upload, PartNumber=number, Body=bytes([number]))
    page = s3.list_parts(Bucket=bucket, Key="lp", UploadId=upload, MaxParts=2)
    assert [p["PartNumber"] for p in page["Parts"]] == [1, 2] and page["IsTruncated"] is True
    rest = s3.list_parts(Bucket=bucket, Key="lp", UploadId=upload, PartNumberMarker=page["NextPartNumberMarker"])
    assert [p["PartNumber"] for p in rest["Parts"]] == [3, 4, 5] and rest["IsTruncated"] is False
    s3.abort_multipart_upload(Bucket=bucket, Key="lp", UploadId=upload)


def _upload_two_parts(s3: Any, bucket: str, key: str, first_size: int) -> tuple[str, list[dict[str, Any]], bytes]:
    first, second = random_bytes(first_size, seed=8), random_bytes(2048, seed=9)
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    parts = [{"PartNumber": number, "ETag": s3.upload_part(Bucket=bucket, Key=key, UploadId=upload,
                                                            PartNumber=number, Body=body)["ETag"]}
             for number, body in ((1, first), (2, second))]
    return upload, parts, first + second


def test_complete_with_a_wrong_etag_is_invalid_part(s3: Any, bucket: str) -> None:
    upload, parts, data = _upload_two_parts(s3, bucket, "ip", 5 * MiB)
    wrong = [parts[0], {"PartNumber": 2, "ETag": '"00000000000000000000000000000000"'}]
    assert_s3_error("InvalidPart", 400, s3.complete_multipart_upload, Bucket=bucket, Key="ip", UploadId=upload,
            MultipartUpload={"Parts": wrong})
    missing = [*parts, {"PartNumber": 3, "ETag": parts[0]["ETag"]}]
    assert_s3_error("InvalidPart", 400, s3.complete_multipart_upload, Bucket=bucket, Key="ip", UploadId=upload,
            MultipartUpload={"Parts": missing})
    assert keys_in(s3, bucket) == []
    # A refused completion leaves the upload intact.
    s3.complete_multipart_upload(Bucket=bucket, Key="ip", UploadId=upload, MultipartUpload={"Parts": parts})
    assert s3.get_object(Bucket=bucket, Key="ip")["Body"].read() == data


def test_complete_out_of_order_is_invalid_part_order(s3: Any, bucket: str) -> None:
    # Both parts are full-sized, so that only the order is wrong.
    body = random_bytes(5 * MiB, seed=14)
    upload = s3.create_multipart_upload(Bucket=bucket, Key="io")["UploadId"]
    parts = [{"PartNumber": number, "ETag": s3.upload_part(Bucket=bucket, Key="io", UploadId=upload,
                                                            PartNumber=number, Body=body)["ETag"]}
             for number in (1, 2)]
    assert_s3_error("InvalidPartOrder", 400, s3.complete_multipart_upload, Bucket=bucket, Key="io", UploadId=upload,
            MultipartUpload={"Parts": list(reversed(parts))})
    assert keys_in(s3, bucket) == []
    s3.complete_multipart_upload(Bucket=bucket, Key="io", UploadId=upload, MultipartUpload={"Parts": parts})
    assert s3.get_object(Bucket=bucket, Key="io")["Body"].read() == body + body


def test_small_part_before_the_last_is_entity_too_small(s3: Any, bucket: str) -> None:
    upload, parts, _ = _upload_two_parts(s3, bucket, "ts", 1024)
    assert_s3_error("EntityTooSmall", 400, s3.complete_multipart_upload, Bucket=bucket, Key="ts", UploadId=upload,
            MultipartUpload={"Parts": parts})
    assert keys_in(s3, bucket) == []
    s3.abort_multipart_upload(Bucket=bucket, Key="ts", UploadId=upload)


def test_aborted_upload_is_no_such_upload(s3: Any, bucket: str) -> None:
    upload = s3.create_multipart_upload(Bucket=bucket, Key="ab")["UploadId"]
    etag = s3.upload_part(Bucket=bucket, Key="ab", UploadId=upload, PartNumber=1, Body=b"part")["ETag"]
    s3.abort_multipart_upload(Bucket=bucket, Key="ab", UploadId=upload)
    assert "Uploads" not in s3.list_multipart_uploads(Bucket=bucket)
    assert_s3_error("NoSuchUpload", 404, s3.upload_part, Bucket=bucket, Key="ab", UploadId=upload, PartNumber=2, Body=b"x")
    assert_s3_error("NoSuchUpload", 404, s3.list_parts, Bucket=bucket, Key="ab", UploadId=upload)
    assert_s3_error("NoSuchUpload", 404, s3.complete_multipart_upload, Bucket=bucket, Key="ab", UploadId=upload,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
    assert_s3_error("NoSuchUpload", 404, s3.upload_part, Bucket=bucket, Key="ab", UploadId="no-such-upload-id",
            PartNumber=1, Body=b"x")
    assert keys_in(s3, bucket) == []


def test_upload_part_copy(s3: Any, bucket: str) -> None:
    source = random_bytes(6 * MiB + 100, seed=10)
    s3.put_object(Bucket=bucket, Key="source", Body=source)
    s3.put_object(Bucket=bucket, Key="small", Body=b"small whole object")
    upload = s3.create_multipart_upload(Bucket=bucket, Key="assembled")["UploadId"]
    split = 5 * MiB
    head = random_bytes(split, seed=15)
    part1 = s3.upload_part(Bucket=bucket, Key="assembled", UploadId=upload, PartNumber=1, Body=head)
    part2 = s3.upload_part_copy(Bucket=bucket, Key="assembled", UploadId=upload, PartNumber=2,
                                CopySource={"Bucket": bucket, "Key": "source"},
                                CopySourceRange=f"bytes=0-{split - 1}")["CopyPartResult"]
    assert part2["ETag"] == f'"{md5_hex(source[:split])}"'
    part3 = s3.upload_part_copy(Bucket=bucket, Key="assembled", UploadId=upload, PartNumber=3,
                                CopySource={"Bucket": bucket, "Key": "small"})["CopyPartResult"]
    s3.complete_multipart_upload(Bucket=bucket, Key="assembled", UploadId=upload, MultipartUpload={"Parts": [
        {"PartNumber": 1, "ETag": part1["ETag"]}, {"PartNumber": 2, "ETag": part2["ETag"]},
        {"PartNumber": 3, "ETag": part3["ETag"]}]})
    assert s3.get_object(Bucket=bucket, Key="assembled")["Body"].read() == head + source[:split] + b"small whole object"
