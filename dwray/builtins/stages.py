"""The built-in frame stage plugin: zstd then AES-256-GCM on batches of frames."""
from __future__ import annotations

from typing import Any

import numpy as np

from dwray.builtins.storage import as_array
from dwray.core.pipeline import ObjectCrypto
from dwray.core.plugins import Manifest, Plugin

__all__ = ["FrameStagePlugin"]


class FrameStagePlugin(Plugin):
    """The built-in stage chain: zstd then AES-256-GCM, on batches of frames.

    One call handles several frames (a batch of a few MiB), because a Ray call
    costs about a millisecond here and a frame about two.
    """

    manifest = Manifest(name="stage.frames", kind="stage", version="1.0.0",
                        capabilities=("seal", "open", "trusted-builtin"),
                        config_schema={"type": "object", "additionalProperties": False})

    def seal_batch(self, crypto: ObjectCrypto, first_index: int, ends_object: bool,
                   frames: list[Any]) -> tuple[np.ndarray, list[int]]:
        """Seal frames ``first_index...``; the last one is the object's last if ``ends_object``.

        Returns the records laid end to end and each record's length.
        """
        sealer = crypto.sealer()
        pieces, lengths = [], []
        for offset, frame in enumerate(frames):
            last = ends_object and offset == len(frames) - 1
            codec, sealed = sealer.seal(first_index + offset, memoryview(frame).cast("B"), last)
            pieces += (codec, sealed)
            lengths.append(len(codec) + len(sealed))
        out = np.empty(sum(lengths), dtype=np.uint8)
        position = 0
        for piece in pieces:
            out[position:position + len(piece)] = np.frombuffer(piece, dtype=np.uint8)
            position += len(piece)
        return out, lengths

    def seal_many(self, objects: list[tuple[ObjectCrypto, list[Any]]]) -> tuple[list[np.ndarray], list[list[int]]]:
        """Seal several whole small objects (all their frames) in one call.

        Returns each object's records laid end to end, and each one's record lengths.
        """
        sealed = [self.seal_batch(crypto, 0, True, frames) for crypto, frames in objects]
        return [records for records, _ in sealed], [lengths for _, lengths in sealed]

    def open_batch(self, crypto: ObjectCrypto, first_index: int, last_index: int, records: Any,
                   lengths: list[int]) -> list[np.ndarray]:
        """Open consecutive records laid end to end; returns each frame's plaintext."""
        opener = crypto.opener()
        view = memoryview(records).cast("B")
        out, position = [], 0
        for offset, length in enumerate(lengths):
            index = first_index + offset
            plain = opener.open(index, view[position:position + length], index == last_index)
            out.append(as_array(plain))
            position += length
        return out
