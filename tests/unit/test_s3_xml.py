"""S3 XML: the parsers refuse hostile input; botocore's own parser reads what we render."""
from __future__ import annotations

import io
import time
import tracemalloc
from typing import Any

import botocore.session
import pytest
from botocore.awsrequest import AWSResponse
from botocore.handlers import (
    decode_list_object,
    decode_list_object_v2,
    parse_get_bucket_location,
)
from botocore.parsers import RestXMLParser
from urllib3.response import HTTPResponse

import dwray.s3.xml as s3xml
from dwray.core.models import (
    BucketInfo,
    ListPage,
    ObjectInfo,
    PartInfo,
    PartsPage,
    UploadInfo,
    UploadsPage,
    VersionsPage,
)
from dwray.s3.errors import S3Error
from tests.helpers import BILLION_LAUGHS_DTD

NS = 'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'
T0 = 1_795_773_600.0  # 2026-11-27T10:00:00Z
MODEL = botocore.session.get_session().get_service_model("s3")


def botocore_parse(operation: str, body: bytes, status: int = 200) -> dict[str, Any]:
    """What botocore (and so boto3, awscli) makes of a response body for ``operation``."""
    shape = MODEL.operation_model(operation).output_shape
    return RestXMLParser().parse({"body": body, "headers": {}, "status_code": status}, shape)


def malformed(call: Any, *args: Any, **kwargs: Any) -> S3Error:
    with pytest.raises(S3Error) as caught:
        call(*args, **kwargs)
    assert caught.value.code == "MalformedXML"
    assert caught.value.status == 400
    return caught.value


def obj(key: str, *, size: int = 3, etag: str = "0123456789abcdef0123456789abcdef") -> ObjectInfo:
    return ObjectInfo(bucket="b", key=key, version_id="v1", size=size, etag=etag, last_modified=T0 + 0.25)


# ---------------------------------------------------------------- parsing: good input

def test_complete_multipart_with_and_without_namespace() -> None:
    for ns in (NS, ""):
        body = (f'<CompleteMultipartUpload {ns}><Part><PartNumber>2</PartNumber><ETag>"aa"</ETag></Part>'
                f'<Part><ETag>bb-3</ETag><PartNumber> 1 </PartNumber><ChecksumCRC32>AAAAAA==</ChecksumCRC32>'
                f'</Part></CompleteMultipartUpload>').encode()
        assert s3xml.parse_complete_multipart(body) == [(2, "aa"), (1, "bb-3")]


def test_complete_multipart_with_entity_quoted_etags_and_prefixed_namespace() -> None:
    body = (b'<?xml version="1.0" encoding="UTF-8"?><s3:CompleteMultipartUpload '
            b'xmlns:s3="http://s3.amazonaws.com/doc/2006-03-01/"><s3:Part><s3:PartNumber>10000</s3:PartNumber>'
            b'<s3:ETag>&quot;cafe&quot;</s3:ETag></s3:Part></s3:CompleteMultipartUpload>')
    assert s3xml.parse_complete_multipart(body) == [(10000, "cafe")]


def test_botocore_serialised_complete_multipart_parses() -> None:
    from botocore.serialize import create_serializer
    serializer = create_serializer("rest-xml")
    request = serializer.serialize_to_request(
        {"Bucket": "b", "Key": "k", "UploadId": "u",
         "MultipartUpload": {"Parts": [{"PartNumber": 1, "ETag": '"e1"'}, {"PartNumber": 2, "ETag": '"e2"'}]}},
        MODEL.operation_model("CompleteMultipartUpload"))
    assert s3xml.parse_complete_multipart(request["body"]) == [(1, "e1"), (2, "e2")]


def test_botocore_serialised_delete_objects_parses() -> None:
    from botocore.serialize import create_serializer
    request = create_serializer("rest-xml").serialize_to_request(
        {"Bucket": "b", "Delete": {"Objects": [{"Key": "a b&<c>"}, {"Key": "d", "VersionId": "v9"}],
                                   "Quiet": True}},
        MODEL.operation_model("DeleteObjects"))
    assert s3xml.parse_delete_objects(request["body"]) == (True, [("a b&<c>", None), ("d", "v9")])


