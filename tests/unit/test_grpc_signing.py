"""The gRPC call signature (dwray.proto.signing) and the gateway's check of it (serve_apps.grpc_auth)."""
from __future__ import annotations

import hashlib
import hmac
from typing import Any

import grpc
import pytest

from dwray.proto import dwray_pb2 as pb
from dwray.proto import signing
from dwray.s3.auth import SigningIdentity
from serve_apps.grpc_auth import GrpcRefusal, GrpcSignatureVerifier

NOW = 1_780_000_000.0
KEY_ID, SECRET = "AKIDGRPCTEST00000001", "s3cr3t/Key+with=chars"
GET = "/dwray.v1.Warehouse/Get"
PUT = "/dwray.v1.Warehouse/Put"


def verifier(**kwargs: Any) -> GrpcSignatureVerifier:
    keys = {KEY_ID: SigningIdentity(KEY_ID, SECRET, "acme", None)}
    return GrpcSignatureVerifier(keys.get, max_skew=900, clock=lambda: NOW, **kwargs)


def metadata(method: str, message: Any, **kwargs: Any) -> dict[str, str]:
    return dict(signing.signed_metadata(method, message, KEY_ID, SECRET, now=NOW, **kwargs))


def test_the_string_to_sign_is_the_documented_eight_lines() -> None:
    request = pb.GetRequest(bucket="logs", key="2026/a b+ü.txt", version_id="v1", range_first=0)
    assert signing.canonical_params(request) == "range_first=0&version_id=v1"
    text = signing.string_to_sign(GET, "20260601T120000Z", "n" * 16, request.bucket, request.key,
                                  signing.canonical_params(request), signing.UNSIGNED_PAYLOAD)
    assert text == ("DWRAY1-HMAC-SHA256\n/dwray.v1.Warehouse/Get\n20260601T120000Z\nnnnnnnnnnnnnnnnn\nlogs\n"
                    "2026%2Fa%20b%2B%C3%BC.txt\nrange_first=0&version_id=v1\nUNSIGNED-PAYLOAD")
    expected = hmac.new(SECRET.encode(), text.encode(), hashlib.sha256).hexdigest()
    assert signing.sign(SECRET, text) == expected


def test_maps_and_unset_fields_in_the_canonical_parameters() -> None:
    header = pb.PutHeader(bucket="b", key="k", content_type="text/plain", metadata={"z": "1", "a b": "x&y"})
    assert signing.canonical_params(header) == "content_type=text%2Fplain&metadata.a%20b=x%26y&metadata.z=1"
    assert signing.canonical_params(pb.ListRequest(bucket="b")) == ""  # defaults are not "set"
    assert signing.canonical_params(pb.ListRequest(bucket="b", max_keys=5)) == "max_keys=5"


def test_a_good_signature_names_the_identity() -> None:
    request = pb.GetRequest(bucket="b", key="k")
    identity, payload = verifier().verify(GET, metadata(GET, request), request)
    assert (identity.tenant, payload) == ("acme", signing.UNSIGNED_PAYLOAD)
    header = pb.PutHeader(bucket="b", key="k")
    digest = hashlib.sha256(b"body").hexdigest()
    _, payload = verifier().verify(PUT, metadata(PUT, header, content_sha256=digest), header,
                                   allow_payload_hash=True)
    assert payload == digest


@pytest.mark.parametrize(("change", "code", "words"), [
    (lambda m, r: m.update({signing.SIGNATURE: "0" * 64}), "UNAUTHENTICATED", "signature does not match"),
    (lambda m, r: r.__setattr__("key", "other"), "UNAUTHENTICATED", "signature does not match"),
    (lambda m, r: r.__setattr__("version_id", "v9"), "UNAUTHENTICATED", "signature does not match"),
    (lambda m, r: m.update({signing.ACCESS_KEY_ID: "AKIDUNKNOWN"}), "UNAUTHENTICATED", "does not exist"),
    (lambda m, r: m.pop(signing.NONCE), "UNAUTHENTICATED", "x-dwray-nonce"),
    (lambda m, r: m.update({signing.NONCE: "short"}), "UNAUTHENTICATED", "16 to 64"),
    (lambda m, r: m.update({signing.DATE: "yesterday"}), "UNAUTHENTICATED", "YYYYMMDDTHHMMSSZ"),
    (lambda m, r: m.update({signing.DATE: signing.format_date(NOW - 901)}), "UNAUTHENTICATED", "900 s"),
    (lambda m, r: m.update({signing.CONTENT_SHA256: "a" * 64}), "INVALID_ARGUMENT", "UNSIGNED-PAYLOAD"),
])
def test_refusals_name_what_was_wrong_and_never_the_secret(change: Any, code: str, words: str) -> None:
    request = pb.GetRequest(bucket="b", key="k")
    sent = metadata(GET, request)
    change(sent, request)
    with pytest.raises(GrpcRefusal) as refused:
        verifier().verify(GET, sent, request)
    assert refused.value.code == getattr(grpc.StatusCode, code) and words in refused.value.details
    assert SECRET not in refused.value.details


def test_a_replayed_nonce_is_refused_and_old_nonces_are_bounded() -> None:
    check = verifier(max_nonces=3)
    request = pb.HeadRequest(bucket="b", key="k")
    sent = metadata("/dwray.v1.Warehouse/Head", request)
    check.verify("/dwray.v1.Warehouse/Head", sent, request)
    with pytest.raises(GrpcRefusal, match="replayed"):
        check.verify("/dwray.v1.Warehouse/Head", sent, request)
    for _ in range(5):
        check.verify("/dwray.v1.Warehouse/Head", metadata("/dwray.v1.Warehouse/Head", request), request)
    assert len(check._nonces) <= 3
