"""Outbound calls the sandbox makes: CRM notifications, Bookings webhooks, Bulk Read callbacks.

Deliveries are queued and POSTed in order by one background task, so a slow
receiver never slows the API answer that caused the call; a delivery that fails
(refused connection, error status, anything else) is logged and the next one goes on. By default only
loopback hosts are called (``allow_remote_callbacks`` lifts that).

Lost deliveries (fault injection for benchmarks; Zoho documents nothing of the
kind, but real Zoho does lose some webhooks and notifications):
``drop_bookings_webhooks`` and ``drop_crm_notifications`` (0..1) are the
fractions of Bookings webhooks (kind ``bookings_webhook``) and CRM
notifications (kind ``notification``) that :meth:`Outbox.send` drops instead of
queueing (see :data:`DROP_SETTINGS`); Bulk Read callbacks (``bulk_callback``)
are never dropped. A dropped delivery is counted as ``<kind>_dropped`` in
``GET /__sandbox/stats`` (``outbound``) and listed by ``GET /__sandbox/outbox``
with status ``"dropped (<setting> setting)"`` and its payload. A refused URL is
refused before any draw. Each kind draws from its own ``random.Random`` seeded
with ``drop_seed`` (``None``: 0) and the kind, made afresh at each
``POST /__sandbox/reset`` (:meth:`Outbox.reset_drops`), whenever
``PUT /__sandbox/config`` names a ``drop_*`` setting, and whenever that kind's
rate or the seed changes: the same seed drops the same deliveries of the same
sequence of sends, whatever the other kind does.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from .config import DEFAULT_DROP_SEED

if TYPE_CHECKING:
    from .state import SandboxState

log = logging.getLogger("sandbox.outbox")

#: The setting that drops each kind of delivery; a kind not named here
#: (``bulk_callback``) is never dropped.
DROP_SETTINGS = {"bookings_webhook": "drop_bookings_webhooks", "notification": "drop_crm_notifications"}


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
        #: kind -> ((rate, seed) it was made for, its generator of drop draws)
        self._drop_rngs: dict[str, tuple[tuple[float, int], random.Random]] = {}

    def send(self, kind: str, url: str, payload: Any, headers: dict[str, str] | None = None) -> bool:
        """Queue one POST of ``payload`` as JSON; returns False when the URL is refused.

        A delivery dropped by a ``drop_*`` setting is not queued but still
        returns True: to the caller it was sent, and lost on the way.
        """
        if not url:
            return False
        if not (self.state.config.allow_remote_callbacks or is_loopback_url(url)):
            self.state.stats.outbound[f"{kind}_refused"] += 1
            self.state.outbox_log.append(
                {"kind": kind, "url": url, "status": "refused: not a loopback address", "at": time.time()}
            )
            return False
        setting = self._drop_setting(kind)
        if setting is not None:
            self.state.stats.outbound[f"{kind}_dropped"] += 1
            self.state.outbox_log.append(
                {"kind": kind, "url": url, "status": f"dropped ({setting} setting)", "at": time.time(), "payload": payload}
            )
            return True
        self.queue.put_nowait((kind, url, payload, headers or {}))
        return True

    def reset_drops(self) -> None:
        """Start every kind's drop draws afresh from ``drop_seed`` (at a reset, or when a ``drop_*`` setting is PUT)."""
        self._drop_rngs.clear()

    def _drop_setting(self, kind: str) -> str | None:
        """The ``drop_*`` setting that drops this delivery of ``kind``, or None to deliver it."""
        setting = DROP_SETTINGS.get(kind)
        if setting is None:
            return None
        cfg = self.state.config
        rate = float(getattr(cfg, setting))
        seed = DEFAULT_DROP_SEED if cfg.drop_seed is None else int(cfg.drop_seed)
        held = self._drop_rngs.get(kind)
        if held is None or held[0] != (rate, seed):
            # a str seed is hashed with SHA-512: the same in every process
            held = ((rate, seed), random.Random(f"{seed}:{kind}"))
            self._drop_rngs[kind] = held
        if rate <= 0:
            return None
        return setting if held[1].random() < rate else None

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
