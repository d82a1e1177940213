"""S3 header logic: ranges, preconditions, dates, overrides, metadata, copy source, request targets."""
from __future__ import annotations

from collections.abc import Mapping

import pytest
from botocore.handlers import _quote_source_header, _quote_source_header_from_dict
from botocore.utils import parse_timestamp

import dwray.s3.http as s3http
from dwray.s3.errors import S3Error
from dwray.s3.http import (
    bucket_and_key,
    check_conditions,
    check_copy_source_conditions,
    http_date,
    iso8601,
    metadata_headers,
    parse_copy_range,
    parse_copy_source,
    parse_http_date,
    parse_range,
    quote_etag,
    response_overrides,
    user_metadata,
    version_id_param,
)

T0 = 1_795_773_600.0  # Fri, 27 Nov 2026 10:00:00 GMT
ETAG = "0123456789abcdef0123456789abcdef"
VERSION = "0123456789abcdef" + "fedcba9876543210"  # the form of dwray's version ids


def s3_error(code: str, call, *args, **kwargs) -> S3Error:  # type: ignore[no-untyped-def]
    with pytest.raises(S3Error) as caught:
        call(*args, **kwargs)
    assert caught.value.code == code, caught.value
    return caught.value


# ---------------------------------------------------------------- dates

def test_http_date_is_imf_fixdate_and_round_trips() -> None:
    assert http_date(T0) == "Fri, 27 Nov 2026 10:00:00 GMT"
    assert http_date(T0 + 0.9) == "Fri, 27 Nov 2026 10:00:00 GMT"
    assert parse_http_date(http_date(T0)) == T0


@pytest.mark.parametrize("value", ["Fri, 27 Nov 2026 10:00:00 GMT", "Friday, 27-Nov-26 10:00:00 GMT",
                                   "Fri Nov 27 10:00:00 2026", "  Fri, 27 Nov 2026 10:00:00 GMT  "])
def test_parse_http_date_accepts_the_three_rfc_forms(value: str) -> None:
    assert parse_http_date(value) == T0


@pytest.mark.parametrize("value", [None, "", "yesterday", "2026-11-27T10:00:00Z", "Fri, 99 Nov 2026 10:00:00 GMT"])
def test_parse_http_date_rejects_garbage(value: str | None) -> None:
    assert parse_http_date(value) is None


def test_iso8601_matches_s3_and_botocore_reads_it() -> None:
    assert iso8601(T0) == "2026-11-27T10:00:00.000Z"
    assert iso8601(T0 + 0.0019) == "2026-11-27T10:00:00.001Z"
    assert iso8601(0) == "1970-01-01T00:00:00.000Z"
    assert parse_timestamp(iso8601(T0 + 0.5)).timestamp() == T0 + 0.5


# ---------------------------------------------------------------- Range

@pytest.mark.parametrize(("header", "expected"), [
    ("bytes=0-0", (0, 0)),
    ("bytes=0-99", (0, 99)),
    ("bytes=10-", (10, 999)),
    ("bytes=-100", (900, 999)),
    ("bytes=-5000", (0, 999)),
    ("bytes=500-5000", (500, 999)),
    ("bytes=999-999", (999, 999)),
    ("Bytes = 1-2", (1, 2)),
])
def test_single_ranges(header: str, expected: tuple[int, int]) -> None:
    assert parse_range(header, 1000) == expected


@pytest.mark.parametrize("header", [None, "bytes=0-1,5-6", "bytes=5-1", "items=0-1", "bytes=", "bytes=-",
                                    "bytes=a-b", "0-10", "bytes=1-2-3", "bytes=--5"])
def test_ignored_ranges_serve_the_whole_object(header: str | None) -> None:
    assert parse_range(header, 1000) is None


@pytest.mark.parametrize(("header", "size"), [("bytes=1000-", 1000), ("bytes=1000-2000", 1000),
                                              ("bytes=-0", 1000), ("bytes=0-", 0), ("bytes=0-10", 0)])
def test_unsatisfiable_ranges_are_416_with_content_range(header: str, size: int) -> None:
    error = s3_error("InvalidRange", parse_range, header, size)
    assert error.status == 416
    assert error.headers == {"Content-Range": f"bytes */{size}"}
    assert header in error.message


def test_suffix_range_of_empty_object_serves_it_whole() -> None:
    assert parse_range("bytes=-10", 0) is None


