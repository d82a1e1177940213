"""What ``dw`` tables show of stored names: keys may hold control characters (as in S3), which a
terminal would obey, so tables show them escaped (``dw ls`` end to end: tests/integration/test_cli.py)."""
from __future__ import annotations

from dwray.cli.audit_cmds import _cell
from dwray.cli.output import printable


def test_control_characters_are_shown_escaped() -> None:
    assert printable("a\x1b]0;title\x07b\nc\td\x7f\x9b") == "a\\x1b]0;title\\x07b\\x0ac\\x09d\\x7f\\x9b"
    assert printable("plain é/日本 ~") == "plain é/日本 ~"


def test_audit_cells_escape_a_resource_holding_a_key() -> None:
    assert _cell("bkt/evil\x1b[2J") == "bkt/evil\\x1b[2J"
    assert _cell(None) == "" and _cell(0) == "0"
