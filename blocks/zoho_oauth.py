"""``ZohoOAuth``: the Prefect Block every process shares its Zoho access token through.

Zoho lets one refresh token mint at most 10 access tokens per 10 minutes
(``shared/zoho-api-notes.md``), so a token cached per process fails under a webhook
burst. This block keeps the current access token and its expiry in one Prefect
block document per Zoho user or organisation; every flow run, task and process
asks the block, and only one of them refreshes at a time.

It is the token store of seed 003 (``TokenStore``), mapped onto Prefect block documents:

================================  =============================================
seed 003                          here
================================  =============================================
``save_token(user, token)``       ``block.save(name, overwrite=True)`` (an upsert: one document per name)
``find_token(user)``              ``ZohoOAuth.load(name)`` (the name is the user / org)
``find_token_by_id(id)``          ``Block.load_from_ref({"block_document_id": id})``
``get_tokens()``                  ``prefect block ls`` / ``client.read_block_documents_by_type("zoho-oauth")``
``delete_token(id)``              ``ZohoOAuth.delete(name)``
``delete_tokens()``               delete every document of type ``zoho-oauth``
================================  =============================================

No SQL is written by hand: Prefect stores the documents, and encrypts the
``SecretStr`` fields (set ``PREFECT_SERVER_ENCRYPTION_KEY`` in production, or the
key sits in the same database).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any

from prefect.blocks.core import Block
from prefect.concurrency.asyncio import concurrency
from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger
from pydantic import Field, SecretStr, field_validator

from zoho.auth import DEFAULT_MARGIN, needs_refresh
from zoho.clients import ZohoClient
from zoho.datacentres import DataCentre, Endpoints
from zoho.errors import TokenThrottledError

from .fields import choice
from .limits import ensure_limit

#: Where the block logs outside a flow or task run.
log = logging.getLogger("zoho_appointment_sync.blocks")


def run_logger() -> logging.Logger | logging.LoggerAdapter:
    """The current Prefect flow or task run's logger (its records reach the run's logs in the
    UI through Prefect's API log handler), or the stdlib logger :data:`log` outside a run."""
    try:
        return get_run_logger()
    except MissingContextError:
        return log

#: How long to stop asking Accounts for tokens after a throttle answer.
THROTTLE_BACKOFF = timedelta(minutes=2)


