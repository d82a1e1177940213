"""``secret://file/PATH``: a secret in a file of its own, as orchestrators mount them.

Read-only. The value is the file's contents minus one trailing newline (so
``echo value > file`` works). A file that its group or others may read or
write is refused, naming the path and the fix (``chmod 600``): a secret
readable by every account on the host is not a secret. (Kubernetes mounts
secrets 0644 unless the volume sets ``defaultMode: 0400``.)

Relative paths are relative to the working directory; ``secret://file//run/s``
names the absolute ``/run/s``. The version of a value is a keyed fingerprint
that changes when the contents do.
"""
from __future__ import annotations

import builtins
import os
import stat
from pathlib import Path

from dwray.errors import SecretNotFound, SecretUnavailable
from dwray.secrets.base import UnversionedSecretManager

__all__ = ["FileSecretManager", "read_secret_file"]


def read_secret_file(path: Path, ref: str) -> bytes:
    """The contents of a private secret file; ``SecretNotFound`` / ``SecretUnavailable`` say what is wrong."""
    try:
        with open(path, "rb") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            if not stat.S_ISREG(mode):
                raise SecretUnavailable(ref, f"{path} is not a regular file")
            if mode & (stat.S_IRGRP | stat.S_IWGRP | stat.S_IROTH | stat.S_IWOTH):
                raise SecretUnavailable(ref, f"{path} may be read or written by other accounts (mode "
                                             f"{stat.S_IMODE(mode):04o}); make it private: chmod 600 {path}")
            return handle.read()
    except FileNotFoundError:
        raise SecretNotFound(ref, f"there is no file {path}") from None
    except IsADirectoryError:
        raise SecretUnavailable(ref, f"{path} is a folder, not a file") from None
    except PermissionError:
        raise SecretUnavailable(ref, f"this process may not read {path}") from None
    except OSError as exc:
        raise SecretUnavailable(ref, f"cannot read {path}: {exc.strerror}") from None


def _strip_newline(raw: bytes) -> bytes:
    if raw.endswith(b"\r\n"):
        return raw[:-2]
    return raw[:-1] if raw.endswith(b"\n") else raw


class FileSecretManager(UnversionedSecretManager):
    """Reads secrets from private files."""

    scheme = "file"
    history = "a file"

    def _raw(self, name: str) -> bytes:
        self.check_name(name)
        return _strip_newline(read_secret_file(Path(name), self.ref(name)))

    def list(self, prefix: str = "") -> builtins.list[str]:
        """The files in ``prefix``'s folder whose path starts with ``prefix`` (a folder prefix ends with ``/``)."""
        folder = prefix[:prefix.rfind("/") + 1]
        try:
            entries = builtins.list(os.scandir(folder or "."))
        except OSError:
            return []
        return sorted(folder + entry.name for entry in entries
                      if (folder + entry.name).startswith(prefix) and entry.is_file())
