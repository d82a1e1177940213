"""RFC 6962 hashing and proofs against a straightforward recursive reference (RFC 6962 section 2.1, verbatim)."""
from __future__ import annotations

import hashlib

import pytest

from dwray.core.audit.merkle import (
    EMPTY_ROOT,
    CompactRange,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)

N = 70


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(data: list[bytes]) -> bytes:
    if not data:
        return _h(b"")
    if len(data) == 1:
        return _h(b"\x00" + data[0])
    k = _k(len(data))
    return _h(b"\x01" + ref_mth(data[:k]) + ref_mth(data[k:]))


def ref_path(m: int, data: list[bytes]) -> list[bytes]:
    if len(data) == 1:
        return []
    k = _k(len(data))
    if m < k:
        return ref_path(m, data[:k]) + [ref_mth(data[k:])]
    return ref_path(m - k, data[k:]) + [ref_mth(data[:k])]


def ref_subproof(m: int, data: list[bytes], b: bool) -> list[bytes]:
    n = len(data)
    if m == n:
        return [] if b else [ref_mth(data)]
    k = _k(n)
    if m <= k:
        return ref_subproof(m, data[:k], b) + [ref_mth(data[k:])]
    return ref_subproof(m - k, data[k:], False) + [ref_mth(data[:k])]


DATA = [f"entry {i}".encode() for i in range(N)]
LEAVES = [leaf_hash(d) for d in DATA]


def test_domain_separation_and_empty_tree() -> None:
    assert EMPTY_ROOT == _h(b"") == root_from_leaf_hashes([])
    assert leaf_hash(b"x") == _h(b"\x00x")
    assert CompactRange().root() == EMPTY_ROOT


def test_known_vector_of_rfc6962_test_data() -> None:
    # The root of the 8 leaves used by certificate-transparency's own tests (merkle_tree_test).
    inputs = [bytes.fromhex(x) for x in ("", "00", "10", "2021", "3031", "40414243", "5051525354555657",
                                         "606162636465666768696a6b6c6d6e6f")]
    assert root_from_leaf_hashes([leaf_hash(x) for x in inputs]).hex() == \
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"


def test_roots_match_the_reference_for_every_size() -> None:
    compact = CompactRange()
    for n in range(N + 1):
        assert root_from_leaf_hashes(LEAVES[:n]) == ref_mth(DATA[:n])
        assert compact.root() == ref_mth(DATA[:n])
        if n < N:
            compact.append(LEAVES[n])


def test_inclusion_proofs_match_the_reference_and_verify() -> None:
    for n in range(1, N + 1):
        root = ref_mth(DATA[:n])
        for m in range(n):
            path = inclusion_proof(LEAVES, m, n)
            assert path == ref_path(m, DATA[:n])
            assert verify_inclusion(LEAVES[m], m, n, path, root)
            assert not verify_inclusion(LEAVES[m], m, n, path, _h(b"other root"))
            assert not verify_inclusion(leaf_hash(b"forged"), m, n, path, root)
            if path:
                assert not verify_inclusion(LEAVES[m], m, n, path[:-1], root)
                assert not verify_inclusion(LEAVES[m], m, n, path + [root], root)
            if n > 1:
                assert not verify_inclusion(LEAVES[m], (m + 1) % n, n, path, root)


def test_consistency_proofs_match_the_reference_and_verify_for_all_pairs() -> None:
    roots = [ref_mth(DATA[:n]) for n in range(N + 1)]
    for n in range(1, N + 1):
        for m in range(1, n + 1):
            proof = consistency_proof(LEAVES, m, n)
            assert proof == ([] if m == n else ref_subproof(m, DATA[:n], True))
            assert verify_consistency(m, n, roots[m], roots[n], proof)
            if m < n:
                assert not verify_consistency(m, n, roots[m - 1] if m > 1 else _h(b"x"), roots[n], proof)
                assert not verify_consistency(m, n, roots[m], roots[n - 1], proof)
                assert not verify_consistency(m, n, roots[m], roots[n], proof[:-1])
                assert not verify_consistency(m, n, roots[m], roots[n], [])
    assert verify_consistency(0, 5, EMPTY_ROOT, roots[5], [])


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="no leaf 3"):
        inclusion_proof(LEAVES[:3], 3)
    with pytest.raises(ValueError, match="no consistency proof"):
        consistency_proof(LEAVES[:3], 4, 3)
    assert not verify_inclusion(LEAVES[0], 5, 3, [], EMPTY_ROOT)
    assert not verify_consistency(4, 3, EMPTY_ROOT, EMPTY_ROOT, [])
