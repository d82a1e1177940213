"""Child process of the audit crash tests: appends from many threads until SIGKILLed.

Run as ``python _audit_crash_child.py MODE DATA_DIR CONFIG_HOME THREADS TAG`` (TAG tells runs apart). ``MODE``
``log`` appends records straight to the data dir's ``AuditLog`` (group
commit); ``warehouse`` puts small objects through an in-process ``Warehouse``
(each put's record is appended before put returns). After each append or put
returns it prints one flushed line ``ACK <seq or -> <resource>``; the parent
kills it with SIGKILL at some point and then checks that every ACKed resource
is in the log, and that the log verifies.
"""
from __future__ import annotations

import os
import sys
import threading
from pathlib import Path


def main() -> None:
    mode, data_dir, config_home, threads, tag = sys.argv[1:6]
    os.environ["XDG_CONFIG_HOME"] = config_home
    from dwray.config import DwrayConfig
    from dwray.core.audit import open_audit_log
    from dwray.core.warehouse import Warehouse

    config = DwrayConfig(data_dir=Path(data_dir))
    out = threading.Lock()
    if mode == "log":
        log = open_audit_log(config)

        def work(n: int) -> None:
            i = 0
            while True:
                resource = f"bkt/{tag}-{n}-{i}"
                seq = log.append({"action": "s3:PutObject", "resource": resource, "outcome": "allowed"})
                with out:
                    print(f"ACK {seq} {resource}", flush=True)
                i += 1
    else:
        warehouse = Warehouse(config)
        if tag == "0":
            warehouse.create_bucket("crash-bkt")
            print("ACK - crash-bkt", flush=True)

        def work(n: int) -> None:
            i = 0
            while True:
                key = f"{tag}-{n}-{i}"
                warehouse.put("crash-bkt", key, b"x" * 100)
                with out:
                    print(f"ACK - crash-bkt/{key}", flush=True)
                i += 1

    for n in range(int(threads)):
        threading.Thread(target=work, args=(n,), daemon=True).start()
    threading.Event().wait()


if __name__ == "__main__":
    main()
