"""Prefect flows: ``refresh_token``, ``bulk_read``, ``sync_appointments``, ``handle_webhook``...

Built from issue 3 on; empty until then.
"""
