"""Closing a ``CatalogReader`` while other threads read through it.

A reader is replaced (and the old one closed) whenever its caller learns the
catalog restarted. Closing a SQLite connection while another thread steps a
statement on it crashes the process, so this runs in a subprocess: threads
read in a loop while the main thread closes reader after reader under them.
A crash shows as the subprocess's exit by a signal; each read must either
answer or say "fall back" (``LocalReadUnavailable``).
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

STRESS = textwrap.dedent('''
    import sys, threading, time
    from pathlib import Path
    from dwray.core.catalog.reader import CatalogReader, LocalReadUnavailable
    from dwray.core.catalog.store import Catalog

    path = Path(sys.argv[1])
    catalog = Catalog(path)
    catalog.create_bucket("default", "bucket-one", "b-1")
    readers = [CatalogReader(path)]
    stop = threading.Event()
    answered = [0] * 4
    fell_back = [0] * 4
    wrong = []

    def read(n):
        while not stop.is_set():
            try:
                if readers[-1].get_bucket("default", "bucket-one").name != "bucket-one":
                    wrong.append(n)
                answered[n] += 1
            except LocalReadUnavailable:
                fell_back[n] += 1

    threads = [threading.Thread(target=read, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 3.0
    swaps = 0
    while time.monotonic() < deadline and swaps < 3000:
        readers.append(CatalogReader(path))
        readers[-2].close()
        swaps += 1
    stop.set()
    for thread in threads:
        thread.join()
    print(swaps, sum(answered), sum(fell_back), len(wrong))
''')


def test_closing_readers_under_concurrent_reads_never_crashes(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", STRESS, str(tmp_path / "catalog.db")], capture_output=True,
                          text=True, timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    swaps, answered, fell_back, wrong = map(int, done.stdout.split())
    assert swaps > 100 and answered > 100 and wrong == 0, done.stdout
