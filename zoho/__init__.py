"""Pure Zoho API layer: httpx clients, pydantic models and typed errors. Never imports Prefect.

Built in issue 3; empty until then.
"""
