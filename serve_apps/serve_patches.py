"""dwray's patch of Ray Serve's internals for HTTP: backpressure on request bodies.

Serve 2.60's ``ASGIDIReceiveProxy`` (``ray.serve._private.direct_ingress_http_util``),
the replica side of direct ingress and HAProxy mode, reads every message of a
request into an unbounded queue as fast as the socket delivers, so a 1 GiB PUT
that the pipeline consumes more slowly than the network delivers it piles up in
the replica (measured: +1 GB). Serve has no setting for this, so the queue is
bounded here: when the handler falls behind, the proxy stops reading, uvicorn
stops reading the socket, and TCP pushes back to HAProxy and the client.

The patch swaps two members of that class (the ``queue`` property and
``_fetch_until_disconnect``) for copies of Serve's own code with the bound
added, and leans on the rest of the class as written, so it is right only for
the Serve it was copied from. :func:`receive_proxy_problems` compares the
installed class with that one, member by member; when anything differs the
gateway logs a warning and leaves Serve alone (bodies then work, unbounded).
``tests/unit/test_serve_patches.py`` runs the same comparison against the
installed Ray, so an upgrade that changes the class fails CI, naming what
changed, instead of silently dropping the bound. gRPC request streams get the same
bound from :mod:`serve_apps.serve_patch_grpc`, checked the same way.
"""
from __future__ import annotations

import asyncio
import hashlib
import importlib
import inspect
import logging
import textwrap
from collections.abc import Callable
from typing import Any

__all__ = [
    "RECEIVE_PROXY",
    "RECEIVE_QUEUE_MESSAGES",
    "apply_bound",
    "bound_receive_queue",
    "bound_request_bodies",
    "class_problems",
    "installed_class",
    "receive_proxy_problems",
]

log = logging.getLogger("dwray.gateway")

RECEIVE_QUEUE_MESSAGES = 16  # ASGI body messages (64-256 KiB each) held per request at most
RECEIVE_PROXY = "ray.serve._private.direct_ingress_http_util.ASGIDIReceiveProxy"
# The replica module that builds a receive proxy for each direct-ingress request.
_REPLICA_MODULE = "ray.serve._private.replica"
_WRITTEN_FOR = "Ray 2.60.0"
# The first 16 hex digits of the sha256 of the source of each member the class
# defines (see _fingerprints) in _WRITTEN_FOR, the code the patch was written against.
# Every member counts, not only the two replaced: the copies rely on the
# attributes __init__ sets, on __call__ draining the queue, and on nothing but
# _fetch_until_disconnect filling it (put_message's put_nowait would fail on a
# full bounded queue).
_KNOWN_MEMBERS = {
    "__init__": "5562d0180029837e",
    "_get_default_disconnect_message": "3e3331d4a1031201",
    "queue": "55911559f6bae433",
    "put_message": "f56615eec508dba3",
    "fetch_until_disconnect_task": "9eafec8a8ab9cf60",
    "_fetch_until_disconnect": "a209be54083ba9e1",
    "__call__": "d829f3c10c99f10c",
}


def receive_proxy_problems() -> list[str]:
    """What about the installed Serve differs from the Serve the patch was written for (empty: nothing)."""
    return class_problems(RECEIVE_PROXY, installed_class(RECEIVE_PROXY), _KNOWN_MEMBERS)


def installed_class(path: str) -> type | None:
    """The class at ``path`` ("module.Class") in the installed Ray, or ``None`` if there is none."""
    module_name, _, class_name = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    found = getattr(module, class_name, None)
    return found if isinstance(found, type) else None


def class_problems(path: str, cls: type | None, known: dict[str, str]) -> list[str]:
    """How ``cls`` (Serve's class at ``path``, that the replica uses) differs from the one a patch
    was written for, whose members' fingerprints are ``known``: empty when it does not."""
    if cls is None:
        return [f"{path} no longer exists (the patch was written for {_WRITTEN_FOR})"]
    problems = []
    try:
        replica = importlib.import_module(_REPLICA_MODULE)
    except ImportError:
        replica = None
    if getattr(replica, cls.__name__, None) is not cls:
        problems.append(f"{_REPLICA_MODULE} no longer uses {path} for direct-ingress requests")
    found = _fingerprints(cls)
    for name in sorted(known.keys() - found.keys()):
        problems.append(f"{path}.{name} was removed")
    for name in sorted(found.keys() - known.keys()):
        problems.append(f"{path}.{name} was added")
    for name in sorted(found.keys() & known.keys()):
        if found[name] != known[name]:
            problems.append(f"{path}.{name} changed (source fingerprint {found[name]}; "
                            f"the patch was written for {known[name]}, {_WRITTEN_FOR})")
    return problems


def _fingerprints(cls: type) -> dict[str, str]:
    """Each function or property ``cls`` defines itself, by name: a fingerprint of its source."""
    found = {}
    for name, member in vars(cls).items():
        code = member.fget if isinstance(member, property) else member
        if not inspect.isfunction(code):
            continue
        try:
            source = textwrap.dedent(inspect.getsource(code))
        except OSError:  # no .py files installed: nothing to compare, so it cannot match
            source = "<source not available>"
        found[name] = hashlib.sha256(source.encode()).hexdigest()[:16]
    return found


def bound_receive_queue(proxy: type) -> None:
    """Give ``proxy`` (Serve's receive proxy class) a queue of at most ``RECEIVE_QUEUE_MESSAGES``."""

    def queue(self: Any) -> asyncio.Queue:
        if self._queue is None:
            self._queue = asyncio.Queue(maxsize=RECEIVE_QUEUE_MESSAGES)
        return self._queue

    async def put(self: Any, message: Any) -> None:
        await self.queue.put(message)

    # Named as Serve's own method, whose coroutine name Serve's task counting looks for.
    async def _fetch_until_disconnect(self: Any) -> Any:
        while True:
            message = await self._receive()
            if asyncio.get_running_loop() == self._user_event_loop:
                await self.queue.put(message)
            else:
                # The handler runs on its own loop: wait there for room, here for the result.
                await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(put(self, message),
                                                                          self._user_event_loop))
            if message["type"] == "http.disconnect":
                self._disconnect_message = message
                return None
            if message["type"] == "websocket.disconnect":
                self._disconnect_message = message
                return message["code"]

    proxy.queue = property(queue)  # type: ignore[attr-defined]
    proxy._fetch_until_disconnect = _fetch_until_disconnect  # type: ignore[attr-defined]
    proxy._dwray_bounded = True  # type: ignore[attr-defined]


def bound_request_bodies() -> bool:
    """Bound Serve's direct-ingress request bodies (see the module docstring); return whether they are.

    Leaves Serve alone, with a warning naming what differs, when its receive
    proxy is not the one the patch was written for. Calling it again is harmless.
    """
    return apply_bound(RECEIVE_PROXY, receive_proxy_problems, bound_receive_queue,
                       "request-body proxy", "request bodies")


def apply_bound(path: str, problems_of: Callable[[], list[str]], bound: Callable[[type], None],
                what: str, bounded: str) -> bool:
    """Apply ``bound`` to Serve's class at ``path`` once, unless ``problems_of()`` finds the class is
    not the one the bound was written for: then warn, naming what differs, and leave Serve alone."""
    cls = installed_class(path)
    if cls is not None and vars(cls).get("_dwray_bounded", False):
        return True
    problems = problems_of()
    if cls is None or problems:
        log.warning("Serve's %s is not the one dwray knows, so %s are not bounded: %s", what, bounded,
                    "; ".join(problems))
        return False
    bound(cls)
    return True
