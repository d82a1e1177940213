"""``dw scrub``: verify every blob of every storage target now, or show the last pass's report.

``dw scrub`` runs one pass at once, through the running warehouse's storage
actors when one serves the data dir, else on the data dir in this process
(offline: it holds the data dir's lock for the pass). ``dw scrub --report``
prints the last pass's report, whoever ran it (the scrubber actor or ``dw
scrub``), without touching any storage.
"""
from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from dwray.cli.app import cli
from dwray.cli.output import emit, print_table, stderr, stdout
from dwray.cli.state import State, command, command_config
from dwray.config import parse_size
from dwray.core.scrubbing import COUNTS, load_report
from dwray.errors import InvalidArgument

__all__ = ["scrub_command"]


@command(cli, "scrub")
@click.option("--report", "report_only", is_flag=True, help="print the last pass's report; scrub nothing")
@click.option("--rate", default=None, help="bytes per second at most, e.g. 100MB (default: [scrub] rate)")
def scrub_command(state: State, as_json: bool, report_only: bool, rate: str | None) -> None:
    """Verify every blob of every pool and backend now (repairing from replicas), or show the last report."""
    if report_only:
        config = command_config(state)
        report = load_report(config.data_dir)
        if report is None:
            raise InvalidArgument(f"no scrub pass has finished for data dir {str(config.data_dir)!r} yet; "
                                  "run 'dw scrub'")
    else:
        try:
            rate_bytes = parse_size(rate) if rate is not None else None
        except ValueError as exc:
            raise InvalidArgument(f"--rate: {exc}") from None
        if rate_bytes is not None and (not isinstance(rate_bytes, int) or rate_bytes <= 0):
            raise InvalidArgument("--rate must be a positive number of bytes per second")

        def progress(target: str, step: dict[str, Any]) -> None:
            if not as_json:
                stderr.print(f"scrub {target}: {step['blobs']} blob(s), {step['bytes'] >> 20} MiB",
                             highlight=False)

        report = state.warehouse.scrub(rate=rate_bytes, on_step=progress)
    emit(as_json, report, lambda: print_report(report))


def print_report(report: dict[str, Any]) -> None:
    table = Table(title="scrub pass" + ("" if report.get("complete") else " (incomplete)"))
    for column in ("target", *COUNTS, "unrepairable", "status"):
        table.add_column(column, justify="right" if column in COUNTS else "left")
    for name, totals in report["targets"].items():
        status = totals["error"] or ("complete" if totals["complete"] else "stopped")
        table.add_row(name, *(str(totals[count]) for count in COUNTS), str(len(totals["unrepairable"])), status)
    print_table(table)
    for name, totals in report["targets"].items():
        for blob_id in totals["unrepairable"]:
            stdout.print(f"unrepairable on {name}: {blob_id}", highlight=False)
    stdout.print(f"{report['seconds']:.1f} s at most {report['rate'] >> 20} MiB/s", highlight=False)
