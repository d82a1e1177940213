"""Numbers clients send are read strictly: ASCII digits, bounded length, S3 errors for the rest.

Python's ``int()`` accepts ``"١٢"`` (Arabic-Indic digits), ``"1_000"`` and
``" 12 "``, and fails with ``ValueError`` past 4300 digits; ``str.isdigit()``
is true for ``"²"``, which ``int()`` refuses. Each parser a request reaches is
fed those forms here and must answer with the S3 error S3 uses, never let a
Python exception through (which the gateway would turn into a 500).
"""
from __future__ import annotations

from typing import Any

import pytest

from dwray.s3 import http as s3http
from dwray.s3 import xml as s3xml
from dwray.s3.auth import AuthResult, SigningIdentity
from dwray.s3.chunked import AwsChunkedDecoder
from dwray.s3.errors import S3Error
from dwray.s3.numbers import MAX_DECIMAL_DIGITS, is_decimal, parse_decimal, parse_hex
from dwray.s3.sigv4 import header_timestamp, is_amz_date, parse_expires
from serve_apps.s3_call import int_param

# Forms int() or isdigit() would let through, and forms too long to be a size.
NOT_ASCII = ["١٢", "１２", "²", "1²", "٣"]
LOOSE = ["1_000", " 12", "12 ", "+12", "-12", "0x10", "1e3", "12.0", "", "\t1"]
HUGE = ["9" * (MAX_DECIMAL_DIGITS + 1), "1" * 5000, "0" * 40 + "1"]


def s3_error(fn: Any) -> S3Error:
    with pytest.raises(S3Error) as caught:
        fn()
    return caught.value


@pytest.mark.parametrize("text", NOT_ASCII + LOOSE + HUGE)
def test_parse_decimal_refuses_everything_but_bounded_ascii_digits(text: str) -> None:
    error = s3_error(lambda: parse_decimal(text, "max-keys"))
    assert error.code == "InvalidArgument" and error.status == 400
    assert "max-keys" in error.message and "ASCII" in error.message
    assert not is_decimal(text)


def test_parse_decimal_reads_ascii_digits_and_checks_bounds() -> None:
    assert parse_decimal("0", "n") == 0
    assert parse_decimal("007", "n") == 7
    assert parse_decimal("9" * MAX_DECIMAL_DIGITS, "n") == int("9" * MAX_DECIMAL_DIGITS)
    assert parse_decimal("10000", "partNumber", low=1, high=10_000) == 10_000
    for value, low, high in (("0", 1, 10_000), ("10001", 1, 10_000), ("4", 5, None)):
        error = s3_error(lambda value=value, low=low, high=high: parse_decimal(value, "partNumber", low=low,
                                                                                high=high))
        assert error.code == "InvalidArgument" and "partNumber" in error.message and value in error.message
    other = s3_error(lambda: parse_decimal("١", "Expires", code="AuthorizationQueryParametersError"))
    assert other.code == "AuthorizationQueryParametersError"


def test_a_refused_value_is_shown_shortened() -> None:
    error = s3_error(lambda: parse_decimal("7" * 5000, "n"))
    assert len(error.message) < 200 and "..." in error.message


@pytest.mark.parametrize("text", ["g", "", " a", "1_0", "٣", "f" * 17, "0x1f"])
def test_parse_hex_refuses_non_hex(text: str) -> None:
    assert s3_error(lambda: parse_hex(text, "chunk size", code="InvalidRequest")).code == "InvalidRequest"


def test_parse_hex_reads_hex() -> None:
    assert parse_hex("ff", "n") == 255 and parse_hex("F" * 16, "n") == (1 << 64) - 1


# -- the parsers requests reach ------------------------------------------------------------


@pytest.mark.parametrize("name, low, high", [("max-keys", 0, None), ("max-parts", 0, 1000),
                                             ("max-uploads", 0, 1000), ("part-number-marker", 0, None),
                                             ("partNumber", 1, 10_000)])
@pytest.mark.parametrize("raw", NOT_ASCII + ["1_000", " 12", "-1"] + HUGE)
def test_query_integers_are_strict(name: str, low: int, high: int | None, raw: str) -> None:
    error = s3_error(lambda: int_param({name: raw}, name, 5, low=low, high=high))
    assert error.code == "InvalidArgument" and name in error.message


def test_query_integers_default_when_absent_or_empty() -> None:
    assert int_param({}, "max-keys", 1000) == 1000
    assert int_param({"max-keys": ""}, "max-keys", 1000) == 1000
    assert int_param({"max-keys": "12"}, "max-keys", 1000) == 12


@pytest.mark.parametrize("header", ["bytes=١-٢", "bytes=0-²", "bytes=²-", "bytes=-１", "bytes=0-5\u00a0"])
def test_range_with_non_ascii_characters_is_invalid_argument(header: str) -> None:
    assert s3_error(lambda: s3http.parse_range(header, 100)).code == "InvalidArgument"


