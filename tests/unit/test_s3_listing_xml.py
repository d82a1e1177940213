"""Listing documents: ListObjectVersions, paged ListBuckets, encoding-type=url and names XML cannot carry.

Every document is read back with botocore's own parser (and, for encoded
listings, botocore's own decoders), so what is asserted is what boto3 and
awscli make of it.
"""
from __future__ import annotations

from typing import Any

import botocore.session
import defusedxml.ElementTree as SafeET
import pytest
from botocore.handlers import (
    decode_list_object,
    decode_list_object_v2,
    decode_list_object_versions,
)
from botocore.parsers import RestXMLParser

import dwray.s3.xml as s3xml
from dwray.core.models import (
    BucketInfo,
    ListPage,
    ObjectInfo,
    UploadsPage,
    VersionsPage,
)
from dwray.s3.errors import S3Error

T0 = 1_795_773_600.0  # 2026-11-27T10:00:00Z
MODEL = botocore.session.get_session().get_service_model("s3")
AUTO = {"encoding_type_auto_set": True}  # what botocore sets when it asked for encoding-type=url itself
# Keys S3 allows and a URL or an XML document finds awkward: every C0 control but NUL among them.
ODD_KEYS = ["a b", "a+b", "100%", "%20", "é/日本", "x&y<z>\"'", "q?r#s", "new\nline", "cr\rlf\r\n", "tab\t",
            "del\x7f", "bell\x07", "".join(chr(c) for c in range(1, 32)), "~-_.!*'()", "emoji😀", "\u2028"]


def parse(operation: str, body: bytes) -> dict[str, Any]:
    shape = MODEL.operation_model(operation).output_shape
    return RestXMLParser().parse({"body": body, "headers": {}, "status_code": 200}, shape)


def version(key: str, version_id: str, *, latest: bool = True, marker: bool = False) -> ObjectInfo:
    return ObjectInfo(bucket="b", key=key, version_id=version_id, size=0 if marker else 5,
                      etag="" if marker else "0123456789abcdef0123456789abcdef", last_modified=T0 + 1.5,
                      delete_marker=marker, is_latest=latest)


def versions_xml(page: VersionsPage, **overrides: Any) -> bytes:
    params: dict[str, Any] = {"prefix": "", "delimiter": None, "key_marker": None, "version_id_marker": None,
                              "max_keys": 1000, "encoding_type": None, "owner_id": "tenant-a"}
    return s3xml.list_versions_xml("bkt", page, **{**params, **overrides})


def test_list_versions_document() -> None:
    page = VersionsPage(versions=[version("a", "v2", marker=True), version("a", "v1", latest=False),
                                  version("b", "null")],
                        common_prefixes=["d/"], is_truncated=True, next_key_marker="b", next_version_id_marker="null")
    body = versions_xml(page, prefix="", delimiter="/", key_marker="0", version_id_marker="null", max_keys=4)
    parsed = parse("ListObjectVersions", body)
    assert parsed["Name"] == "bkt" and parsed["Prefix"] == "" and parsed["Delimiter"] == "/"
    assert parsed["KeyMarker"] == "0" and parsed["VersionIdMarker"] == "null" and parsed["MaxKeys"] == 4
    assert parsed["IsTruncated"] is True
    assert parsed["NextKeyMarker"] == "b" and parsed["NextVersionIdMarker"] == "null"
    [marker] = parsed["DeleteMarkers"]
    assert marker["Key"] == "a" and marker["VersionId"] == "v2" and marker["IsLatest"] is True
    assert marker["Owner"] == {"ID": "tenant-a", "DisplayName": "tenant-a"}
    assert marker["LastModified"].timestamp() == T0 + 1.5 and "ETag" not in marker and "Size" not in marker
    older, null = parsed["Versions"]
    assert (older["Key"], older["VersionId"], older["IsLatest"]) == ("a", "v1", False)
    assert older["ETag"] == '"0123456789abcdef0123456789abcdef"' and older["Size"] == 5
    assert older["StorageClass"] == "STANDARD" and older["Owner"]["ID"] == "tenant-a"
    assert (null["Key"], null["VersionId"], null["IsLatest"]) == ("b", "null", True)
    assert parsed["CommonPrefixes"] == [{"Prefix": "d/"}]
    # S3 interleaves markers and versions in key order, newest first: the document keeps the page's order.
    root = SafeET.fromstring(body)
    assert [child.tag.rpartition("}")[2] for child in root if child.tag.endswith(("Version", "DeleteMarker"))] \
        == ["DeleteMarker", "Version", "Version"]


