"""The files a running gateway leaves for local ``dw`` commands: its address and an admin token.

The admin token file (0600, in a 0700 folder) is kept outside the data dir,
at ``$XDG_CONFIG_HOME/dwray/admin-tokens/<digest of the data dir's path>``,
because a copy of the data dir must hold no credential. It is a named token,
``dw-up@<host>``, issued on every start of a gateway on that host and
replacing (revoking) the one issued before under that name. So a lost
or copied file holds a token that the next start revokes, and that
``dw admin-token revoke dw-up@<host>`` revokes at once: no orphan stays valid.

Token files, this one and those that ``dw admin-token create --output-file``
writes or ``--admin-token-file`` reads, must be private to their owner: one
that others may read is refused rather than used.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import socket
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dwray.config import default_master_key_path
from dwray.errors import InvalidArgument

if TYPE_CHECKING:
    from dwray.core.access_keys import AccessKeys, BootstrapResult

__all__ = ["GatewayFiles", "issue_local_admin_token", "local_token_name", "read_token_file", "write_private_file"]

LOCAL_TOKEN_PREFIX = "dw-up@"
_MAX_TOKEN_FILE = 4096


@dataclass(frozen=True)
class GatewayFiles:
    """Where a running gateway leaves what local ``dw`` commands need."""

    folder: Path

    @property
    def state(self) -> Path:
        return self.folder / "gateway.json"

    @property
    def admin_token(self) -> Path:
        """Beside the master key, not in the data dir: one file per data dir, named by its path's digest."""
        digest = hashlib.sha256(str(self.folder.resolve()).encode("utf-8")).hexdigest()[:32]
        return default_master_key_path().parent / "admin-tokens" / digest

    def write_state(self, state: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        temp = self.state.with_suffix(".tmp")
        temp.write_text(json.dumps(state, indent=2))
        os.replace(temp, self.state)

    def read_state(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.state.read_text())
        except (FileNotFoundError, ValueError):
            return None

    def write_admin_token(self, token: str) -> None:
        """The admin token, readable by the owner only (0600 from creation, never wider), in a 0700 folder."""
        folder = self.admin_token.parent
        for created in (folder.parent, folder):
            created.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(created, 0o700)
        write_private_file(self.admin_token, token)

    def read_admin_token(self) -> str | None:
        """The token in ``admin-token``, or ``None`` if there is none; refused if others may read the file."""
        try:
            return read_token_file(self.admin_token)
        except FileNotFoundError:
            return None

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold this folder's ``.lock`` (flock): gateway replicas starting together on one host issue
        and write the local token one at a time, so the file always ends with the newest token."""
        self.folder.mkdir(parents=True, exist_ok=True)
        os.chmod(self.folder, 0o700)
        fd = os.open(self.folder / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def write_private_file(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, created 0600 (never wider, whatever the umask), and fsynced."""
    path = Path(path)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode("utf-8") + b"\n")
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        temp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(temp, path)


def read_token_file(path: Path) -> str:
    """The token in ``path`` (a file of one line).

    Refused, naming the file and what is wrong, unless it is a regular file
    owned by this user (or root) that nobody else may read or write (mode
    0600 or 0400): a token in a file others can read is a token others may have.
    ``FileNotFoundError`` if there is no such file.
    """
    path = Path(path)
    # The checks are on the open file (fstat), so the file cannot be swapped between check and read.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise
    except OSError as error:
        raise InvalidArgument(f"cannot read admin token file {path}: {error.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InvalidArgument(f"admin token file {path} is not a regular file")
        if info.st_uid not in (os.getuid(), 0):
            raise InvalidArgument(f"admin token file {path} belongs to user id {info.st_uid}, not to you")
        if info.st_mode & 0o077:
            raise InvalidArgument(f"admin token file {path} may be read or written by others "
                                  f"(mode {stat.S_IMODE(info.st_mode):04o}); make it private: chmod 600 {path}")
        raw = os.read(fd, _MAX_TOKEN_FILE + 1)
    finally:
        os.close(fd)
    if len(raw) > _MAX_TOKEN_FILE:
        raise InvalidArgument(f"admin token file {path} is too long to hold a token")
    try:
        token = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        raise InvalidArgument(f"admin token file {path} does not hold a token (not ASCII text)") from None
    if not token or any(ch.isspace() for ch in token):
        raise InvalidArgument(f"admin token file {path} does not hold a token (empty, or more than one word)")
    return token


def local_token_name(host: str | None = None) -> str:
    """``dw-up@<host>``: the name of the token a gateway on ``host`` (default: this one) leaves in its files."""
    host = re.sub(r"[^A-Za-z0-9._-]", "-", host if host is not None else socket.gethostname()).strip(".-_")
    return LOCAL_TOKEN_PREFIX + (host[:64 - len(LOCAL_TOKEN_PREFIX)] or "localhost")


def issue_local_admin_token(keys: AccessKeys, files: GatewayFiles, default_tenant: str,
                            host: str | None = None) -> BootstrapResult | None:
    """On a gateway's start: the first start's tenant, key and token, or a fresh local token.

    The first start (no admin token and no access key yet) creates the default
    tenant, its first access key and the token ``dw-up@<host>``, and returns
    them to be shown once. Every later start issues a new ``dw-up@<host>``
    token that replaces the previous one of that name, and returns ``None``.
    The token goes to ``files.admin_token`` either way.
    """
    name = local_token_name(host)
    with files.locked():
        first = keys.bootstrap(default_tenant, name)
        if first is not None:
            files.write_admin_token(first.admin_token)
            return first
        new = keys.create_admin_token(name, description="the token 'dw up' leaves for local dw commands; "
                                                        "replaced on every start", replace=True)
        files.write_admin_token(new.token)
        return None