def test_copy_range() -> None:
    assert parse_copy_range("bytes=0-9", 10) == (0, 9)
    assert parse_copy_range("bytes=3-3", 10) == (3, 3)
    for bad in ("bytes=0-", "bytes=-5", "0-5", "bytes=0-1,2-3", "bytes=a-b"):
        assert "bytes=first-last" in s3_error("InvalidArgument", parse_copy_range, bad, 10).message
    for bad in ("items=0-5", "bytes 0-5", "bytes=0-5 bytes"):
        assert "bytes=first-last" in s3_error("InvalidArgument", parse_copy_range, bad, 10).message
    for outside in ("bytes=0-10", "bytes=10-12", "bytes=5-4"):
        error = s3_error("InvalidRange", parse_copy_range, outside, 10)
        assert error.status == 416 and "size: 10" in error.message and outside in error.message


def test_version_id_param() -> None:
    assert version_id_param({}) is None
    assert version_id_param({"versionId": "null"}) == "null"
    assert version_id_param({"versionId": "0" * 16 + "ab" * 8}) == "0" * 16 + "ab" * 8
    assert "empty" in s3_error("InvalidArgument", version_id_param, {"versionId": ""}).message
    for bad in ("NULL", "abc", "0" * 33, "../etc", "0" * 31 + "G"):
        assert s3_error("InvalidArgument", version_id_param, {"versionId": bad}).message \
            == "Invalid version id specified"
    assert s3_error("InvalidArgument", parse_copy_source, "b/k?versionId=nope").message \
        == "Invalid version id specified"
    assert parse_copy_source("b/k?versionId=null") == ("b", "k", "null")


# ---------------------------------------------------------------- preconditions

def cond(headers: Mapping[str, str], *, etag: str = ETAG, modified: float = T0, method: str = "GET") -> int | None:
    return check_conditions(headers, etag, modified, method=method)


def test_no_conditions_proceed() -> None:
    assert cond({}) is None


@pytest.mark.parametrize("value", [f'"{ETAG}"', ETAG, "*", f'"other", "{ETAG}"', f'"x",{ETAG}'])
def test_if_match_passes(value: str) -> None:
    assert cond({"If-Match": value}) is None


@pytest.mark.parametrize("value", ['"other"', f'W/"{ETAG}"', '""', f'"{ETAG}x"'])
def test_if_match_fails_with_412(value: str) -> None:
    error = s3_error("PreconditionFailed", cond, {"If-Match": value})
    assert error.status == 412


def test_multipart_etag_compares() -> None:
    assert cond({"If-Match": '"abc-3"'}, etag="abc-3") is None
    assert cond({"If-None-Match": '"abc-3"'}, etag="abc-3") == 304


def test_if_unmodified_since() -> None:
    assert cond({"If-Unmodified-Since": http_date(T0)}, modified=T0 + 0.7) is None  # same second
    assert cond({"If-Unmodified-Since": http_date(T0 + 60)}) is None
    s3_error("PreconditionFailed", cond, {"If-Unmodified-Since": http_date(T0 - 1)})
    assert cond({"If-Unmodified-Since": "not a date"}) is None


def test_if_match_true_overrides_failing_unmodified_since() -> None:
    # S3: If-Match true and If-Unmodified-Since false -> 200.
    assert cond({"If-Match": f'"{ETAG}"', "If-Unmodified-Since": http_date(T0 - 100)}) is None


@pytest.mark.parametrize("value", [f'"{ETAG}"', ETAG, f'W/"{ETAG}"', "*", f'"a", "{ETAG}"'])
def test_if_none_match_matching_is_304(value: str) -> None:
    assert cond({"If-None-Match": value}) == 304
    assert cond({"If-None-Match": value}, method="HEAD") == 304


def test_if_none_match_on_other_methods_is_412() -> None:
    s3_error("PreconditionFailed", cond, {"If-None-Match": "*"}, method="PUT")


def test_if_none_match_not_matching_proceeds() -> None:
    assert cond({"If-None-Match": '"other"'}) is None


def test_if_modified_since() -> None:
    assert cond({"If-Modified-Since": http_date(T0)}, modified=T0 + 0.5) == 304
    assert cond({"If-Modified-Since": http_date(T0 + 10)}) == 304
    assert cond({"If-Modified-Since": http_date(T0 - 1)}) is None
    assert cond({"If-Modified-Since": "garbage"}) is None


def test_if_none_match_false_and_modified_since_true_is_304() -> None:
    # S3's documented pair: If-None-Match false (the ETag matches) wins -> 304.
    assert cond({"If-None-Match": f'"{ETAG}"', "If-Modified-Since": http_date(T0 - 100)}) == 304


