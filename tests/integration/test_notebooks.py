"""Every notebook in ``notebooks/`` runs top to bottom on a fresh kernel, as a newcomer would run it.

Each kernel gets a data dir of its own (``DWRAY_DATA_DIR``), its working
folder in the test's temporary folder, and no ``RAY_ADDRESS``: the notebooks
start their own local Ray (``address="local"``), never the tests' cluster.
A cell that raises fails the test (nbclient's ``CellExecutionError`` carries
the traceback); so does a notebook that shows less than it promises
(``EXPECTED``: text its outputs must hold, besides the checks its own last
cell makes) or that leaves its gateway running.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parents[2] / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT = 300  # seconds for any one cell: a hung gateway start fails instead of holding CI
#: Off in CI: no notebook shows them, and they are a dozen processes more to start on a shared machine (Ray's
#: dashboard, the scrubber, the housekeeper: each is tested on its own elsewhere).
LIGHTER = {"DWRAY_RUNTIME__DASHBOARD": "false", "DWRAY_SCRUB__INTERVAL": "0", "DWRAY_SWEEPER__INTERVAL": "0"}

#: Text each notebook's outputs must contain: what the notebook shows a reader, beyond "it did not raise".
EXPECTED: dict[str, tuple[str, ...]] = {
    "quickstart.ipynb": ("b'id,total'", "'Lisbon'", "'sales'", "b'written with boto3'", "1000",
                         "'orders-lisbon.parquet'"),
    "operations.ipynb": ("image/png", "supervisor running", "'PutObject': ", "healed: storage:local generation",
                         "failure"),
    "security.ipynb": ("reader writes -> AccessDenied", "default tenant reads analytics' object -> AccessDenied",
                       "a write past the quota -> QuotaExceeded", "the revoked ETL key -> InvalidAccessKeyId",
                       "'ok': True", "the marker is in 0 of them", "ciphertext on disk:"),
    "writing-a-plugin.ipynb": ("storage.acme-folder", " passed", "exit code 0", "plaintext on disk: False"),
}


def _outputs(notebook: Any) -> list[dict[str, Any]]:
    return [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.get("outputs", [])]


def _text(output: dict[str, Any]) -> str:
    """What an output shows: stream text, plain-text reprs, and the MIME types of rich data (images)."""
    if output.get("output_type") == "stream":
        return output.get("text", "")
    data = output.get("data", {})
    return "\n".join([data.get("text/plain", ""), *data])


def test_there_are_notebooks() -> None:
    assert NOTEBOOKS, "notebooks/ holds no notebook"


def test_every_notebook_says_what_it_must_show() -> None:
    missing = sorted({path.name for path in NOTEBOOKS} - set(EXPECTED))
    assert not missing, f"add the text these notebooks must show to EXPECTED: {missing}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data_dir = tmp_path / "data"
    monkeypatch.setenv("DWRAY_DATA_DIR", str(data_dir))
    # The kernel must start its own local Ray, not attach to the tests' cluster.
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    for name, value in LIGHTER.items():
        monkeypatch.setenv(name, value)
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=CELL_TIMEOUT, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()

    outputs = _outputs(notebook)
    assert not [out for out in outputs if out.get("output_type") == "error"]
    assert all(cell.get("execution_count") for cell in notebook.cells if cell.cell_type == "code")
    shown = "\n".join(_text(out) for out in outputs)
    missing = [text for text in EXPECTED.get(path.name, ()) if text not in shown]
    assert not missing, f"{path.name}'s outputs lack {missing}"
    # A gateway the notebook started was stopped: 'dw up' state is removed on stop.
    assert not (data_dir / "gateway" / "gateway.json").exists(), f"{path.name} left its gateway running"
