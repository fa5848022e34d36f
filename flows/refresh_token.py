"""``refresh-token`` flow: keep a ``ZohoOAuth`` block's access token fresh ahead of expiry.

Meant for a schedule (every 45 minutes against Zoho's 1-hour tokens): it
refreshes when fewer than ``min_remaining_minutes`` remain, so API calls never
wait for a refresh, and reports when the token expires (log line, markdown
artifact, return value). One refresh per run at most, so it cannot approach
Zoho's 10-tokens-per-10-minutes cap.
"""

from __future__ import annotations

from datetime import timedelta

from prefect import flow, get_run_logger
from prefect.artifacts import acreate_markdown_artifact

from tasks.tokens import ensure_fresh_token


@flow(name="refresh-token", flow_run_name="refresh-token-{block_name}", log_prints=False)
async def refresh_token(block_name: str = "zoho-sandbox", min_remaining_minutes: int = 20) -> dict[str, object]:
    """Refresh the token of ``block_name`` if fewer than ``min_remaining_minutes`` remain.

    Returns ``{"block", "expires_at", "minutes_left", "refreshed"}`` (no secrets).
    """
    logger = get_run_logger()
    report = await ensure_fresh_token(block_name, timedelta(minutes=min_remaining_minutes))
    verb = "refreshed; it" if report["refreshed"] else "still valid; it"
    logger.info("Token of %s %s expires at %s (%s minutes left)", block_name, verb, report["expires_at"], report["minutes_left"])
    await acreate_markdown_artifact(
        key=f"token-{block_name}".lower().replace("_", "-"),
        markdown=(
            f"### Zoho token: `{block_name}`\n\n| | |\n|---|---|\n"
            f"| refreshed this run | {report['refreshed']} |\n| expires at (UTC) | {report['expires_at']} |\n"
            f"| minutes left | {report['minutes_left']} |\n"
        ),
        description="When the shared Zoho access token expires",
    )
    return report
