"""The audit log on real SQLite files: appends, group commit, and every kind of tampering detected.

Each tamper test edits the log's files as an attacker with write access to
the data dir would (but without the signing key, which lives elsewhere), and
checks that verification fails naming the first bad entry.
"""
from __future__ import annotations

import json
import shutil
import sqlite3
import stat
import threading
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dwray.core.audit import AuditLocations, AuditLog
from dwray.core.audit.checkpoints import Checkpoint, CheckpointSigner, SignedCheckpoint, write_checkpoint_copy
from dwray.core.audit.merkle import leaf_hash, verify_inclusion
from dwray.core.audit.reader import AuditReader
from dwray.core.audit.verify import VerifyReport, inclusion_report, verify_log
from dwray.errors import CatalogError

N = 12


@pytest.fixture
def locations(tmp_path: Path) -> AuditLocations:
    outside = tmp_path / "config"
    return AuditLocations("0123456789abcdef", tmp_path / "data" / "audit", outside / "audit-signing.key",
                          outside / "copies", outside / "monitor" / "state.json")


def _fill(locations: AuditLocations, count: int = N, **options: int) -> None:
    options = {"checkpoint_every": 1, "copy_every": 1, **options}
    log = AuditLog(locations, **options)
    try:
        for i in range(count):
            assert log.append({"action": "s3:PutObject", "resource": f"bkt/key{i}", "outcome": "allowed",
                               "tenant": "acme", "principal": "alice", "access_key_id": "AKIAEXAMPLE",
                               "request_id": f"req-{i}", "source_address": "127.0.0.1"}) == i
    finally:
        log.close()


def _verify(locations: AuditLocations, *, monitor: bool = True, copies: bool = True) -> VerifyReport:
    public_key = CheckpointSigner(locations.signing_key, create=False).public_key
    with AuditReader(locations) as reader:
        return verify_log(reader, public_key, copy_dir=locations.copy_dir if copies else None,
                          monitor_state=locations.monitor_state if monitor else None)


def _db(locations: AuditLocations) -> sqlite3.Connection:
    return sqlite3.connect(locations.database, isolation_level=None)


def _record(locations: AuditLocations, seq: int) -> dict:
    with _db(locations) as db:
        return json.loads(db.execute("SELECT record FROM entries WHERE seq = ?", (seq,)).fetchone()[0])


def _canonical(record: dict) -> str:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _failed_at(report: VerifyReport, seq: int | None, words: str) -> None:
    assert not report.ok
    assert report.first_bad_seq == seq, report.findings
    assert words in report.problem, report.problem


def test_an_intact_log_verifies_and_the_monitor_moves_forward(locations: AuditLocations) -> None:
    _fill(locations)
    report = _verify(locations)
    assert report.ok and report.size == N and report.checkpoint_size == N and report.copies_checked >= 1
    assert report.monitor_previous_size is None
    assert json.loads(locations.monitor_state.read_text())["size"] == N
    _fill_more(locations, 5)
    report = _verify(locations)  # a consistency proof from the 12 verified before to the 17 now
    assert report.ok and report.size == N + 5 and report.monitor_previous_size == N


def _fill_more(locations: AuditLocations, count: int) -> None:
    log = AuditLog(locations, checkpoint_every=1, copy_every=1)
    try:
        start = log.size
        for i in range(count):
            assert log.append({"action": "s3:GetObject", "resource": f"bkt/more{i}", "outcome": "denied"}) == start + i
    finally:
        log.close()


def test_files_are_private_and_the_key_lives_outside_the_log(locations: AuditLocations) -> None:
    _fill(locations, 1)
    assert stat.S_IMODE(locations.folder.stat().st_mode) == 0o700
    for path in [locations.database, locations.signing_key, *locations.copy_dir.iterdir()]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert locations.folder not in locations.signing_key.parents
    assert "AKIAEXAMPLE" not in repr(CheckpointSigner(locations.signing_key))


