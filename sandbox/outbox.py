"""Outbound calls the sandbox makes: CRM notifications, Bookings webhooks, Bulk Read callbacks.

Deliveries are queued and POSTed in order by one background task, so a slow
receiver never slows the API answer that caused the call; a delivery that fails
(refused connection, error status, anything else) is logged and the next one goes on. By default only
loopback hosts are called (``allow_remote_callbacks`` lifts that).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

if TYPE_CHECKING:
    from .state import SandboxState

log = logging.getLogger("sandbox.outbox")


def is_loopback_url(url: str) -> bool:
    """Whether ``url`` is http(s) to ``localhost``, 127.0.0.0/8 or ``::1``."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    if parts.hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        return False


class Outbox:
    """A FIFO of POSTs delivered by :meth:`run`."""

    def __init__(self, state: SandboxState) -> None:
        self.state = state
        self.queue: asyncio.Queue[tuple[str, str, Any, dict[str, str]]] = asyncio.Queue()

    def send(self, kind: str, url: str, payload: Any, headers: dict[str, str] | None = None) -> bool:
        """Queue one POST of ``payload`` as JSON; returns False when the URL is refused."""
        if not url:
            return False
        if not (self.state.config.allow_remote_callbacks or is_loopback_url(url)):
            self.state.stats.outbound[f"{kind}_refused"] += 1
            self.state.outbox_log.append(
                {"kind": kind, "url": url, "status": "refused: not a loopback address", "at": time.time()}
            )
            return False
        self.queue.put_nowait((kind, url, payload, headers or {}))
        return True

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait until every queued POST has been attempted (for tests and the admin API)."""
        await asyncio.wait_for(self.queue.join(), timeout)

    async def run(self) -> None:
        """Deliver queued POSTs forever (started with the app, cancelled at shutdown)."""
        async with httpx.AsyncClient(timeout=httpx.Timeout(5.0)) as client:
            while True:
                kind, url, payload, headers = await self.queue.get()
                entry: dict[str, Any] = {"kind": kind, "url": url, "at": time.time(), "payload": payload}
                try:
                    try:
                        response = await client.post(url, json=payload, headers=headers)
                        entry["status"] = response.status_code
                        ok = response.status_code < 400
                    except Exception as exc:  # noqa: BLE001 - one bad delivery must not stop the outbox
                        entry["status"] = f"error: {type(exc).__name__}"
                        ok = False
                    self.state.stats.outbound[f"{kind}_{'sent' if ok else 'failed'}"] += 1
                    self.state.outbox_log.append(entry)
                    if not ok:
                        log.warning("%s to %s failed: %s", kind, url, entry["status"])
                finally:
                    self.queue.task_done()
