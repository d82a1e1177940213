"""The patch of Ray Serve's gRPC request stream: the installed Ray must be the one it was
written for (so an upgrade fails here, naming what changed), and once applied the
stream must stop reading a call while the handler is behind.

No Serve runs here: the stream is driven the way Serve's replica drives it, the
call's messages read on the server loop (this test's) and the handler on a loop
of its own in another thread. The call is a real async iterator that counts
what has been read from it.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
import ray
from ray.serve._private import direct_ingress_grpc_util, replica

from serve_apps import serve_patch_grpc
from serve_apps.serve_patch_grpc import (
    GRPC_RECEIVE_STREAM,
    GRPC_STREAM_MESSAGES,
    bound_grpc_queue,
    bound_grpc_streams,
    grpc_stream_problems,
)

SERVE_STREAM = direct_ingress_grpc_util.gRPCDIReceiveStream
MESSAGES = GRPC_STREAM_MESSAGES * 4


def test_installed_serve_is_the_one_the_patch_was_written_for() -> None:
    problems = grpc_stream_problems()
    assert not problems, (
        f"Ray {ray.__version__}'s Serve is not the one serve_apps/serve_patch_grpc.py was written for, so "
        "the gateway would no longer bound gRPC request streams. Re-read the class, port the patch to it and "
        "update _KNOWN_MEMBERS (serve_patches._fingerprints(gRPCDIReceiveStream) gives the new values):\n  "
        + "\n  ".join(problems))


def test_the_patch_targets_the_class_the_replica_uses() -> None:
    assert f"{SERVE_STREAM.__module__}.{SERVE_STREAM.__qualname__}" == GRPC_RECEIVE_STREAM
    assert replica.gRPCDIReceiveStream is SERVE_STREAM


class Call:
    """A client-streaming call's request iterator: ``count`` messages as fast as asked, then the end,
    or an error after ``fail_after`` messages."""

    def __init__(self, count: int, fail_after: int | None = None) -> None:
        self.count = count
        self.fail_after = fail_after
        self.read = 0

    async def messages(self) -> AsyncIterator[bytes]:
        while self.read < self.count:
            await asyncio.sleep(0)
            if self.fail_after is not None and self.read == self.fail_after:
                raise ConnectionResetError("the client went away")
            self.read += 1
            yield b"%d" % self.read


@pytest.fixture
def bounded_stream() -> type:
    """A subclass of Serve's stream with the patch applied: Serve's own class stays as installed."""
    stream = type("BoundedStream", (SERVE_STREAM,), {})
    bound_grpc_queue(stream)
    return stream


async def reads_stop_at(call: Call, count: int) -> None:
    """Assert the stream reads ``count`` messages of the call and then no more (it waits for room)."""
    async with asyncio.timeout(10):
        while call.read < count:
            await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)  # an unbounded stream would read on, through the whole call, meanwhile
    assert call.read == count


async def on(loop: asyncio.AbstractEventLoop, coroutine: Any) -> Any:
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coroutine, loop))


async def drain(stream: Any) -> list[bytes]:
    return [message async for message in stream]


def test_a_slow_handler_holds_at_most_the_bound(bounded_stream: type,
                                              handler_loop: asyncio.AbstractEventLoop) -> None:
    async def run() -> None:
        call = Call(MESSAGES)
        cancel = asyncio.Event()
        stream = bounded_stream(call.messages(), handler_loop, cancel_event=cancel)
        fetch = stream.start()
        assert fetch is not None  # the loops differ: the stream reads the call on this loop
        await reads_stop_at(call, GRPC_STREAM_MESSAGES + 1)  # a full queue and one message waiting for room

        async def sizes() -> tuple[int, int]:
            return stream._message_queue.qsize(), stream._message_queue.maxsize

        assert await on(handler_loop, sizes()) == (GRPC_STREAM_MESSAGES, GRPC_STREAM_MESSAGES)
        assert not fetch.done()
        assert await on(handler_loop, drain(stream)) == [b"%d" % n for n in range(1, MESSAGES + 1)]
        await asyncio.wait_for(fetch, 5)
        assert not cancel.is_set()

    asyncio.run(run())


def test_the_end_of_a_call_that_fills_the_queue_still_reaches_the_handler(
        bounded_stream: type, handler_loop: asyncio.AbstractEventLoop) -> None:
    async def run() -> None:
        call = Call(GRPC_STREAM_MESSAGES)  # exactly a full queue: the end finds no room
        stream = bounded_stream(call.messages(), handler_loop, cancel_event=asyncio.Event())
        fetch = stream.start()
        await asyncio.wait_for(fetch, 5)  # every message read, the end handed over
        assert call.read == GRPC_STREAM_MESSAGES
        assert await on(handler_loop, drain(stream)) == [b"%d" % n for n in range(1, GRPC_STREAM_MESSAGES + 1)]

    asyncio.run(run())


def test_a_broken_call_ends_the_stream_as_cancelled(bounded_stream: type,
                                                   handler_loop: asyncio.AbstractEventLoop) -> None:
    async def run() -> None:
        call = Call(MESSAGES, fail_after=3)
        cancel = asyncio.Event()
        stream = bounded_stream(call.messages(), handler_loop, cancel_event=cancel)
        fetch = stream.start()
        await asyncio.wait_for(fetch, 5)
        assert await on(handler_loop, drain(stream)) == [b"1", b"2", b"3"]

        async def cancelled() -> bool:
            return cancel.is_set()

        assert await on(handler_loop, cancelled())

    asyncio.run(run())


def test_cancelling_the_stream_stops_its_wait_for_room(bounded_stream: type,
                                                      handler_loop: asyncio.AbstractEventLoop) -> None:
    """Serve cancels the stream once the handler is done; a read waiting for room must not hold on."""

    async def run() -> None:
        call = Call(MESSAGES)
        stream = bounded_stream(call.messages(), handler_loop, cancel_event=asyncio.Event())
        fetch = stream.start()
        await reads_stop_at(call, GRPC_STREAM_MESSAGES + 1)
        stream.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(fetch, 5)
        await asyncio.sleep(0.1)
        assert call.read == GRPC_STREAM_MESSAGES + 1

    asyncio.run(run())


def test_bound_grpc_streams_patches_serve_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # monkeypatch puts Serve's class back as installed after the test.
    for name in ("_message_queue", "_put", "_fetch_until_done"):
        monkeypatch.setattr(SERVE_STREAM, name, vars(SERVE_STREAM)[name])
    monkeypatch.setattr(SERVE_STREAM, "_dwray_bounded", False, raising=False)
    original = vars(SERVE_STREAM)["_fetch_until_done"]
    assert bound_grpc_streams() is True
    patched = vars(SERVE_STREAM)["_fetch_until_done"]
    assert patched is not original
    assert bound_grpc_streams() is True
    assert vars(SERVE_STREAM)["_fetch_until_done"] is patched  # not wrapped twice


def test_a_changed_serve_is_left_alone_with_a_warning(monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(SERVE_STREAM, "_dwray_bounded", False, raising=False)
    monkeypatch.setitem(serve_patch_grpc._KNOWN_MEMBERS, "__anext__", "0" * 16)
    original = vars(SERVE_STREAM)["_fetch_until_done"]
    with caplog.at_level(logging.WARNING, logger="dwray.gateway"):
        assert bound_grpc_streams() is False
    assert vars(SERVE_STREAM)["_fetch_until_done"] is original
    assert f"{GRPC_RECEIVE_STREAM}.__anext__ changed" in caplog.text and "not bounded" in caplog.text
