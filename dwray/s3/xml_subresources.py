"""S3's XML for the subresources of buckets and objects: versioning configuration, ACLs and tag sets.

Parsing goes through the hardened parser of :mod:`dwray.s3.xml` (defusedxml,
no DTDs or entities, size and depth caps), and rendering through its building
blocks, so every S3 document is parsed and written one way. What S3 allows but dwray cannot
represent is refused with ``NotImplemented`` naming it, never silently dropped:
MFA delete, and any ACL grant other than the owner's ``FULL_CONTROL`` (dwray's
access control is the tenant boundary plus access-key policies, so the only ACL
that tells the truth is S3's canned ``private``).
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping

from dwray.core.tags import validate_tags
from dwray.s3.errors import S3Error
from dwray.s3.xml import MAX_XML_BYTES, _add, _bytes, _children, _local, _one, _owner, _parse, _root, _text

__all__ = ["VERSIONING_STATUSES", "XSI_NS", "acl_xml", "check_private_acl", "parse_tagging",
           "parse_versioning", "tagging_xml", "versioning_xml"]

VERSIONING_STATUSES = ("Enabled", "Suspended")
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
_XSI_TYPE = f"{{{XSI_NS}}}type"
_ILLEGAL_VERSIONING = "The Versioning element must be specified"
_MALFORMED_ACL = "The XML you provided was not well-formed or did not validate against our published schema"
_PERMISSIONS = ("FULL_CONTROL", "WRITE", "WRITE_ACP", "READ", "READ_ACP")
_GRANTEE_TYPES = {"CanonicalUser": "ID", "Group": "URI", "AmazonCustomerByEmail": "EmailAddress"}
# Grantees carry xsi:type; the prefix S3 writes, instead of ElementTree's generated "ns0".
ET.register_namespace("xsi", XSI_NS)


# ---------------------------------------------------------------- versioning

def parse_versioning(body: bytes, *, max_bytes: int = MAX_XML_BYTES) -> str:
    """The Status ("Enabled" or "Suspended") a PutBucketVersioning body asks for.

    No Status, or another value, is ``IllegalVersioningConfigurationException``
    as in S3; ``MfaDelete`` Enabled is ``NotImplemented`` (dwray has no MFA
    devices); ``MfaDelete`` Disabled is the state every bucket is in, so it is accepted.
    """
    root = _parse(body, "VersioningConfiguration", max_bytes)
    mfa = _text(_one(root, "MfaDelete", required=False)).strip()
    if mfa == "Enabled":
        raise S3Error("NotImplemented", "MFA delete (MfaDelete Enabled) is not supported by dwray")
    if mfa not in ("", "Disabled"):
        raise S3Error("IllegalVersioningConfigurationException",
                      f"The versioning configuration specified in the request is invalid: MfaDelete must be "
                      f"Enabled or Disabled, not {mfa[:40]!r}")
    status_element = _one(root, "Status", required=False)
    if status_element is None:
        raise S3Error("IllegalVersioningConfigurationException",
                      "The versioning configuration specified in the request is invalid: it has no Status "
                      "(Enabled or Suspended)")
    status = _text(status_element).strip()
    if status not in VERSIONING_STATUSES:
        raise S3Error("IllegalVersioningConfigurationException",
                      f"The versioning configuration specified in the request is invalid: Status must be "
                      f"Enabled or Suspended, not {status[:40]!r}")
    return status


def versioning_xml(status: str | None) -> bytes:
    """VersioningConfiguration: no Status if versioning was never set on the bucket, else the status."""
    root = _root("VersioningConfiguration")
    if status is not None:
        _add(root, "Status", status)
    return _bytes(root)


# ---------------------------------------------------------------- tagging

def parse_tagging(body: bytes, *, max_bytes: int = MAX_XML_BYTES) -> dict[str, str]:
    """The tags of a PutObjectTagging body (``Tagging/TagSet/Tag/{Key,Value}``), in order.

    The pairs, repeats included, go through the core's tag rules
    (:func:`dwray.core.tags.validate_tags`): a tag set breaking them is
    :class:`~dwray.errors.InvalidTag`.
    """
    root = _parse(body, "Tagging", max_bytes)
    tag_set = _one(root, "TagSet", required=True)
    assert tag_set is not None
    return validate_tags([(_text(_one(tag, "Key", required=True)), _text(_one(tag, "Value", required=True)))
                          for tag in _children(tag_set, "Tag")])


def tagging_xml(tags: Mapping[str, str]) -> bytes:
    """Tagging: GetObjectTagging's answer (an empty TagSet for an object without tags)."""
    root = _root("Tagging")
    tag_set = _add(root, "TagSet")
    for key, value in tags.items():
        tag = _add(tag_set, "Tag")
        _add(tag, "Key", key)
        _add(tag, "Value", value)
    return _bytes(root)


