"""Prefect Blocks: ``ZohoOAuth`` (the shared token store) and configuration blocks.

Built in issue 3; empty until then.
"""