def test_a_changed_record_is_found(locations: AuditLocations) -> None:
    _fill(locations)
    record = _record(locations, 5) | {"outcome": "denied"}
    with _db(locations) as db:
        db.execute("UPDATE entries SET record = ? WHERE seq = 5", (_canonical(record),))
    _failed_at(_verify(locations), 5, "does not match its leaf hash")


def test_a_changed_record_with_a_recomputed_leaf_hash_is_found(locations: AuditLocations) -> None:
    _fill(locations)
    text = _canonical(_record(locations, 7) | {"principal": "mallory"})
    with _db(locations) as db:
        db.execute("UPDATE entries SET record = ?, leaf = ? WHERE seq = 7", (text, leaf_hash(text.encode())))
    _failed_at(_verify(locations), 7, "do not hash to the root")


def test_a_deleted_entry_is_found(locations: AuditLocations) -> None:
    _fill(locations)
    with _db(locations) as db:
        db.execute("DELETE FROM entries WHERE seq = 4")
    _failed_at(_verify(locations), 4, "entry 4 is missing")


def test_reordered_entries_are_found(locations: AuditLocations) -> None:
    _fill(locations)
    with _db(locations) as db:
        rows = db.execute("SELECT seq, record, leaf FROM entries WHERE seq IN (3, 4) ORDER BY seq").fetchall()
        db.execute("UPDATE entries SET record = ?, leaf = ? WHERE seq = 3", rows[1][1:])
        db.execute("UPDATE entries SET record = ?, leaf = ? WHERE seq = 4", rows[0][1:])
    _failed_at(_verify(locations), 3, "holds the record of entry 4")


def test_a_truncated_log_is_found_from_the_copies(locations: AuditLocations) -> None:
    _fill(locations)
    with _db(locations) as db:  # the attacker removes the tail and the checkpoints that cover it
        db.execute("DELETE FROM entries WHERE seq >= 9")
        db.execute("DELETE FROM checkpoints WHERE size > 9")
    _failed_at(_verify(locations, monitor=False), 9, "entries 9..11 were removed")


def test_an_append_forged_entry_is_found(locations: AuditLocations) -> None:
    _fill(locations)
    text = _canonical(_record(locations, N - 1) | {"seq": N, "resource": "bkt/planted"})
    with _db(locations) as db:
        db.execute("INSERT INTO entries VALUES (?, ?, ?)", (N, text, leaf_hash(text.encode())))
    _failed_at(_verify(locations), N, f"entries {N}..{N} are covered by no signed checkpoint")
    # and the writer will not sign over it by appending on
    with pytest.raises(CatalogError, match="does not match its newest signed checkpoint"):
        AuditLog(locations)


@pytest.mark.parametrize("signature", ["garbage", "other key"])
def test_a_forged_checkpoint_is_found(locations: AuditLocations, signature: str) -> None:
    _fill(locations)
    text = _canonical(_record(locations, N - 1) | {"seq": N, "resource": "bkt/planted"})
    with AuditReader(locations) as reader:
        leaves = reader.leaves(N)
    from dwray.core.audit.merkle import root_from_leaf_hashes

    forged = Checkpoint(locations.log_id, N + 1, root_from_leaf_hashes([*leaves, leaf_hash(text.encode())]), 1.0)
    sig = (bytes(64) if signature == "garbage"
           else Ed25519PrivateKey.generate().sign(b"dwray audit checkpoint v1\n" + forged.body().encode()))
    with _db(locations) as db:
        db.execute("INSERT INTO entries VALUES (?, ?, ?)", (N, text, leaf_hash(text.encode())))
        db.execute("INSERT INTO checkpoints VALUES (?, ?, ?, ?, 1)", (N + 1, forged.body(), sig, "forged"))
    report = _verify(locations)
    _failed_at(report, N, "covered by no signed checkpoint")
    assert any(f"checkpoint at size {N + 1} in the log is forged" in f.problem for f in report.findings)


