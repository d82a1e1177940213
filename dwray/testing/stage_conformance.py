"""The frame stage conformance suite.

A stage plugin (kind ``stage``) is what the warehouse's stage workers call to
turn an object's plaintext frames into sealed records and back: the calls of
the built-in ``stage.frames`` (``dwray.builtins.stages.FrameStagePlugin``)::

    seal_batch(crypto, first_index, ends_object, frames) -> (records laid end to end, each record's length)
    seal_many([(crypto, frames), ...]) -> (each object's records, each object's record lengths)
    open_batch(crypto, first_index, last_index, records, lengths) -> each frame's plaintext

Frames arrive as numpy uint8 arrays (what Ray hands an actor) and plaintext
leaves as them. Whatever a stage does to the bytes on the way (compress,
transform), it must give back exactly the frames it was given, and it must
keep the frame format's guarantees: a record opens only as the frame it was
sealed as, of its own object, and every alteration is an ``IntegrityError``.

Every stage's tests subclass ``StageConformance`` and provide a ``stage``
fixture that returns the plugin::

    from dwray.testing.stage_conformance import StageConformance

    class TestFrames(StageConformance):
        @pytest.fixture
        def stage(self):
            return FrameStagePlugin()
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest

from dwray.core.frames import ObjectIdentity, new_object_keys
from dwray.core.pipeline import ObjectCrypto
from dwray.errors import IntegrityError, InvalidArgument

__all__ = ["StageConformance", "object_crypto"]

FRAME = 64 * 1024


def object_crypto(key: str = "k", frame_size: int = FRAME, bucket: str = "b") -> ObjectCrypto:
    """Fresh keys for one object ``t/<bucket>/<key>``, as the warehouse makes them for each write."""
    keys = new_object_keys()
    return ObjectCrypto(ObjectIdentity("t", bucket, key, "v1"), keys.dek, keys.nonce_prefix, frame_size)


def _frames(total: int, frame_size: int = FRAME, *, compressible: bool = False) -> list[np.ndarray]:
    """An object of ``total`` bytes cut into frames, as numpy arrays."""
    if compressible:
        data = (b"dwray stage conformance " * (total // 24 + 1))[:total]
    else:
        data = os.urandom(total)
    pieces = [data[i:i + frame_size] for i in range(0, total, frame_size)] or [b""]
    return [np.frombuffer(piece, dtype=np.uint8) for piece in pieces]


def _records(records: Any, lengths: list[int]) -> list[bytes]:
    view, out, position = memoryview(np.asarray(records)).cast("B"), [], 0
    for length in lengths:
        out.append(bytes(view[position:position + length]))
        position += length
    return out


def _joined(records: list[bytes]) -> np.ndarray:
    return np.frombuffer(b"".join(records), dtype=np.uint8)


def _same(opened: list[Any], frames: list[np.ndarray]) -> bool:
    return [bytes(memoryview(np.asarray(part)).cast("B")) for part in opened] == [f.tobytes() for f in frames]


class StageConformance:
    """Tests every frame stage plugin must pass. Subclass and define ``stage``."""

    @pytest.fixture
    def stage(self) -> Any:
        raise NotImplementedError("subclasses provide a `stage` fixture returning the stage plugin")

    def test_manifest_says_stage(self, stage: Any) -> None:
        assert stage.manifest.kind == "stage"
        assert {"seal", "open"} <= set(stage.manifest.capabilities)

    # Round trips ------------------------------------------------------------------

    @pytest.mark.parametrize("total", [1, FRAME - 1, FRAME, 3 * FRAME + 17])
    @pytest.mark.parametrize("compressible", [False, True])
    def test_round_trip(self, stage: Any, total: int, compressible: bool) -> None:
        crypto = object_crypto()
        frames = _frames(total, compressible=compressible)
        records, lengths = stage.seal_batch(crypto, 0, True, frames)
        assert len(lengths) == len(frames) and sum(lengths) == len(np.asarray(records))
        opened = stage.open_batch(crypto, 0, len(frames) - 1, records, lengths)
        assert _same(opened, frames)

    def test_empty_object(self, stage: Any) -> None:
        crypto = object_crypto()
        frames = _frames(0)
        records, lengths = stage.seal_batch(crypto, 0, True, frames)
        assert _same(stage.open_batch(crypto, 0, 0, records, lengths), frames)

    def test_batches_of_one_object_open_in_any_grouping(self, stage: Any) -> None:
        crypto = object_crypto()
        frames = _frames(5 * FRAME + 3)
        first, first_lengths = stage.seal_batch(crypto, 0, False, frames[:2])
        rest, rest_lengths = stage.seal_batch(crypto, 2, True, frames[2:])
        records = _records(first, first_lengths) + _records(rest, rest_lengths)
        middle = stage.open_batch(crypto, 1, 5, _joined(records[1:4]), [len(r) for r in records[1:4]])
        assert _same(middle, frames[1:4])
        assert _same(stage.open_batch(crypto, 0, 5, _joined(records), [len(r) for r in records]), frames)

    def test_seal_many_seals_whole_objects(self, stage: Any) -> None:
        objects = [(object_crypto(f"k{n}"), _frames(size)) for n, size in enumerate((0, 10, FRAME + 5))]
        records, lengths = stage.seal_many(objects)
        assert len(records) == len(lengths) == 3
        for (crypto, frames), sealed, sizes in zip(objects, records, lengths, strict=True):
            assert _same(stage.open_batch(crypto, 0, len(frames) - 1, sealed, sizes), frames)

    def test_frames_as_bytes_and_memoryviews(self, stage: Any) -> None:
        crypto = object_crypto()
        frames = _frames(2 * FRAME + 1)
        given = [frames[0].tobytes(), memoryview(frames[1].tobytes()), frames[2]]
        records, lengths = stage.seal_batch(crypto, 0, True, given)
        assert _same(stage.open_batch(crypto, 0, 2, records, lengths), frames)

    def test_a_frame_of_the_wrong_size_is_refused(self, stage: Any) -> None:
        crypto = object_crypto()
        with pytest.raises(InvalidArgument):
            stage.seal_batch(crypto, 0, False, [np.zeros(FRAME - 1, dtype=np.uint8)])

    # What sealing guarantees ---------------------------------------------------------------

    def test_altered_records_fail(self, stage: Any) -> None:
        crypto = object_crypto()
        frames = _frames(2 * FRAME, compressible=True)
        records = _records(*stage.seal_batch(crypto, 0, True, frames))
        for position in (0, 1, len(records[1]) // 2, len(records[1]) - 1):
            damaged = bytearray(records[1])
            damaged[position] ^= 0x01
            with pytest.raises(IntegrityError):
                stage.open_batch(crypto, 1, 1, _joined([bytes(damaged)]), [len(damaged)])

    def test_records_do_not_open_in_another_place(self, stage: Any) -> None:
        crypto = object_crypto()
        frames = _frames(3 * FRAME)
        records = _records(*stage.seal_batch(crypto, 0, True, frames))
        swapped = [records[1], records[0], records[2]]
        with pytest.raises(IntegrityError):
            stage.open_batch(crypto, 0, 2, _joined(swapped), [len(r) for r in swapped])
        with pytest.raises(IntegrityError):  # truncated: frame 1 is not the last
            stage.open_batch(crypto, 1, 1, _joined(records[1:2]), [len(records[1])])

    def test_records_open_only_for_their_own_object(self, stage: Any) -> None:
        crypto = object_crypto("a")
        frames = _frames(FRAME // 2)
        records, lengths = stage.seal_batch(crypto, 0, True, frames)
        other = ObjectCrypto(ObjectIdentity("t", "b", "other", "v1"), crypto.dek, crypto.nonce_prefix,
                             crypto.frame_size)
        with pytest.raises(IntegrityError):
            stage.open_batch(other, 0, 0, records, lengths)
        with pytest.raises(IntegrityError):
            stage.open_batch(object_crypto("a"), 0, 0, records, lengths)

    def test_plaintext_does_not_show_in_records(self, stage: Any) -> None:
        crypto = object_crypto()
        marker = b"PLAINTEXT-MARKER-" * 64
        frames = [np.frombuffer(marker, dtype=np.uint8)]
        records, _ = stage.seal_batch(crypto, 0, True, frames)
        assert b"PLAINTEXT-MARKER" not in np.asarray(records).tobytes()
