"""A small HTTP client for the service, shared by the agent and the admin CLI.

Several server URLs may be given: a request goes to the last one that answered and moves
on to the next when a server is unreachable or answers 5xx (any server serves any host).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tboot_py.errors import EXIT_DENIED, EXIT_INTERNAL, EXIT_USAGE, Error, InputError


class ServerError(Error):
    """The server refused a request (its ``error`` code and ``detail``), or none answered."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}" if code else detail)
        self.status, self.code, self.detail = status, code, detail
        self.exit_code = EXIT_INTERNAL if status == 0 or status >= 500 else (
            EXIT_USAGE if status in (400, 404, 413) else EXIT_DENIED)


@dataclass
class Client:
    servers: Sequence[str]
    token: str | None = None
    cacert: Path | None = None
    timeout: float = 30.0

    def __post_init__(self) -> None:
        import httpx

        if not self.servers:
            raise ServerError(0, "", "no server URL given")
        import ssl

        try:
            verify: Any = ssl.create_default_context(cafile=str(self.cacert)) if self.cacert is not None else True
        except (OSError, ssl.SSLError) as e:
            raise InputError(f"--cacert {self.cacert}: {getattr(e, 'strerror', None) or e}") from e
        self._http = httpx.Client(timeout=self.timeout, verify=verify)
        self._current = 0

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, *, json: Any = None, content: bytes | None = None,
                token: str | None = None, raw: bool = False) -> Any:
        import httpx

        headers = {}
        tok = token or self.token
        if tok:
            headers["Authorization"] = f"Bearer {tok}"
        last = "no server answered"
        n = len(self.servers)
        for i in range(n):
            base = self.servers[(self._current + i) % n].rstrip("/")
            try:
                r = self._http.request(method, base + path, json=json, content=content, headers=headers)
            except httpx.HTTPError as e:
                last = f"{base}: {type(e).__name__}: {e}"
                continue
            if r.status_code >= 500:
                last = f"{base}: HTTP {r.status_code}"
                continue
            self._current = (self._current + i) % n
            if r.status_code >= 400:
                try:
                    body = r.json()
                    code, detail = str(body.get("error", "")), str(body.get("detail", r.text))
                except ValueError:
                    code, detail = "", r.text[:200]
                raise ServerError(r.status_code, code, detail)
            return r.content if raw else r.json()
        raise ServerError(0, "", last)
