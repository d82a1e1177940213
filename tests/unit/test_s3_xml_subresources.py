"""Subresource XML and headers: versioning, ACL and tagging documents parse strictly, render as botocore
reads them, and what dwray cannot represent is refused by name."""
from __future__ import annotations

from typing import Any

import pytest

import dwray.s3.tagging as tagging
import dwray.s3.xml_subresources as subxml
from dwray.errors import InvalidTag
from dwray.s3.errors import S3Error
from serve_apps.s3_subresources import refuse_unsupported_acl
from tests.helpers import BILLION_LAUGHS_DTD
from tests.unit.test_s3_xml import NS, botocore_parse

XSI = f'xmlns:xsi="{subxml.XSI_NS}"'


def s3_error(call: Any, *args: Any, **kwargs: Any) -> S3Error:
    with pytest.raises(S3Error) as caught:
        call(*args, **kwargs)
    return caught.value


def test_versioning_configuration() -> None:
    for ns in (NS, ""):
        for status in ("Enabled", "Suspended"):
            body = f"<VersioningConfiguration {ns}><Status>{status}</Status></VersioningConfiguration>".encode()
            assert subxml.parse_versioning(body) == status
    disabled_mfa = b"<VersioningConfiguration><Status>Enabled</Status><MfaDelete>Disabled</MfaDelete>" \
                   b"</VersioningConfiguration>"
    assert subxml.parse_versioning(disabled_mfa) == "Enabled"
    mfa = s3_error(subxml.parse_versioning, disabled_mfa.replace(b"Disabled", b"Enabled"))
    assert (mfa.code, mfa.status) == ("NotImplemented", 501) and "MFA delete" in mfa.message
    for bad in (b"<Status>enabled</Status>", b"<Status>Off</Status>", b"", b"<MfaDelete>Maybe</MfaDelete>"):
        error = s3_error(subxml.parse_versioning, b"<VersioningConfiguration>" + bad + b"</VersioningConfiguration>")
        assert (error.code, error.status) == ("IllegalVersioningConfigurationException", 400), error
    for malformed in (b"", b"<VersioningConfiguration>", b"<Versioning><Status>Enabled</Status></Versioning>",
                      BILLION_LAUGHS_DTD):
        assert s3_error(subxml.parse_versioning, malformed).code == "MalformedXML"

    assert botocore_parse("GetBucketVersioning", subxml.versioning_xml("Enabled"))["Status"] == "Enabled"
    assert botocore_parse("GetBucketVersioning", subxml.versioning_xml("Suspended"))["Status"] == "Suspended"
    assert "Status" not in botocore_parse("GetBucketVersioning", subxml.versioning_xml(None))


def test_tagging_documents() -> None:
    body = (f"<Tagging {NS}><TagSet><Tag><Key>a b</Key><Value>1+2=3</Value></Tag>"
            f"<Tag><Key>é</Key><Value></Value></Tag></TagSet></Tagging>").encode()
    assert subxml.parse_tagging(body) == {"a b": "1+2=3", "é": ""}
    assert subxml.parse_tagging(b"<Tagging><TagSet/></Tagging>") == {}
    with pytest.raises(InvalidTag, match="more than once"):
        subxml.parse_tagging(b"<Tagging><TagSet><Tag><Key>k</Key><Value>1</Value></Tag>"
                             b"<Tag><Key>k</Key><Value>2</Value></Tag></TagSet></Tagging>")
    for bad in (b"<Tagging/>", b"<Tagging><TagSet><Tag><Key>k</Key></Tag></TagSet></Tagging>",
                b"<TagSet><Tag><Key>k</Key><Value>v</Value></Tag></TagSet>", b"not xml"):
        assert s3_error(subxml.parse_tagging, bad).code == "MalformedXML"

    tags = {"a b": "<1>", "é": "", "k": "v"}
    assert botocore_parse("GetObjectTagging", subxml.tagging_xml(tags))["TagSet"] == [
        {"Key": key, "Value": value} for key, value in tags.items()]
    assert botocore_parse("GetObjectTagging", subxml.tagging_xml({}))["TagSet"] == []


def test_tagging_header() -> None:
    assert tagging.parse_tagging_header("") == {}
    assert tagging.parse_tagging_header("k1=v1&k2=v%202&k3=a+b&empty=&bare") == {
        "k1": "v1", "k2": "v 2", "k3": "a b", "empty": "", "bare": ""}
    assert tagging.parse_tagging_header("caf%C3%A9=%2B%3D%40") == {"café": "+=@"}
    assert tagging.parse_tagging_header("café=1".encode().decode("latin-1")) == {"café": "1"}  # raw UTF-8 bytes
    for header, problem in (("k=1&k=2", "more than once"), ("k=a%26b", "character '&'"), ("=v", "1 to 128"),
                            ("&".join(f"k{n}=v" for n in range(11)), "at most 10")):
        with pytest.raises(InvalidTag, match=problem):
            tagging.parse_tagging_header(header)
    with pytest.raises(InvalidTag, match="UTF-8"):
        tagging.parse_tagging_header("k=%FF")
    with pytest.raises(InvalidTag, match="over 50"):
        tagging.parse_tagging_header("&".join(f"k{n}=v" for n in range(tagging.MAX_TAGGING_HEADER_PAIRS + 5)))


