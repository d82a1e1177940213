"""Child process for the keyring crash tests: opens (migrates) or shreds a keyring and dies by SIGKILL on cue.

Run as ``python _keyring_crash_child.py KEYRING MASTER_REF OP POINT NTH``. ``OP`` is
``open`` (``LocalKeyring(KEYRING, MASTER_REF)``, which seals a plaintext keyring
in place) or ``destroy:<kek id>`` (open, then crypto-shred that KEK). ``POINT``
names where to die, on the ``NTH`` matching call (1-based):

    write_mid                          os.write into the keyring's temp file: write half, then die
    fsync_file_before / _after         os.fsync of the temp file
    replace_before / replace_after     os.replace of the temp file over the keyring
    fsync_dir_before / _after          os.fsync of the keys folder
    unlink_stale_after                 os.unlink of a stale temp file another writer left
    none                               no fault

Only calls on the keyring's own folder count. Faults are injected here, by
wrapping ``os`` functions at runtime: nothing in the product knows about it.
Prints ``KILL <point>`` just before dying and ``DONE`` when the operation finished.
"""
from __future__ import annotations

import os
import signal
import stat
import sys
from pathlib import Path

POINTS = ("write_mid", "fsync_file_before", "fsync_file_after", "replace_before", "replace_after",
          "fsync_dir_before", "fsync_dir_after", "unlink_stale_after")


def main() -> None:
    keyring_path, master_ref, op, point = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    nth = int(sys.argv[5])
    folder = str(keyring_path.parent.resolve())
    seen = {"n": 0}

    def fire(name: str) -> None:
        if name != point:
            return
        seen["n"] += 1
        if seen["n"] == nth:
            print(f"KILL {point}", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

    def in_folder_fd(fd: int) -> bool:
        try:
            return os.path.dirname(os.readlink(f"/proc/self/fd/{fd}")) == folder
        except OSError:
            return False

    def fd_is_dir(fd: int) -> bool:
        return stat.S_ISDIR(os.fstat(fd).st_mode)

    real_write, real_fsync, real_replace, real_unlink = os.write, os.fsync, os.replace, os.unlink

    def write(fd: int, data: bytes) -> int:
        if point == "write_mid" and in_folder_fd(fd) and os.readlink(f"/proc/self/fd/{fd}").endswith(".tmp"):
            real_write(fd, bytes(memoryview(data)[: len(data) // 2]))
            fire("write_mid")
        return real_write(fd, data)

    def fsync(fd: int) -> None:
        if fd_is_dir(fd):
            mine = os.readlink(f"/proc/self/fd/{fd}") == folder
            if mine:
                fire("fsync_dir_before")
            real_fsync(fd)
            if mine:
                fire("fsync_dir_after")
            return
        mine = in_folder_fd(fd)
        if mine:
            fire("fsync_file_before")
        real_fsync(fd)
        if mine:
            fire("fsync_file_after")

    def replace(src: object, dst: object, *args: object, **kwargs: object) -> None:
        mine = os.path.dirname(os.path.abspath(os.fspath(dst))) == folder  # type: ignore[arg-type]
        if mine:
            fire("replace_before")
        real_replace(src, dst, *args, **kwargs)  # type: ignore[arg-type]
        if mine:
            fire("replace_after")

    def unlink(path: object, *args: object, **kwargs: object) -> None:
        real_unlink(path, *args, **kwargs)  # type: ignore[arg-type]
        name = os.fspath(path)  # type: ignore[arg-type]
        if os.path.dirname(os.path.abspath(name)) == folder and name.endswith(".tmp"):
            fire("unlink_stale_after")

    os.write, os.fsync, os.replace, os.unlink = write, fsync, replace, unlink  # type: ignore[assignment]

    from dwray.core.keyring import LocalKeyring

    keyring = LocalKeyring(keyring_path, master_ref, create_master=False)
    if op.startswith("destroy:"):
        keyring.destroy(op.removeprefix("destroy:"))
    print("DONE", flush=True)


if __name__ == "__main__":
    main()
