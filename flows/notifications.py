"""``renew-notification-channel`` flow: keep the Zoho CRM notification channel subscribed.

Zoho drops a notification channel at its ``channel_expiry`` (at most one week
ahead), and then the receiver hears nothing. This flow, meant for a daily
schedule, asks Zoho for the active channels (``GET /crm/v7/actions/watch``) and
writes the channel of a :class:`~blocks.notification_channel.NotificationChannel`
block again (a new expiry ``lifetime_hours`` ahead, the same token) when

* Zoho has no active channel with that id (never subscribed, lapsed, deleted),
* it expires within ``renew_before_hours``,
* its ``events`` or ``notify_url`` differ from the block's, or
* the block had no token (a new one was generated: Zoho's channel has the old one).

Otherwise it makes no write call. The verbs are Zoho's (CRM v7/v8 notifications docs,
crm-oas v8.0 ``notifications.json``): a channel Zoho has is updated with ``PUT`` (which
replaces its details: events, ``notify_url``, token, expiry), one it has not is
subscribed with ``POST``. Zoho gives a channel one hour, silently, when
``channel_expiry`` is missing or more than a week ahead (a clock ahead of Zoho's can
make a week look longer), so after writing, the expiry Zoho set is read back
(``GET /crm/v7/actions/watch?channel_id=``): an expiry other than the one asked for is
logged as a warning, shown in the artifact, and fails the run with
:class:`ChannelExpiryCutError` naming both. The block keeps the expiry Zoho set; a
markdown artifact shows channel id, events, notify_url and expiry (never the token).

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


class ChannelExpiryCutError(ChannelRefusedError):
    """Zoho took the channel but set another expiry than the one asked for (code
    ``CHANNEL_EXPIRY_CUT``; ``details``: ``channel_id``, ``asked`` and ``got``, ISO 8601 UTC):
    Zoho gives one hour, silently, to a ``channel_expiry`` missing or more than a week ahead.
    The channel lives until ``got``; the block keeps that expiry, so the next run renews it."""


#: An expiry Zoho set this far from the one asked for (seconds) is not the one asked for.
EXPIRY_TOLERANCE_SECONDS = 60.0


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


@task(name="subscribe-notification-channel", task_run_name="{verb}-notification-channel-{channel.channel_id}", cache_policy=NO_CACHE, retry_condition_fn=retry_transient, **ZOHO_RETRIES)
async def subscribe_channel(oauth_block: str, channel: WatchChannel, verb: str = "POST") -> dict[str, Any]:
    """Write one channel: ``POST /crm/v7/actions/watch`` (subscribe) or ``PUT`` (update a
    channel Zoho has, replacing its details); Zoho's success details.

    A per-channel refusal raises :class:`ChannelRefusedError` with Zoho's code and
    message (not retried: the same request would be refused again).
    """
    block = await ZohoOAuth.aload(oauth_block)
    async with block.get_client() as zoho:
        results = await (zoho.crm.update_watch([channel]) if verb == "PUT" else zoho.crm.watch([channel]))
        endpoint = f"{verb} /crm/{zoho.crm.version}/actions/watch"
    if not results:
        raise ChannelRefusedError("UNEXPECTED_ANSWER", f"Zoho answered no result for notification channel {channel.channel_id}", endpoint=endpoint)
    if not results[0].ok:
        raise _refusal(results[0], channel.channel_id, endpoint)
    return results[0].details


@task(name="read-notification-channel", task_run_name="read-notification-channel-{channel_id}", cache_policy=NO_CACHE, retry_condition_fn=retry_transient, **ZOHO_RETRIES)
async def read_channel(oauth_block: str, channel_id: int | str) -> dict[str, Any] | None:
    """``GET /crm/v7/actions/watch?channel_id=``: the channel as Zoho has it now (its real expiry), or None."""
    block = await ZohoOAuth.aload(oauth_block)
    async with block.get_client() as zoho:
        return await zoho.crm.get_channel(channel_id)


def expiry_problem(channel_id: int | str, asked: datetime, got: datetime | None, now: datetime) -> str | None:
    """Why the expiry Zoho set (``got``, read back) is not the one asked for, or None when it is
    (within :data:`EXPIRY_TOLERANCE_SECONDS`). Names both, in UTC, and the hours left."""
    if got is not None and abs((got - asked).total_seconds()) <= EXPIRY_TOLERANCE_SECONDS:
        return None
    asked_text = asked.astimezone(UTC).isoformat()
    if got is None:
        return f"Zoho lists no active notification channel {channel_id} after it was written (asked to expire at {asked_text})"
    return (
        f"Zoho set notification channel {channel_id} to expire at {got.astimezone(UTC).isoformat()} ({hours_left(got, now)} hours from now), "
        f"not at {asked_text} as asked: Zoho gives one hour when channel_expiry is missing or more than a week ahead "
        "(is this machine's clock ahead of Zoho's?); notifications stop then unless the channel is renewed"
    )


async def subscribe(block: NotificationChannel, channel_block: str, expiry: datetime | None = None, *, update: bool = False, check: bool = True) -> datetime | None:
    """Write ``block``'s channel at Zoho until ``expiry``, read back the expiry Zoho set, and save
    that in the block document ``channel_block``; returns it (None: Zoho does not list the channel).

    ``update``: the channel is active at Zoho: ``PUT`` (replaces its details; a channel Zoho no
    longer has is then subscribed with ``POST``); else ``POST``. ``expiry`` defaults to
    ``lifetime_hours`` from now. Raises :class:`ChannelRefusedError` (and saves nothing) when
    Zoho refuses the channel, and with ``check`` :class:`ChannelExpiryCutError` (after saving
    the expiry Zoho set) when that is not the one asked for (:func:`expiry_problem`). In a
    flow run the calls are tasks (retried, shown in the UI); outside one (``make up``) the
    tasks' functions are called as they are, so no task run is created without a flow run.
    """
    expiry = expiry or new_expiry(block, datetime.now(UTC))
    watch = WatchChannel(channel_id=block.channel_id, events=block.events, channel_expiry=expiry, token=block.token, notify_url=block.notify_url)
    in_flow = FlowRunContext.get() is not None
    send = subscribe_channel if in_flow else subscribe_channel.fn
    read = read_channel if in_flow else read_channel.fn
    try:
        await send(block.oauth_block, watch, "PUT" if update else "POST")
    except ChannelRefusedError as exc:
        if not update or not (exc.code == "NOT_SUBSCRIBED" or exc.details.get("api_name") == "channel_id"):
            raise
        await send(block.oauth_block, watch, "POST")  # lapsed since it was listed: subscribe it anew
    got = parse_expiry((await read(block.oauth_block, block.channel_id) or {}).get("channel_expiry"))
    block.channel_expiry = got
    await block.asave(channel_block, overwrite=True)
    problem = expiry_problem(block.channel_id, expiry, got, datetime.now(UTC))
    if check and problem:
        raise ChannelExpiryCutError(
            "CHANNEL_EXPIRY_CUT", problem,
            {"channel_id": str(block.channel_id), "asked": expiry.astimezone(UTC).isoformat(), "got": got.astimezone(UTC).isoformat() if got else None},
        )
    return got


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
        ("renewed this run", f"{report['renewed']}" + (f" ({report['verb']}: {report['reason']})" if report["reason"] else "")),
        ("expiry check", f"**failed**: {report['problem']}" if report.get("problem") else ("the expiry Zoho set is the one asked for" if report["renewed"] else "-")),
    ]
    return f"### Zoho notification channel: `{name}`\n\n| | |\n|---|---|\n" + "".join(f"| {k} | {v} |\n" for k, v in rows)


@flow(name="renew-notification-channel", flow_run_name=_run_name, log_prints=False)
async def renew_notification_channel(channel_block: str = "crm-channel") -> dict[str, Any]:
    """Subscribe the channel of the ``NotificationChannel`` block ``channel_block`` when it needs it.

    Returns ``{"block", "channel_id", "events", "notify_url", "channel_expiry" (ISO,
    UTC: the expiry Zoho set), "hours_left", "renewed", "reason", "verb" (``PUT`` for a
    channel Zoho has, ``POST`` for one it has not, None), "problem"}``; never the token.
    Raises :class:`ChannelRefusedError` when Zoho refuses the channel, and
    :class:`ChannelExpiryCutError` (after the artifact, with a warning logged) when Zoho set
    another expiry than the one asked for.
    """
    logger = get_run_logger()
    block = await NotificationChannel.aload(channel_block)
    now = datetime.now(UTC)
    zoho = find_channel(await list_channels(block.oauth_block), block.channel_id)
    reason = renewal_reason(block, zoho, now)
    verb = problem = None
    if reason:
        asked = new_expiry(block, now)
        verb = "PUT" if zoho is not None else "POST"
        logger.info("Writing notification channel %s (%s, %s) until %s: %s", block.channel_id, verb, ", ".join(block.events), asked.isoformat(), reason)
        expiry = await subscribe(block, channel_block, asked, update=zoho is not None, check=False)
        problem = expiry_problem(block.channel_id, asked, expiry, datetime.now(UTC))
        if problem:
            logger.warning("Notification channel expiry check failed: %s", problem)
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
        "verb": verb,
        "problem": problem,
    }
    await acreate_markdown_artifact(
        key=f"notification-channel-{channel_block}".lower().replace("_", "-"),
        markdown=_markdown(channel_block, report),
        description="The Zoho CRM notification channel and when it expires",
    )
    if problem:
        raise ChannelExpiryCutError("CHANNEL_EXPIRY_CUT", problem, {"channel_id": str(block.channel_id), "got": report["channel_expiry"]})
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
