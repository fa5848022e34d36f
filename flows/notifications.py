"""``renew-notification-channel`` flow: keep the Zoho CRM notification channel subscribed.

Zoho drops a notification channel at its ``channel_expiry`` (at most one week
ahead), and then the receiver hears nothing. This flow, meant for a daily
schedule, asks Zoho for the active channels (``GET /crm/v7/actions/watch``) and
subscribes the channel of a :class:`~blocks.notification_channel.NotificationChannel`
block again (``POST``, a new expiry ``lifetime_hours`` ahead, the same token) when

* Zoho has no active channel with that id (never subscribed, lapsed, deleted),
* it expires within ``renew_before_hours``,
* its ``events`` or ``notify_url`` differ from the block's, or
* the block had no token (a new one was generated: Zoho's channel has the old one).

Otherwise it makes no write call. The block keeps the expiry; a markdown artifact
shows channel id, events, notify_url and expiry (never the token).

:func:`subscribe` is the project's one way to subscribe a channel: this flow and
``make up`` (:func:`deployments.onboarding.subscribe_receiver_channel`) use it;
:func:`blocks.notification_channel.configure_channel` creates or updates the block
beforehand (``make up``, ``appt-sync webhooks subscribe``).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import acreate_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext

from blocks.notification_channel import NotificationChannel
from blocks.zoho_oauth import ZohoOAuth
from tasks.retry import ZOHO_RETRIES, retry_transient
from zoho.errors import ZohoError
from zoho.models import WatchChannel

UTC = timezone.utc


class ChannelRefusedError(ZohoError):
    """Zoho refused to subscribe a channel (a per-channel ``status: error`` in the watch answer)."""


# ------------------------------------------------------------------ helpers
def parse_expiry(value: Any) -> datetime | None:
    """Zoho's ``channel_expiry`` (ISO 8601 with offset) as an aware datetime, or None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def find_channel(active: list[dict[str, Any]], channel_id: int | str) -> dict[str, Any] | None:
    """The entry of ``GET actions/watch`` with ``channel_id`` (Zoho answers ids as strings)."""
    return next((c for c in active if str(c.get("channel_id")) == str(channel_id)), None)


def hours_left(expiry: datetime | None, now: datetime) -> float | None:
    """Hours from ``now`` to ``expiry``, one decimal."""
    return None if expiry is None else round((expiry - now).total_seconds() / 3600, 1)


def new_expiry(block: NotificationChannel, now: datetime) -> datetime:
    """When a channel subscribed ``now`` expires: ``lifetime_hours`` ahead, whole seconds."""
    return (now + timedelta(hours=block.lifetime_hours)).replace(microsecond=0)


def renewal_reason(block: NotificationChannel, zoho: dict[str, Any] | None, now: datetime) -> str | None:
    """Why the channel must be subscribed again, or None when it is fine as it is."""
    if zoho is None:
        return "Zoho has no active channel with this id"
    expiry = parse_expiry(zoho.get("channel_expiry"))
    if expiry is None or expiry - now <= timedelta(hours=block.renew_before_hours):
        return f"it expires within {block.renew_before_hours:g} hours"
    if sorted(zoho.get("events") or []) != sorted(block.events) or zoho.get("notify_url") != block.notify_url:
        return "its events or notify_url differ from the block"
    if block.token_generated:
        return "the block had no token; a new one was generated"
    return None


def _refusal(result: Any, channel_id: int | str, endpoint: str) -> ChannelRefusedError:
    where = f" (field {result.details['api_name']})" if isinstance(result.details.get("api_name"), str) else ""
    return ChannelRefusedError(
        result.code,
        f"Zoho refused notification channel {channel_id}{where}: {result.message}",
        result.details,
        None,
        endpoint,
    )


# -------------------------------------------------------------------- tasks
@task(name="list-notification-channels", cache_policy=NO_CACHE, retry_condition_fn=retry_transient, **ZOHO_RETRIES)
async def list_channels(oauth_block: str) -> list[dict[str, Any]]:
    """``GET /crm/v7/actions/watch``: the org's active channels (no tokens in Zoho's answer)."""
    block = await ZohoOAuth.aload(oauth_block)
    async with block.get_client() as zoho:
        return await zoho.crm.get_watch()


@task(name="subscribe-notification-channel", task_run_name="subscribe-channel-{channel.channel_id}", cache_policy=NO_CACHE, retry_condition_fn=retry_transient, **ZOHO_RETRIES)
async def subscribe_channel(oauth_block: str, channel: WatchChannel) -> dict[str, Any]:
    """``POST /crm/v7/actions/watch`` for one channel; Zoho's success details.

    A per-channel refusal raises :class:`ChannelRefusedError` with Zoho's code and
    message (not retried: the same request would be refused again).
    """
    block = await ZohoOAuth.aload(oauth_block)
    async with block.get_client() as zoho:
        results = await zoho.crm.watch([channel])
        endpoint = f"POST /crm/{zoho.crm.version}/actions/watch"
    if not results:
        raise ChannelRefusedError("UNEXPECTED_ANSWER", f"Zoho answered no result for notification channel {channel.channel_id}", endpoint=endpoint)
    if not results[0].ok:
        raise _refusal(results[0], channel.channel_id, endpoint)
    return results[0].details


