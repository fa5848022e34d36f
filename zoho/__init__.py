"""Pure Zoho API layer: httpx clients, pydantic models and typed errors. Never imports Prefect.

Modules: ``clients`` (Accounts, CRM, Bookings), ``auth`` (token providers, the
``httpx.Auth`` and the token policy ``needs_refresh``), ``errors`` (typed errors with
``retry_after``), ``paging`` (cursors for CRM records, Bookings and Bulk Read pages),
``usage`` (every call counted per API family, and refused before it is sent past the
run's allowance or after a limit answer), ``models``, ``timefmt``, ``datacentres``.
"""