def test_a_rolled_back_log_is_found(locations: AuditLocations, tmp_path: Path) -> None:
    _fill(locations, 6)
    saved = tmp_path / "old.sqlite"
    shutil.copy(locations.database, saved)  # closed cleanly: the WAL is checkpointed into the file
    _fill_more(locations, 4)
    assert _verify(locations).ok
    for companion in ("-wal", "-shm"):
        Path(str(locations.database) + companion).unlink(missing_ok=True)
    shutil.copy(saved, locations.database)
    _failed_at(_verify(locations), 6, "entries 6..9 were removed")
    shutil.rmtree(locations.copy_dir)  # without the copies, the monitor still remembers 10 entries
    report = _verify(locations)
    _failed_at(report, 6, "entries 6..9 were removed")
    assert "monitor state" in report.problem


def test_a_checkpoint_copy_that_disagrees_is_found(locations: AuditLocations) -> None:
    _fill(locations)
    copy = sorted(locations.copy_dir.iterdir())[-1]
    signed = SignedCheckpoint.from_json(copy.read_text())
    edited = json.loads(copy.read_text())
    edited["checkpoint"]["root"] = "00" * 32
    copy.write_text(json.dumps(edited))
    report = _verify(locations)
    assert not report.ok and f"checkpoint copy {copy} is forged" in report.problem
    # A copy validly signed for another tree of the same size (a split view): the tree disagrees with it.
    copy.unlink()
    other = Checkpoint(locations.log_id, signed.checkpoint.size, bytes(32), signed.checkpoint.time)
    write_checkpoint_copy(locations.copy_dir, CheckpointSigner(locations.signing_key).sign(other))
    _failed_at(_verify(locations), None, f"signed checkpoints for size {N} disagree")
    assert f"not to the one copy {locations.copy_dir} signed" in _verify(locations).problem


def test_concurrent_appends_share_commits_and_stay_in_order(locations: AuditLocations) -> None:
    log = AuditLog(locations, checkpoint_every=16, copy_every=100)
    seqs: list[int] = []
    lock = threading.Lock()

    def writer(n: int) -> None:
        for i in range(40):
            seq = log.append({"action": "s3:PutObject", "resource": f"bkt/{n}/{i}", "outcome": "allowed"})
            with lock:
                seqs.append(seq)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    commits = log.commits
    log.close()
    assert sorted(seqs) == list(range(320))
    assert commits < 320  # grouped: fewer fsyncs than appends
    assert _verify(locations).ok


def test_inclusion_proof_of_an_entry(locations: AuditLocations) -> None:
    _fill(locations)
    public_key = CheckpointSigner(locations.signing_key, create=False).public_key
    with AuditReader(locations) as reader:
        proof = inclusion_report(reader, public_key, 3)
        with pytest.raises(ValueError, match="entry 99 is not in the newest signed checkpoint"):
            inclusion_report(reader, public_key, 99)
    assert proof["verified"] and proof["record"]["resource"] == "bkt/key3" and proof["tree_size"] == N
    path = [bytes.fromhex(node) for node in proof["audit_path"]]
    assert verify_inclusion(bytes.fromhex(proof["leaf_hash"]), 3, N, path, bytes.fromhex(proof["root"]))
    assert not verify_inclusion(leaf_hash(b"another record"), 3, N, path, bytes.fromhex(proof["root"]))


def test_queries_and_bad_records(locations: AuditLocations) -> None:
    _fill(locations, 4)
    _fill_more(locations, 2)
    with AuditReader(locations) as reader:
        assert [r["seq"] for r in reader.query(tenant="acme", action="PutObject")] == [0, 1, 2, 3]
        assert [r["seq"] for r in reader.query(action="s3:GetObject")] == [4, 5]
        assert reader.query(since=4e9) == [] and len(reader.query(until=4e9)) == 6
        assert [r["seq"] for r in reader.tail(2)] == [4, 5]
    log = AuditLog(locations)
    try:
        with pytest.raises(ValueError, match="unknown fields \\['body'\\]"):
            log.append({"action": "s3:PutObject", "resource": "bkt/k", "outcome": "allowed", "body": "data"})
        with pytest.raises(ValueError, match="outcome 'maybe'"):
            log.append({"action": "s3:PutObject", "resource": "bkt/k", "outcome": "maybe"})
    finally:
        log.close()
    assert _verify(locations).ok