def test_if_none_match_true_ignores_modified_since() -> None:
    assert cond({"If-None-Match": '"other"', "If-Modified-Since": http_date(T0 + 100)}) is None


def test_412_comes_before_304() -> None:
    s3_error("PreconditionFailed", cond, {"If-Match": '"other"', "If-None-Match": f'"{ETAG}"'})


def test_lowercase_header_names_are_found() -> None:
    assert cond({"if-none-match": f'"{ETAG}"'}) == 304


def test_copy_source_conditions() -> None:
    check_copy_source_conditions({}, ETAG, T0)
    check_copy_source_conditions({"x-amz-copy-source-if-match": f'"{ETAG}"',
                                  "x-amz-copy-source-if-unmodified-since": http_date(T0 - 100)}, ETAG, T0)
    check_copy_source_conditions({"x-amz-copy-source-if-none-match": '"other"'}, ETAG, T0)
    check_copy_source_conditions({"x-amz-copy-source-if-modified-since": http_date(T0 - 1)}, ETAG, T0)
    for headers in ({"x-amz-copy-source-if-match": '"other"'},
                    {"x-amz-copy-source-if-unmodified-since": http_date(T0 - 1)},
                    {"x-amz-copy-source-if-none-match": f'"{ETAG}"'},
                    {"x-amz-copy-source-if-modified-since": http_date(T0)},
                    {"x-amz-copy-source-if-none-match": f'"{ETAG}"',
                     "x-amz-copy-source-if-modified-since": http_date(T0 - 100)}):
        assert s3_error("PreconditionFailed", check_copy_source_conditions, headers, ETAG, T0).status == 412


def test_copy_source_conditions_ignore_plain_headers() -> None:
    check_copy_source_conditions({"If-Match": '"other"'}, ETAG, T0)


def test_quote_etag() -> None:
    assert quote_etag("abc") == '"abc"'
    assert quote_etag('"abc"') == '"abc"'


# ---------------------------------------------------------------- response overrides

def test_response_overrides() -> None:
    query = {"response-content-type": "text/csv", "response-content-disposition": 'attachment; filename="a.csv"',
             "response-cache-control": "no-cache", "response-expires": http_date(T0),
             "response-content-language": "fr", "response-content-encoding": "gzip", "other": "x"}
    assert response_overrides(query) == {
        "Content-Type": "text/csv", "Content-Disposition": 'attachment; filename="a.csv"',
        "Cache-Control": "no-cache", "Expires": http_date(T0), "Content-Language": "fr",
        "Content-Encoding": "gzip"}
    assert response_overrides({}) == {}


@pytest.mark.parametrize("value", ["text/plain\r\nSet-Cookie: a=b", "a\nb", "a\rb", "a\x00b"])
def test_response_override_header_injection_is_refused(value: str) -> None:
    error = s3_error("InvalidArgument", response_overrides, {"response-content-type": value})
    assert "response-content-type" in error.message


# ---------------------------------------------------------------- user metadata

def test_user_metadata() -> None:
    headers = [("X-Amz-Meta-Color", "blue"), ("x-amz-meta-SIZE", "10"), ("Content-Type", "text/plain"),
               ("x-amz-meta-color", "green"), ("x-amz-metadata-directive", "REPLACE"), ("x-amz-meta-uni", "é日")]
    assert user_metadata(headers, 2048) == {"color": "blue,green", "size": "10", "uni": "é日"}


def test_user_metadata_limit_counts_utf8_bytes_of_names_and_values() -> None:
    exact = [("x-amz-meta-ab", "é" * 4)]  # 2 + 8 bytes
    assert user_metadata(exact, 10) == {"ab": "éééé"}
    error = s3_error("MetadataTooLarge", user_metadata, exact, 9)
    assert "10 bytes" in error.message and "9" in error.message
    assert error.status == 400


def test_user_metadata_empty_name() -> None:
    s3_error("InvalidArgument", user_metadata, [("x-amz-meta-", "v")], 2048)


def test_metadata_headers_round_trip() -> None:
    metadata = {"color": "blue", "uni": "é"}
    assert metadata_headers(metadata) == [("x-amz-meta-color", "blue"), ("x-amz-meta-uni", "é")]
    assert user_metadata(metadata_headers(metadata), 2048) == metadata


# ---------------------------------------------------------------- x-amz-copy-source

