"""Conditional writes decided in the catalog's commit: If-None-Match and If-Match on put, copy and
multipart completion, raced by 16 writers, in process, on Ray and through the gateway (``wh``; ``operator_wh``
where a test sweeps or reads the config)."""
from __future__ import annotations

import threading

import pytest

from dwray.core.warehouse import Warehouse
from dwray.errors import ConditionalRequestConflict, InvalidArgument, ObjectNotFound, PreconditionFailed

WRITERS = 16


def test_sixteen_if_none_match_writers_one_wins(operator_wh: Warehouse) -> None:
    wh = operator_wh  # sweeps: an operator's
    wh.create_bucket("race")
    start = threading.Barrier(WRITERS)
    outcomes: dict[int, object] = {}

    def write(number: int) -> None:
        start.wait(timeout=30)
        try:
            outcomes[number] = wh.put("race", "once", f"writer {number}".encode() * 100, if_none_match=True)
        except PreconditionFailed as exc:
            outcomes[number] = exc

    threads = [threading.Thread(target=write, args=(n,)) for n in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    winners = [n for n, outcome in outcomes.items() if not isinstance(outcome, PreconditionFailed)]
    assert len(outcomes) == WRITERS and len(winners) == 1
    assert wh.get("race", "once") == f"writer {winners[0]}".encode() * 100
    assert [v.key for v in wh.list_versions("race").versions] == ["once"]
    # The losers' blobs were removed at once, not left for the sweeper.
    assert wh.sweep(grace_seconds=0, tenant=wh.config.default_tenant).deleted == 0


def test_if_match_compares_the_current_etag_and_nothing_is_stored_when_it_fails(wh: Warehouse) -> None:
    wh.create_bucket("cas")
    first = wh.put("cas", "k", b"v1")
    with pytest.raises(ObjectNotFound):
        wh.put("cas", "missing", b"x", if_match=first.etag)
    with pytest.raises(PreconditionFailed, match="If-Match"):
        wh.put("cas", "k", b"v2", if_match="0" * 32)
    second = wh.put("cas", "k", b"v2", if_match=f'"{first.etag.upper()}"')  # quoted, any case
    assert wh.get("cas", "k") == b"v2"
    with pytest.raises(PreconditionFailed):
        wh.copy("cas", "k", "cas", "k", if_match=first.etag, metadata={"a": "b"})
    copied = wh.copy("cas", "k", "cas", "copy", if_none_match=True)
    assert copied.etag == second.etag
    with pytest.raises(PreconditionFailed, match="If-None-Match"):
        wh.copy("cas", "k", "cas", "copy", if_none_match=True)
    with pytest.raises(InvalidArgument, match="not both"):
        wh.put("cas", "k", b"v3", if_match=second.etag, if_none_match=True)
    wh.delete("cas", "k")
    assert wh.put("cas", "k", b"again", if_none_match=True).size == 5  # deleted keys may be created again
    assert [v.key for v in wh.list_versions("cas").versions] == ["copy", "k"]


def test_a_conditional_completion_conflicts_with_a_write_during_the_upload(operator_wh: Warehouse) -> None:
    wh = operator_wh  # reads the config's minimum part size
    wh.create_bucket("mpc")
    minimum = wh.config.limits.min_part_size

    def upload(key: str) -> tuple[str, list[tuple[int, str]]]:
        begun = wh.create_multipart_upload("mpc", key)
        part = wh.upload_part("mpc", key, begun.upload_id, 1, b"p" * minimum)
        return begun.upload_id, [(1, part.etag)]

    existing = wh.put("mpc", "before", b"x")
    upload_id, parts = upload("before")
    with pytest.raises(PreconditionFailed) as failed:
        wh.complete_multipart_upload("mpc", "before", upload_id, parts, if_none_match=True)
    assert not isinstance(failed.value, ConditionalRequestConflict)
    assert wh.complete_multipart_upload("mpc", "before", upload_id, parts, if_match=existing.etag).size == minimum

    upload_id, parts = upload("during")
    wh.put("mpc", "during", b"written meanwhile")
    with pytest.raises(ConditionalRequestConflict):
        wh.complete_multipart_upload("mpc", "during", upload_id, parts, if_none_match=True)
    assert wh.get("mpc", "during") == b"written meanwhile"
    upload_id, parts = upload("fresh")
    assert wh.complete_multipart_upload("mpc", "fresh", upload_id, parts, if_none_match=True).parts_count == 1