def test_read_records_wait_briefly_and_go_before_the_next_write(locations: AuditLocations) -> None:
    from dwray.core.audit.deferred import DeferredRecords
    from dwray.core.warehouse.auditing import is_read_action

    assert is_read_action("s3:GetObject") and is_read_action("s3:ListBucket") and is_read_action("s3:HeadBucket")
    assert not is_read_action("s3:PutObject") and not is_read_action("dwray:sweep")
    log = AuditLog(locations)
    reads = DeferredRecords(log, interval=0.05)
    try:
        reads.add({"action": "s3:GetObject", "resource": "bkt/a", "outcome": "allowed"})
        reads.append_with({"action": "s3:PutObject", "resource": "bkt/b", "outcome": "allowed"})
        assert log.size == 2  # the waiting read went first, in the write's commit
        reads.add({"action": "s3:GetObject", "resource": "bkt/c", "outcome": "allowed"})
        deadline = time.monotonic() + 5
        while log.size < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert log.size == 3  # flushed by the timer, without a write
        reads.add({"action": "s3:GetObject", "resource": "bkt/d", "outcome": "allowed"})
    finally:
        reads.close()  # flushes what is left
        log.close()
    with AuditReader(locations) as reader:
        assert [r["resource"] for r in reader.query()] == ["bkt/a", "bkt/b", "bkt/c", "bkt/d"]


def test_the_audit_plugin_is_registered_and_appends(locations: AuditLocations) -> None:
    from dwray.builtins.audit_service import AuditLogPlugin
    from dwray.core.plugins import check_manifest, load_plugin_class

    assert load_plugin_class("service.audit") is AuditLogPlugin
    config = AuditLogPlugin.config_of(locations, 1, 1, 60.0)
    assert check_manifest("audit", AuditLogPlugin.manifest, "service", config).name == "service.audit"
    plugin = AuditLogPlugin(**config)
    seed = locations.signing_key.read_text().strip()
    assert seed not in str(config) and seed not in repr(plugin.log)  # paths only: the key stays in its file
    try:
        assert plugin.append_many([{"action": "s3:PutObject", "resource": "bkt/k", "outcome": "allowed"}] * 2) == [0, 1]
        assert plugin.health() == {"ok": True, "entries": 2}
    finally:
        plugin.close()
    assert _verify(locations).ok


def test_a_moved_log_names_the_id_to_configure(locations: AuditLocations) -> None:
    _fill(locations, 2)
    moved = AuditLocations("fedcba9876543210", locations.folder, locations.signing_key, locations.copy_dir,
                           locations.monitor_state)
    with pytest.raises(CatalogError, match='set \\[audit\\] log_id = "0123456789abcdef"'):
        AuditLog(moved)
    report = _verify(moved)
    assert not report.ok and "is for the log '0123456789abcdef'" in report.findings[0].problem


def test_kept_checkpoints_are_listed_past_a_size_signed(locations: AuditLocations) -> None:
    """What the event bus publishes as ``audit.checkpoint_signed``: each kept checkpoint, verifiable."""
    from dwray.core.audit.checkpoints import canonical_json

    log = AuditLog(locations, checkpoint_every=4)
    try:
        for n in range(10):
            log.append({"principal": "t", "action": "s3:PutObject", "resource": f"b/{n}", "outcome": "allowed"})
        kept = log.kept_checkpoints()
        assert [c["size"] for c in kept] == [4, 8]
        assert [c["size"] for c in log.kept_checkpoints(after=4)] == [8]
        assert log.kept_checkpoints(after=8) == [] and len(log.kept_checkpoints(limit=1)) == 1
        public_key = CheckpointSigner(locations.signing_key, create=False).public_key
        for c in kept:
            signed = SignedCheckpoint.from_json(canonical_json({
                "checkpoint": {k: c[k] for k in ("log", "root", "size", "time")},
                "signature": c["signature"], "key_id": c["key_id"]}))
            assert signed.verify(public_key) and c["log"] == locations.log_id
    finally:
        log.close()