# ---------------------------------------------------------------- ACLs

def acl_xml(owner: str) -> bytes:
    """AccessControlPolicy of a bucket or object in dwray: its owner (the tenant) holds FULL_CONTROL,
    and nobody else holds anything (S3's canned ``private``)."""
    root = _root("AccessControlPolicy")
    _owner(root, "Owner", owner)
    grant = _add(_add(root, "AccessControlList"), "Grant")
    grantee = ET.SubElement(grant, "Grantee", {_XSI_TYPE: "CanonicalUser"})
    _add(grantee, "ID", owner)
    _add(grantee, "DisplayName", owner)
    _add(grant, "Permission", "FULL_CONTROL")
    return _bytes(root)


def check_private_acl(body: bytes, owner: str, *, max_bytes: int = MAX_XML_BYTES) -> None:
    """Accept an AccessControlPolicy body only if it is the canned ``private`` ACL of ``owner``.

    That is: the Owner (if given) is ``owner``, and every Grant gives the
    CanonicalUser ``owner`` FULL_CONTROL (at least one does). A document that
    does not follow S3's schema is ``MalformedACLError``; any other owner,
    grantee or permission is ``NotImplemented``, naming it.
    """
    root = _parse(body, "AccessControlPolicy", max_bytes)
    owner_element = _acl_one(root, "Owner", required=False)
    if owner_element is not None:
        owner_id = _text(_acl_one(owner_element, "ID", required=True)).strip()
        if owner_id != owner:
            raise S3Error("NotImplemented", f"dwray does not change owners: the Owner ID must be {owner!r}, "
                                            f"not {owner_id[:64]!r}")
    acl = _acl_one(root, "AccessControlList", required=True)
    assert acl is not None
    grants = _children(acl, "Grant")
    if not grants:
        raise S3Error("NotImplemented", "an ACL without the owner's FULL_CONTROL grant is not supported by dwray: "
                                        "only the canned private ACL is")
    for grant in grants:
        kind, identity = _grantee(grant)
        permission = _text(_acl_one(grant, "Permission", required=True)).strip()
        if permission not in _PERMISSIONS:
            raise S3Error("MalformedACLError", f"{_MALFORMED_ACL} (Permission {permission[:32]!r} is not one of "
                                               f"{', '.join(_PERMISSIONS)})")
        if kind != "CanonicalUser" or identity != owner or permission != "FULL_CONTROL":
            raise S3Error("NotImplemented", f"ACL grants are not supported by dwray (only the canned private ACL "
                                            f"is): the grant of {permission} to {kind} {identity[:128]!r}")


def _acl_one(element: ET.Element, name: str, *, required: bool) -> ET.Element | None:
    found = _children(element, name)
    if len(found) > 1 or (required and not found):
        what = "more than one" if found else "no"
        raise S3Error("MalformedACLError", f"{_MALFORMED_ACL} ({what} {name} in {_local(element.tag)})")
    return found[0] if found else None


def _grantee(grant: ET.Element) -> tuple[str, str]:
    """(grantee type, its ID, URI or email address) of one Grant."""
    grantee = _acl_one(grant, "Grantee", required=True)
    assert grantee is not None
    kind = grantee.get(_XSI_TYPE, "")
    if not kind:  # some clients leave xsi:type out; the identifying element says which kind it is
        kind = next((name for name, field in _GRANTEE_TYPES.items() if _children(grantee, field)), "")
    if kind not in _GRANTEE_TYPES:
        raise S3Error("MalformedACLError", f"{_MALFORMED_ACL} (a Grantee must be a CanonicalUser, a Group or "
                                           f"an AmazonCustomerByEmail)")
    return kind, _text(_acl_one(grantee, _GRANTEE_TYPES[kind], required=True)).strip()
