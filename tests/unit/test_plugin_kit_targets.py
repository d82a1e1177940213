"""dw plugin test's target folder: a pyproject it cannot use is named, never a traceback."""
from __future__ import annotations

from pathlib import Path

import pytest

from dwray.errors import InvalidArgument
from dwray.plugin_kit.conformance import _folder_target


@pytest.mark.parametrize(("content", "said"), [
    (b"\xff\xfe not text", "cannot be read as UTF-8 text (UnicodeDecodeError)"),
    (b'project = "x"\n', "it has no table of them"),
    (b"[project]\nname = 'a'\n", "it has 0"),
    (b"[project\n", "is not valid TOML"),
])
def test_a_pyproject_it_cannot_use_is_named(tmp_path: Path, content: bytes, said: str) -> None:
    (tmp_path / "pyproject.toml").write_bytes(content)
    with pytest.raises(InvalidArgument, match="pyproject.toml") as caught:
        _folder_target(tmp_path)
    assert said in str(caught.value)


def test_a_folder_named_pyproject_is_refused(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").mkdir()
    with pytest.raises(InvalidArgument, match="IsADirectoryError"):
        _folder_target(tmp_path)
