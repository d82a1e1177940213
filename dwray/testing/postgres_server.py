"""A real PostgreSQL server on loopback, for tests (the ``postgres`` fixture) and ``dw bench --backend postgres``.

``start_postgres(folder)`` runs ``initdb`` in a fresh data folder and
``pg_ctl start`` on a free 127.0.0.1 port, trust authentication, its Unix
socket in the folder too. PostgreSQL refuses to run as root, so under root the
folder belongs to the ``postgres`` user and the binaries run as it. The server
object can ``stop()`` it (``-m immediate`` is a crash: no shutdown checkpoint)
and ``start()`` it again on the same port and data, for the outage tests.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from dwray.core.ports import free_port

__all__ = ["PostgresServer", "start_postgres", "wait_for_postgres"]

USER = "dw"
DATABASE = "postgres"
_INSTALL = "apt-get install -y postgresql"


def _bin_folder() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name))
    if not found or not os.access(os.path.join(found[-1], "pg_ctl"), os.X_OK):
        raise RuntimeError(f"PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/pg_ctl): {_INSTALL}")
    return Path(found[-1])


def _run_as() -> list[str]:
    """The prefix that runs a PostgreSQL binary: as the ``postgres`` user when we are root."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise RuntimeError(f"there is no 'postgres' user to run the server as (root may not): {_INSTALL}") from None
    return ["runuser", "-u", "postgres", "--"]


@dataclass
class PostgresServer:
    """A PostgreSQL server this session started: its DSN, port, data folder and postmaster PID."""

    folder: Path
    port: int
    bin: Path
    pid: int = 0

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def log(self) -> Path:
        return self.folder / "server.log"

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user={USER} dbname={DATABASE}"

    def _pg_ctl(self, *args: str, timeout: float = 60.0) -> None:
        done = subprocess.run([*_run_as(), str(self.bin / "pg_ctl"), "-D", str(self.data), *args],
                              check=False, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"pg_ctl {args[-1]} failed ({done.returncode}): "
                               f"{done.stderr.decode(errors='replace')[-1000:]} {log}")

    def start(self) -> None:
        """Start (again) on the same port and data folder; waits until it accepts connections."""
        self._pg_ctl("-o", f"-h 127.0.0.1 -p {self.port} -k {self.folder}", "-l", str(self.log), "-w", "-t", "60",
                     "start")
        self.pid = int((self.data / "postmaster.pid").read_text().split()[0])

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: ``fast`` (clean) or ``immediate`` (a crash, WAL replayed at the next start)."""
        if not self.pid:
            return
        self._pg_ctl("-m", mode, "-w", "-t", "60", "stop")
        self.pid = 0

    def remove(self) -> None:
        """Stop the server if it runs and delete its folder."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


def start_postgres(folder: Path) -> PostgresServer:
    """``initdb`` in ``folder`` and start the server on a free loopback port.

    ``folder`` must be reachable by the ``postgres`` user when we run as root
    (the pytest temp folders are not: the fixture uses a fresh ``mkdtemp``).
    """
    bin_folder = _bin_folder()
    prefix = _run_as()
    folder = Path(folder)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    if prefix:
        shutil.chown(folder, "postgres")
    done = subprocess.run([*prefix, str(bin_folder / "initdb"), "-D", str(folder / "data"), "-A", "trust",
                           "-U", USER, "--no-sync"],
                          check=False, capture_output=True, timeout=120, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise RuntimeError(f"initdb failed ({done.returncode}): {done.stderr.decode(errors='replace')[-2000:]}")
    server = PostgresServer(folder, free_port(), bin_folder)
    server.start()
    return server


def wait_for_postgres(server: PostgresServer, timeout: float = 30.0) -> None:
    """Wait until a client can run a query (``pg_ctl -w`` already waits; this checks from our side)."""
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(server.dsn, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