async def subscribe(block: NotificationChannel, channel_block: str, expiry: datetime | None = None) -> datetime:
    """Subscribe ``block``'s channel at Zoho until ``expiry`` and save the expiry in the block document ``channel_block``.

    ``expiry`` defaults to ``lifetime_hours`` from now. Returns it. Raises
    :class:`ChannelRefusedError` (and saves nothing) when Zoho refuses the channel.
    In a flow run the call is the ``subscribe-notification-channel`` task (retried,
    shown in the UI); outside one (``make up``) the task's function is called as is,
    so no task run is created without a flow run to log to.
    """
    expiry = expiry or new_expiry(block, datetime.now(UTC))
    watch = WatchChannel(channel_id=block.channel_id, events=block.events, channel_expiry=expiry, token=block.token, notify_url=block.notify_url)
    send = subscribe_channel if FlowRunContext.get() is not None else subscribe_channel.fn
    await send(block.oauth_block, watch)
    block.channel_expiry = expiry
    await block.asave(channel_block, overwrite=True)
    return expiry


# --------------------------------------------------------------------- flow
def _run_name() -> str:
    """``renew-notification-channel-crm-channel-2026-11-21T10:05Z``."""
    from prefect.runtime import flow_run as current

    block = current.parameters.get("channel_block", "crm-channel")
    return f"renew-notification-channel-{block}-{datetime.now(UTC):%Y-%m-%dT%H:%MZ}"


def _markdown(name: str, report: dict[str, Any]) -> str:
    rows = [
        ("channel id", f"`{report['channel_id']}`"),
        ("events", ", ".join(f"`{e}`" for e in report["events"])),
        ("notify_url", report["notify_url"]),
        ("expires at (UTC)", report["channel_expiry"]),
        ("hours left", report["hours_left"]),
        ("renewed this run", f"{report['renewed']}" + (f" ({report['reason']})" if report["reason"] else "")),
    ]
    return f"### Zoho notification channel: `{name}`\n\n| | |\n|---|---|\n" + "".join(f"| {k} | {v} |\n" for k, v in rows)


@flow(name="renew-notification-channel", flow_run_name=_run_name, log_prints=False)
async def renew_notification_channel(channel_block: str = "crm-channel") -> dict[str, Any]:
    """Subscribe the channel of the ``NotificationChannel`` block ``channel_block`` when it needs it.

    Returns ``{"block", "channel_id", "events", "notify_url", "channel_expiry" (ISO,
    UTC), "hours_left", "renewed", "reason"}``; never the token. Raises
    :class:`ChannelRefusedError` when Zoho refuses the channel.
    """
    logger = get_run_logger()
    block = await NotificationChannel.aload(channel_block)
    now = datetime.now(UTC)
    zoho = find_channel(await list_channels(block.oauth_block), block.channel_id)
    reason = renewal_reason(block, zoho, now)
    if reason:
        expiry = new_expiry(block, now)
        logger.info("Subscribing notification channel %s (%s) until %s: %s", block.channel_id, ", ".join(block.events), expiry.isoformat(), reason)
        await subscribe(block, channel_block, expiry)
    else:
        expiry = parse_expiry(zoho["channel_expiry"]) if zoho else None
        logger.info("Notification channel %s is active until %s; nothing to do", block.channel_id, expiry.isoformat() if expiry else "?")
        if block.channel_expiry != expiry:
            block.channel_expiry = expiry
            await block.asave(channel_block, overwrite=True)
    report = {
        "block": channel_block,
        "channel_id": block.channel_id,
        "events": list(block.events),
        "notify_url": block.notify_url,
        "channel_expiry": expiry.astimezone(UTC).isoformat() if expiry else None,
        "hours_left": hours_left(expiry, now),
        "renewed": reason is not None,
        "reason": reason,
    }
    await acreate_markdown_artifact(
        key=f"notification-channel-{channel_block}".lower().replace("_", "-"),
        markdown=_markdown(channel_block, report),
        description="The Zoho CRM notification channel and when it expires",
    )
    return report


# ------------------------------------------------------------ status (CLI)
async def channel_status(channel_block: str = "crm-channel") -> dict[str, Any]:
    """What Zoho has now for ``appt-sync webhooks status`` (no flow run, no write, no token).

    Returns ``{"block", "channel_id", "renew_before_hours", "channels": [{"channel_id",
    "events", "notify_url", "channel_expiry", "hours_left", "is_block_channel",
    "matches_block"}], "problem"}``; ``problem`` is why the next
    ``renew-notification-channel`` run would subscribe the block's channel, or None.
    """
    block = await NotificationChannel.aload(channel_block)
    oauth = await ZohoOAuth.aload(block.oauth_block)
    async with oauth.get_client() as zoho:
        active = await zoho.crm.get_watch()
    now = datetime.now(UTC)
    channels = []
    for c in active:
        expiry = parse_expiry(c.get("channel_expiry"))
        mine = str(c.get("channel_id")) == str(block.channel_id)
        channels.append(
            {
                "channel_id": str(c.get("channel_id")),
                "events": list(c.get("events") or []),
                "notify_url": c.get("notify_url"),
                "channel_expiry": expiry.astimezone(UTC).isoformat() if expiry else c.get("channel_expiry"),
                "hours_left": hours_left(expiry, now),
                "is_block_channel": mine,
                "matches_block": mine and sorted(c.get("events") or []) == sorted(block.events) and c.get("notify_url") == block.notify_url,
            }
        )
    return {
        "block": channel_block,
        "channel_id": block.channel_id,
        "renew_before_hours": block.renew_before_hours,
        "channels": channels,
        "problem": renewal_reason(block, find_channel(active, block.channel_id), now),
    }
