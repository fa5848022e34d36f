"""Onboarding: turn a Zoho grant code into a saved ``ZohoOAuth`` block, and connect the sandbox.

:func:`onboard` follows Zoho's OAuth steps (self client -> grant code ->
``grant_type=authorization_code`` -> refresh token); see README "Connecting to Zoho".

A real organisation's ``AppointmentSyncConfig`` gets its Bookings workspace time
zone from :func:`save_org_config` (``appt-sync auth --config NAME
--bookings-time-zone ZONE``): Zoho documents no zone for ``fetchappointment``'s
window and the block's ``UTC`` default is only a placeholder, so onboarding asks
for the zone (checked by :func:`check_time_zone`) instead of guessing it.

For the local stack (``make up``, ``make demo``): :func:`connect` onboards the
sandbox into the ``ZohoOAuth`` block ``zoho-sandbox`` (when that block does not
work with it yet) and saves the ``AppointmentSyncConfig`` ``sync-sandbox``
(:func:`save_sync_config`, state store ``.data/stack-state.db``, Bookings time
zone the sandbox's own ``org_time_zone``: :func:`sandbox_time_zone`; both CRM
modules, ``Appointments__s`` and Meetings, ``Events``); :func:`wire`
points the sandbox's Bookings webhook and a CRM notification channel (kept in the
``NotificationChannel`` block ``crm-channel``, which ``renew-notification-channel``
renews; it watches ``<module>.all`` of each module the config syncs) at the webhook receiver.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
from pydantic import SecretStr

if TYPE_CHECKING:
    from blocks.zoho_oauth import ZohoOAuth

# Prefect (through the blocks) is imported inside the functions that need it, so
# ``python -m deployments.stack down`` (which imports this module) stays quick.


async def onboard(
    block_name: str,
    *,
    client_id: str,
    client_secret: SecretStr,
    code: SecretStr,
    data_centre: str = "US",
    base_url: str | None = None,
    redirect_uri: str | None = None,
    zoho_user: str | None = None,
    scopes: list[str] | None = None,
) -> ZohoOAuth:
    """Exchange ``code`` and save block ``block_name`` (overwriting one of that name).

    Raises :class:`~zoho.errors.AuthError` subclasses for a bad client or code,
    ``ValueError`` for an unknown data centre.
    """
    from blocks.zoho_oauth import ZohoOAuth
    from zoho.clients import ZohoClient
    from zoho.datacentres import DataCentre, Endpoints

    dc = DataCentre(data_centre.upper())
    async with ZohoClient(Endpoints.for_data_centre(dc, base_url)) as zoho:
        answer = await zoho.accounts.exchange_code(client_id, client_secret, code, redirect_uri)
    if answer.refresh_token is None:
        raise ValueError("Zoho answered without a refresh_token: generate the grant code with access_type offline")
    block = ZohoOAuth(
        client_id=client_id,
        client_secret=client_secret,
        refresh_token=answer.refresh_token,
        access_token=answer.access_token,
        expires_at=datetime.now(timezone.utc) + timedelta(seconds=answer.expires_in),
        data_centre=dc,
        base_url=base_url,
        api_domain=answer.api_domain,
        scopes=scopes or (answer.scope.replace(",", " ").split() if answer.scope else []),
        zoho_user=zoho_user,
    )
    await block.asave(block_name, overwrite=True)
    return block


#: The least-privilege scopes of the pipeline (README "Connecting to Zoho"): its two
#: CRM modules, Bulk Read, the field metadata, the notification channel, Bookings.
SCOPES = (
    "ZohoCRM.modules.appointments.ALL",
    "ZohoCRM.modules.events.ALL",
    "ZohoCRM.bulk.read",
    "ZohoCRM.settings.fields.READ",
    "ZohoCRM.notifications.ALL",
    "zohobookings.data.CREATE",
)


def sandbox_grant(url: str, scopes: tuple[str, ...] | list[str] = SCOPES) -> tuple[str, str, str, list[str]]:
    """``(client_id, client_secret, grant_code, scopes)`` from a running sandbox's admin API.

    The grant code is for the sandbox's own self client and exactly ``scopes``
    (default :data:`SCOPES`), as one generated in the Zoho API console would be;
    the tokens exchanged for it carry those scopes only. Raises
    ``httpx.HTTPError`` when the sandbox does not answer or refuses.
    """
    url = url.rstrip("/")
    creds = httpx.get(f"{url}/__sandbox/credentials", timeout=10).raise_for_status().json()
    body = {"client_id": creds["client_id"], "scope": list(scopes)}
    code = httpx.post(f"{url}/__sandbox/grant-code", json=body, timeout=10).raise_for_status().json()
    return creds["client_id"], creds["client_secret"], code["code"], list(scopes)


# ------------------------------------------------------------- Bookings time zone
#: The sandbox's workspace time zone unless it was started with another ``--org-time-zone``.
SANDBOX_TIME_ZONE = "Asia/Kolkata"


def check_time_zone(zone: str) -> str:
    """``zone`` when it is an IANA time zone name (``Europe/Berlin``, ``UTC``); else ``ValueError``
    with one line saying so, naming the right spelling when only the case was wrong."""
    from zoneinfo import available_timezones

    zones = (available_timezones() | {"UTC"}) - {"localtime", "posixrules", "Factory"}  # files in a zoneinfo folder, not zones
    if zone in zones:
        return zone
    close = [z for z in zones if z.lower() == zone.strip().lower()]
    hint = f"did you mean {close[0]}?" if close else "e.g. Europe/Berlin, America/New_York, Asia/Kolkata"
    raise ValueError(f"{zone!r} is not an IANA time zone ({hint})")


def sandbox_time_zone(sandbox_url: str) -> str:
    """The running sandbox's workspace time zone (``org_time_zone`` of ``GET /__sandbox/config``), the zone
    its ``fetchappointment`` reads the window in. Raises ``httpx.HTTPError`` when it does not answer,
    ``ValueError`` when its zone is not an IANA name."""
    config = httpx.get(f"{sandbox_url.rstrip('/')}/__sandbox/config", timeout=10).raise_for_status().json()
    return check_time_zone(str(config.get("org_time_zone") or SANDBOX_TIME_ZONE))


async def save_org_config(config_block: str, oauth_block: str, bookings_time_zone: str) -> bool:
    """Create ``AppointmentSyncConfig`` ``config_block`` for an organisation, or update it, with its
    ``oauth_block`` and Bookings workspace time zone; every other setting keeps its value (or
    default). Returns whether the block was created. Raises ``ValueError`` (nothing saved) when
    ``bookings_time_zone`` is not an IANA time zone (:func:`check_time_zone`)."""
    from blocks import AppointmentSyncConfig

    zone = check_time_zone(bookings_time_zone)
    try:
        config = await AppointmentSyncConfig.aload(config_block)
        created = False
    except ValueError:  # no block of that name yet
        config, created = AppointmentSyncConfig(), True
    config.oauth_block = oauth_block
    config.bookings_time_zone = zone
    await config.asave(config_block, overwrite=True)
    return created


# ------------------------------------------------------------------- the local stack
OAUTH_BLOCK = "zoho-sandbox"
CONFIG_BLOCK = "sync-sandbox"
#: The ``NotificationChannel`` block of the CRM channel ``make up`` subscribes (what
#: ``renew-notification-channel`` renews), and the channel's id when it is new.
CHANNEL_BLOCK = "crm-channel"
CHANNEL_ID = 1000000068001
#: The CRM modules the sandbox organisation syncs (``AppointmentSyncConfig.crm_modules``).
SANDBOX_MODULES = ("Appointments__s", "Events")


def state_store_url(data: Path) -> str:
    """The state store of the ``sync-sandbox`` config (``make up`` and ``make demo``): ``data/stack-state.db``."""
    return f"sqlite:///{data / 'stack-state.db'}"


async def save_sync_config(config_block: str, oauth_block: str, data: Path, bookings_time_zone: str = SANDBOX_TIME_ZONE) -> None:
    """Save the ``AppointmentSyncConfig`` ``config_block`` for the sandbox (the one ``up()`` and the demo use):
    both CRM modules (:data:`SANDBOX_MODULES`: Appointments and Meetings), the sandbox's workspace
    time zone (``bookings_time_zone``: pass :func:`sandbox_time_zone`; its
    default, Asia/Kolkata, is the sandbox's default), its default plans (Bookings Premium,
    CRM Enterprise with 10 users: ``sandbox/config.py``) and the page size it accepts
    (``fetchappointment`` ``per_page`` up to 100: half the window calls of the default 50), so the
    window and the budget match what it does. Raises ``ValueError`` for a zone that is not an IANA name."""
    from blocks import AppointmentSyncConfig

    config = AppointmentSyncConfig(
        oauth_block=oauth_block, bookings_time_zone=check_time_zone(bookings_time_zone), state_store_url=state_store_url(data),
        bookings_plan="premium", crm_edition="enterprise", crm_users=10, bookings_page_size=100, crm_modules=list(SANDBOX_MODULES),
    )
    await config.asave(config_block, overwrite=True)


async def connect(sandbox_url: str, data: Path, oauth_block: str, config_block: str) -> bool:
    """Make sure ``oauth_block`` works with this sandbox (onboard if not) and save ``config_block``
    (in the sandbox's own time zone, :func:`sandbox_time_zone`).

    Returns whether the sandbox was onboarded now.
    """
    from blocks.zoho_oauth import ZohoOAuth
    from zoho.errors import ZohoError

    onboarded = False
    try:
        block = await ZohoOAuth.aload(oauth_block)
        if block.base_url != sandbox_url:
            raise ValueError("another sandbox")
        async with block.get_client() as zoho:
            await zoho.crm.get_watch()  # the grant still works (the sandbox may have been re-seeded)
    except (ValueError, ZohoError):
        client_id, secret, code, scopes = sandbox_grant(sandbox_url)
        await onboard(oauth_block, client_id=client_id, client_secret=SecretStr(secret), code=SecretStr(code), data_centre="CUSTOM", base_url=sandbox_url, scopes=scopes)
        onboarded = True
    await save_sync_config(config_block, oauth_block, data, sandbox_time_zone(sandbox_url))
    return onboarded


async def subscribe_receiver_channel(oauth_block: str, notify_url: str, token: str, channel_block: str = CHANNEL_BLOCK, config_block: str | None = None) -> None:
    """Subscribe the CRM notification channel to ``notify_url`` with ``token`` and keep it in a block.

    The ``NotificationChannel`` block ``channel_block`` (created with id
    :data:`CHANNEL_ID`, or updated: same channel id, the receiver's token) is what
    the daily ``renew-notification-channel`` deployment renews, so the channel keeps
    the token the receiver checks. With ``config_block`` (an ``AppointmentSyncConfig``)
    it watches ``<module>.all`` of each module that config syncs
    (:func:`~blocks.notification_channel.module_events`); without, the block's events
    (new: ``Appointments__s.all``). Raises ``RuntimeError`` when Zoho refuses it,
    ``ValueError`` when ``config_block`` does not exist.
    """
    from blocks.notification_channel import configure_channel, module_events
    from flows.notifications import ChannelRefusedError, subscribe

    events = None
    if config_block is not None:
        from blocks import AppointmentSyncConfig

        events = module_events((await AppointmentSyncConfig.aload(config_block)).synced_modules)
    block, _ = await configure_channel(channel_block, oauth_block=oauth_block, notify_url=notify_url, token=SecretStr(token), new_id=CHANNEL_ID, events=events)
    try:
        await subscribe(block, channel_block)
    except ChannelRefusedError as exc:
        raise RuntimeError(f"the sandbox refused the notification channel: {exc.code} {exc.message}") from exc


def wire(sandbox_url: str, receiver_url: str, oauth_block: str, secret: dict[str, str], config_block: str = CONFIG_BLOCK) -> None:
    """Point the sandbox's Bookings webhook and a CRM notification channel at the receiver.

    ``secret``: the receiver's secrets (:func:`deployments.services.receiver_secrets`).
    The channel watches each CRM module ``config_block`` syncs (:func:`subscribe_receiver_channel`).
    The Bookings secret travels in a header (not in the URL, which the sandbox's
    outbox log shows); the sandbox keeps its settings in memory, so this runs on
    every ``up()``.
    """
    hook = {"bookings_webhook_url": f"{receiver_url}/zoho/bookings/webhook", "bookings_webhook_headers": {"X-Zoho-Bookings-Secret": secret["APPT_SYNC_RECEIVER_BOOKINGS_SECRET"]}}
    httpx.put(f"{sandbox_url}/__sandbox/config", json=hook, timeout=10).raise_for_status()
    asyncio.run(subscribe_receiver_channel(oauth_block, f"{receiver_url}/zoho/crm/notifications", secret["APPT_SYNC_RECEIVER_CHANNEL_TOKEN"], config_block=config_block))
