"""The pytest plugin dwray installs (``dwray.testing.pytest_plugin``): light to load, and its warehouse fixture.

The gateway fixtures start Ray and Serve; they are tested in a pytest of their
own in ``tests/integration/test_plugin_kit.py``.
"""
from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any


def test_pytest_loads_it_by_its_entry_point() -> None:
    points = {point.name: point.value for point in entry_points(group="pytest11")}
    assert points.get("dwray") == "dwray.testing.pytest_plugin"


def test_loading_it_imports_nothing_heavy() -> None:
    probe = ("import json, sys; import dwray.testing.pytest_plugin; "
             "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
             "('ray', 'boto3', 'botocore', 'pyarrow', 'numpy', 'actors', 'serve_apps') "
             "or m.startswith(('dwray.core', 'dwray.config', 'dwray.backends')))))")
    loaded = json.loads(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                                       check=True).stdout)
    assert loaded == []


def test_dwray_warehouse_is_a_fresh_in_process_warehouse(dwray_warehouse: Any, tmp_path: Path) -> None:
    assert dwray_warehouse.list_buckets() == []
    dwray_warehouse.create_bucket("plugin-kit")
    dwray_warehouse.put("plugin-kit", "a.txt", b"hello")
    assert dwray_warehouse.get("plugin-kit", "a.txt") == b"hello"
    # Its data dir and its master key are the test's own, never the user's.
    assert dwray_warehouse.config.data_dir == tmp_path / "dwray-data"
    assert (tmp_path / "dwray-config" / "dwray" / "master.key").is_file()
