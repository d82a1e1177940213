"""``dw dev``: a local warehouse and gateway for development, with request logs and reload on code changes.

It runs ``dw up --address local`` (its own local Ray, never one already on the
machine) as a child process on an internal port, and in front of it, on the
port you asked for, a small HTTP proxy that prints one line per request::

    GET /sales/2026/a.csv 200 12.3 ms req 0f3c9a2e7b1d4c55

(method, path, status, duration, the gateway's ``x-amz-request-id``). It
watches the folders given with ``--watch`` (default: ``./src`` if there is
one, else the current folder) with watchfiles, and when a ``.py`` file
changes it stops the child (a drained stop) and starts a new one, so the
plugins and the gateway run the new code. The proxy stays up meanwhile and
answers 503 with ``Retry-After``, and the clients' endpoint never changes.
SigV4 signs the ``Host`` header: the proxy forwards headers unchanged, so
requests signed for the proxy's address verify at the gateway.

With ``--json`` every line (start, request, reload, stop) is a JSON object.
"""
from __future__ import annotations

import http.client
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click

from dwray.cli.output import stderr
from dwray.cli.state import State
from dwray.core.ports import free_port
from dwray.errors import DwrayError, NotReady

__all__ = ["dev_command"]

START_TIMEOUT = 300.0  # a first start on a busy laptop: Ray, the plugin tree, Serve
STOP_TIMEOUT = 60.0
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}


class _Events:
    """Where dw dev's lines go: stdout, text or JSON, one line each, whole lines from any thread."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self._lock = threading.Lock()

    def emit(self, event: str, text: str, **fields: Any) -> None:
        line = json.dumps({"event": event, **fields}) if self.as_json else text
        with self._lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()


class _Proxy(http.server.ThreadingHTTPServer):
    """Forwards every request to the current gateway (``upstream``), logging each one."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], events: _Events) -> None:
        super().__init__(address, _ProxyHandler)
        self.events = events
        self.upstream: int | None = None  # the child gateway's port; None while it restarts


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Proxy

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        """Silence http.server's own log: dw dev prints its line per request itself."""

    def _forward(self) -> None:
        started = time.perf_counter()
        status, request_id = self._relay()
        millis = (time.perf_counter() - started) * 1000
        path = urlsplit(self.path).path  # never the query: a presigned URL's signature and credential are in it
        self.server.events.emit("request", f"{self.command} {path} {status} {millis:.1f} ms req {request_id}",
                                method=self.command, path=path, status=status,
                                duration_ms=round(millis, 1), request_id=request_id)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_OPTIONS = do_PATCH = _forward

    def _body(self) -> bytes | None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else None

    def _relay(self) -> tuple[int, str]:
        body = self._body()
        port = self.server.upstream
        if port is None:
            self._answer(503, b"dw dev: the gateway is restarting\n", {"Retry-After": "2"})
            return 503, "-"
        headers = {name: value for name, value in self.headers.items() if name.lower() not in _HOP_BY_HOP}
        if body is not None:
            headers["Content-Length"] = str(len(body))
        upstream = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        try:
            upstream.request(self.command, self.path, body=body, headers=headers)
            response = upstream.getresponse()
            self.send_response_only(response.status, response.reason)
            chunked = response.getheader("Content-Length") is None and self.command != "HEAD" \
                and response.status not in (204, 304)
            for name, value in response.getheaders():
                if name.lower() not in _HOP_BY_HOP:
                    self.send_header(name, value)
            if chunked:
                self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            while piece := response.read(1 << 16):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
            return response.status, response.getheader("x-amz-request-id") or "-"
        except OSError as exc:
            self._answer(502, f"dw dev: the gateway did not answer: {exc}\n".encode(), {})
            return 502, "-"
        finally:
            upstream.close()

    def _answer(self, status: int, text: bytes, headers: dict[str, str]) -> None:
        self.send_response_only(status)
        for name, value in {**headers, "Content-Type": "text/plain", "Content-Length": str(len(text))}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(text)


