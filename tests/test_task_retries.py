"""Prefect task retries retry transient Zoho errors only."""

from __future__ import annotations

import httpx
import pytest
from prefect import flow, task

from tasks.retry import retry_transient
from zoho.errors import NotAllowedError, RateLimitedError, ServerError, TokenThrottledError, TransportError

ATTEMPTS: list[str] = []


def failing(errors: list[Exception]):
    """A task that raises ``errors`` one per attempt, then returns "ok"."""

    @task(retries=3, retry_delay_seconds=0, retry_condition_fn=retry_transient)
    def call() -> str:
        ATTEMPTS.append("x")
        if len(ATTEMPTS) <= len(errors):
            raise errors[len(ATTEMPTS) - 1]
        return "ok"

    @flow
    def run() -> str:
        return call()

    return run


@pytest.mark.parametrize(
    "error",
    [
        ServerError("INTERNAL_ERROR", "boom", status_code=500),
        RateLimitedError("TOO_MANY_REQUESTS", "slow down", status_code=429, retry_after=1),
        TransportError("READTIMEOUT", "no answer"),
        httpx.ConnectError("refused"),
    ],
)
def test_transient_errors_are_retried(prefect_api, error):
    ATTEMPTS.clear()
    assert failing([error, error])() == "ok"
    assert len(ATTEMPTS) == 3


@pytest.mark.parametrize(
    "error",
    [NotAllowedError("NOT_ALLOWED", "cancelled", status_code=403), TokenThrottledError("ACCESS_DENIED", "too many"), ValueError("bug")],
)
def test_other_errors_fail_at_once(prefect_api, error):
    ATTEMPTS.clear()
    with pytest.raises(type(error)):
        failing([error])()
    assert len(ATTEMPTS) == 1


def test_retries_are_bounded(prefect_api):
    ATTEMPTS.clear()
    boom = ServerError("INTERNAL_ERROR", "boom", status_code=500)
    with pytest.raises(ServerError):
        failing([boom] * 10)()
    assert len(ATTEMPTS) == 4


def test_async_tasks_retry_transient_errors_too(prefect_api):
    """Prefect calls retry_condition_fn synchronously also for async tasks."""
    attempts: list[int] = []

    @task(retries=2, retry_delay_seconds=0, retry_condition_fn=retry_transient)
    async def call() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise ServerError("INTERNAL_ERROR", "boom", status_code=500)
        return "ok"

    @flow
    async def run() -> str:
        return await call()

    import asyncio

    assert asyncio.run(run()) == "ok"
    assert len(attempts) == 2


def test_a_retry_waits_for_retry_after(prefect_api):
    """The Zoho retry policy schedules the retry no sooner than the answer's Retry-After."""
    import time

    from tasks.retry import RetryAfterDelays

    starts: list[float] = []

    @task(retries=2, retry_delay_seconds=RetryAfterDelays([0.0]), retry_jitter_factor=None, retry_condition_fn=retry_transient)
    async def call() -> str:
        starts.append(time.monotonic())
        if len(starts) == 1:
            raise RateLimitedError("TOO_MANY_REQUESTS", "slow down", status_code=429, retry_after=2)
        if len(starts) == 2:
            raise ServerError("INTERNAL_ERROR", "boom", status_code=500)
        return "ok"

    @flow
    async def run() -> str:
        return await call()

    import asyncio

    assert asyncio.run(run()) == "ok"
    assert starts[1] - starts[0] >= 2.0  # Retry-After, not the 0 s back-off
    assert starts[2] - starts[1] < 2.0  # no Retry-After: the back-off alone


def test_zoho_retries_honour_retry_after_up_to_a_cap():
    from tasks.retry import MAX_RETRY_AFTER, NEXT_RETRY_AFTER, ZOHO_RETRIES

    delays = ZOHO_RETRIES["retry_delay_seconds"]
    assert all(1.0 <= delays[0] <= 3.0 for _ in range(50))  # 2 s +/- jitter
    NEXT_RETRY_AFTER.set(30.0)
    assert delays[0] == 30.0 and 1.0 <= delays[0] <= 3.0  # read once
    NEXT_RETRY_AFTER.set(MAX_RETRY_AFTER)
    assert delays[3] == MAX_RETRY_AFTER
