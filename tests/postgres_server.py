"""The ``postgres`` fixture (pytest plugin): a real PostgreSQL server on loopback for the session.

The server itself (``initdb`` in a temp folder, ``pg_ctl`` on a free port, run as the ``postgres``
user under root) is ``dwray.testing.postgres_server``, which ``dw bench --backend postgres`` uses too.
"""
from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dwray.testing.postgres_server import PostgresServer, start_postgres, wait_for_postgres

__all__ = ["PostgresServer", "postgres", "start_postgres"]


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL server for the session (user ``dw``, trust auth, database ``postgres``)."""
    # Not under pytest's temp folder: that one is 0700 root, out of reach of the postgres user.
    server = start_postgres(Path(tempfile.mkdtemp(prefix="dwray-pg-")))
    try:
        wait_for_postgres(server)
        yield server
    finally:
        server.remove()
