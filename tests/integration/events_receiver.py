"""A webhook receiver for the message bus's tests: a real HTTP server on loopback that checks signatures.

Every POST is verified (HMAC-SHA256 over ``timestamp + "." + body`` with the
secret the test configured); a bad signature is answered 401 and counted, a good
one recorded. ``delay`` makes it a slow receiver, ``fail_next`` answers the next
N requests 503 (the bus must retry them).
"""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from dwray.core.events.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from dwray.core.ports import free_port

__all__ = ["WebhookReceiver"]


class WebhookReceiver:
    """Serves ``http://127.0.0.1:PORT/hook`` until ``close()``."""

    def __init__(self, secret: bytes, *, delay: float = 0.0, port: int | None = None) -> None:
        self.secret = secret
        self.delay = delay
        self.fail_next = 0
        self.received: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.bad_signatures = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver._lock:
                    receiver.in_flight += 1
                    receiver.max_in_flight = max(receiver.max_in_flight, receiver.in_flight)
                try:
                    status = receiver._take(body, dict(self.headers))
                finally:
                    with receiver._lock:
                        receiver.in_flight -= 1
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.port = port or free_port()
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self.port}/hook"

    def _take(self, body: bytes, headers: dict[str, str]) -> int:
        if self.delay:
            time.sleep(self.delay)
        if not verify(self.secret, headers.get(TIMESTAMP_HEADER, ""), body, headers.get(SIGNATURE_HEADER, "")):
            with self._lock:
                self.bad_signatures += 1
            return 401
        with self._lock:
            if self.fail_next > 0:
                self.fail_next -= 1
                return 503
            self.received.append(json.loads(body))
            self.headers.append(headers)
        return 200

    def records(self) -> list[dict[str, Any]]:
        """The S3 event records received (bucket notifications), in arrival order."""
        with self._lock:
            return [record for body in self.received for record in body.get("Records", [])]

    def messages(self, topic: str | None = None) -> list[dict[str, Any]]:
        """The bus messages received (topic subscriptions), in arrival order."""
        with self._lock:
            return [body for body in self.received if "topic" in body and topic in (None, body["topic"])]

    def wait_for(self, predicate: Any, timeout: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.05)
        return bool(predicate())

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