class _Gateway:
    """One ``dw up`` child on the internal port."""

    def __init__(self, port: int, data_dir: Path, config: str | None) -> None:
        command_line = [sys.executable, "-m", "dwray.cli", *(["--config", config] if config else []), "up",
                        "--address", "local", "--port", str(port), "--data-dir", str(data_dir), "--json"]
        self.process = subprocess.Popen(command_line, stdout=subprocess.PIPE, text=True, start_new_session=True)
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.append(self.process.stdout.readline()), daemon=True)
        reader.start()
        reader.join(START_TIMEOUT)
        if not lines or not lines[0].strip():
            code = self.process.poll()
            self.stop()
            why = f"exited with code {code}" if code is not None else f"did not start within {START_TIMEOUT:.0f} s"
            raise NotReady(f"dw dev: the gateway (dw up) {why}; its errors are above")
        try:
            self.info: dict[str, Any] = json.loads(lines[0])
        except ValueError:
            self.stop()
            raise NotReady("dw dev: the gateway (dw up) did not print its JSON status line first") from None
        # Keep reading, so the child never blocks on a full pipe.
        threading.Thread(target=lambda: self.process.stdout.read(), daemon=True).start()

    def stop(self) -> None:
        """A drained stop (SIGINT, as Ctrl-C), then SIGKILL of its group if it takes too long."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(30)


def _default_watch() -> list[Path]:
    here = Path.cwd()
    return [here / "src"] if (here / "src").is_dir() else [here]


@click.command("dev")
@click.option("--port", type=int, default=8000, show_default=True, help="the port clients use (the proxy's)")
@click.option("--host", default="127.0.0.1", show_default=True, help="the address the proxy listens on")
@click.option("--data-dir", "dev_data_dir", type=click.Path(path_type=Path), default=None,
              help="warehouse data folder (default ./dwray-data; env DWRAY_DATA_DIR)")
@click.option("--watch", "watched", multiple=True, type=click.Path(path_type=Path, file_okay=False, exists=True),
              help="a folder whose .py files restart the gateway when they change (repeatable; default ./src "
                   "if it exists, else .)")
@click.option("--json", "as_json", is_flag=True, help="print JSON lines instead of text")
@click.pass_obj
def dev_command(state: State, port: int, host: str, dev_data_dir: Path | None, watched: tuple[Path, ...],
                as_json: bool) -> None:
    """Run a local warehouse and gateway with a log line per request; restart it when .py files change."""
    events = _Events(as_json)
    data_dir = dev_data_dir or state.data_dir or Path(os.environ.get("DWRAY_DATA_DIR", "dwray-data"))
    folders = [folder.resolve() for folder in (watched or _default_watch())]
    config = str(state.config) if state.config else None
    try:
        proxy = _Proxy((host, port), events)
    except OSError as exc:
        stderr.print(f"error: dw dev cannot listen on {host}:{port}: {exc.strerror}", markup=False)
        sys.exit(1)
    threading.Thread(target=proxy.serve_forever, daemon=True, name="dw-dev-proxy").start()
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    gateway: _Gateway | None = None
    try:
        gateway = _Gateway(free_port(), data_dir, config)
        proxy.upstream = int(gateway.info["endpoint"].rsplit(":", 1)[1])
        endpoint = f"http://{host}:{proxy.server_address[1]}"
        first = gateway.info.get("first_start")
        events.emit("ready", f"dw dev on {endpoint} (gateway {gateway.info['endpoint']}, data {data_dir}); "
                    f"watching {', '.join(map(str, folders))}", endpoint=endpoint, gateway=gateway.info["endpoint"],
                    watching=[str(folder) for folder in folders], first_start=first)
        if first is not None and not as_json:
            events.emit("credentials", f"  access key id {first['access_key_id']}  secret access key "
                                       f"{first['secret_access_key']}  (shown once)")
        gateway = _watch_and_reload(folders, gateway, data_dir, config, proxy, events, stop)
    except DwrayError as exc:
        stderr.print(f"error: {exc}", markup=False)
        sys.exit(1)
    finally:
        proxy.upstream = None
        if gateway is not None:
            gateway.stop()
        proxy.shutdown()
        proxy.server_close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        events.emit("stopped", "dw dev stopped")


def _watch_and_reload(folders: list[Path], gateway: _Gateway, data_dir: Path, config: str | None, proxy: _Proxy,
                      events: _Events, stop: threading.Event) -> _Gateway:
    """Restart the gateway on every change of a .py file under ``folders`` until ``stop``; return the last one."""
    from watchfiles import PythonFilter, watch

    for changes in watch(*folders, watch_filter=PythonFilter(), stop_event=stop, rust_timeout=500,
                         yield_on_timeout=False, raise_interrupt=False):
        changed = sorted({str(Path(path).relative_to(Path.cwd())) if Path(path).is_relative_to(Path.cwd())
                          else path for _, path in changes})
        events.emit("reload", f"changed: {', '.join(changed)}; restarting the gateway ...", changed=changed)
        started = time.monotonic()
        proxy.upstream = None
        gateway.stop()
        gateway = _Gateway(free_port(), data_dir, config)  # a fresh port: the old one may linger
        proxy.upstream = int(gateway.info["endpoint"].rsplit(":", 1)[1])
        seconds = round(time.monotonic() - started, 1)
        events.emit("reloaded", f"reloaded in {seconds} s", seconds=seconds)
    return gateway