def test_acl_document_is_the_owners_full_control() -> None:
    parsed = botocore_parse("GetBucketAcl", subxml.acl_xml("acme"))
    assert parsed["Owner"] == {"ID": "acme", "DisplayName": "acme"}
    assert parsed["Grants"] == [{"Grantee": {"ID": "acme", "DisplayName": "acme", "Type": "CanonicalUser"},
                                 "Permission": "FULL_CONTROL"}]
    assert botocore_parse("GetObjectAcl", subxml.acl_xml("acme"))["Grants"] == parsed["Grants"]


def acl(*grants: str, owner: str = "<Owner><ID>acme</ID></Owner>") -> bytes:
    return f"<AccessControlPolicy {NS} {XSI}>{owner}<AccessControlList>{''.join(grants)}" \
           f"</AccessControlList></AccessControlPolicy>".encode()


def grant(permission: str = "FULL_CONTROL", grantee: str = "<ID>acme</ID>", kind: str = "CanonicalUser") -> str:
    type_attribute = f' xsi:type="{kind}"' if kind else ""
    return f"<Grant><Grantee{type_attribute}>{grantee}</Grantee><Permission>{permission}</Permission></Grant>"


def test_only_the_private_acl_body_is_accepted() -> None:
    subxml.check_private_acl(acl(grant()), "acme")
    subxml.check_private_acl(acl(grant(kind=""), owner=""), "acme")  # no xsi:type, no Owner
    subxml.check_private_acl(subxml.acl_xml("acme"), "acme")  # what GetBucketAcl answered, sent back
    refused = {
        "READ to CanonicalUser 'acme'": acl(grant(), grant("READ")),
        "FULL_CONTROL to CanonicalUser 'other'": acl(grant(grantee="<ID>other</ID>")),
        "READ to Group 'http://acs.amazonaws.com/groups/global/AllUsers'": acl(grant(
            "READ", "<URI>http://acs.amazonaws.com/groups/global/AllUsers</URI>", "Group")),
        "AmazonCustomerByEmail 'a@b.c'": acl(grant(grantee="<EmailAddress>a@b.c</EmailAddress>", kind="")),
        "Owner ID must be 'acme'": acl(grant(), owner="<Owner><ID>mallory</ID></Owner>"),
        "without the owner's FULL_CONTROL": acl(),
    }
    for named, body in refused.items():
        error = s3_error(subxml.check_private_acl, body, "acme")
        assert (error.code, error.status) == ("NotImplemented", 501) and named in error.message, error
    for body in (acl(grant("EVERYTHING")), acl(grant(grantee="")), acl(grant(kind="Robot")),
                 acl("<Grant><Permission>READ</Permission></Grant>"),
                 f"<AccessControlPolicy {NS}><Owner><ID>acme</ID></Owner></AccessControlPolicy>".encode()):
        assert s3_error(subxml.check_private_acl, body, "acme").code == "MalformedACLError", body
    assert s3_error(subxml.check_private_acl, b"<AccessControlPolicy>", "acme").code == "MalformedXML"


def test_acl_headers_on_writes() -> None:
    refuse_unsupported_acl({})
    refuse_unsupported_acl({"x-amz-acl": "private", "content-type": "text/plain"})
    error = s3_error(refuse_unsupported_acl, {"x-amz-acl": "public-read"})
    assert (error.code, error.status) == ("NotImplemented", 501) and "'public-read' (x-amz-acl)" in error.message
    error = s3_error(refuse_unsupported_acl, {"x-amz-grant-read": "uri=x", "x-amz-grant-write-acp": "id=y"})
    assert error.code == "NotImplemented" and "x-amz-grant-read, x-amz-grant-write-acp" in error.message
    error = s3_error(refuse_unsupported_acl, {"x-amz-acl": "everyone-please"})
    assert (error.code, error.status) == ("InvalidArgument", 400) and "everyone-please" in error.message


@pytest.mark.parametrize("module", [subxml, tagging])
def test_all_is_honest(module: Any) -> None:
    public = {name for name in vars(module) if not name.startswith("_")
              and getattr(getattr(module, name), "__module__", None) == module.__name__}
    assert public <= set(module.__all__)
