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
