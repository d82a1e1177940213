"""Cutting object data into frames: exact frame boundaries, and each plaintext byte copied at most once."""
from __future__ import annotations

import os
import random
import tracemalloc
from collections.abc import Iterator

import pytest

from dwray.core.pipeline import plaintext_frames

FRAME = 1 << 20


def frames_of(chunks: Iterator[bytes | bytearray | memoryview], frame_size: int = FRAME) -> list[memoryview]:
    out = []
    for index, (frame, last) in enumerate(plaintext_frames(chunks, frame_size)):
        assert isinstance(frame, (bytes, memoryview)), "frames are handed on as they are, never rebuilt"
        out.append((frame, last, index))
    assert [last for _, last, _ in out] == [False] * (len(out) - 1) + [True]
    return [memoryview(frame) for frame, _, _ in out]


@pytest.mark.parametrize("seed", range(40))
def test_frames_are_cut_exactly_on_frame_boundaries_whatever_the_chunks(seed: int) -> None:
    rnd = random.Random(seed)
    frame_size = 1000
    chunks: list[bytes | bytearray | memoryview] = []
    for _ in range(rnd.randrange(1, 15)):
        data = rnd.randbytes(rnd.choice([0, 1, 7, 300, 999, 1000, 1001, 2500, 4000]))
        chunks.append(rnd.choice([data, bytearray(data), memoryview(data)]))
    payload = b"".join(bytes(chunk) for chunk in chunks)
    frames = frames_of(iter(chunks), frame_size)
    assert b"".join(frames) == payload
    assert all(len(frame) == frame_size for frame in frames[:-1])
    assert 0 < len(frames[-1]) <= frame_size or payload == b""


def test_a_writable_chunk_refilled_by_the_caller_is_copied_before_the_next_is_asked_for() -> None:
    payload = os.urandom(5 * 4096 + 10)

    def refilled() -> Iterator[bytearray]:
        buffer = bytearray(4096)
        for offset in range(0, len(payload), 4096):
            piece = payload[offset:offset + 4096]
            buffer[:len(piece)] = piece
            yield buffer if len(piece) == 4096 else buffer[:len(piece)]
            buffer[:] = b"\xff" * 4096  # what a caller reusing its buffer does

    frames = frames_of(refilled(), 3000)
    assert b"".join(frames) == payload


def test_gathered_frames_are_each_one_buffer_of_a_frame_filled_once() -> None:
    chunks = [os.urandom(64 << 10) for _ in range(40)]  # 2.5 frames in the pieces a gateway receives
    frames = frames_of(iter(chunks))
    assert [len(frame) for frame in frames] == [FRAME, FRAME, FRAME // 2]
    owners = [frame.obj for frame in frames]
    assert all(type(owner) is bytearray and len(owner) == FRAME for owner in owners[:2])
    assert owners[0] is not owners[1], "a frame's buffer is never reused for the next frame"
    # The tail is known to be the last frame only at the end: its pieces are joined once, to its size.
    assert type(owners[2]) is bytes and len(owners[2]) == FRAME // 2
    assert b"".join(frames) == b"".join(chunks)


def test_whole_frames_inside_a_read_only_chunk_are_used_in_place() -> None:
    big = os.urandom(2 * FRAME + 5)
    frames = frames_of(iter([big]))
    assert [len(frame) for frame in frames] == [FRAME, FRAME, 5]
    assert all(frame.obj is big for frame in frames), "not one byte of it is copied, the short last frame included"


def test_an_object_of_one_small_chunk_is_sealed_from_that_chunk() -> None:
    small = os.urandom(4096)
    [frame] = frames_of(iter([small]))
    assert frame.obj is small, "no frame buffer is allocated (nor filled) for a small object"


def test_each_plaintext_byte_is_copied_once_with_no_transient_copy() -> None:
    # The chunks exist before tracing starts; what is traced is what cutting them allocates.
    chunks = [os.urandom(64 << 10) for _ in range(8 * 16)]
    payload = len(chunks) * len(chunks[0])
    tracemalloc.start()
    try:
        frames = frames_of(iter(chunks))
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(frames) == 8 and b"".join(frames) == b"".join(chunks)
    # One copy: the frames kept are all that was allocated, give or take the views' headers ...
    assert payload <= current < payload + (64 << 10)
    # ... and at no moment did another frame-sized copy exist (a joined batch, a rebuilt frame).
    assert peak < current + FRAME // 2