def test_list_versions_next_markers() -> None:
    done = parse("ListObjectVersions", versions_xml(VersionsPage([version("a", "v1")], [], False)))
    assert done["IsTruncated"] is False and "NextKeyMarker" not in done and "NextVersionIdMarker" not in done
    assert done["KeyMarker"] == "" and done["VersionIdMarker"] == "" and "Delimiter" not in done
    # A page that ends on a common prefix resumes after it: a key marker and no version id marker.
    on_prefix = parse("ListObjectVersions", versions_xml(
        VersionsPage([version("a", "v1")], ["p/"], True, next_key_marker="p/"), delimiter="/"))
    assert on_prefix["NextKeyMarker"] == "p/" and "NextVersionIdMarker" not in on_prefix
    empty = parse("ListObjectVersions", versions_xml(VersionsPage([], [], False), prefix="nope/"))
    assert "Versions" not in empty and "DeleteMarkers" not in empty and empty["Prefix"] == "nope/"


def test_list_versions_url_encoding_round_trips() -> None:
    page = VersionsPage(versions=[version(key, "v1") for key in ODD_KEYS] + [version("m k", "v9", marker=True)],
                        common_prefixes=["p q+/"], is_truncated=True, next_key_marker="n k+",
                        next_version_id_marker="v1")
    body = versions_xml(page, prefix="p q", delimiter="+ /", key_marker="k m%", encoding_type="url")
    assert b"<Key>a%20b</Key>" in body and b"<Key>a%2Bb</Key>" in body and b"<Key>%2520</Key>" in body
    assert b"<Key>new%0Aline</Key>" in body and b"<Prefix>p%20q</Prefix>" in body and b"+" not in body
    parsed = parse("ListObjectVersions", body)
    decode_list_object_versions(parsed, context=AUTO)
    assert [entry["Key"] for entry in parsed["Versions"]] == ODD_KEYS
    assert parsed["DeleteMarkers"][0]["Key"] == "m k"
    assert (parsed["Prefix"], parsed["Delimiter"], parsed["KeyMarker"]) == ("p q", "+ /", "k m%")
    assert parsed["NextKeyMarker"] == "n k+" and parsed["NextVersionIdMarker"] == "v1"
    assert parsed["CommonPrefixes"] == [{"Prefix": "p q+/"}] and parsed["EncodingType"] == "url"


def test_url_encoding_of_every_listing_decodes_exactly() -> None:
    """V1, V2 and ListMultipartUploads: %20 for a space, %2B for a plus, decoded back by botocore exactly."""
    assert s3xml.url_encode("quux ab/") == "quux%20ab/" and s3xml.url_encode("asdf+b") == "asdf%2Bb"
    assert s3xml.url_encode("test_file(3).png") == "test_file%283%29.png"  # the example in S3's docs
    objects = [ObjectInfo("b", key, "v", 1, "e", T0) for key in ODD_KEYS]
    v2 = parse("ListObjectsV2", s3xml.list_objects_v2_xml(
        "b", ListPage(objects, ["c d/"], False), prefix="", delimiter="/", max_keys=1000, start_after="s t+",
        continuation_token=None, encoding_type="url", fetch_owner=False, owner_id="o"))
    decode_list_object_v2(v2, context=AUTO)
    assert [entry["Key"] for entry in v2["Contents"]] == ODD_KEYS
    assert v2["StartAfter"] == "s t+" and v2["CommonPrefixes"] == [{"Prefix": "c d/"}]
    v1 = parse("ListObjects", s3xml.list_objects_v1_xml(
        "b", ListPage(objects, [], True), prefix=None, delimiter="\n", marker="m\r+", max_keys=1000,
        encoding_type="url", owner_id="o"))
    decode_list_object(v1, context=AUTO)
    assert [entry["Key"] for entry in v1["Contents"]] == ODD_KEYS
    assert v1["Marker"] == "m\r+" and v1["Delimiter"] == "\n" and v1["NextMarker"] == ODD_KEYS[-1]
    uploads = s3xml.list_uploads_xml("b", UploadsPage([], ["a\x01 /"], False), prefix="a\x01", delimiter="/",
                                     key_marker=None, upload_id_marker=None, max_uploads=10, encoding_type="url")
    assert b"<Prefix>a%01%20/</Prefix>" in uploads and b"<Prefix>a%01</Prefix>" in uploads


