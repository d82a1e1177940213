"""Abandoned multipart uploads expire (``Warehouse.expire_uploads``, run by ``dw sweep``).

Real warehouses (in process on each backend, and on Ray through the ``wh``
fixture): uploads begun before the cutoff are aborted through the client's
abort path and their parts' blobs swept; newer ones survive and complete. The
age comes from the catalog's stored initiation time: the old uploads are begun,
then time passes, then the cutoff is taken between them and the new ones.
"""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from dwray.core.warehouse import Warehouse
from dwray.errors import InvalidArgument, UploadNotFound
from tests.conftest import TEST_FRAME_SIZE, make_config

PART = 2 * TEST_FRAME_SIZE
# Between the old uploads, the cutoff and the new ones: far above any call's latency.
GAP = 0.4


@pytest.fixture
def mp(operator_wh: Warehouse) -> Warehouse:
    """The ``operator_wh`` warehouse (these tests read its catalog and config), with a minimum part
    size of two frames."""
    wh = operator_wh
    wh.config = wh.config.model_copy(update={"limits": wh.config.limits.model_copy(
        update={"min_part_size": PART})})
    return wh


def begin(wh: Warehouse, bucket: str, key: str, parts: int) -> tuple[str, list[tuple[int, str]], bytes]:
    """An upload of ``parts`` random parts: its id, the (number, ETag) pairs, and the object it would make."""
    upload = wh.create_multipart_upload(bucket, key)
    data = [os.urandom(PART) for _ in range(parts)]
    named = [(n, wh.upload_part(bucket, key, upload.upload_id, n, chunk).etag)
             for n, chunk in enumerate(data, start=1)]
    return upload.upload_id, named, b"".join(data)


def open_uploads(wh: Warehouse, bucket: str) -> set[str]:
    return {upload.upload_id for upload in wh.list_multipart_uploads(bucket).uploads}


def test_uploads_older_than_the_cutoff_expire_and_newer_ones_complete(mp: Warehouse) -> None:
    tenant = mp.config.default_tenant
    mp.create_bucket("exp")
    old = [begin(mp, "exp", f"old/{n}", parts=2) for n in range(3)]
    time.sleep(GAP)
    middle = time.time()
    time.sleep(GAP)
    new = [begin(mp, "exp", f"new/{n}", parts=1) for n in range(2)]
    assert open_uploads(mp, "exp") == {uid for uid, _, _ in old + new}

    # The configured default (7 days) expires none of them.
    assert mp.config.limits.multipart_upload_expiry == 7 * 24 * 3600
    assert mp.expire_uploads(tenant=tenant) == 0
    assert mp.expire_uploads(time.time() - middle, tenant=tenant) == 3

    assert open_uploads(mp, "exp") == {uid for uid, _, _ in new}
    for n, (upload_id, _, _) in enumerate(old):
        with pytest.raises(UploadNotFound):
            mp.upload_part("exp", f"old/{n}", upload_id, 3, os.urandom(PART))
        with pytest.raises(UploadNotFound):
            mp.list_parts("exp", f"old/{n}", upload_id)
    # A second run finds nothing left to expire.
    assert mp.expire_uploads(time.time() - middle, tenant=tenant) == 0

    # The expired uploads' six parts are unreferenced now: the sweep removes exactly those.
    report = mp.sweep(grace_seconds=0, tenant=tenant)
    assert report.deleted == 6

    for n, (upload_id, named, data) in enumerate(new):
        assert mp.complete_multipart_upload("exp", f"new/{n}", upload_id, named).size == PART
        assert mp.get("exp", f"new/{n}") == data
    assert open_uploads(mp, "exp") == set()


def test_expiry_counts_every_page_and_is_scoped_to_the_tenant(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from dwray.core.warehouse import maintenance

    monkeypatch.setattr(maintenance, "EXPIRE_BATCH", 2)  # five uploads: three pages
    with Warehouse(make_config(tmp_path / "data")) as wh:
        wh.create_bucket("bkt")
        wh.create_bucket("bkt-other", tenant="other")
        mine = {wh.create_multipart_upload("bkt", f"k{n}").upload_id for n in range(5)}
        theirs = wh.create_multipart_upload("bkt-other", "k", tenant="other").upload_id
        time.sleep(0.05)
        assert wh.expire_uploads(0.01, tenant="other") == 1
        assert open_uploads(wh, "bkt") == mine
        assert wh.expire_uploads(0.01) == 5  # "*": every tenant's
        assert open_uploads(wh, "bkt") == set()
        with pytest.raises(UploadNotFound):
            wh.abort_multipart_upload("bkt-other", "k", theirs, tenant="other")


def test_expiry_zero_in_config_turns_it_off_and_bad_ages_are_refused(tmp_path: Path) -> None:
    config = make_config(tmp_path / "data")
    config = config.model_copy(update={"limits": config.limits.model_copy(update={"multipart_upload_expiry": 0})})
    with Warehouse(config) as wh:
        wh.create_bucket("bkt")
        upload = wh.create_multipart_upload("bkt", "k")
        time.sleep(0.05)
        assert wh.expire_uploads() == 0
        assert open_uploads(wh, "bkt") == {upload.upload_id}
        for bad in (-1, "1d", True, float("nan")):
            with pytest.raises(InvalidArgument, match="older_than"):
                wh.expire_uploads(bad)  # type: ignore[arg-type]
        assert wh.expire_uploads(0.01) == 1


def test_config_refuses_a_negative_expiry() -> None:
    from pydantic import ValidationError

    from dwray.config import LimitsConfig

    with pytest.raises(ValidationError, match="multipart_upload_expiry"):
        LimitsConfig(multipart_upload_expiry=-1)


def test_dw_sweep_expires_uploads_and_reports_how_many(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with Warehouse(make_config(data)) as wh:
        wh.create_bucket("bkt")
        kept = wh.create_multipart_upload("bkt", "kept").upload_id
    env = {**os.environ, "DWRAY_DATA_DIR": str(data)}

    def sweep(*args: str) -> dict[str, int]:
        result = subprocess.run(["dw", "sweep", "--grace", "0", *args, "--json"], capture_output=True, env=env,
                                timeout=120)
        assert result.returncode == 0, result.stderr.decode()
        return json.loads(result.stdout)

    assert sweep()["expired_uploads"] == 0  # the default age is 7 days
    time.sleep(0.05)
    assert sweep("--upload-expiry", "0.01")["expired_uploads"] == 1
    with Warehouse(make_config(data)) as wh:
        assert open_uploads(wh, "bkt") == set()
        with pytest.raises(UploadNotFound):
            wh.upload_part("bkt", "kept", kept, 1, b"x")
    human = subprocess.run(["dw", "sweep"], capture_output=True, env=env, timeout=120)
    assert human.returncode == 0 and b"expired 0 multipart upload(s)" in human.stdout
