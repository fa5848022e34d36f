"""Retry policy for Prefect tasks that call Zoho.

Transient failures (429 with ``Retry-After``, 5xx, timeouts, dropped connections)
are retried with Prefect's task retries, exponential back-off and jitter; every
other error (bad data, ``NOT_ALLOWED``, bad credentials, and token throttling,
which lasts minutes and is guarded by the ``ZohoOAuth`` block) fails at once.

One transport error fails at once too: a connection *refused* by a loopback host
(``127.0.0.0/8``, ``::1``, ``localhost``: the sandbox). That answer comes from this
machine's own kernel, at once, and means nothing listens on the port (the sandbox
is not running, or the block names the wrong port); 30 s of back-off would not
start it. Refusals from any other host (a load balancer mid-deploy, a network
blip) and every timeout or reset keep their retries.
"""

from __future__ import annotations

from typing import Any

from prefect.tasks import exponential_backoff

from zoho.errors import TokenThrottledError, TransportError, is_loopback, is_transient

#: Task retries for Zoho calls: 4 retries after 2, 4, 8, 16 s (+/- 50 % jitter).
ZOHO_RETRIES: dict[str, Any] = {
    "retries": 4,
    "retry_delay_seconds": exponential_backoff(backoff_factor=2),
    "retry_jitter_factor": 0.5,
}


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """``retry_condition_fn``: retry only transient Zoho errors (see :func:`zoho.errors.is_transient`).

    Prefect calls it synchronously, also for async tasks, where a bare
    ``state.result()`` would return a coroutine: ``_sync=True`` reads the
    exception the same way for both.
    """
    exc = state.result(raise_on_failure=False, _sync=True)
    if not isinstance(exc, BaseException) or isinstance(exc, TokenThrottledError) or refused_on_loopback(exc):
        return False
    return is_transient(exc)


def refused_on_loopback(exc: BaseException) -> bool:
    """Whether ``exc`` is a :class:`~zoho.errors.TransportError` for a connection refused by a
    loopback host (nothing listens there: retrying will not help; see the module doc)."""
    if not isinstance(exc, TransportError) or exc.details.get("reason") != "connection refused":
        return False
    return is_loopback(str(exc.details.get("url") or ""))
