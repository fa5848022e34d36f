"""``NotificationChannel``: one Zoho CRM notification channel (``/crm/v7/actions/watch``), as a Prefect Block.

Zoho POSTs every change of a watched module to ``notify_url`` (the webhook
receiver's ``/zoho/crm/notifications``) with the channel's ``token``; the
receiver checks that token (``APPT_SYNC_RECEIVER_CHANNEL_TOKEN``). A channel lives
at most one week, so the ``renew-notification-channel`` flow
(:mod:`flows.notifications`) subscribes it again before ``channel_expiry``.

A channel watches ``<module>.all`` of every CRM module its organisation syncs
(:func:`module_events` of ``AppointmentSyncConfig.synced_modules``: ``Appointments__s``,
``Events`` or both).

The token is random (``secrets.token_urlsafe``, 43 characters; Zoho allows 50),
generated when the block is created without one, and kept across renewals.
Prefect encrypts it with the block's other ``SecretStr`` fields.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from prefect.blocks.core import Block
from pydantic import ConfigDict, Field, PrivateAttr, SecretStr, field_validator, model_validator

#: Zoho's cap on a channel's lifetime (API v4 and later), hours.
MAX_LIFETIME_HOURS = 7 * 24
#: Zoho's cap on the channel token's length.
MAX_TOKEN_LENGTH = 50


def new_token() -> str:
    """A random channel token (URL-safe, 43 characters)."""
    return secrets.token_urlsafe(32)


def _secret_text(value: Any) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return value if isinstance(value, str) else ""


class NotificationChannel(Block):
    """A CRM notification channel: which events go to which URL, with which token, until when.

    ``oauth_block``: the ``ZohoOAuth`` document the watch calls use. ``channel_id``:
    our number for the channel (Zoho's examples use 13 digits). ``events``: e.g.
    ``Appointments__s.all``, ``Events.edit``. ``notify_url``: the receiver's public
    URL of ``/zoho/crm/notifications``. ``token``: sent back in every notification
    (random when empty). ``channel_expiry``: when Zoho drops the channel (managed by
    the flow). The flow renews when fewer than ``renew_before_hours`` remain, for
    ``lifetime_hours`` (at most 168, Zoho's one week).
    """

    # A validation error must not quote the token it refused.
    model_config = ConfigDict(hide_input_in_errors=True)

    _block_type_name = "Zoho Notification Channel"
    _block_type_slug = "zoho-notification-channel"
    _description = "A Zoho CRM notification channel (events, notify_url, token, expiry) kept alive by renew-notification-channel."

    oauth_block: str = Field(default="zoho-sandbox", title="Zoho OAuth block", description="Name of the Zoho OAuth block document the watch (subscribe) calls use.")
    channel_id: int = Field(gt=0, title="Channel ID", description="The channel's number, of our choosing and unique in the Zoho org (13 digits in Zoho's examples).")
    events: list[str] = Field(default_factory=lambda: ["Appointments__s.all"], min_length=1, title="Watched events", description="Module events Zoho notifies, e.g. Appointments__s.all, Events.edit.")
    notify_url: str = Field(title="Notify URL", description="The webhook receiver's public URL of /zoho/crm/notifications, where Zoho POSTs each change.")
    token: SecretStr = Field(default_factory=lambda: SecretStr(new_token()), title="Channel token", description="Secret Zoho sends back in every notification (random when empty; at most 50 characters; stored encrypted).")
    channel_expiry: datetime | None = Field(default=None, title="Channel expires at (UTC, managed)", description="When Zoho drops the channel; managed by the renew-notification-channel flow.")
    renew_before_hours: float = Field(default=24, gt=0, title="Renew before expiry (hours)", description="Renew the channel when fewer hours than this remain.")
    lifetime_hours: float = Field(default=MAX_LIFETIME_HOURS - 1, gt=0, le=MAX_LIFETIME_HOURS, title="Channel lifetime (hours)", description="How long a renewed channel lives (Zoho: at most one week, 168 hours).")

    #: Whether the token was generated on loading because the document had none
    #: (then Zoho's channel carries another token, or none, and must be renewed).
    _token_generated: bool = PrivateAttr(default=False)

    @model_validator(mode="wrap")
    @classmethod
    def _fill_token(cls, data: Any, handler: Any) -> Any:
        missing = isinstance(data, dict) and not _secret_text(data.get("token"))
        if missing:
            data = {**data, "token": new_token()}
        block = handler(data)
        if missing:
            block._token_generated = True
        return block

    @field_validator("token")
    @classmethod
    def _token_length(cls, v: SecretStr) -> SecretStr:
        if len(v.get_secret_value()) > MAX_TOKEN_LENGTH:
            raise ValueError(f"the channel token has at most {MAX_TOKEN_LENGTH} characters")
        return v

    @field_validator("channel_expiry")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError("channel_expiry must be timezone-aware")
        return v

    @property
    def token_generated(self) -> bool:
        """Whether this instance made up its token (the stored document had none)."""
        return self._token_generated


def module_events(modules: list[str]) -> list[str]:
    """The events a channel watches for CRM ``modules`` (``AppointmentSyncConfig.synced_modules``):
    ``<module>.all`` each (insert, update, delete, restore), in order, each once."""
    return [f"{m}.all" for m in dict.fromkeys(modules)]


def new_channel_id() -> int:
    """A random 13-digit channel id (the shape of Zoho's examples, e.g. 1000000068001)."""
    return 10**12 + secrets.randbelow(9 * 10**12)


async def configure_channel(
    name: str,
    *,
    oauth_block: str,
    notify_url: str,
    channel_id: int | None = None,
    events: list[str] | None = None,
    token: SecretStr | None = None,
    new_id: int | None = None,
) -> tuple[NotificationChannel, int | None]:
    """Create or update the block document ``name``; returns it and the channel id it replaced (if any).

    An existing document keeps its token (unless ``token`` is given), expiry
    settings and (unless given) channel id and events; a new one gets ``token`` or
    a random one, and ``channel_id``, else ``new_id``, else a random id. Nothing is
    sent to Zoho: :func:`flows.notifications.subscribe` does that.
    """
    from prefect.exceptions import ObjectNotFound
    from pydantic import ValidationError

    try:
        block = await NotificationChannel.aload(name)
    except ValidationError:
        raise
    except (ValueError, ObjectNotFound):  # no such document (or block type) yet
        block = NotificationChannel(
            oauth_block=oauth_block,
            channel_id=channel_id or new_id or new_channel_id(),
            notify_url=notify_url,
            **({"events": events} if events else {}),
            **({"token": token} if token is not None else {}),
        )
        await block.asave(name)
        return block, None
    replaced = block.channel_id if channel_id and channel_id != block.channel_id else None
    block.oauth_block = oauth_block
    block.notify_url = notify_url
    block.channel_id = channel_id or block.channel_id
    if events:
        block.events = list(events)
    if token is not None:
        block.token = token
    if replaced is not None:
        block.channel_expiry = None
    await block.asave(name, overwrite=True)
    return block, replaced
