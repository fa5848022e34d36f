"""Access-token plumbing: the token-provider protocol and an ``httpx.Auth`` using it.

A *token provider* hands out a valid access token. :class:`ZohoAuth` puts it in
``Authorization: Zoho-oauthtoken <token>`` and, when Zoho answers 401
``INVALID_TOKEN`` once, asks the provider for a fresh one (naming the rejected
token, so a provider shared between processes refreshes only if nobody else has
already) and repeats the request once.

:func:`needs_refresh` is the one token policy (refresh margin, capped at half the
token's lifetime), used by :class:`RefreshingTokenProvider` and the ``ZohoOAuth``
block alike. This module does not import :mod:`zoho.clients` (which imports it):
what it needs of Zoho Accounts is the :class:`TokenRefresher` protocol.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone
from typing import AsyncGenerator, Iterable, Protocol

import httpx
from pydantic import SecretStr

from .errors import ForeignHostError, InvalidTokenError, origin_of
from .models import TokenResponse

#: Refresh a token this long before it expires.
DEFAULT_MARGIN = timedelta(minutes=5)


def needs_refresh(
    expires_at: datetime | None,
    lifetime: timedelta | None,
    margin: timedelta,
    now: datetime | None = None,
) -> bool:
    """Whether a token expiring at ``expires_at`` must be replaced before use: the one token policy.

    ``expires_at``: aware datetime, or None for no token (then True). ``lifetime``:
    how long Zoho minted the token for (``expires_in`` of the token answer, 1 hour
    for Zoho Accounts), or None when unknown. ``margin``: refresh when less than
    this remains; capped at half of ``lifetime`` when that is known, so a token
    minted with less life than twice the margin is not refreshed on every call
    (Zoho Accounts allows 10 access tokens per refresh token per 10 minutes:
    ``shared/zoho-api-notes.md``, OAuth). Pass ``lifetime=None`` for a caller's
    explicit minimum validity, which is not capped. ``now``: aware, default the
    current UTC time. Raises ``TypeError`` if ``expires_at`` and ``now`` mix naive
    and aware datetimes.
    """
    if expires_at is None:
        return True
    if lifetime is not None:
        margin = min(margin, lifetime / 2)
    return expires_at - margin <= (now or datetime.now(timezone.utc))


class TokenRefresher(Protocol):
    """What mints access tokens: Zoho Accounts' refresh grant
    (:meth:`zoho.clients.AccountsClient.refresh` has this shape)."""

    async def refresh(self, client_id: str, client_secret: SecretStr, refresh_token: SecretStr) -> TokenResponse:
        """``POST {accounts}/oauth/v2/token`` with ``grant_type=refresh_token``: a new access token."""
        ...


class TokenProvider(Protocol):
    """Something that hands out a valid access token."""

    async def get_access_token(self, *, rejected: SecretStr | None = None) -> SecretStr:
        """A token valid for at least the provider's margin. ``rejected``: a token
        Zoho just refused; the provider must not return it again."""
        ...


def is_invalid_token(response: httpx.Response) -> bool:
    """Whether ``response`` is Zoho's 401 ``INVALID_TOKEN`` (CRM body or Bookings envelope).

    The body must have been read (``await response.aread()``).
    """
    if response.status_code != 401:
        return False
    try:
        body = json.loads(response.content or b"{}")
    except ValueError:
        return False
    if not isinstance(body, dict):
        return False
    code = body.get("code")
    if code is None and isinstance(body.get("response"), dict):
        value = body["response"].get("returnvalue")
        code = value.get("code") if isinstance(value, dict) else None
    return code in ("INVALID_TOKEN", "AUTHENTICATION_FAILURE")


#: Default port per scheme, so ``https://host`` and ``https://host:443`` are one origin.
_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_key(url: httpx.URL | str) -> tuple[str, str, int | None]:
    """``(scheme, host, port)`` of ``url``, lower-cased, the port filled in for http and https:
    what must match for two URLs to be the same origin (same server)."""
    u = httpx.URL(url)
    scheme = u.scheme.lower()
    return scheme, u.host.lower(), u.port or _DEFAULT_PORTS.get(scheme)


def check_own_host(url: httpx.URL | str, allowed: Iterable[httpx.URL | str]) -> None:
    """Raise :class:`~zoho.errors.ForeignHostError` unless ``url`` has the origin (scheme, host and
    port: :func:`origin_key`) of one of ``allowed`` (the organisation's API domain). The error text
    names origins only, never a path or query."""
    allowed = list(allowed)
    if origin_key(url) not in {origin_key(a) for a in allowed}:
        own = ", ".join(sorted({origin_of(a) for a in allowed}))
        raise ForeignHostError(
            "FOREIGN_HOST", f"refused to send the access token to {origin_of(url)}: not the organisation's API domain ({own})",
            {"url": origin_of(url), "allowed": own},
        )


class ZohoAuth(httpx.Auth):
    """``httpx.Auth`` adding ``Zoho-oauthtoken`` from a :class:`TokenProvider`; async clients only.

    ``origins``: the base URLs the token may go to (the API domain of CRM and Bookings);
    a request to any other scheme, host or port raises
    :class:`~zoho.errors.ForeignHostError` before a token is fetched or anything is sent.
    None: no check (a caller that guards its URLs itself).

    On a 401 ``INVALID_TOKEN`` answer it asks the provider for a new token
    (``rejected=`` the refused one) and repeats the request once; a second 401 is
    returned as is (the client maps it to :class:`~zoho.errors.InvalidTokenError`).
    A provider that has no other token (it raises ``InvalidTokenError``, as
    :class:`StaticTokenProvider` does) ends the flow the same way, so the error
    carries Zoho's code, status and endpoint; any other provider error (e.g.
    :class:`~zoho.errors.TokenThrottledError`) propagates.
    """

    def __init__(self, provider: TokenProvider, origins: Iterable[str] | None = None) -> None:
        self.provider = provider
        self.origins = tuple(origins) if origins is not None else None

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        if self.origins is not None:
            check_own_host(request.url, self.origins)
        token = await self.provider.get_access_token()
        request.headers["Authorization"] = f"Zoho-oauthtoken {token.get_secret_value()}"
        response = yield request
        if response.status_code != 401:
            return
        # Overriding async_auth_flow bypasses httpx's ``requires_response_body``: read
        # the (small) 401 body here, or ``.content`` raises ResponseNotRead on a real transport.
        await response.aread()
        if not is_invalid_token(response):
            return
        try:
            token = await self.provider.get_access_token(rejected=token)
        except InvalidTokenError:
            return
        request.headers["Authorization"] = f"Zoho-oauthtoken {token.get_secret_value()}"
        yield request

    def sync_auth_flow(self, request: httpx.Request):  # pragma: no cover - async only
        raise RuntimeError("ZohoAuth works with httpx.AsyncClient only")


class StaticTokenProvider:
    """A fixed token (tests, one-off scripts).

    Asked again with its own token as ``rejected`` it raises ``InvalidTokenError``,
    so :class:`ZohoAuth` does not retry and the call fails with Zoho's 401
    ``INVALID_TOKEN`` as :class:`~zoho.errors.InvalidTokenError`.
    """

    def __init__(self, token: SecretStr | str) -> None:
        self.token = token if isinstance(token, SecretStr) else SecretStr(token)

    async def get_access_token(self, *, rejected: SecretStr | None = None) -> SecretStr:
        if rejected is not None and rejected.get_secret_value() == self.token.get_secret_value():
            raise InvalidTokenError("INVALID_TOKEN", "the static access token was rejected")
        return self.token


class RefreshingTokenProvider:
    """An in-process token cache that refreshes through Zoho Accounts.

    For one process only (an ``asyncio.Lock`` serialises refreshes, so concurrent
    callers share one refresh). Processes that share a refresh token must share
    the token too: use the ``ZohoOAuth`` block, which stores it in Prefect and
    locks across processes. ``accounts``: a :class:`TokenRefresher` (an
    :class:`~zoho.clients.AccountsClient`); ``margin``: see :func:`needs_refresh`.
    """

    def __init__(
        self,
        accounts: TokenRefresher,
        client_id: str,
        client_secret: SecretStr,
        refresh_token: SecretStr,
        margin: timedelta = DEFAULT_MARGIN,
    ) -> None:
        self.accounts = accounts
        self.client_id = client_id
        self.client_secret = client_secret
        self.refresh_token = refresh_token
        self.margin = margin
        self.access_token: SecretStr | None = None
        self.expires_at: datetime | None = None
        self.api_domain: str | None = None
        self._lifetime: timedelta | None = None
        self._lock = asyncio.Lock()

    def _valid(self, rejected: SecretStr | None) -> bool:
        if self.access_token is None:
            return False
        if rejected is not None and rejected.get_secret_value() == self.access_token.get_secret_value():
            return False
        return not needs_refresh(self.expires_at, self._lifetime, self.margin)

    async def get_access_token(self, *, rejected: SecretStr | None = None) -> SecretStr:
        """A token valid for at least ``margin`` (or half its lifetime, if Zoho minted it
        shorter-lived than twice ``margin``).

        Refreshes, one caller at a time, when there is no token, it is within that
        margin of expiry, or it is ``rejected``; callers that waited for the lock
        take the token the first one got.
        """
        if self._valid(rejected):
            return self.access_token  # type: ignore[return-value]
        async with self._lock:
            if not self._valid(rejected):
                answer = await self.accounts.refresh(self.client_id, self.client_secret, self.refresh_token)
                self._lifetime = timedelta(seconds=answer.expires_in)
                self.access_token = answer.access_token
                self.expires_at = datetime.now(timezone.utc) + self._lifetime
                self.api_domain = answer.api_domain
        return self.access_token  # type: ignore[return-value]
