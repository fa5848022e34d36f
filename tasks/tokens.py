"""Tasks around the shared Zoho access token."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from prefect import task
from prefect.cache_policies import NO_CACHE

from blocks.zoho_oauth import ZohoOAuth

from .retry import ZOHO_RETRIES, retry_transient


@task(name="ensure-fresh-token", cache_policy=NO_CACHE, retry_condition_fn=retry_transient, **ZOHO_RETRIES)
async def ensure_fresh_token(block_name: str, min_remaining: timedelta) -> dict[str, object]:
    """Make the ``ZohoOAuth`` document ``block_name`` hold a token valid for ``min_remaining`` or more.

    Returns ``{"block", "expires_at" (ISO 8601, UTC), "minutes_left", "refreshed"}``;
    never the token. Raises what :meth:`ZohoOAuth.get_access_token` raises.
    """
    block = await ZohoOAuth.aload(block_name)
    before = block.expires_at
    await block.get_access_token(min_valid=min_remaining)
    expires_at = block.expires_at or datetime.now(timezone.utc)
    return {
        "block": block_name,
        "expires_at": expires_at.isoformat(),
        "minutes_left": round((expires_at - datetime.now(timezone.utc)).total_seconds() / 60, 1),
        "refreshed": before != block.expires_at,
    }
