"""Scheduled work of one server process: the liveness sweep and webhook deliveries.

Every process runs the same loop; the database decides who does what (row locks with
SKIP LOCKED on PostgreSQL, the single writer on SQLite, and leases on deliveries), so a
process that dies leaves nothing behind: its leases expire and the others carry on
(keylime #1091 lost agents with their verifier).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from tboot_py.server.service import Service

log = logging.getLogger("tboot_py.server")


def http_post(url: str, body: bytes, headers: dict[str, str]) -> int:
    import httpx

    return int(httpx.post(url, content=body, headers=headers, timeout=5.0).status_code)


class Scheduler:
    def __init__(self, service: Service, tick: float = 1.0, post: Any = http_post) -> None:
        self.service, self.tick, self.post = service, tick, post
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> None:
        for name in self.service.sweep_stale():
            log.warning("host %s is stale", name)
        for d in self.service.claim_deliveries():
            self.service.deliver(d, self.post)

    def _loop(self) -> None:
        while not self._stop.wait(self.tick):
            try:
                self.run_once()
            except Exception as e:  # the loop outlives a database hiccup; the next tick retries
                log.error("scheduler: %s: %s", type(e).__name__, e)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="tboot-py-scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
