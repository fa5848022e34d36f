"""Prefect tasks: thin wrappers over ``zoho`` and ``sync`` adding retries, logging,
artifacts and concurrency.

* :mod:`tasks.sync`: one task per Zoho call of the sync (reads page by page, writes),
  and the helpers that drive them within the run's API budget.
* :mod:`tasks.budget`: the run's API budget (meter before, record after).
* :mod:`tasks.bulk_read`, :mod:`tasks.tokens`: Bulk Read and token tasks.
* :mod:`tasks.retry`: the retry policy (transient errors, ``Retry-After``).
"""
