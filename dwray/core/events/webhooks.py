"""One webhook delivery: an HTTP POST of a JSON body, signed (``dwray.core.events.signing``).

Standard library only (``urllib``), run on the bus's delivery threads. A 2xx
answer is a delivery; anything else (another status, a refused connection, a
timeout) is a failure the bus retries later. The error text names the status or
the network failure, never the secret or the URL's query (which may hold a
token).
"""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from dwray.core.events.signing import signed_headers

__all__ = ["USER_AGENT", "post_webhook", "safe_url"]

USER_AGENT = "dwray-events/1"


def safe_url(url: str) -> str:
    """``url`` without its query, fragment or credentials, for logs and errors."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def post_webhook(url: str, secret: bytes, body: dict[str, Any], *, timeout: float,
                 headers: dict[str, str] | None = None) -> str | None:
    """POST ``body`` as JSON to ``url``; ``None`` if it answered 2xx, else what went wrong."""
    data = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    request = urllib.request.Request(url, data=data, method="POST", headers={
        "Content-Type": "application/json", "User-Agent": USER_AGENT, **(headers or {}),
        **signed_headers(secret, data)})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read(1024)
            return None
    except urllib.error.HTTPError as exc:
        return f"{safe_url(url)} answered {exc.code}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"{safe_url(url)} not reached: {type(reason).__name__}: {reason}"
