"""Zoho Accounts: ``POST /oauth/v2/token`` and ``POST /oauth/v2/token/revoke``, and token checks.

Follows Zoho's OAuth documents (CRM "Step 4: Refreshing your Access Tokens",
"Token Validity" and Accounts "access token expiry"):

* ``grant_type=refresh_token`` (``client_id``, ``client_secret``, ``refresh_token``)
  and ``grant_type=authorization_code`` (adds ``code``, ``redirect_uri``; the answer
  also carries a ``refresh_token``). Parameters may come as a form body or in the
  query string.
* At most ``token_mint_limit`` (10) access tokens per refresh token per
  ``token_window`` (600 s): the next call answers HTTP 400
  ``{"error": "Access Denied", "error_description": "You have made too many requests
  continuously. Please try again after some time.", "status": "failure"}``.
* At most ``max_active_tokens`` (15) live access tokens per refresh token: minting
  the 16th invalidates the oldest (expired or revoked tokens are not live).
* At most :data:`MAX_REFRESH_TOKENS` (20) refresh tokens per client (Zoho: per
  user; the sandbox has one user per client): exchanging a code for the 21st
  invalidates the oldest refresh token and every access token it minted.
* A wrong client id or secret answers ``{"error": "invalid_client"}`` and an unknown,
  revoked, expired or used code/refresh token ``{"error": "invalid_code"}``, both with
  HTTP 200 as Zoho does; any other ``grant_type`` answers
  ``{"error": "unsupported_grant_type"}``. A code is used up only by a call with the
  right client credentials.
* ``/oauth/v2/token/revoke?token=...`` (query string or form) revokes a refresh
  token with every access token it minted, or one access token; an unknown token
  answers HTTP 400 ``{"error": "invalid_token"}``.
* API calls check ``Authorization: Zoho-oauthtoken <token>`` (``Bearer`` is also
  accepted): unknown, revoked, pushed-out or expired tokens answer 401
  ``INVALID_TOKEN``, a missing scope 401 ``OAUTH_SCOPE_MISMATCH``.
"""

from __future__ import annotations

import secrets
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from . import clock
from .errors import BookingsError, CrmError
from .state import SandboxState, scope_covers, token_label

router = APIRouter()

#: Refresh tokens one client (the sandbox's stand-in for a Zoho user) may hold.
MAX_REFRESH_TOKENS = 20

THROTTLED = {
    "error": "Access Denied",
    "error_description": "You have made too many requests continuously. Please try again after some time.",
    "status": "failure",
}


async def _params(request: Request) -> dict[str, str]:
    params = dict(request.query_params)
    if request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        form = await request.form()
        params.update({k: str(v) for k, v in form.items()})
    return params


def _mint(state: SandboxState, refresh_token: str, request: Request) -> dict[str, Any] | None:
    """Mint an access token for ``refresh_token``; ``None`` when the mint limit is reached."""
    cfg = state.config
    grant = state.refresh_tokens[refresh_token]
    now = clock.timestamp()
    grant["mints"] = [t for t in grant["mints"] if t > now - cfg.token_window]
    if len(grant["mints"]) >= cfg.token_mint_limit:
        state.stats.token_requests_throttled += 1
        return None
    token = f"1000.{secrets.token_hex(16)}.{secrets.token_hex(16)}"
    grant["mints"].append(now)
    # expired tokens are no longer live: they do not push a live one out
    for old in [t for t in grant["active"] if state.access_tokens.get(t, {}).get("expires_at", 0) <= now]:
        grant["active"].remove(old)
        state.access_tokens.pop(old, None)
    grant["active"].append(token)
    state.access_tokens[token] = {
        "refresh_token": refresh_token,
        "expires_at": now + cfg.token_ttl,
        "scope": grant["scope"],
        "permission": grant["permission"],
    }
    while len(grant["active"]) > cfg.max_active_tokens:
        state.access_tokens.pop(grant["active"].pop(0), None)
    state.stats.tokens_minted += 1
    state.stats.tokens_minted_by_refresh_token[token_label(refresh_token)] += 1
    state.save_oauth()
    return {
        "access_token": token,
        "scope": " ".join(grant["scope"]),
        "api_domain": api_domain(request),
        "token_type": "Bearer",
        "expires_in": cfg.token_ttl,
    }


def api_domain(request: Request) -> str:
    """The base URL clients should use for API calls (``api_domain``)."""
    configured = request.app.state.sandbox.config.public_url
    return configured.rstrip("/") if configured else str(request.base_url).rstrip("/")


