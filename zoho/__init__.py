"""Pure Zoho API layer: httpx clients, pydantic models and typed errors. Never imports Prefect.

Modules: ``clients`` (Accounts, CRM, Bookings), ``auth`` (token providers and the
``httpx.Auth``), ``errors``, ``models``, ``timefmt``, ``datacentres``.
"""
