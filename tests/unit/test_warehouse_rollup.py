"""S3's delimiter roll-up, the one both listings (keys, and uploads in progress) page with."""
from __future__ import annotations

from collections.abc import Iterator

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dwray.core.warehouse.rollup import RolledUp, common_prefix, roll_up, successor


class Keys:
    """A sorted listing that records where each scan started, as the catalog's paged queries do."""

    def __init__(self, keys: list[str], start: tuple[str, bool] | None = None) -> None:
        self.keys = sorted(keys)
        self.start = start
        self.scans: list[str | None] = []

    def scan(self, after: str | None) -> Iterator[str]:
        self.scans.append(after)
        first, inclusive = (after, True) if after is not None else (self.start or ("", True))
        return iter([key for key in self.keys if key > first or (inclusive and key == first)])


def page(keys: Keys, *, prefix: str = "", delimiter: str | None = "/", limit: int = 1000) -> RolledUp[str]:
    return roll_up(keys.scan, lambda key: key, prefix=prefix, delimiter=delimiter, limit=limit)


def test_keys_under_a_delimiter_roll_up_and_the_scan_jumps_past_them() -> None:
    keys = Keys(["a/1", "a/2", "a/3", "b", "c/x/y", "c/z", "d"])
    found = page(keys)
    assert (found.entries, found.common_prefixes, found.is_truncated) == (["b", "d"], ["a/", "c/"], False)
    # Each common prefix restarts the scan after every key under it: "a/2", "a/3" and "c/z" are never read.
    assert keys.scans == [None, "a0", "c0"]


def test_without_a_delimiter_every_key_is_an_entry() -> None:
    for delimiter in (None, ""):
        found = page(Keys(["a/1", "a/2", "b"]), delimiter=delimiter)
        assert (found.entries, found.common_prefixes) == (["a/1", "a/2", "b"], [])


def test_the_delimiter_counts_only_after_the_prefix() -> None:
    found = page(Keys(["a/b", "a/b/c", "a/b/d", "a/c"]), prefix="a/")
    assert (found.entries, found.common_prefixes) == (["a/b", "a/c"], ["a/b/"])
    found = page(Keys(["x--y--z", "x--w"]), prefix="x", delimiter="--")
    assert found.common_prefixes == ["x--"]  # a delimiter of several characters, starting right at the prefix


def test_a_page_is_truncated_only_when_something_is_left_over() -> None:
    assert page(Keys(["a", "b"]), limit=2) == RolledUp(["a", "b"], [], False)
    assert page(Keys(["a", "b", "c"]), limit=2) == RolledUp(["a", "b"], [], True, ("b", False))
    # Ending in a common prefix, the next page starts past everything under it (inclusive).
    assert page(Keys(["a", "b/1", "b/2", "c"]), limit=2) == RolledUp(["a"], ["b/"], True, ("b0", True))
    assert page(Keys(["a", "b/1", "b/2"]), limit=2) == RolledUp(["a"], ["b/"], False)
    # A limit of 0 lists nothing and is never truncated, as S3 answers max-keys=0.
    assert page(Keys(["a"]), limit=0) == RolledUp([], [], False)


def test_repeated_keys_are_separate_entries() -> None:
    """Uploads in progress: one key may have several, each listed (or rolled up) on its own."""
    uploads = [("b", "u1"), ("b", "u2"), ("c/d", "u3"), ("c/e", "u4")]

    def scan(after: str | None) -> Iterator[tuple[str, str]]:
        return iter([upload for upload in uploads if after is None or upload[0] >= after])

    found = roll_up(scan, lambda upload: upload[0], prefix="", delimiter="/", limit=10)
    assert (found.entries, found.common_prefixes) == ([("b", "u1"), ("b", "u2")], ["c/"])
    truncated = roll_up(scan, lambda upload: upload[0], prefix="", delimiter="/", limit=1)
    assert truncated == RolledUp([("b", "u1")], [], True, ("b", False))


def test_a_prefix_with_nothing_after_it_ends_the_listing() -> None:
    top = chr(0x10FFFF)
    keys = Keys(["a", top + "a", top + "b"])
    # Nothing sorts after every key under the prefix: the listing ends there, not truncated.
    assert page(keys, delimiter=top, limit=2) == RolledUp(["a"], [top], False)
    assert keys.scans == [None]


def test_successor_and_common_prefix() -> None:
    assert successor("a/") == "a0"
    assert successor("a\ud7ff") == "a\ue000"  # surrogates are not characters of a key
    assert successor("a" + chr(0x10FFFF)) == "b"
    assert successor(chr(0x10FFFF)) is None and successor("") is None
    assert common_prefix("a/b/c", "a/", "/") == "a/b/"
    assert common_prefix("a/b", "a/", "/") is None
    assert common_prefix("a/b", "", None) is None


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])  # CI machines may be loaded
@given(keys=st.lists(st.text(alphabet="ab/", max_size=5), unique=True, max_size=25),
       prefix=st.sampled_from(["", "a", "a/", "b/"]), delimiter=st.sampled_from([None, "/", "b", "/a"]),
       limit=st.integers(1, 6))
def test_pages_chained_by_their_resume_point_list_what_s3_would(keys: list[str], prefix: str,
                                                                delimiter: str | None, limit: int) -> None:
    under = sorted(key for key in keys if key.startswith(prefix))
    expected_entries = [key for key in under if common_prefix(key, prefix, delimiter) is None]
    expected_prefixes = list(dict.fromkeys(p for key in under if (p := common_prefix(key, prefix, delimiter))))
    entries: list[str] = []
    prefixes: list[str] = []
    start: tuple[str, bool] | None = None
    for _ in range(len(keys) + 1):
        found = page(Keys(under, start), prefix=prefix, delimiter=delimiter, limit=limit)
        assert len(found.entries) + len(found.common_prefixes) <= limit
        entries += found.entries
        prefixes += found.common_prefixes
        if not found.is_truncated:
            break
        assert found.resume is not None
        start = found.resume
    assert (entries, prefixes) == (expected_entries, expected_prefixes)