def test_delete_objects_quiet_defaults_false_and_keeps_key_whitespace() -> None:
    body = f"<Delete {NS}><Object><Key> spaced key </Key><VersionId></VersionId></Object></Delete>".encode()
    assert s3xml.parse_delete_objects(body) == (False, [(" spaced key ", None)])
    body = b"<Delete><Quiet>FALSE</Quiet><Object><Key>k</Key></Object></Delete>"
    assert s3xml.parse_delete_objects(body) == (False, [("k", None)])


def test_delete_objects_accepts_exactly_1000() -> None:
    body = ("<Delete>" + "".join(f"<Object><Key>k{i}</Key></Object>" for i in range(1000)) + "</Delete>").encode()
    quiet, objects = s3xml.parse_delete_objects(body)
    assert len(objects) == 1000 and objects[-1] == ("k999", None) and quiet is False


def test_create_bucket() -> None:
    assert s3xml.parse_create_bucket(b"") is None
    assert s3xml.parse_create_bucket(b"  \n") is None
    body = f"<CreateBucketConfiguration {NS}><LocationConstraint>eu-west-1</LocationConstraint>" \
           f"</CreateBucketConfiguration>".encode()
    assert s3xml.parse_create_bucket(body) == "eu-west-1"
    assert s3xml.parse_create_bucket(b"<CreateBucketConfiguration/>") is None


# ---------------------------------------------------------------- parsing: bad input

