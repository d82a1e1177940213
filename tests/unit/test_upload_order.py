"""Upload sessions keep chunk order when appends arrive concurrently (a plugin host serves calls on 8 threads)."""
from __future__ import annotations

import itertools
import threading

from dwray.builtins.storage import MemoryStoragePlugin


def test_concurrent_appends_are_written_in_sequence_order() -> None:
    plugin = MemoryStoragePlugin()
    chunks = [bytes([index % 251]) * (1 + index % 7) for index in range(600)]
    upload = plugin.begin_upload("t/b/concurrent")
    counter = itertools.count()
    lock = threading.Lock()
    start = threading.Barrier(8)

    def appender() -> None:
        start.wait()
        while True:
            with lock:
                seq = next(counter)
            if seq >= len(chunks):
                return
            # Each call appends the chunk due next as soon as it is taken, so
            # calls racing each other each release their own chunk to the writer.
            plugin.append(upload, seq, chunks[seq])

    threads = [threading.Thread(target=appender) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert plugin.finish_upload(upload) == sum(map(len, chunks))
    assert plugin.get_blob("t/b/concurrent").tobytes() == b"".join(chunks)
