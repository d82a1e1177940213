"""Headers whose promise dwray cannot keep are refused by name (501), never silently ignored."""
from __future__ import annotations

import pytest

from dwray.s3.errors import S3Error
from dwray.s3.request_headers import refuse_unhonoured_headers


@pytest.mark.parametrize("headers, operation, code, named", [
    ({"x-amz-server-side-encryption-customer-algorithm": "AES256"}, "PutObject", "NotImplemented", "SSE-C"),
    ({"x-amz-server-side-encryption-customer-key": "k" * 44}, "GetObject", "NotImplemented", "SSE-C"),
    ({"x-amz-copy-source-server-side-encryption-customer-key-md5": "x"}, "CopyObject", "NotImplemented", "SSE-C"),
    ({"x-amz-server-side-encryption": "aws:kms"}, "PutObject", "NotImplemented", "aws:kms"),
    ({"x-amz-server-side-encryption": "rot13"}, "CreateMultipartUpload", "NotImplemented", "rot13"),
    ({"x-amz-server-side-encryption-aws-kms-key-id": "arn:k"}, "PutObject", "NotImplemented", "kms-key-id"),
    ({"x-amz-object-lock-mode": "COMPLIANCE"}, "PutObject", "NotImplemented", "object-lock-mode"),
    ({"x-amz-object-lock-legal-hold": "ON"}, "CopyObject", "NotImplemented", "legal-hold"),
    ({"if-match": '"abc"'}, "DeleteObject", "NotImplemented", "conditional deletes"),
    ({"x-amz-if-match-size": "3"}, "DeleteObject", "NotImplemented", "conditional deletes"),
    ({"x-amz-expected-bucket-owner": "someone-else"}, "GetObject", "AccessDenied", "owner"),
    ({"x-amz-source-expected-bucket-owner": "x"}, "CopyObject", "AccessDenied", "owner"),
])
def test_unhonoured_headers_are_refused_naming_them(headers: dict[str, str], operation: str, code: str,
                                                    named: str) -> None:
    with pytest.raises(S3Error) as refused:
        refuse_unhonoured_headers(headers, operation, "acme")
    assert refused.value.code == code and named in refused.value.message


def test_what_dwray_does_anyway_passes() -> None:
    refuse_unhonoured_headers({"x-amz-server-side-encryption": "AES256", "x-amz-expected-bucket-owner": "acme",
                               "x-amz-source-expected-bucket-owner": "acme", "if-match": '"e"'}, "PutObject", "acme")
    refuse_unhonoured_headers({"if-match": '"e"'}, "GetObject", "acme")