@router.post("/oauth/v2/token")
async def token(request: Request) -> JSONResponse:
    """Refresh an access token or exchange a grant code."""
    state: SandboxState = request.app.state.sandbox
    p = await _params(request)
    grant_type = p.get("grant_type")
    client = state.clients.get(p.get("client_id", ""))
    if grant_type not in ("refresh_token", "authorization_code"):
        return JSONResponse({"error": "unsupported_grant_type"})
    if client is None or not secrets.compare_digest(client["client_secret"], p.get("client_secret", "")):
        return JSONResponse({"error": "invalid_client"})
    if grant_type == "refresh_token":
        rt = p.get("refresh_token", "")
        grant = state.refresh_tokens.get(rt)
        if grant is None or grant["client_id"] != p["client_id"]:
            return JSONResponse({"error": "invalid_code"})
        body = _mint(state, rt, request)
        return JSONResponse(body) if body else JSONResponse(THROTTLED, status_code=400)
    code = state.grant_codes.pop(p.get("code", ""), None)
    if code is None or code["client_id"] != p["client_id"] or code["expires_at"] < clock.timestamp():
        state.save_oauth()
        return JSONResponse({"error": "invalid_code"})
    held = [t for t, g in state.refresh_tokens.items() if g["client_id"] == p["client_id"]]
    for old in held[: max(0, len(held) - MAX_REFRESH_TOKENS + 1)]:
        _drop_refresh_token(state, old)
    rt = f"1000.{secrets.token_hex(16)}.{secrets.token_hex(16)}"
    state.refresh_tokens[rt] = state.new_grant(p["client_id"], code["scope"], "full")
    body = _mint(state, rt, request)
    assert body is not None  # a new refresh token has minted nothing yet
    body["refresh_token"] = rt
    return JSONResponse(body)


def _drop_refresh_token(state: SandboxState, refresh_token: str) -> None:
    """Forget ``refresh_token`` and every access token it minted."""
    grant = state.refresh_tokens.pop(refresh_token)
    for at in grant["active"]:
        state.access_tokens.pop(at, None)


@router.post("/oauth/v2/token/revoke")
async def revoke(request: Request) -> JSONResponse:
    """Revoke a refresh token (and every access token it minted) or one access token."""
    state: SandboxState = request.app.state.sandbox
    tok = (await _params(request)).get("token", "")
    if tok in state.refresh_tokens:
        _drop_refresh_token(state, tok)
    elif tok in state.access_tokens:
        info = state.access_tokens.pop(tok)
        grant = state.refresh_tokens.get(info["refresh_token"])
        if grant and tok in grant["active"]:
            grant["active"].remove(tok)
    else:
        return JSONResponse({"error": "invalid_token"}, status_code=400)
    state.save_oauth()
    return JSONResponse({"status": "success"})


def _token_info(request: Request) -> dict[str, Any] | None:
    state: SandboxState = request.app.state.sandbox
    header = request.headers.get("authorization", "")
    scheme, _, tok = header.partition(" ")
    if scheme.lower() != "zoho-oauthtoken" or not tok:  # the only scheme Zoho documents
        return None
    info = state.access_tokens.get(tok.strip())
    if info is None or info["expires_at"] <= clock.timestamp():
        return None
    return info


def require_crm(request: Request, *scopes: str, write: bool = False) -> dict[str, Any]:
    """Check the CRM caller's token; raises ``INVALID_TOKEN`` (401),
    ``OAUTH_SCOPE_MISMATCH`` (401) or, for writes by a read-only user,
    ``NO_PERMISSION`` (403)."""
    info = _token_info(request)
    if info is None:
        raise CrmError("INVALID_TOKEN", 401)
    for scope in scopes:
        if not scope_covers(info["scope"], scope):
            raise CrmError("OAUTH_SCOPE_MISMATCH", 401, details={"required_scope": scope})
    if write and info["permission"] != "full":
        raise CrmError("NO_PERMISSION", 403, details={"permissions": ["Crm_Implied_Edit_Appointments"]})
    return info


def require_bookings(request: Request) -> dict[str, Any]:
    """Check a Bookings caller's token (scope ``zohobookings.data.CREATE``).

    Answers HTTP 401 with the Bookings envelope (Zoho does not document the body;
    the ``code`` key matches CRM's ``INVALID_TOKEN`` / ``OAUTH_SCOPE_MISMATCH``).
    """
    info = _token_info(request)
    if info is None:
        raise BookingsError("Invalid OAuth token", 401, code="INVALID_TOKEN")
    if not scope_covers(info["scope"], "zohobookings.data.CREATE"):
        raise BookingsError("Invalid OAuth scope", 401, code="OAUTH_SCOPE_MISMATCH")
    return info
