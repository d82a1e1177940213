"""A client for the gateway's admin API, and how local ``dw`` commands find the gateway and a token.

A gateway started by ``dw up`` leaves its address in ``DATA_DIR/gateway/gateway.json``
and an admin token (0600, beside the master key: see ``GatewayFiles.admin_token``). ``--endpoint``
(``DWRAY_ENDPOINT``) points elsewhere. The token is never taken from the command
line, where other users see it (``ps``) and shells keep it (history): it comes
from ``--admin-token-file PATH`` (``DWRAY_ADMIN_TOKEN_FILE``; the file must be
0600 or 0400), else the ``DWRAY_ADMIN_TOKEN`` variable, else the file ``dw up`` left.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dwray.config import DwrayConfig
from dwray.core.gateway_files import GatewayFiles, read_token_file
from dwray.errors import DwrayError, InvalidArgument, NotReady

__all__ = ["AdminClient", "AdminError", "admin_token", "discover"]


class AdminError(DwrayError, RuntimeError):
    """The admin API refused a request (or could not be reached)."""

    fields = ("status", "code", "message")
    template = "{message} ({code}, HTTP {status})"


class AdminClient:
    """Calls ``/admin/...`` with the bearer token. The token never appears in its repr."""

    def __init__(self, endpoint: str, token: str, *, timeout: float = 130.0) -> None:
        self.endpoint = endpoint.rstrip("/")
        self._token = token
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"AdminClient({self.endpoint!r})"

    def request(self, method: str, path: str, *, json_body: Any = None, params: dict[str, Any] | None = None) -> Any:
        import requests

        try:
            response = requests.request(method, f"{self.endpoint}/admin{path}", json=json_body, params=params,
                                        headers={"Authorization": f"Bearer {self._token}"}, timeout=self.timeout)
        except requests.RequestException as error:
            raise NotReady(f"the gateway at {self.endpoint} did not answer ({type(error).__name__})") from None
        if response.status_code >= 400:
            try:
                detail = response.json().get("error") or {}
            except ValueError:
                detail = {}
            if not isinstance(detail, dict):
                detail = {"message": str(detail)}
            raise AdminError(response.status_code, detail.get("code", "Error"),
                             detail.get("message") or response.text[:200] or "request failed")
        return None if response.status_code == 204 or not response.content else response.json()

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, body: Any = None, **params: Any) -> Any:
        return self.request("POST", path, json_body=body, params=params or None)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)


def discover(config: DwrayConfig, *, endpoint: str | None = None, token_file: Path | None = None) -> AdminClient:
    """The admin client for the gateway that ``config``'s data dir (or the flags) name."""
    files = GatewayFiles(Path(config.gateway_dir))
    endpoint = endpoint or os.environ.get("DWRAY_ENDPOINT")
    if endpoint is None:
        state = files.read_state()
        if state is None:
            raise NotReady(f"no running gateway found in {files.folder} (start one with 'dw up', "
                           "or pass --endpoint)")
        endpoint = state["endpoint"]
    return AdminClient(endpoint, admin_token(files, token_file))


def admin_token(files: GatewayFiles, token_file: Path | None = None) -> str:
    """The admin token to send: from ``token_file``, else ``DWRAY_ADMIN_TOKEN``, else the one ``dw up`` left."""
    if token_file is not None:
        try:
            return read_token_file(token_file)
        except FileNotFoundError:
            raise InvalidArgument(f"admin token file {token_file} does not exist") from None
    token = os.environ.get("DWRAY_ADMIN_TOKEN", "").strip()
    if token:
        return token
    token = files.read_admin_token()
    if token is None:
        raise InvalidArgument(f"no admin token: none in {files.admin_token}; pass --admin-token-file PATH "
                              "or set DWRAY_ADMIN_TOKEN")
    return token
