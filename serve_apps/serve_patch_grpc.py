"""dwray's patch of Ray Serve's internals for gRPC: backpressure on client-streaming requests.

Serve 2.60's ``gRPCDIReceiveStream`` (``ray.serve._private.direct_ingress_grpc_util``),
the replica side of a client-streaming call in direct ingress and HAProxy mode,
drains the call's request messages on the replica's server loop into an
unbounded queue on the handler's loop, as fast as the client sends them. A
``Put`` that the pipeline stores more slowly than the network delivers it
piles up in the replica, whatever the object's size. Serve has no setting for
this, so the queue is bounded here, as :mod:`serve_apps.serve_patches` bounds
HTTP bodies: when the handler falls behind, the stream stops reading the call,
and gRPC's flow control pushes back to HAProxy and the client.

The patch swaps three members of that class (``_message_queue``, ``_put`` and
``_fetch_until_done``) for copies of Serve's own code with the bound added,
and leans on the rest of the class as written (``__anext__`` takes from the
queue and ends at the module's ``_STREAM_END``), so it is right only for the
Serve it was copied from. :func:`grpc_stream_problems` compares the installed
class with that one, member by member; when anything differs the gateway logs
a warning and leaves Serve alone (streams then work, unbounded).
``tests/unit/test_serve_patch_grpc.py`` runs the same comparison against the
installed Ray, so an upgrade that changes the class fails CI.

When Serve runs the handler on the server loop itself there is no queue: the
handler reads the call directly, which is bounded already.
"""
from __future__ import annotations

import asyncio
import importlib
from typing import Any

from serve_apps.serve_patches import apply_bound, class_problems, installed_class

__all__ = ["GRPC_RECEIVE_STREAM", "GRPC_STREAM_MESSAGES", "bound_grpc_queue", "bound_grpc_streams",
           "grpc_stream_problems"]

GRPC_STREAM_MESSAGES = 8  # request messages (Put chunks: at most 1 MiB advised) held per call at most
GRPC_RECEIVE_STREAM = "ray.serve._private.direct_ingress_grpc_util.gRPCDIReceiveStream"
# The first 16 hex digits of the sha256 of the source of each member the class defines in Ray 2.60.0
# (serve_patches._fingerprints): every member counts, not only the three replaced (see the docstring).
_KNOWN_MEMBERS = {
    "__init__": "0893841ab9ffe5b4",
    "_message_queue": "24d87be8355043eb",
    "_put": "a62e065f18ae2dd1",
    "start": "3e265b41a7d659c3",
    "cancel": "efafff91586663e6",
    "_fetch_until_done": "84008168fcc53e7b",
    "__aiter__": "b6dc9b32fbdf7acc",
    "__anext__": "05b0f1a3b92b0cd9",
}


def grpc_stream_problems() -> list[str]:
    """What about the installed Serve differs from the Serve the patch was written for (empty: nothing)."""
    problems = class_problems(GRPC_RECEIVE_STREAM, installed_class(GRPC_RECEIVE_STREAM), _KNOWN_MEMBERS)
    if not problems and _stream_end() is None:
        problems.append(f"{GRPC_RECEIVE_STREAM.rpartition('.')[0]}._STREAM_END no longer exists")
    return problems


def _stream_end() -> object | None:
    """Serve's end-of-stream sentinel, which its ``__anext__`` compares by identity."""
    module = importlib.import_module(GRPC_RECEIVE_STREAM.rpartition(".")[0])
    return getattr(module, "_STREAM_END", None)


def bound_grpc_queue(stream: type) -> None:
    """Give ``stream`` (Serve's gRPC receive stream class) a queue of at most ``GRPC_STREAM_MESSAGES``."""
    end = _stream_end()

    def _message_queue(self: Any) -> asyncio.Queue:
        if self._queue is None:
            self._queue = asyncio.Queue(maxsize=GRPC_STREAM_MESSAGES)
        return self._queue

    def _put(self: Any, item: Any) -> None:
        # On the handler's loop. Only the end of the stream comes this way now: on a full queue it
        # waits for room like any message, held on the stream (the loop keeps tasks weakly). A handler
        # that returned without reading the rest never makes room: the wait goes with the stream,
        # quietly (asyncio would log each such task as "destroyed but pending").
        try:
            self._message_queue.put_nowait(item)
        except asyncio.QueueFull:
            self._dwray_end = asyncio.ensure_future(self._message_queue.put(item))
            self._dwray_end._log_destroy_pending = False

    async def put(self: Any, message: Any) -> None:
        await self._message_queue.put(message)

    async def _fetch_until_done(self: Any) -> None:
        try:
            async for message in self._request_iterator:
                if self._cancel_event is not None and self._cancel_event.is_set():
                    break
                # Wait on the handler's loop for room; the call is not read meanwhile, so gRPC's
                # flow control holds the client back. A cancel of this task cancels that wait.
                await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(put(self, message),
                                                                          self._user_event_loop))
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - as Serve's: a broken call ends the stream as cancelled
            if self._cancel_event is not None:
                self._user_event_loop.call_soon_threadsafe(self._cancel_event.set)
        finally:
            self._user_event_loop.call_soon_threadsafe(self._put, end)

    stream._message_queue = property(_message_queue)  # type: ignore[attr-defined]
    stream._put = _put  # type: ignore[attr-defined]
    stream._fetch_until_done = _fetch_until_done  # type: ignore[attr-defined]
    stream._dwray_bounded = True  # type: ignore[attr-defined]


def bound_grpc_streams() -> bool:
    """Bound Serve's direct-ingress gRPC request streams (see the module docstring); return whether they are.

    Leaves Serve alone, with a warning naming what differs, when its receive
    stream is not the one the patch was written for. Calling it again is harmless.
    """
    return apply_bound(GRPC_RECEIVE_STREAM, grpc_stream_problems, bound_grpc_queue, "gRPC request stream",
                       "gRPC request streams")