@pytest.mark.parametrize("header", ["bytes=" + "9" * 20 + "-", "bytes=0-" + "9" * 5000, "bytes=-" + "1" * 30])
def test_range_positions_past_19_digits_are_invalid_argument(header: str) -> None:
    error = s3_error(lambda: s3http.parse_range(header, 100))
    assert error.code == "InvalidArgument" and error.status == 400


def test_range_keeps_its_rfc_meaning_for_ascii() -> None:
    assert s3http.parse_range("bytes=0-9", 100) == (0, 9)
    assert s3http.parse_range("bytes= 5 - 9 ", 100) == (5, 9)
    assert s3http.parse_range("bytes=90-" + "9" * 19, 100) == (90, 99)  # an end past the object is clamped
    assert s3http.parse_range("bytes=1_0-20", 100) is None  # not a range: ignored, as RFC 9110 says
    assert s3http.parse_range("bytes=+1-20", 100) is None
    error = s3_error(lambda: s3http.parse_range("bytes=" + "9" * 19 + "-", 100))
    assert (error.code, error.status) == ("InvalidRange", 416)


@pytest.mark.parametrize("value", ["bytes=٠-٩", "bytes=0-²", "bytes=0-" + "9" * 20, "bytes=1_0-20", "bytes=+0-5",
                                   "bytes=0-" + "1" * 5000])
def test_copy_source_range_is_strict(value: str) -> None:
    assert s3_error(lambda: s3http.parse_copy_range(value, 100)).code == "InvalidArgument"


def test_copy_source_range_reads_ascii() -> None:
    assert s3http.parse_copy_range("bytes=0-9", 100) == (0, 9)


@pytest.mark.parametrize("value", ["Mon, 01 Jan 99999999999999 00:00:00 GMT",
                                   "Mon, 01 Jan 2020 99999999999999999999:00:00 GMT",
                                   "Mon, ١٢ Jan 2020 00:00:00 GMT", "Mon, ²2 Jan 2020 00:00:00 GMT"])
def test_http_dates_with_huge_or_foreign_numbers_are_not_dates(value: str) -> None:
    assert s3http.parse_http_date(value) is None
    error = s3_error(lambda: header_timestamp({"date": [value]}))
    assert error.code == "AccessDenied"


def test_http_dates_still_parse() -> None:
    assert s3http.parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT") == 784111777.0


@pytest.mark.parametrize("value, message", [
    ("٦٠", "a number"), ("6_0", "a number"), (" 60", "a number"), ("9" * 5000, "a number"),
    ("-7", "non-negative"), ("0", "expired"), ("604801", "less than a week (in seconds) that is 604800")])
def test_x_amz_expires_out_of_range_is_access_denied(value: str, message: str) -> None:
    """A presigned URL that can never be valid is refused as S3 refuses it: 403 AccessDenied."""
    error = s3_error(lambda: parse_expires(value))
    assert (error.code, error.status) == ("AccessDenied", 403) and message in error.message
    assert parse_expires("1") == 1 and parse_expires("604800") == 604800


def test_amz_dates_need_ascii_digits() -> None:
    assert is_amz_date("20260101T000000Z")
    assert not is_amz_date("٢٠٢٦0101T000000Z")


@pytest.mark.parametrize("length", ["١٠", "10 ", "1_0", "9" * 30, "9" * 5000])
def test_decoded_content_length_is_strict(length: str) -> None:
    auth = AuthResult(SigningIdentity("AKID", "s", "t"), False, "STREAMING-UNSIGNED-PAYLOAD-TRAILER")
    error = s3_error(lambda: AwsChunkedDecoder.for_request(auth, {"x-amz-decoded-content-length": length}))
    assert error.code == "InvalidArgument" and "x-amz-decoded-content-length" in error.message


@pytest.mark.parametrize("size", [b"1_0", b"\xd9\xa1", b"1" * 17, b"+a"])
def test_chunk_sizes_are_strict_hex(size: bytes) -> None:
    decoder = AwsChunkedDecoder(signer=None, trailer_names=[])
    error = s3_error(lambda: decoder.feed(size + b"\r\n" + b"x" * 16 + b"\r\n0\r\n\r\n"))
    assert error.code == "InvalidRequest"


@pytest.mark.parametrize("number", ["²", "١", "1_0", "+1"])
def test_complete_multipart_part_numbers_must_be_ascii_integers(number: str) -> None:
    body = (f"<CompleteMultipartUpload><Part><PartNumber>{number}</PartNumber><ETag>a</ETag></Part>"
            "</CompleteMultipartUpload>").encode()
    assert s3_error(lambda: s3xml.parse_complete_multipart(body)).code == "MalformedXML"
