"""Retry policy for Prefect tasks that call Zoho.

Transient failures (429, 5xx, timeouts, dropped connections) are retried with
Prefect's task retries, exponential back-off and jitter; every other error (bad
data, ``NOT_ALLOWED``, bad credentials, and token throttling, which lasts minutes
and is guarded by the ``ZohoOAuth`` block) fails at once.

``Retry-After`` is honoured here, for every Zoho task: the ``zoho`` layer puts the
header's seconds on the error (``retry_after``, see :func:`zoho.errors.retry_wait`),
:func:`retry_transient` notes it when it decides to retry, and the delays of
:data:`ZOHO_RETRIES` (:class:`RetryAfterDelays`) schedule that retry no sooner
than it (at most :data:`MAX_RETRY_AFTER` seconds): Prefect's ``AwaitingRetry``
state carries the real wait, and no task sleeps on its own. This works because
Prefect (3.8) asks ``retry_condition_fn`` and then reads the task's delay list in
the same task-run engine step; ``tests/test_task_retries.py`` pins it.

One transport error fails at once too: a connection *refused* by a loopback host
(``127.0.0.0/8``, ``::1``, ``localhost``: the sandbox). That answer comes from this
machine's own kernel, at once, and means nothing listens on the port (the sandbox
is not running, or the block names the wrong port); 30 s of back-off would not
start it. Refusals from any other host (a load balancer mid-deploy, a network
blip) and every timeout or reset keep their retries.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any, SupportsIndex, overload

from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger
from prefect.tasks import exponential_backoff
from prefect.utilities.math import clamped_poisson_interval

from zoho.errors import TokenThrottledError, TransportError, is_loopback, is_transient, retry_wait

#: Longest ``Retry-After`` a retry waits for, seconds (Zoho's Bulk Read download limit is
#: 10 a minute); a longer one is cut to this.
MAX_RETRY_AFTER = 90.0

#: The wait Zoho asked for, noted by ``retry_transient`` for the delay read right after it.
NEXT_RETRY_AFTER: ContextVar[float | None] = ContextVar("zoho_next_retry_after", default=None)


class RetryAfterDelays(list[float]):
    """Prefect ``retry_delay_seconds`` (a list of seconds per retry) that honours ``Retry-After``.

    Item ``i`` is ``delays[i]`` with jitter (Prefect's clamped Poisson interval,
    ``jitter`` as Prefect's ``retry_jitter_factor``: ``delays[i]`` x (0.63 to 1.5) for
    0.5), raised to the wait :func:`retry_transient` noted for the failure being
    retried (:data:`NEXT_RETRY_AFTER`, consumed by the read). Use it with
    ``retry_jitter_factor=None``, so Prefect does not jitter the Retry-After away.
    """

    def __init__(self, delays: list[float], jitter: float = 0.0) -> None:
        super().__init__(delays)
        self.jitter = jitter

    @overload
    def __getitem__(self, index: SupportsIndex) -> float: ...
    @overload
    def __getitem__(self, index: slice) -> list[float]: ...
    def __getitem__(self, index: SupportsIndex | slice) -> float | list[float]:
        if isinstance(index, slice):
            return list(self)[index]
        delay = list.__getitem__(self, index)
        if self.jitter and delay > 0:
            delay = clamped_poisson_interval(delay, clamping_factor=self.jitter)
        wait = NEXT_RETRY_AFTER.get()
        NEXT_RETRY_AFTER.set(None)
        return max(delay, wait) if wait else delay


#: Task retries for Zoho calls: 4 retries after 2, 4, 8, 16 s (+/- 50 % jitter), each no
#: sooner than the failed answer's ``Retry-After`` (up to :data:`MAX_RETRY_AFTER`).
ZOHO_RETRIES: dict[str, Any] = {
    "retries": 4,
    "retry_delay_seconds": RetryAfterDelays(exponential_backoff(backoff_factor=2)(4), jitter=0.5),
    "retry_jitter_factor": None,
}


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """``retry_condition_fn``: retry only transient Zoho errors (see :func:`zoho.errors.is_transient`).

    When it retries, notes the error's ``Retry-After`` (:func:`zoho.errors.retry_wait`,
    capped at :data:`MAX_RETRY_AFTER`) for :class:`RetryAfterDelays`, and logs it to
    the task run. Prefect calls it synchronously, also for async tasks, where a bare
    ``state.result()`` would return a coroutine: ``_sync=True`` reads the exception
    the same way for both.
    """
    NEXT_RETRY_AFTER.set(None)
    exc = state.result(raise_on_failure=False, _sync=True)
    if not isinstance(exc, BaseException) or isinstance(exc, TokenThrottledError) or refused_on_loopback(exc):
        return False
    if not is_transient(exc):
        return False
    wait = retry_wait(exc)
    if wait:
        wait = min(wait, MAX_RETRY_AFTER)
        NEXT_RETRY_AFTER.set(wait)
        try:
            get_run_logger().info("Zoho asked to wait %.0f s (Retry-After) before the next try", wait)
        except MissingContextError:
            pass
    return True


def refused_on_loopback(exc: BaseException) -> bool:
    """Whether ``exc`` is a :class:`~zoho.errors.TransportError` for a connection refused by a
    loopback host (nothing listens there: retrying will not help; see the module doc)."""
    if not isinstance(exc, TransportError) or exc.details.get("reason") != "connection refused":
        return False
    return is_loopback(str(exc.details.get("url") or ""))