def test_complete_multipart_rejects_bad_structure() -> None:
    malformed(s3xml.parse_complete_multipart, b"")
    malformed(s3xml.parse_complete_multipart, b"<CompleteMultipartUpload/>")
    malformed(s3xml.parse_complete_multipart,
              b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber></Part></CompleteMultipartUpload>")
    malformed(s3xml.parse_complete_multipart,
              b"<CompleteMultipartUpload><Part><ETag>a</ETag></Part></CompleteMultipartUpload>")
    malformed(s3xml.parse_complete_multipart,
              b"<CompleteMultipartUpload><Part><PartNumber>one</PartNumber><ETag>a</ETag></Part>"
              b"</CompleteMultipartUpload>")
    malformed(s3xml.parse_complete_multipart,
              b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><PartNumber>2</PartNumber>"
              b"<ETag>a</ETag></Part></CompleteMultipartUpload>")


@pytest.mark.parametrize("number", ["0", "10001", "-1", "99999999999999999999", "9" * 5000])
def test_complete_multipart_part_number_out_of_range_is_invalid_argument(number: str) -> None:
    body = f"<CompleteMultipartUpload><Part><PartNumber>{number}</PartNumber><ETag>a</ETag></Part>" \
           f"</CompleteMultipartUpload>".encode()
    with pytest.raises(S3Error) as caught:
        s3xml.parse_complete_multipart(body)
    assert caught.value.code == "InvalidArgument" and number[:20] in caught.value.message


def test_delete_objects_rejects_bad_structure() -> None:
    malformed(s3xml.parse_delete_objects, b"<Delete/>")
    malformed(s3xml.parse_delete_objects, b"<Delete><Quiet>true</Quiet></Delete>")
    malformed(s3xml.parse_delete_objects, b"<Delete><Object><VersionId>v</VersionId></Object></Delete>")
    malformed(s3xml.parse_delete_objects, b"<Delete><Quiet>yes</Quiet><Object><Key>k</Key></Object></Delete>")
    too_many = ("<Delete>" + "<Object><Key>k</Key></Object>" * 1001 + "</Delete>").encode()
    assert "1001" in malformed(s3xml.parse_delete_objects, too_many).message


BILLION_LAUGHS = BILLION_LAUGHS_DTD + b"<Delete><Object><Key>&lol9;</Key></Object></Delete>"

ATTACKS = {
    "billion-laughs": BILLION_LAUGHS,
    "external-entity": b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
                       b"<Delete><Object><Key>&x;</Key></Object></Delete>",
    "external-dtd": b'<?xml version="1.0"?><!DOCTYPE Delete SYSTEM "http://127.0.0.1:1/evil.dtd">'
                    b"<Delete><Object><Key>k</Key></Object></Delete>",
    "parameter-entity": b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY % p SYSTEM "file:///etc/passwd"> %p;]>'
                        b"<Delete><Object><Key>k</Key></Object></Delete>",
    "plain-dtd": b"<!DOCTYPE Delete><Delete><Object><Key>k</Key></Object></Delete>",
    "undefined-entity": b"<Delete><Object><Key>&nope;</Key></Object></Delete>",
    "not-xml": b"this is not xml at all",
    "json": b'{"Delete": {"Objects": [{"Key": "k"}]}}',
    "truncated": b"<Delete><Object><Key>k</Key></Object>",
    "wrong-root": b"<CompleteMultipartUpload><Object><Key>k</Key></Object></CompleteMultipartUpload>",
    "two-roots": b"<Delete><Object><Key>k</Key></Object></Delete><Delete/>",
    "unbound-prefix": b"<x:Delete><Object><Key>k</Key></Object></x:Delete>",
    "deep-nesting": b"<Delete>" + b"<Object>" * 50_000 + b"</Object>" * 50_000 + b"</Delete>",
    "element-flood": b"<Delete>" + b"<a/>" * 200_000 + b"</Delete>",
    "bad-utf8": b"<Delete><Object><Key>\xff\xfe</Key></Object></Delete>",
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_hostile_bodies_are_malformed_xml(name: str) -> None:
    body = ATTACKS[name]
    tracemalloc.start()
    try:
        started = time.perf_counter()
        malformed(s3xml.parse_delete_objects, body)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # No expansion happened: nothing close to the bomb's gigabyte was built.
    assert peak < 64 * 1024 * 1024, f"{name} used {peak} bytes"
    assert elapsed < 5


@pytest.mark.parametrize("name", ["deep-nesting", "element-flood"])
def test_floods_are_stopped_by_the_limits_while_parsing(name: str) -> None:
    assert "nested too deeply or too large" in malformed(s3xml.parse_delete_objects, ATTACKS[name]).message


def test_dtd_and_entities_are_named_as_the_reason() -> None:
    for name in ("billion-laughs", "external-entity", "external-dtd", "parameter-entity", "plain-dtd"):
        assert "DTDs and entities" in malformed(s3xml.parse_delete_objects, ATTACKS[name]).message


def test_external_entity_content_never_appears() -> None:
    error = malformed(s3xml.parse_delete_objects, ATTACKS["external-entity"])
    assert "root:" not in error.message and "passwd" not in error.message


def test_each_parser_refuses_attacks() -> None:
    for parser in (s3xml.parse_complete_multipart, s3xml.parse_create_bucket):
        malformed(parser, BILLION_LAUGHS)
        malformed(parser, ATTACKS["external-entity"])
        malformed(parser, b"<<<>>>")


def test_body_size_cap() -> None:
    body = ("<Delete>" + "<Object><Key>k</Key></Object>" * 100 + "</Delete>").encode()
    assert len(s3xml.parse_delete_objects(body, max_bytes=len(body))[1]) == 100
    assert str(len(body) - 1) in malformed(s3xml.parse_delete_objects, body, max_bytes=len(body) - 1).message
    huge = b"<Delete>" + b" " * s3xml.MAX_XML_BYTES + b"<Object><Key>k</Key></Object></Delete>"
    malformed(s3xml.parse_delete_objects, huge)
    malformed(s3xml.parse_create_bucket, b"<CreateBucketConfiguration>" + b"x" * 100
              + b"</CreateBucketConfiguration>", max_bytes=50)


# ---------------------------------------------------------------- rendering, read back by botocore

def test_every_document_is_utf8_with_declaration_and_namespace() -> None:
    for body in (s3xml.location_xml("eu-west-1"), s3xml.list_versions_xml(
                     "b", VersionsPage([], [], False), prefix=None, delimiter=None, key_marker=None,
                     version_id_marker=None, max_keys=1, encoding_type=None, owner_id="o"),
                 s3xml.initiate_multipart_xml("b", "k", "u"), s3xml.list_buckets_xml([], "o", "n")):
        assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
        assert b'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"' in body


def test_error_xml_is_read_by_botocore() -> None:
    error = S3Error("NoSuchKey", "The specified key does not exist.", resource="/b/a<&>")
    body = s3xml.error_xml(error, "req-1")
    assert b"xmlns" not in body  # S3 sends <Error> without a namespace; botocore matches on the bare tag
    parsed = botocore_parse("GetObject", body, status=404)
    assert parsed["Error"]["Code"] == "NoSuchKey"
    assert parsed["Error"]["Message"] == "The specified key does not exist."
    assert parsed["Error"]["Resource"] == "/b/a<&>"
    # botocore took its S3 branch (bare <Error> root): RequestId is moved out of the
    # error (clients read it from the x-amz-request-id header), but it is in the body.
    assert "RequestId" not in parsed["Error"]
    assert b"<RequestId>req-1</RequestId>" in body


def test_list_buckets() -> None:
    buckets = [BucketInfo("alpha", T0, False), BucketInfo("beta", T0 + 1.5, True)]
    parsed = botocore_parse("ListBuckets", s3xml.list_buckets_xml(buckets, "owner-id", "Owner & Co"))
    assert [b["Name"] for b in parsed["Buckets"]] == ["alpha", "beta"]
    assert parsed["Buckets"][0]["CreationDate"].isoformat() == "2026-11-27T10:00:00+00:00"
    assert parsed["Buckets"][1]["CreationDate"].timestamp() == T0 + 1.5
    assert parsed["Owner"] == {"ID": "owner-id", "DisplayName": "Owner & Co"}
    assert b"<CreationDate>2026-11-27T10:00:00.000Z</CreationDate>" in s3xml.list_buckets_xml(buckets, "o", "n")


def test_list_objects_v2_fields() -> None:
    page = ListPage(objects=[obj("a/1.csv"), obj("a/2 & <3>.csv", size=0, etag="ff-2")],
                    common_prefixes=["a/sub/"], is_truncated=True, next_continuation_token="tok-2")
    body = s3xml.list_objects_v2_xml("bkt", page, prefix="a/", delimiter="/", max_keys=3, start_after="a/0",
                                     continuation_token="tok-1", encoding_type=None, fetch_owner=False,
                                     owner_id="own")
    parsed = botocore_parse("ListObjectsV2", body)
    assert parsed["Name"] == "bkt" and parsed["Prefix"] == "a/" and parsed["Delimiter"] == "/"
    assert parsed["MaxKeys"] == 3 and parsed["KeyCount"] == 3 and parsed["IsTruncated"] is True
    assert parsed["ContinuationToken"] == "tok-1" and parsed["NextContinuationToken"] == "tok-2"
    assert parsed["StartAfter"] == "a/0"
    first, second = parsed["Contents"]
    assert first["Key"] == "a/1.csv" and first["Size"] == 3 and first["StorageClass"] == "STANDARD"
    assert first["ETag"] == '"0123456789abcdef0123456789abcdef"'
    assert first["LastModified"].timestamp() == T0 + 0.25
    assert "Owner" not in first
    assert second["Key"] == "a/2 & <3>.csv" and second["Size"] == 0 and second["ETag"] == '"ff-2"'
    assert parsed["CommonPrefixes"] == [{"Prefix": "a/sub/"}]
    assert b"<LastModified>2026-11-27T10:00:00.250Z</LastModified>" in body


def test_list_objects_v2_last_page_and_owner() -> None:
    page = ListPage(objects=[obj("x")], common_prefixes=[], is_truncated=False)
    body = s3xml.list_objects_v2_xml("bkt", page, prefix=None, delimiter=None, max_keys=1000, start_after=None,
                                     continuation_token=None, encoding_type=None, fetch_owner=True,
                                     owner_id="own")
    parsed = botocore_parse("ListObjectsV2", body)
    assert parsed["IsTruncated"] is False and "NextContinuationToken" not in parsed
    assert "Delimiter" not in parsed and "StartAfter" not in parsed and "ContinuationToken" not in parsed
    assert parsed["Prefix"] == "" and parsed["KeyCount"] == 1
    assert parsed["Contents"][0]["Owner"]["ID"] == "own"


def test_list_objects_v2_empty() -> None:
    body = s3xml.list_objects_v2_xml("bkt", ListPage([], [], False), prefix="nope/", delimiter=None,
                                     max_keys=1000, start_after=None, continuation_token=None,
                                     encoding_type=None, fetch_owner=False, owner_id="o")
    parsed = botocore_parse("ListObjectsV2", body)
    assert parsed["KeyCount"] == 0 and "Contents" not in parsed and parsed["Prefix"] == "nope/"


AWKWARD_KEYS = ["a b", "a+b", "100%", "é/ü/日本", "x&y<z>", "q?r#s", "tab\there", "~tilde", "semi;colon=eq"]


def test_list_objects_v2_url_encoding_round_trips_through_botocore() -> None:
    page = ListPage(objects=[obj(k) for k in AWKWARD_KEYS], common_prefixes=["p +/"], is_truncated=False)
    body = s3xml.list_objects_v2_xml("bkt", page, prefix="p +", delimiter="/", max_keys=50,
                                     start_after="a +b", continuation_token=None, encoding_type="url",
                                     fetch_owner=False, owner_id="o")
    assert b"<Key>a%20b</Key>" in body and b"<Key>a%2Bb</Key>" in body and b"<Key>%C3%A9/%C3%BC/" in body
    parsed = botocore_parse("ListObjectsV2", body)
    assert parsed["EncodingType"] == "url"
    # boto3 sets encoding-type=url itself and then decodes with this handler.
    decode_list_object_v2(parsed, context={"encoding_type_auto_set": True})
    assert [c["Key"] for c in parsed["Contents"]] == AWKWARD_KEYS
    assert parsed["Prefix"] == "p +" and parsed["StartAfter"] == "a +b" and parsed["Delimiter"] == "/"
    assert parsed["CommonPrefixes"] == [{"Prefix": "p +/"}]


def test_unknown_encoding_type_is_invalid_argument() -> None:
    with pytest.raises(S3Error) as caught:
        s3xml.list_objects_v2_xml("b", ListPage([], [], False), prefix=None, delimiter=None, max_keys=1,
                                  start_after=None, continuation_token=None, encoding_type="base64",
                                  fetch_owner=False, owner_id="o")
    assert caught.value.code == "InvalidArgument" and "base64" in caught.value.message


def test_list_objects_v1_next_marker_only_with_delimiter() -> None:
    page = ListPage(objects=[obj("a"), obj("c")], common_prefixes=["b/"], is_truncated=True,
                    next_continuation_token="opaque")
    with_delimiter = botocore_parse("ListObjects", s3xml.list_objects_v1_xml(
        "bkt", page, prefix="", delimiter="/", marker="0", max_keys=3, encoding_type=None, owner_id="own"))
    assert with_delimiter["NextMarker"] == "c" and with_delimiter["Marker"] == "0"
    assert with_delimiter["IsTruncated"] is True and with_delimiter["MaxKeys"] == 3
    assert with_delimiter["CommonPrefixes"] == [{"Prefix": "b/"}]
    assert with_delimiter["Contents"][0]["Owner"] == {"ID": "own", "DisplayName": "own"}
    assert "KeyCount" not in with_delimiter and "NextContinuationToken" not in with_delimiter

    prefix_last = ListPage(objects=[obj("a")], common_prefixes=["b/"], is_truncated=True)
    parsed = botocore_parse("ListObjects", s3xml.list_objects_v1_xml(
        "bkt", prefix_last, prefix=None, delimiter="/", marker=None, max_keys=2, encoding_type=None,
        owner_id="o"))
    assert parsed["NextMarker"] == "b/" and parsed["Marker"] == ""

    without = botocore_parse("ListObjects", s3xml.list_objects_v1_xml(
        "bkt", page, prefix=None, delimiter=None, marker=None, max_keys=3, encoding_type=None, owner_id="o"))
    assert "NextMarker" not in without and without["IsTruncated"] is True

    done = ListPage(objects=[obj("a")], common_prefixes=[], is_truncated=False)
    parsed = botocore_parse("ListObjects", s3xml.list_objects_v1_xml(
        "bkt", done, prefix=None, delimiter="/", marker=None, max_keys=3, encoding_type=None, owner_id="o"))
    assert "NextMarker" not in parsed and parsed["IsTruncated"] is False


def test_list_objects_v1_url_encoding() -> None:
    page = ListPage(objects=[obj("a b+c")], common_prefixes=["d e/"], is_truncated=True)
    parsed = botocore_parse("ListObjects", s3xml.list_objects_v1_xml(
        "bkt", page, prefix="a ", delimiter="/", marker="m+n", max_keys=2, encoding_type="url", owner_id="o"))
    decode_list_object(parsed, context={"encoding_type_auto_set": True})
    assert parsed["Contents"][0]["Key"] == "a b+c" and parsed["Marker"] == "m+n"
    assert parsed["NextMarker"] == "d e/" and parsed["CommonPrefixes"] == [{"Prefix": "d e/"}]
    # S3 encodes V1's Prefix too (its docs list it); botocore leaves that one to the caller.
    assert parsed["Prefix"] == "a%20"


def test_multipart_documents() -> None:
    parsed = botocore_parse("CreateMultipartUpload", s3xml.initiate_multipart_xml("b", "k &1", "up-1"))
    assert (parsed["Bucket"], parsed["Key"], parsed["UploadId"]) == ("b", "k &1", "up-1")
    parsed = botocore_parse("CompleteMultipartUpload",
                            s3xml.complete_multipart_xml("http://h/b/k", "b", "k", "abcd-2"))
    assert parsed["Location"] == "http://h/b/k" and parsed["ETag"] == '"abcd-2"' and parsed["Key"] == "k"


def test_etag_is_quoted_once() -> None:
    body = s3xml.complete_multipart_xml("l", "b", "k", '"already"')
    assert botocore_parse("CompleteMultipartUpload", body)["ETag"] == '"already"'


def test_copy_documents() -> None:
    parsed = botocore_parse("CopyObject", s3xml.copy_object_xml("e1", T0))
    assert parsed["CopyObjectResult"]["ETag"] == '"e1"'
    assert parsed["CopyObjectResult"]["LastModified"].timestamp() == T0
    parsed = botocore_parse("UploadPartCopy", s3xml.copy_part_xml("e2", T0 + 2))
    assert parsed["CopyPartResult"]["ETag"] == '"e2"'
    assert parsed["CopyPartResult"]["LastModified"].timestamp() == T0 + 2


def test_list_parts() -> None:
    page = PartsPage(parts=[PartInfo(3, "p3", 5 << 20, T0), PartInfo(4, "p4", 10, T0 + 1)], is_truncated=True,
                     next_part_number_marker=4)
    parsed = botocore_parse("ListParts", s3xml.list_parts_xml("b", "k", "u", page, part_number_marker=2,
                                                              max_parts=2, owner_id="own"))
    assert parsed["Bucket"] == "b" and parsed["Key"] == "k" and parsed["UploadId"] == "u"
    assert parsed["PartNumberMarker"] == 2 and parsed["NextPartNumberMarker"] == 4
    assert parsed["MaxParts"] == 2 and parsed["IsTruncated"] is True
    assert [(p["PartNumber"], p["ETag"], p["Size"]) for p in parsed["Parts"]] == [(3, '"p3"', 5 << 20),
                                                                                  (4, '"p4"', 10)]
    assert parsed["Parts"][1]["LastModified"].timestamp() == T0 + 1
    assert parsed["Initiator"]["ID"] == "own" and parsed["Owner"]["ID"] == "own"
    empty = botocore_parse("ListParts", s3xml.list_parts_xml("b", "k", "u", PartsPage([], False),
                                                             part_number_marker=None, max_parts=1000,
                                                             owner_id="o"))
    assert empty["PartNumberMarker"] == 0 and "Parts" not in empty and empty["IsTruncated"] is False


def test_list_uploads() -> None:
    page = UploadsPage(uploads=[UploadInfo("b", "k 1", "u1", T0), UploadInfo("b", "k+2", "u2", T0 + 3)],
                       common_prefixes=["dir /"], is_truncated=True, next_key_marker="k+2",
                       next_upload_id_marker="u2")
    body = s3xml.list_uploads_xml("b", page, prefix="k", delimiter="/", key_marker="a b", upload_id_marker="u0",
                                  max_uploads=2, encoding_type="url", owner_id="own")
    parsed = botocore_parse("ListMultipartUploads", body)
    assert parsed["Bucket"] == "b" and parsed["MaxUploads"] == 2 and parsed["IsTruncated"] is True
    assert parsed["KeyMarker"] == "a%20b" and parsed["UploadIdMarker"] == "u0"
    assert parsed["NextKeyMarker"] == "k%2B2" and parsed["NextUploadIdMarker"] == "u2"
    assert [u["Key"] for u in parsed["Uploads"]] == ["k%201", "k%2B2"]
    assert [u["UploadId"] for u in parsed["Uploads"]] == ["u1", "u2"]
    assert parsed["Uploads"][1]["Initiated"].timestamp() == T0 + 3
    assert parsed["Uploads"][0]["Initiator"]["ID"] == "own"
    assert parsed["CommonPrefixes"] == [{"Prefix": "dir%20/"}] and parsed["EncodingType"] == "url"
    plain = botocore_parse("ListMultipartUploads", s3xml.list_uploads_xml(
        "b", UploadsPage([], [], False), prefix=None, delimiter=None, key_marker=None, upload_id_marker=None,
        max_uploads=1000, encoding_type=None))
    assert plain["IsTruncated"] is False and "Uploads" not in plain and "NextKeyMarker" not in plain


def test_delete_result() -> None:
    deleted = [("a", None, False, None), ("b", "v1", False, None), ("c", None, True, "dm1")]
    errors = [("d<", None, "AccessDenied", "Access Denied"), ("e", "v2", "AccessDenied", "Access Denied")]
    parsed = botocore_parse("DeleteObjects", s3xml.delete_result_xml(deleted, errors, quiet=False))
    assert parsed["Deleted"] == [{"Key": "a"}, {"Key": "b", "VersionId": "v1"},
                                 {"Key": "c", "DeleteMarker": True, "DeleteMarkerVersionId": "dm1"}]
    assert parsed["Errors"] == [{"Key": "d<", "Code": "AccessDenied", "Message": "Access Denied"},
                                {"Key": "e", "VersionId": "v2", "Code": "AccessDenied", "Message": "Access Denied"}]
    quiet = botocore_parse("DeleteObjects", s3xml.delete_result_xml(deleted, errors, quiet=True))
    assert "Deleted" not in quiet and quiet["Errors"][0]["Key"] == "d<"


def location_via_botocore(body: bytes) -> str | None:
    """Run botocore's own GetBucketLocation handler over a real urllib3 response."""
    raw = HTTPResponse(body=io.BytesIO(body), preload_content=False, status=200)
    response = AWSResponse("http://127.0.0.1/b?location", 200, {}, raw)
    parsed: dict[str, Any] = {}
    parse_get_bucket_location(parsed, response)
    return parsed["LocationConstraint"]


def test_location() -> None:
    assert location_via_botocore(s3xml.location_xml("eu-central-1")) == "eu-central-1"
    assert location_via_botocore(s3xml.location_xml("us-east-1")) is None


def test_all_is_honest() -> None:
    public = {name for name in vars(s3xml) if not name.startswith("_")
              and getattr(getattr(s3xml, name), "__module__", None) == s3xml.__name__}
    assert public <= set(s3xml.__all__)
