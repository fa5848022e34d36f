"""Retry policy for Prefect tasks that call Zoho.

Transient failures (429 with ``Retry-After``, 5xx, timeouts, dropped connections)
are retried with Prefect's task retries, exponential back-off and jitter; every
other error (bad data, ``NOT_ALLOWED``, bad credentials, and token throttling,
which lasts minutes and is guarded by the ``ZohoOAuth`` block) fails at once.
"""

from __future__ import annotations

from typing import Any

from prefect.tasks import exponential_backoff

from zoho.errors import TokenThrottledError, is_transient

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
    if not isinstance(exc, BaseException) or isinstance(exc, TokenThrottledError):
        return False
    return is_transient(exc)
