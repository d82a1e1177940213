"""Fixtures shared by the unit tests."""
from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest


@pytest.fixture
def handler_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop in a thread of its own, like the one Serve runs user code on when told to use a separate thread."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()