@pytest.mark.parametrize(("source", "expected"), [
    ({"Bucket": "src", "Key": "a/b c+d?.txt"}, ("src", "a/b c+d?.txt", None)),
    ({"Bucket": "src", "Key": "é/日本", "VersionId": VERSION}, ("src", "é/日本", VERSION)),
    ({"Bucket": "src", "Key": "100%"}, ("src", "100%", None)),
])
def test_copy_source_from_botocore_encoding(source: dict[str, str], expected: tuple[str, str, str | None]) -> None:
    assert parse_copy_source(_quote_source_header_from_dict(source)) == expected


def test_copy_source_forms() -> None:
    assert parse_copy_source("/src/dir/key") == ("src", "dir/key", None)
    assert parse_copy_source(f"src/key?versionId={VERSION}") == ("src", "key", VERSION)
    assert parse_copy_source("src/a%2Fb") == ("src", "a/b", None)
    assert parse_copy_source(_quote_source_header("src/k k?versionId=null")) == ("src", "k k", "null")


@pytest.mark.parametrize("value", ["", "/", "src", "src/", "/src/", "/key-without-bucket", "src/k?versionId=",
                                   "src/k?acl", "src/%ff", "src/a%00b",
                                   "arn:aws:s3:us-east-1:123:accesspoint/ap/object/k"])
def test_bad_copy_source_is_invalid_argument(value: str) -> None:
    assert "x-amz-copy-source" in s3_error("InvalidArgument", parse_copy_source, value).message


# ---------------------------------------------------------------- bucket and key

@pytest.mark.parametrize(("path", "expected"), [
    ("/", (None, "")),
    ("/bkt", ("bkt", "")),
    ("/bkt/", ("bkt", "")),
    ("/bkt/a/b/c.txt", ("bkt", "a/b/c.txt")),
    ("/bkt/a%2Fb", ("bkt", "a/b")),
    ("/bkt/a%20b+c", ("bkt", "a b+c")),
    ("/bkt/%C3%A9%E6%97%A5", ("bkt", "é日")),
    ("/bkt/é日", ("bkt", "é日")),
    ("/bkt//lead", ("bkt", "/lead")),
    ("/bkt/../x", ("bkt", "../x")),
    ("/bkt/100%25", ("bkt", "100%")),
])
def test_path_style(path: str, expected: tuple[str | None, str]) -> None:
    assert bucket_and_key("127.0.0.1:8000", path, None) == expected
    assert bucket_and_key("s3.local:8000", path, "s3.local") == expected
    assert bucket_and_key(None, path.encode(), "s3.local") == expected


def test_raw_path_bytes_with_utf8() -> None:
    assert bucket_and_key(None, "/bkt/é".encode(), None) == ("bkt", "é")


@pytest.mark.parametrize(("host", "path", "expected"), [
    ("bkt.s3.local", "/a/b", ("bkt", "a/b")),
    ("bkt.s3.local:8000", "/a%2Fb%20c", ("bkt", "a/b c")),
    ("BKT.S3.Local", "/", ("bkt", "")),
    ("my.dotted.bkt.s3.local", "/k", ("my.dotted.bkt", "k")),
    ("bkt.s3.local", "/bkt/k", ("bkt", "bkt/k")),
])
def test_virtual_hosted_style(host: str, path: str, expected: tuple[str | None, str]) -> None:
    assert bucket_and_key(host, path, "s3.local") == expected


def test_hosts_outside_the_domain_are_path_style() -> None:
    assert bucket_and_key("bkt.other.local", "/b/k", "s3.local") == ("b", "k")
    assert bucket_and_key("evils3.local", "/b/k", "s3.local") == ("b", "k")
    assert bucket_and_key("[::1]:8000", "/b/k", "s3.local") == ("b", "k")


@pytest.mark.parametrize("path", ["/bkt/a%00b", "/bkt/%ff", "no-slash", "//key", "/b%00/k"])
def test_bad_paths_are_invalid_uri(path: str) -> None:
    s3_error("InvalidURI", bucket_and_key, None, path, None)


def test_virtual_hosted_nul_is_invalid_uri() -> None:
    s3_error("InvalidURI", bucket_and_key, "bkt.s3.local", "/a%00", "s3.local")


def test_all_is_honest() -> None:
    public = {name for name, value in vars(s3http).items() if not name.startswith("_") and callable(value)
              and getattr(value, "__module__", None) == s3http.__name__}
    assert public == set(s3http.__all__)
