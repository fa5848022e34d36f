"""The ZohoOAuth block's token policy (zoho.auth.needs_refresh) and where it logs, without Zoho."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta, timezone

from prefect import flow
from pydantic import SecretStr

from blocks.zoho_oauth import ZohoOAuth, run_logger


def unsaved_block(expires_in: timedelta, lifetime: int | None) -> ZohoOAuth:
    return ZohoOAuth(
        client_id="1000.X", client_secret=SecretStr("s"), refresh_token=SecretStr("r"),
        access_token=SecretStr("1000.token"), expires_at=datetime.now(timezone.utc) + expires_in,
        token_lifetime_seconds=lifetime,
    )


def test_a_short_lived_token_is_used_until_half_its_life():
    """A 4-minute token with the 5-minute margin: no refresh (no Prefect call) while 2+ minutes remain."""
    block = unsaved_block(timedelta(minutes=3), lifetime=240)
    assert asyncio.run(block.get_access_token()).get_secret_value() == "1000.token"


def test_the_block_logs_to_the_run_inside_a_run_and_to_stdlib_outside(prefect_api):
    assert isinstance(run_logger(), logging.Logger)

    @flow
    def inside() -> str:
        return run_logger().name

    assert inside() == "prefect.flow_runs"