def test_names_xml_cannot_carry_need_encoding_type() -> None:
    """Without encoding-type, a C0 control other than tab, LF and CR is refused by name, never sent
    as the malformed ``&#x1;`` S3 writes; with it the same page lists."""
    page = ListPage([ObjectInfo("b", "a\x01b c", "v", 1, "e", T0)], [], False)
    with pytest.raises(S3Error) as caught:
        s3xml.list_objects_v2_xml("b", page, prefix=None, delimiter=None, max_keys=1, start_after=None,
                                  continuation_token=None, encoding_type=None, fetch_owner=False, owner_id="o")
    assert caught.value.code == "InvalidArgument" and caught.value.status == 400
    assert "a%01b%20c" in caught.value.message and "U+0001" in caught.value.message
    assert "encoding-type=url" in caught.value.message
    for call, kwargs in [
        (s3xml.list_objects_v1_xml, {"page": ListPage([], [], False), "prefix": "\x02", "delimiter": None,
                                     "marker": None, "max_keys": 1, "owner_id": "o"}),
        (s3xml.list_versions_xml, {"page": VersionsPage([version("k\x1f", "v")], [], False), "prefix": "",
                                   "delimiter": None, "key_marker": None, "version_id_marker": None,
                                   "max_keys": 1, "owner_id": "o"}),
        (s3xml.list_uploads_xml, {"page": UploadsPage([], ["\x0b/"], False), "prefix": None, "delimiter": "/",
                                  "key_marker": None, "upload_id_marker": None, "max_uploads": 1}),
    ]:
        with pytest.raises(S3Error, match="XML 1.0 cannot carry"):
            call("b", encoding_type=None, **kwargs)
        assert SafeET.fromstring(call("b", encoding_type="url", **kwargs)) is not None


def test_tab_newline_and_carriage_return_survive_unencoded() -> None:
    keys = ["tab\there", "new\nline", "cr\rhere", "crlf\r\n", " lead and trail "]
    body = s3xml.list_objects_v2_xml("b", ListPage([ObjectInfo("b", k, "v", 1, "e", T0) for k in keys], [], False),
                                     prefix=None, delimiter=None, max_keys=9, start_after=None,
                                     continuation_token=None, encoding_type=None, fetch_owner=False, owner_id="o")
    assert b"\r" not in body and b"cr&#13;here" in body  # a raw CR would be read back as LF
    assert [entry["Key"] for entry in parse("ListObjectsV2", body)["Contents"]] == keys


def test_every_document_stays_well_formed() -> None:
    """Text that is not a listed name (an error message, a key echoed by multipart) never breaks the XML."""
    for code in [*range(32), 0xFFFE, 0xFFFF, 0xD800]:
        text = f"k{chr(code)}k"
        for body in (s3xml.error_xml(S3Error("InvalidArgument", f"bad {text}"), "req"),
                     s3xml.initiate_multipart_xml("b", text, "u"),
                     s3xml.complete_multipart_xml("http://h/b/k", "b", text, "e"),
                     s3xml.list_buckets_xml([], "o", "o", prefix=text)):
            assert SafeET.fromstring(body) is not None, (code, body)


def test_list_buckets_pages() -> None:
    buckets = [BucketInfo("alpha", T0, False), BucketInfo("beta", T0, True)]
    parsed = parse("ListBuckets", s3xml.list_buckets_xml(buckets, "o", "o", region="eu-west-1", prefix="a",
                                                         continuation_token="YmV0YQ"))
    assert [b["Name"] for b in parsed["Buckets"]] == ["alpha", "beta"]
    assert [b["BucketRegion"] for b in parsed["Buckets"]] == ["eu-west-1", "eu-west-1"]
    assert parsed["ContinuationToken"] == "YmV0YQ" and parsed["Prefix"] == "a"
    last = parse("ListBuckets", s3xml.list_buckets_xml(buckets, "o", "o"))
    assert "ContinuationToken" not in last and "Prefix" not in last and "BucketRegion" not in last["Buckets"][0]


def test_list_objects_v2_echoes_an_empty_continuation_token() -> None:
    def v2(token: str | None) -> dict[str, Any]:
        return parse("ListObjectsV2", s3xml.list_objects_v2_xml(
            "b", ListPage([], [], False), prefix=None, delimiter=None, max_keys=1, start_after=None,
            continuation_token=token, encoding_type=None, fetch_owner=False, owner_id="o"))

    assert v2("")["ContinuationToken"] == ""
    assert v2("tok")["ContinuationToken"] == "tok"
    assert "ContinuationToken" not in v2(None)
