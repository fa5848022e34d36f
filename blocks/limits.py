"""Prefect global concurrency limits the project creates on first use: the ``ZohoOAuth``
refresh lock, the one-writer lock per organisation, the Bookings rate limit."""

from __future__ import annotations

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
from prefect.exceptions import ObjectNotFound

#: Limits this process has made sure of, with their settings (one Prefect API read per limit and process).
_ensured: dict[str, tuple[int, float | None]] = {}


async def ensure_limit(name: str, limit: int, slot_decay_per_second: float | None = None) -> None:
    """Make sure the Prefect global concurrency limit ``name`` exists with ``limit`` slots (and
    ``slot_decay_per_second``, a rate limit): created when missing (another process may win the
    race; then it is read back), updated when its settings differ. Once per process and settings."""
    if _ensured.get(name) == (limit, slot_decay_per_second):
        return
    async with get_client() as client:
        try:
            found = await client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                await client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=limit, slot_decay_per_second=slot_decay_per_second or 0.0))
            except Exception:  # another process created it first
                await client.read_global_concurrency_limit_by_name(name)
        else:
            if found.limit != limit or (slot_decay_per_second is not None and found.slot_decay_per_second != slot_decay_per_second):
                await client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(limit=limit, slot_decay_per_second=slot_decay_per_second))
    _ensured[name] = (limit, slot_decay_per_second)
