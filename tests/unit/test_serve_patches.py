"""The patch of Ray Serve's request-body proxy: the installed Ray must be the one it
was written for (so an upgrade fails here, naming what changed), and once applied
the proxy must stop reading a request while the handler is behind.

No Serve runs here: the proxy is driven the way Serve's replica drives it, with
the handler on the same event loop or on a loop of its own in another thread.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
import ray
from ray.serve._private import direct_ingress_http_util, replica

from serve_apps import serve_patches
from serve_apps.serve_patches import (
    RECEIVE_PROXY,
    RECEIVE_QUEUE_MESSAGES,
    bound_receive_queue,
    bound_request_bodies,
    receive_proxy_problems,
)

SERVE_PROXY = direct_ingress_http_util.ASGIDIReceiveProxy
BODY_MESSAGES = RECEIVE_QUEUE_MESSAGES * 4


def test_installed_serve_is_the_one_the_patch_was_written_for() -> None:
    problems = receive_proxy_problems()
    assert not problems, (
        f"Ray {ray.__version__}'s Serve is not the one serve_apps/serve_patches.py was written for, so the "
        "gateway would no longer bound request bodies. Re-read the class, port the patch to it and update "
        "_KNOWN_MEMBERS (serve_patches._fingerprints(ASGIDIReceiveProxy) gives the new values):\n  "
        + "\n  ".join(problems))


def test_the_patch_targets_the_class_the_replica_uses() -> None:
    assert f"{SERVE_PROXY.__module__}.{SERVE_PROXY.__qualname__}" == RECEIVE_PROXY
    assert replica.ASGIDIReceiveProxy is SERVE_PROXY


class Client:
    """An ASGI ``receive`` that delivers a request of ``BODY_MESSAGES`` body messages, then a
    disconnect, as fast as it is asked, counting what has been read from the 'socket'."""

    def __init__(self) -> None:
        self.read = 0

    async def receive(self) -> dict[str, Any]:
        await asyncio.sleep(0)
        self.read += 1
        if self.read > BODY_MESSAGES:
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": b"%d" % self.read, "more_body": self.read < BODY_MESSAGES}


@pytest.fixture
def bounded_proxy() -> type:
    """A subclass of Serve's proxy with the patch applied: Serve's own class stays as installed."""
    proxy = type("BoundedProxy", (SERVE_PROXY,), {})
    bound_receive_queue(proxy)
    return proxy


def expected_bodies() -> list[bytes]:
    return [b"%d" % n for n in range(1, BODY_MESSAGES + 1)]


async def reads_stop_at(client: Client, count: int) -> None:
    """Assert the proxy reads ``count`` messages and then no more (it is waiting for room)."""
    async with asyncio.timeout(10):
        while client.read < count:
            await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)  # an unbounded proxy would read on, through the whole body, meanwhile
    assert client.read == count


def test_the_handler_on_the_same_loop_holds_at_most_the_bound(bounded_proxy: type) -> None:
    async def run() -> None:
        client = Client()
        proxy = bounded_proxy({"type": "http"}, client.receive, asyncio.get_running_loop())
        fetch = proxy.fetch_until_disconnect_task()
        await reads_stop_at(client, RECEIVE_QUEUE_MESSAGES + 1)  # a full queue and one message waiting for room
        assert proxy.queue.qsize() == RECEIVE_QUEUE_MESSAGES and proxy.queue.maxsize == RECEIVE_QUEUE_MESSAGES
        assert not fetch.done()
        bodies = [(await proxy())["body"] for _ in range(BODY_MESSAGES)]
        assert bodies == expected_bodies()
        assert await asyncio.wait_for(fetch, 5) is None
        assert await proxy() == {"type": "http.disconnect"}
        assert await proxy() == {"type": "http.disconnect"}  # and again, as Serve's proxy does

    asyncio.run(run())


def test_a_handler_on_its_own_loop_holds_at_most_the_bound(bounded_proxy: type,
                                                          handler_loop: asyncio.AbstractEventLoop) -> None:
    async def run() -> None:
        client = Client()
        proxy = bounded_proxy({"type": "http"}, client.receive, handler_loop)
        fetch = proxy.fetch_until_disconnect_task()
        await reads_stop_at(client, RECEIVE_QUEUE_MESSAGES + 1)
        assert not fetch.done()

        async def handler() -> list[bytes]:
            assert proxy.queue.qsize() == RECEIVE_QUEUE_MESSAGES
            return [(await proxy())["body"] for _ in range(BODY_MESSAGES)]

        bodies = await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(handler(), handler_loop))
        assert bodies == expected_bodies()
        assert await asyncio.wait_for(fetch, 5) is None

    asyncio.run(run())


def test_serve_counts_the_patched_fetch_task_as_its_own(bounded_proxy: type) -> None:
    """Serve's replica finds its receive tasks by the coroutine's name."""

    async def run() -> None:
        client = Client()
        proxy = bounded_proxy({"type": "http"}, client.receive, asyncio.get_running_loop())
        fetch = proxy.fetch_until_disconnect_task()
        assert fetch.get_coro().__name__ == "_fetch_until_disconnect"
        fetch.cancel()
        with pytest.raises(asyncio.CancelledError):
            await fetch

    asyncio.run(run())


def test_bound_request_bodies_patches_serve_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # monkeypatch puts Serve's class back as installed after the test.
    for name in ("queue", "_fetch_until_disconnect"):
        monkeypatch.setattr(SERVE_PROXY, name, vars(SERVE_PROXY)[name])
    monkeypatch.setattr(SERVE_PROXY, "_dwray_bounded", False, raising=False)
    original = vars(SERVE_PROXY)["_fetch_until_disconnect"]
    assert bound_request_bodies() is True
    patched = vars(SERVE_PROXY)["_fetch_until_disconnect"]
    assert patched is not original
    assert bound_request_bodies() is True
    assert vars(SERVE_PROXY)["_fetch_until_disconnect"] is patched  # not wrapped twice


def test_a_changed_serve_is_left_alone_with_a_warning(monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setitem(serve_patches._KNOWN_MEMBERS, "__call__", "0" * 16)
    original = vars(SERVE_PROXY)["_fetch_until_disconnect"]
    with caplog.at_level(logging.WARNING, logger="dwray.gateway"):
        assert bound_request_bodies() is False
    assert vars(SERVE_PROXY)["_fetch_until_disconnect"] is original
    assert f"{RECEIVE_PROXY}.__call__ changed" in caplog.text and "not bounded" in caplog.text
