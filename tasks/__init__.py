"""Prefect tasks: thin wrappers over ``zoho`` and ``sync`` adding retries, logging,
artifacts and concurrency.

Built from issue 3 on; empty until then.
"""
