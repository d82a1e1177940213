"""RFC 6962 Merkle tree hashing: roots, inclusion proofs and consistency proofs, and their verifiers.

Hand-written on purpose: no well-kept Python library computes RFC 6962 proofs
(PyPI has only small, unranked one-person projects; certificate-transparency's
own Python code is unmaintained), and the algorithms are short and fully
specified. Hashing itself is ``hashlib.sha256``; only the tree shapes are ours:

- leaf hash ``SHA-256(0x00 || data)``, node hash ``SHA-256(0x01 || left || right)``
  (the domain separation keeps a leaf from passing for a node and back);
- the root of the empty tree is ``SHA-256("")``;
- the tree of n leaves splits at k, the largest power of two below n
  (RFC 6962 section 2.1);
- proofs are the audit paths of section 2.1.1 and the consistency proofs of
  section 2.1.2; the verifiers follow RFC 9162 sections 2.1.3.2 and 2.1.4.2.

Functions that build proofs take the leaf *hashes* (what the log stores);
``CompactRange`` keeps the root of a growing tree in O(log n) memory.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence

__all__ = ["EMPTY_ROOT", "CompactRange", "consistency_proof", "inclusion_proof", "leaf_hash", "node_hash",
           "root_from_leaf_hashes", "verify_consistency", "verify_inclusion"]

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_from_leaf_hashes(leaves: Sequence[bytes]) -> bytes:
    """MTH of the leaves whose hashes are ``leaves``, iteratively (no recursion depth limit)."""
    compact = CompactRange()
    for leaf in leaves:
        compact.append(leaf)
    return compact.root()


def _subtree(leaves: Sequence[bytes], start: int, end: int) -> bytes:
    if end - start == 1:
        return leaves[start]
    k = _split(end - start)
    return node_hash(_subtree(leaves, start, start + k), _subtree(leaves, start + k, end))


def inclusion_proof(leaves: Sequence[bytes], index: int, size: int | None = None) -> list[bytes]:
    """PATH(index, D[0:size]) of RFC 6962 section 2.1.1: the audit path of leaf ``index`` in the first ``size``."""
    size = len(leaves) if size is None else size
    if not 0 <= index < size <= len(leaves):
        raise ValueError(f"no leaf {index} in a tree of {size}")
    path: list[bytes] = []
    start, end = 0, size
    while end - start > 1:  # top-down; the path is listed bottom-up, so prepend
        k = _split(end - start)
        if index < start + k:
            path.insert(0, _subtree(leaves, start + k, end))
            end = start + k
        else:
            path.insert(0, _subtree(leaves, start, start + k))
            start += k
    return path


def consistency_proof(leaves: Sequence[bytes], old_size: int, new_size: int | None = None) -> list[bytes]:
    """PROOF(old_size, D[0:new_size]) of RFC 6962 section 2.1.2."""
    new_size = len(leaves) if new_size is None else new_size
    if not 0 <= old_size <= new_size <= len(leaves):
        raise ValueError(f"no consistency proof from size {old_size} to {new_size}")
    if old_size == 0 or old_size == new_size:
        return []
    return _subproof(leaves, old_size, 0, new_size, True)


def _subproof(leaves: Sequence[bytes], m: int, start: int, end: int, complete: bool) -> list[bytes]:
    n = end - start
    if m == n:
        return [] if complete else [_subtree(leaves, start, end)]
    k = _split(n)
    if m <= k:
        return _subproof(leaves, m, start, start + k, complete) + [_subtree(leaves, start + k, end)]
    return _subproof(leaves, m - k, start + k, end, False) + [_subtree(leaves, start, start + k)]


def verify_inclusion(leaf: bytes, index: int, size: int, path: Sequence[bytes], root: bytes) -> bool:
    """RFC 9162 section 2.1.3.2: does ``path`` prove the leaf hash ``leaf`` is leaf ``index`` of ``root``?"""
    if not 0 <= index < size:
        return False
    fn, sn = index, size - 1
    r = leaf
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes,
                       proof: Sequence[bytes]) -> bool:
    """RFC 9162 section 2.1.4.2: does ``proof`` show the tree ``old_root`` is a prefix of ``new_root``?"""
    if not 0 <= old_size <= new_size:
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if old_size == 0:
        return not proof  # the empty tree is a prefix of every tree
    if not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # a power of two: the old root is the proof's first node
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root


class CompactRange:
    """The roots of the perfect subtrees that make up a tree of ``size`` leaves, left to right.

    Appending a leaf merges equal-sized subtrees like binary carry, so the
    root of the whole log after each group commit costs O(log n), not O(n).
    """

    def __init__(self) -> None:
        self.size = 0
        self._peaks: list[bytes] = []  # one per set bit of size, largest (leftmost) first

    def append(self, leaf: bytes) -> None:
        node = leaf
        size = self.size
        while size & 1:
            node = node_hash(self._peaks.pop(), node)
            size >>= 1
        self._peaks.append(node)
        self.size += 1

    def copy(self) -> CompactRange:
        twin = CompactRange()
        twin.size, twin._peaks = self.size, list(self._peaks)
        return twin

    def root(self) -> bytes:
        if not self._peaks:
            return EMPTY_ROOT
        node = self._peaks[-1]
        for peak in reversed(self._peaks[:-1]):
            node = node_hash(peak, node)
        return node