class ZohoOAuth(Block):
    """OAuth credentials and the shared access token of one Zoho user or organisation.

    Fields: ``client_id``; ``client_secret``, ``refresh_token`` and
    ``access_token`` as ``SecretStr``; ``expires_at`` (aware, UTC); ``data_centre``
    (US, EU, IN, AU, JP, CA, SA, CN, or CUSTOM with ``base_url`` — the sandbox);
    ``api_domain`` (from the last token answer; wins for CRM and Bookings);
    ``scopes``; ``zoho_user`` (who the grant belongs to); ``token_lifetime_seconds``
    (managed: the ``expires_in`` of the last token answer).

    :meth:`get_access_token` is the only way callers get a token: it returns one
    valid for at least ``refresh_margin_seconds`` and, when it must refresh, holds
    the Prefect global concurrency limit ``zoho-oauth-<document name>`` (limit 1,
    created if missing, ``strict=True``, 60 s lease), reloads the document,
    refreshes only if still needed, and saves the new token. The block must have
    been saved (it needs a document name).
    """

    _block_type_name = "Zoho OAuth"
    _block_type_slug = "zoho-oauth"
    _description = "Zoho OAuth client, refresh token and the shared access token of one Zoho user or organisation."

    client_id: str = Field(title="Client ID", description="OAuth client id from the Zoho API console (e.g. a self client).")
    client_secret: SecretStr = Field(title="Client secret", description="OAuth client secret from the Zoho API console (stored encrypted).")
    refresh_token: SecretStr = Field(title="Refresh token", description="Long-lived refresh token from the grant-code exchange; mints the access tokens (stored encrypted).")
    access_token: SecretStr | None = Field(default=None, title="Access token (managed)", description="The current shared access token; set and refreshed by the block, leave empty.")
    expires_at: datetime | None = Field(default=None, title="Access token expires at (UTC)", description="When the access token expires; managed by the block.")
    data_centre: Annotated[DataCentre, choice(DataCentre)] = Field(default=DataCentre.US, title="Zoho data centre", description="Where the Zoho account lives (US, EU, IN, AU, JP, CA, SA, CN), or CUSTOM with a base URL (the sandbox).")
    base_url: str | None = Field(default=None, title="Base URL (CUSTOM data centre)", description="Base URL of Accounts, CRM and Bookings when the data centre is CUSTOM, e.g. http://127.0.0.1:8000 for the sandbox.")
    api_domain: str | None = Field(default=None, title="API domain (managed)", description="API domain from the last token answer; wins for CRM and Bookings calls.")
    scopes: list[str] = Field(default_factory=list, title="Scopes", description="OAuth scopes granted to the refresh token (for reference).")
    zoho_user: str | None = Field(default=None, title="Zoho user or organisation", description="Whom the grant belongs to (for reference).")
    refresh_margin_seconds: int = Field(default=int(DEFAULT_MARGIN.total_seconds()), ge=0, title="Refresh margin (seconds)", description="Refresh the access token when fewer seconds than this remain (at most half the token's lifetime).")
    token_lifetime_seconds: int | None = Field(default=None, ge=0, title="Access token lifetime (seconds, managed)", description="How long Zoho minted the current access token for; caps the refresh margin at half of it. Managed by the block.")
    throttled_until: datetime | None = Field(default=None, title="Throttled until (UTC, managed)", description="Zoho throttled token minting; no refresh is attempted before this.")
    lock_timeout_seconds: float = Field(default=60.0, gt=0, title="Refresh lock timeout (seconds)", description="How long to wait for another process's token refresh before giving up.")

    @field_validator("expires_at", "throttled_until")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError("expires_at / throttled_until must be timezone-aware")
        return v

    # ------------------------------------------------------------- endpoints
    def endpoints(self) -> Endpoints:
        """Base URLs for Accounts, CRM and Bookings (``api_domain`` wins once known)."""
        return Endpoints.for_data_centre(self.data_centre, self.base_url, self.api_domain)

    def get_client(self, **kwargs: Any) -> ZohoClient:
        """A :class:`~zoho.clients.ZohoClient` whose CRM and Bookings calls use this block's token."""
        return ZohoClient(self.endpoints(), self, **kwargs)

    # ------------------------------------------------------------------ token
    def _usable(self, min_valid: timedelta | None, rejected: SecretStr | None) -> bool:
        """Whether the held token may be handed out: not ``rejected``, and not due for a
        refresh by :func:`zoho.auth.needs_refresh` (``refresh_margin_seconds`` capped at half
        the token's lifetime; an explicit ``min_valid`` is a demand, not capped)."""
        if self.access_token is None:
            return False
        if rejected is not None and rejected.get_secret_value() == self.access_token.get_secret_value():
            return False
        if min_valid is not None:
            return not needs_refresh(self.expires_at, None, min_valid)
        lifetime = timedelta(seconds=self.token_lifetime_seconds) if self.token_lifetime_seconds is not None else None
        return not needs_refresh(self.expires_at, lifetime, timedelta(seconds=self.refresh_margin_seconds))

    @property
    def lock_name(self) -> str:
        """The global concurrency limit serialising refreshes of this document."""
        if not self._block_document_name:
            raise ValueError("save the ZohoOAuth block (block.save(name)) before asking it for tokens")
        return f"zoho-oauth-{self._block_document_name}"

    def _adopt(self, other: "ZohoOAuth") -> None:
        """Take the stored document's state, but never trade our token for one that
        expires earlier: concurrent callers share this instance, and a document read
        before our own refresh was saved still holds the token that refresh replaced."""
        keep_token = (
            self.access_token is not None and self.expires_at is not None
            and (other.expires_at is None or other.expires_at < self.expires_at)
        )
        shared = ("api_domain", "throttled_until", "refresh_token")
        names = shared if keep_token else ("access_token", "expires_at", "token_lifetime_seconds", *shared)
        for name in names:
            setattr(self, name, getattr(other, name))

    async def get_access_token(
        self, *, rejected: SecretStr | None = None, min_valid: timedelta | None = None
    ) -> SecretStr:
        """A token valid for at least ``min_valid`` (default: ``refresh_margin_seconds``, capped at
        half the token's lifetime so a short-lived token is not refreshed on every call;
        the policy is :func:`zoho.auth.needs_refresh`).

        ``rejected``: a token Zoho just answered ``INVALID_TOKEN`` to; it is not
        returned again. Raises :class:`~zoho.errors.TokenThrottledError` while Zoho
        throttles minting (then no request is made until ``throttled_until``),
        :class:`~zoho.errors.AuthError` for bad credentials, ``TimeoutError`` when the
        lock is not had within ``lock_timeout_seconds``.
        """
        if self._usable(min_valid, rejected):
            return self.access_token  # type: ignore[return-value]
        # Another process may have refreshed already: a reload is cheaper than the lock.
        self._adopt(await type(self).aload(self._block_document_name))
        if self._usable(min_valid, rejected):
            return self.access_token  # type: ignore[return-value]
        await ensure_limit(self.lock_name, 1)
        async with concurrency(self.lock_name, occupy=1, timeout_seconds=self.lock_timeout_seconds, lease_duration=60, strict=True):
            self._adopt(await type(self).aload(self._block_document_name))
            if self._usable(min_valid, rejected):
                return self.access_token  # type: ignore[return-value]
            now = datetime.now(timezone.utc)
            if self.throttled_until and self.throttled_until > now:
                raise TokenThrottledError(
                    "ACCESS_DENIED", f"Zoho throttles token minting for this refresh token until {self.throttled_until.isoformat()}"
                )
            async with ZohoClient(self.endpoints()) as bare:
                try:
                    answer = await bare.accounts.refresh(self.client_id, self.client_secret, self.refresh_token)
                except TokenThrottledError as exc:
                    # Zoho's throttle answer gives no Retry-After: back off THROTTLE_BACKOFF; honour one when given.
                    self.throttled_until = now + (timedelta(seconds=exc.retry_after) if exc.retry_after else THROTTLE_BACKOFF)
                    await self.asave(self._block_document_name, overwrite=True)
                    raise
            minted, expires_at = answer.access_token, now + timedelta(seconds=answer.expires_in)
            self.access_token, self.expires_at = minted, expires_at
            self.token_lifetime_seconds = answer.expires_in
            self.api_domain = answer.api_domain or self.api_domain
            self.throttled_until = None
            await self.asave(self._block_document_name, overwrite=True)
            run_logger().info("Refreshed the Zoho access token of %s; it expires at %s", self._block_document_name, expires_at.isoformat())
            return minted  # not self.access_token: another caller of this instance may have adopted meanwhile

    async def revoke(self) -> None:
        """Revoke the refresh token at Zoho (its access tokens die too) and clear the stored token."""
        async with ZohoClient(self.endpoints()) as bare:
            await bare.accounts.revoke(self.refresh_token)
        self.access_token = None
        self.expires_at = None
        if self._block_document_name:
            await self.asave(self._block_document_name, overwrite=True)
