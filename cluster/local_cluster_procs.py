"""Find and stop the processes of ONE local Ray cluster started by ``start-local-cluster.sh``.

Used by the two shell scripts; not meant to be run by hand (but harmless):

    python cluster/local_cluster_procs.py list   DIR    pid, name and command of each process
    python cluster/local_cluster_procs.py record DIR    write DIR/pids (pid and start time of each)
    python cluster/local_cluster_procs.py stop   DIR [--grace SECONDS]

A cluster is identified by its state folder DIR: both nodes run with
``--temp-dir DIR/head`` and ``--temp-dir DIR/worker``, and every Ray system
process of a node (GCS, raylet, agents, log monitor, autoscaler monitor)
names its session folder ``DIR/<node>/session_...`` on its command line. The
worker processes (``ray::IDLE``, ``ray::PluginHost`` ...) are children of
the raylet. So the cluster's processes are those whose command line names a
session folder under DIR (or, for the head's Ray Client server, which names no
folder, the address recorded in DIR/address), plus all their descendants, plus any process
recorded in DIR/pids at start that is still the same process (same start
time). Nothing else is touched: not another Ray on this machine, not a driver
connected to this cluster, not the caller. ``ray stop`` is never used: it
stops every Ray process of the machine.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import psutil

NODES = ("head", "worker")


def _markers(folder: Path) -> list[str]:
    markers = [f"{folder / node}/session_" for node in NODES]
    # The head's Ray Client server names no folder, only the cluster's address.
    try:
        address = (folder / "address").read_text().strip()
    except OSError:
        address = ""
    if address:
        markers.append(f"ray.util.client.server --address={address} ")
    return markers


def _protected() -> set[int]:
    """This process and its ancestors (their command lines may name DIR)."""
    me = psutil.Process()
    return {me.pid, *(p.pid for p in me.parents())}


def _recorded(folder: Path) -> list[psutil.Process]:
    found = []
    try:
        entries = json.loads((folder / "pids").read_text())
    except (OSError, ValueError):
        return found
    for entry in entries:
        try:
            proc = psutil.Process(int(entry["pid"]))
            if abs(proc.create_time() - float(entry["create_time"])) < 0.01:
                found.append(proc)
        except (psutil.Error, KeyError, TypeError, ValueError):
            continue
    return found


def cluster_processes(folder: Path) -> list[psutil.Process]:
    """The live processes of the cluster kept in ``folder`` (see the module docstring)."""
    folder = folder.resolve()
    markers = _markers(folder)
    protected = _protected()
    uid = os.getuid()
    roots: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter(["pid", "cmdline", "uids"]):
        try:
            if proc.info["uids"] is None or proc.info["uids"].real != uid:
                continue
            command = " ".join(proc.info["cmdline"] or ())
        except psutil.Error:
            continue
        if any(marker in command for marker in markers):
            roots[proc.pid] = proc
    for proc in _recorded(folder):
        roots.setdefault(proc.pid, proc)
    found = dict(roots)
    for proc in roots.values():
        try:
            for child in proc.children(recursive=True):
                found.setdefault(child.pid, child)
        except psutil.Error:
            continue
    return [proc for pid, proc in sorted(found.items()) if pid not in protected]


def _describe(proc: psutil.Process) -> str:
    try:
        return f"{proc.pid} {proc.name()} {' '.join(proc.cmdline())[:160]}"
    except psutil.Error:
        return f"{proc.pid} (gone)"


def record(folder: Path) -> int:
    procs = cluster_processes(folder)
    entries = []
    for proc in procs:
        try:
            entries.append({"pid": proc.pid, "create_time": proc.create_time(), "name": proc.name()})
        except psutil.Error:
            continue
    target = folder / "pids"
    target.write_text(json.dumps(entries, indent=1) + "\n")
    print(f"recorded {len(entries)} processes in {target}", file=sys.stderr)
    return 0


def _name(proc: psutil.Process) -> str:
    try:
        return proc.name()
    except psutil.Error:
        return ""


def _terminate(procs: list[psutil.Process], grace: float) -> list[psutil.Process]:
    """SIGTERM ``procs``, wait up to ``grace`` s, SIGKILL the rest; return those that outlive even that."""
    for proc in procs:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace)
    if alive:
        print(f"{len(alive)} process(es) still running {grace:g} s after SIGTERM; sending SIGKILL: "
              + "; ".join(_describe(p) for p in alive), file=sys.stderr)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(alive, timeout=10)
    return alive


def stop(folder: Path, grace: float) -> int:
    """Stop every process of the cluster; 1 if any survives.

    In the order ``ray stop`` uses (raylets, then everything else, then the
    GCS: processes whose peer went first exit on their own instead of waiting
    out the grace period), each group with SIGTERM, ``grace`` seconds, SIGKILL.
    """
    # Collect the whole tree first: once a raylet is gone its workers are orphans, no longer its children.
    procs = cluster_processes(folder)
    if not procs:
        print(f"no process of the cluster in {folder} is running", file=sys.stderr)
        return 0
    raylets = [p for p in procs if _name(p) == "raylet"]
    gcs = [p for p in procs if _name(p) == "gcs_server"]
    others = [p for p in procs if p not in raylets and p not in gcs]
    survivors = []
    for group in (raylets, others, gcs):
        if group:
            survivors += _terminate(group, grace)
    # Anything that appeared meanwhile (a worker a raylet was starting) goes the same way.
    late = cluster_processes(folder)
    if late:
        survivors += _terminate(late, 1.0)
    if survivors:
        print("still running: " + "; ".join(_describe(p) for p in survivors), file=sys.stderr)
        return 1
    print(f"stopped {len(procs) + len(late)} processes of the cluster in {folder}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["list", "record", "stop"])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--grace", type=float, default=10.0, help="seconds between SIGTERM and SIGKILL")
    args = parser.parse_args(argv)
    if args.action == "list":
        for proc in cluster_processes(args.folder):
            print(_describe(proc))
        return 0
    if args.action == "record":
        return record(args.folder)
    return stop(args.folder, args.grace)


if __name__ == "__main__":
    sys.exit(main())
