"""``dw audit verify|proof|tail|query``: check and read the data dir's tamper-evident audit log.

They read the log's files directly and read-only (``dwray.core.audit.reader``),
so they work while the warehouse runs, and need no gateway: whoever runs them
can read the data dir and the audit signing key (beside the master key), an
operator.
"""
from __future__ import annotations

import re
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from dwray.cli.app import cli
from dwray.cli.output import emit, print_table, printable, stdout
from dwray.cli.state import State, command, command_config
from dwray.core.access_keys import iso_timestamp
from dwray.core.audit import AuditLocations
from dwray.core.audit.checkpoints import CheckpointSigner
from dwray.core.audit.reader import AuditReader
from dwray.core.audit.records import FIELDS
from dwray.core.audit.verify import inclusion_report, verify_log
from dwray.errors import InvalidArgument

__all__ = ["audit_group"]

# Exit status of 'dw audit verify' when the log fails a check (1 is a usage or runtime error).
EXIT_TAMPERED = 2
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@cli.group("audit")
def audit_group() -> None:
    """The tamper-evident audit log: verify it, prove an entry is in it, read it."""


def _locations(state: State) -> AuditLocations:
    return AuditLocations.of(command_config(state))


@command(audit_group, "verify")
@click.option("--monitor-state", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="where this monitor remembers the last verified checkpoint (default: [audit] monitor_state)")
def audit_verify(state: State, as_json: bool, monitor_state: Path | None) -> None:
    """Re-hash every entry, check every signed checkpoint and copy, and prove consistency with the last run.

    Exits 0 when the log is intact, 2 naming the first bad entry when not.
    """
    locations = _locations(state)
    public_key = CheckpointSigner(locations.signing_key, create=False).public_key
    with AuditReader(locations) as reader:
        report = verify_log(reader, public_key, copy_dir=locations.copy_dir,
                            monitor_state=monitor_state or locations.monitor_state)
    emit(as_json, report.to_dict(), lambda: _print_verify(report.to_dict()))
    if not report.ok:
        sys.exit(EXIT_TAMPERED)


def _print_verify(report: dict[str, Any]) -> None:
    if report["ok"]:
        previous = report["monitor_previous_size"]
        since = f", consistent with the {previous} entries verified before" if previous is not None else ""
        stdout.print(f"audit log intact: {report['size']} entries, root {report['root']}, "
                     f"{report['checkpoints_checked']} signed checkpoints and {report['copies_checked']} "
                     f"copies checked{since}", highlight=False)
        return
    first = report["first_bad_seq"]
    stdout.print(f"[red]audit log FAILED verification[/red]: first bad entry: "
                 f"{first if first is not None else 'none named'}", highlight=False)
    for finding in report["findings"]:
        stdout.print(f"  - {escape(finding['problem'])}", highlight=False)


@command(audit_group, "proof")
@click.argument("seq", type=int)
def audit_proof(state: State, as_json: bool, seq: int) -> None:
    """The inclusion proof (RFC 6962 audit path) of entry SEQ in the newest signed checkpoint."""
    locations = _locations(state)
    public_key = CheckpointSigner(locations.signing_key, create=False).public_key
    with AuditReader(locations) as reader:
        try:
            proof = inclusion_report(reader, public_key, seq)
        except ValueError as exc:
            raise InvalidArgument(str(exc)) from None
    emit(as_json, proof, lambda: _print_proof(proof))
    if not proof["verified"]:
        sys.exit(EXIT_TAMPERED)


def _print_proof(proof: dict[str, Any]) -> None:
    lines = [f"entry       {proof['seq']}", f"record      {proof['record']}", f"leaf hash   {proof['leaf_hash']}",
             f"tree size   {proof['tree_size']}", f"root        {proof['root']}",
             f"signature   {proof['checkpoint']['signature']} (key {proof['checkpoint']['key_id']})",
             "audit path (bottom up):"]
    lines += [f"  {node}" for node in proof["audit_path"]]
    lines.append(f"verified    {'yes' if proof['verified'] else 'NO'}")
    for line in lines:
        stdout.print(escape(line), highlight=False)


@command(audit_group, "tail")
@click.option("-n", "count", type=click.IntRange(min=1), default=20, show_default=True, help="how many entries")
def audit_tail(state: State, as_json: bool, count: int) -> None:
    """The newest entries."""
    with AuditReader(_locations(state)) as reader:
        records = reader.tail(count)
    emit(as_json, records, lambda: _print_records(records))


@command(audit_group, "query")
@click.option("--tenant", default=None, help="only this tenant's entries")
@click.option("--op", default=None, help="only this action: s3:GetObject, or GetObject")
@click.option("--since", default=None, help="from this time: ISO 8601, epoch seconds, or ago (30m, 2h, 7d)")
@click.option("--until", default=None, help="before this time (same forms)")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="at most this many (oldest first)")
def audit_query(state: State, as_json: bool, tenant: str | None, op: str | None, since: str | None,
                until: str | None, limit: int | None) -> None:
    """Entries matching every filter given, oldest first."""
    with AuditReader(_locations(state)) as reader:
        records = reader.query(tenant=tenant, action=op, since=_when("--since", since),
                               until=_when("--until", until), limit=limit)
    emit(as_json, records, lambda: _print_records(records))


def _when(option: str, value: str | None) -> float | None:
    if value is None:
        return None
    relative = _RELATIVE.match(value)
    if relative:
        return time.time() - float(relative.group(1)) * _UNIT_SECONDS[relative.group(2)]
    try:
        return float(value)
    except ValueError:
        pass
    moment = iso_timestamp(value)
    if moment is None:
        raise InvalidArgument(f"{option} {value!r}: give an ISO 8601 time, epoch seconds, or an age "
                              "such as 30m, 2h or 7d")
    return moment


def _print_records(records: list[dict[str, Any]]) -> None:
    table = Table(box=None)
    columns = ["seq", *FIELDS]
    for column in columns:
        table.add_column(column)
    for record in records:
        when = datetime.fromtimestamp(record["time"], tz=timezone.utc).isoformat(timespec="milliseconds")
        table.add_row(*(when if column == "time" else escape(_cell(record.get(column))) for column in columns))
    print_table(table)


def _cell(value: Any) -> str:
    """A field as shown: absent is blank, but entry 0 is "0"; control characters (a key may hold them) escaped."""
    return "" if value is None else printable(str(value))
