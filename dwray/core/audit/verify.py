"""Verifying the audit log, as a monitor would: every entry, every signed checkpoint, and history.

``verify_log`` re-hashes every record, rebuilds the Merkle tree, and checks
its root at the size of every checkpoint it can find: those in the log, the
copies in the copy folder (which the writer only adds to), and the monitor
state (what the last successful verify saw, kept outside the data dir). Each
checkpoint's Ed25519 signature is checked with the public key of the signing
key; a forged one is a finding of its own. Finally a consistency proof
(RFC 6962 section 2.1.2) shows the tree the monitor saw before is a prefix of
today's, and the monitor state moves forward.

Findings carry the first bad entry's seq where one can be named: a changed,
missing or moved record names itself (its leaf hash or seq no longer fits);
a record changed together with its stored leaf hash is caught by the first
signed root that covers it, so it is named as a range between two signed
checkpoints (``[audit] checkpoint_every`` bounds it); removed entries start
at the log's end; entries no signed checkpoint covers were appended by
someone without the key.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from dwray.core.audit.checkpoints import SignedCheckpoint, canonical_json, read_checkpoint_copies
from dwray.core.audit.merkle import CompactRange, consistency_proof, inclusion_proof, leaf_hash, verify_consistency
from dwray.core.audit.merkle import verify_inclusion as check_inclusion
from dwray.core.audit.reader import AuditReader
from dwray.secrets.key_file import fsync_dir, make_private_dir

__all__ = ["Finding", "VerifyReport", "inclusion_report", "verify_log"]


@dataclass(frozen=True)
class Finding:
    """One thing wrong: ``seq`` is the first bad entry it implicates (None if it names none)."""

    seq: int | None
    problem: str


@dataclass
class VerifyReport:
    ok: bool
    size: int
    root: str | None
    checkpoint_size: int | None
    checkpoints_checked: int
    copies_checked: int
    monitor_previous_size: int | None
    first_bad_seq: int | None = None
    problem: str | None = None
    findings: list[Finding] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Claim:
    """A root the tree must have at ``size``, and where the claim comes from."""

    size: int
    root: bytes
    source: str


def verify_log(reader: AuditReader, public_key: Ed25519PublicKey, *, copy_dir: Path | None = None,
               monitor_state: Path | None = None, update_monitor: bool = True) -> VerifyReport:
    """Check the whole log; on success (and ``update_monitor``) remember its newest checkpoint."""
    findings: list[Finding] = []
    log_id = reader.locations.log_id
    logged: list[SignedCheckpoint] = []
    for size, signed in reader.checkpoints():
        if _valid(signed, public_key, log_id, size):
            logged.append(signed)  # type: ignore[arg-type]
        elif signed is not None and signed.checkpoint.log_id != log_id:
            findings.append(Finding(None, f"the checkpoint at size {size} in the log is for the log "
                                          f"{signed.checkpoint.log_id!r}, not {log_id!r} (if the data dir was "
                                          "moved, set [audit] log_id to its old id)"))
        else:
            findings.append(Finding(None, f"the checkpoint at size {size} in the log is forged or malformed "
                                          "(its signature does not verify with the audit signing key)"))
    copies: list[SignedCheckpoint] = []
    for path, signed in read_checkpoint_copies(copy_dir) if copy_dir is not None else []:
        if _valid(signed, public_key, log_id, None):
            copies.append(signed)  # type: ignore[arg-type]
        else:
            findings.append(Finding(None, f"the checkpoint copy {path} is forged or malformed "
                                          "(its signature does not verify with the audit signing key)"))
    monitor = _read_monitor(monitor_state, log_id, findings)
    claims = [_Claim(s.checkpoint.size, s.checkpoint.root, "the log") for s in logged]
    claims += [_Claim(s.checkpoint.size, s.checkpoint.root, f"copy {copy_dir}") for s in copies]
    if monitor is not None:
        claims.append(_Claim(monitor[0], monitor[1], f"the monitor state {monitor_state}"))
    claims.sort(key=lambda claim: claim.size)

    leaves, roots_ok = _walk(reader, claims, findings)
    size = len(leaves)
    latest_logged = max(logged, key=lambda s: s.checkpoint.size, default=None)
    newest = max(claims, key=lambda claim: claim.size, default=None)
    if roots_ok and newest is not None and newest.size > size:
        findings.append(Finding(size, f"the log ends after {size} entries but {newest.source} holds a signed "
                                      f"tree of {newest.size}: entries {size}..{newest.size - 1} were removed "
                                      "(truncated or rolled back)"))
    covered = latest_logged.checkpoint.size if latest_logged is not None else 0
    if roots_ok and size > covered:
        findings.append(Finding(covered, f"entries {covered}..{size - 1} are covered by no signed checkpoint: "
                                         "they were appended by someone without the signing key"))
    if roots_ok and monitor is not None and latest_logged is not None and monitor[0] <= latest_logged.checkpoint.size:
        proof = consistency_proof(leaves, monitor[0], latest_logged.checkpoint.size)
        if not verify_consistency(monitor[0], latest_logged.checkpoint.size, monitor[1],
                                  latest_logged.checkpoint.root, proof):
            findings.append(Finding(None, f"no consistency proof from the tree of {monitor[0]} verified before "
                                          f"to the newest checkpoint ({latest_logged.checkpoint.size})"))
    first = _first(findings)
    report = VerifyReport(
        ok=not findings, size=size, root=latest_logged.checkpoint.root.hex() if latest_logged else None,
        checkpoint_size=latest_logged.checkpoint.size if latest_logged else None,
        checkpoints_checked=len(logged), copies_checked=len(copies),
        monitor_previous_size=monitor[0] if monitor else None,
        first_bad_seq=first.seq if first else None, problem=first.problem if first else None, findings=findings)
    if report.ok and update_monitor and monitor_state is not None and latest_logged is not None:
        _write_monitor(monitor_state, latest_logged)
    return report


def _valid(signed: SignedCheckpoint | None, public_key: Ed25519PublicKey, log_id: str, size: int | None) -> bool:
    return (signed is not None and signed.checkpoint.log_id == log_id and signed.verify(public_key)
            and (size is None or size == signed.checkpoint.size))


def _walk(reader: AuditReader, claims: list[_Claim], findings: list[Finding]) -> tuple[list[bytes], bool]:
    """Re-hash every entry and check each claimed root on the way; stop at the first bad entry."""
    tree = CompactRange()
    leaves: list[bytes] = []
    pending = list(claims)
    good_size = 0  # the largest size whose root a claim confirmed

    def check_claims() -> bool:
        nonlocal good_size
        here = []
        while pending and pending[0].size == tree.size:
            here.append(pending.pop(0))
        if not here:
            return True
        root = tree.root()
        wrong = [claim for claim in here if claim.root != root]
        if wrong and len(wrong) < len(here):  # the entries fit one signed root but not another
            right = next(claim.source for claim in here if claim not in wrong)
            findings.append(Finding(None, f"signed checkpoints for size {tree.size} disagree: the entries hash to "
                                          f"the root {right} signed but not to the one {wrong[0].source} signed "
                                          "(a split view)"))
            return False
        if wrong:
            findings.append(Finding(good_size, f"entries {good_size}..{tree.size - 1} do not hash to the root "
                                               f"{wrong[0].source} signed for size {tree.size}: one of them "
                                               "was changed"))
            return False
        good_size = tree.size
        return True

    if not check_claims():
        return leaves, False
    for seq, text, stored_leaf in reader.rows():
        expected = tree.size
        problem = _entry_problem(expected, seq, text, stored_leaf)
        if problem is not None:
            findings.append(Finding(expected, problem))
            return leaves, False
        leaf = leaf_hash(text.encode())
        leaves.append(leaf)
        tree.append(leaf)
        if not check_claims():
            return leaves, False
    return leaves, True


def _entry_problem(expected: int, seq: int, text: str, stored_leaf: bytes) -> str | None:
    if seq != expected:
        return f"entry {expected} is missing (the next stored entry is {seq})"
    try:
        record = json.loads(text)
    except ValueError:
        return f"entry {seq} is not valid JSON: it was changed"
    if not isinstance(record, dict) or canonical_json(record) != text:
        return f"entry {seq} is not in canonical form: it was changed"
    if record.get("seq") != seq:
        return f"entry {seq} holds the record of entry {record.get('seq')}: entries were reordered or moved"
    if leaf_hash(text.encode()) != stored_leaf:
        return f"entry {seq} does not match its leaf hash: it was changed"
    return None


def _first(findings: list[Finding]) -> Finding | None:
    with_seq = [finding for finding in findings if finding.seq is not None]
    if with_seq:
        return min(with_seq, key=lambda finding: finding.seq)  # type: ignore[arg-type, return-value]
    return findings[0] if findings else None


def _read_monitor(path: Path | None, log_id: str, findings: list[Finding]) -> tuple[int, bytes] | None:
    if path is None or not path.exists():
        return None
    try:
        state = json.loads(path.read_text())
        if state["log"] != log_id:
            raise ValueError(f"it belongs to log {state['log']!r}")
        return int(state["size"]), bytes.fromhex(state["root"])
    except (OSError, KeyError, TypeError, ValueError) as exc:
        findings.append(Finding(None, f"the monitor state {path} cannot be read: {exc}"))
        return None


def _write_monitor(path: Path, latest: SignedCheckpoint) -> None:
    make_private_dir(path.parent)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(canonical_json({"log": latest.checkpoint.log_id, "size": latest.checkpoint.size,
                                     "root": latest.checkpoint.root.hex(), "time": latest.checkpoint.time}) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)
    fsync_dir(path.parent)


def inclusion_report(reader: AuditReader, public_key: Ed25519PublicKey, seq: int) -> dict[str, Any]:
    """The inclusion proof of entry ``seq`` in the newest validly signed checkpoint, checked here too.

    ``ValueError`` when there is no such entry or no signed checkpoint covers it.
    """
    logged = [s for size, s in reader.checkpoints() if _valid(s, public_key, reader.locations.log_id, size)]
    if not logged:
        raise ValueError("the audit log has no validly signed checkpoint")
    latest = max(logged, key=lambda s: s.checkpoint.size)
    size = latest.checkpoint.size
    if not 0 <= seq < size:
        raise ValueError(f"entry {seq} is not in the newest signed checkpoint (entries 0..{size - 1})")
    entry = reader.entry(seq)
    if entry is None:
        raise ValueError(f"entry {seq} is missing from the log (run 'dw audit verify')")
    text, _stored = entry
    leaf = leaf_hash(text.encode())
    path = inclusion_proof(reader.leaves(size), seq, size)
    return {"seq": seq, "record": json.loads(text), "leaf_hash": leaf.hex(), "tree_size": size,
            "root": latest.checkpoint.root.hex(), "audit_path": [node.hex() for node in path],
            "checkpoint": json.loads(latest.to_json()),
            "verified": check_inclusion(leaf, seq, size, path, latest.checkpoint.root)}
