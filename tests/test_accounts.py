"""Zoho Accounts (OAuth) as the sandbox serves it, driven over HTTP.

Covers the refresh and authorization-code grants, the documented token limits
(10 mints per refresh token per window, 15 live access tokens, 20 refresh tokens
per client), bad credentials, revoking, expiry and the answers API calls give
to dead tokens (``shared/zoho-api-notes.md``, section OAuth).
"""

from __future__ import annotations

import time

import httpx
import pytest

THROTTLED = {
    "error": "Access Denied",
    "error_description": "You have made too many requests continuously. Please try again after some time.",
    "status": "failure",
}
CRM_LIST = "/crm/v7/Appointments__s"
CRM_PARAMS = {"fields": "Status,Booking_Id", "per_page": 1}
GET_BOOKING = "/bookings/v1/json/getappointment"


# ------------------------------------------------------------------ helpers
def crm_call(sandbox, token: str) -> httpx.Response:
    """One CRM read with ``token``."""
    return sandbox.http.get(CRM_LIST, params=CRM_PARAMS, headers=sandbox.headers(token))


def bookings_call(sandbox, token: str) -> httpx.Response:
    """One Bookings read with ``token``."""
    return sandbox.http.get(GET_BOOKING, params={"booking_id": "#AN-00001"}, headers=sandbox.headers(token))


def assert_invalid_token(response: httpx.Response) -> None:
    """A CRM answer to a dead token: 401 ``INVALID_TOKEN``."""
    assert response.status_code == 401, response.text
    body = response.json()
    assert body["code"] == "INVALID_TOKEN"
    assert body["status"] == "error"


def assert_bookings_invalid_token(response: httpx.Response) -> None:
    """A Bookings answer to a dead token: 401 with the failure envelope."""
    assert response.status_code == 401, response.text
    assert response.json()["response"]["status"] == "failure"


def mint_ok(sandbox, **overrides: str) -> dict:
    """Mint and return the body, failing unless it holds an access token."""
    r = sandbox.mint(**overrides)
    assert r.status_code == 200, r.text
    body = r.json()
    assert "access_token" in body, body
    return body


def grant_code(sandbox, **body) -> str:
    """A one-time code from ``POST /__sandbox/grant-code``."""
    r = sandbox.http.post("/__sandbox/grant-code", json=body)
    assert r.status_code == 200, r.text
    return r.json()["code"]


def exchange(sandbox, code: str, **overrides: str) -> httpx.Response:
    """``grant_type=authorization_code`` with the sandbox's client."""
    data = {
        "grant_type": "authorization_code",
        "client_id": sandbox.creds["client_id"],
        "client_secret": sandbox.creds["client_secret"],
        "redirect_uri": "http://127.0.0.1/callback",
        "code": code,
        **overrides,
    }
    return sandbox.http.post("/oauth/v2/token", data=data)


def revoke(sandbox, token: str) -> httpx.Response:
    """``POST /oauth/v2/token/revoke?token=...``."""
    return sandbox.http.post("/oauth/v2/token/revoke", params={"token": token})


# -------------------------------------------------------------- refresh grant
def test_refresh_grant_answers_the_documented_fields(sandbox):
    body = mint_ok(sandbox)
    assert body["expires_in"] == 3600
    assert body["token_type"] == "Bearer"
    assert body["api_domain"] == sandbox.url
    assert "zohobookings.data.CREATE" in body["scope"].split()
    assert "ZohoCRM.modules.ALL" in body["scope"].split()
    assert "refresh_token" not in body
    assert crm_call(sandbox, body["access_token"]).status_code == 200


def test_api_domain_follows_the_public_url(sandbox):
    sandbox.config(public_url="http://127.0.0.1:9999/")
    assert mint_ok(sandbox)["api_domain"] == "http://127.0.0.1:9999"


def test_refresh_grant_accepts_the_query_string(sandbox):
    params = {
        "grant_type": "refresh_token",
        "client_id": sandbox.creds["client_id"],
        "client_secret": sandbox.creds["client_secret"],
        "refresh_token": sandbox.creds["refresh_token"],
    }
    r = sandbox.http.post("/oauth/v2/token", params=params)
    assert r.status_code == 200
    token = r.json()["access_token"]
    assert bookings_call(sandbox, token).json()["response"]["status"] == "success"


def test_each_mint_is_a_new_token_and_counted(sandbox):
    tokens = {mint_ok(sandbox)["access_token"] for _ in range(3)}
    assert len(tokens) == 3
    assert sandbox.stats()["tokens_minted"] == 3


def test_eleventh_mint_in_the_window_is_throttled_and_mints_nothing(sandbox):
    for _ in range(10):
        mint_ok(sandbox)
    r = sandbox.mint()
    assert r.status_code == 400
    assert r.json() == THROTTLED
    stats = sandbox.stats()
    assert stats["tokens_minted"] == 10
    assert stats["token_requests_throttled"] == 1
    # a throttled call stays throttled: it does not reopen the window
    assert sandbox.mint().json() == THROTTLED
    assert sandbox.stats()["tokens_minted"] == 10


def test_minting_works_again_after_the_window(sandbox):
    sandbox.config(token_window=1)
    for _ in range(10):
        mint_ok(sandbox)
    assert sandbox.mint().json() == THROTTLED
    time.sleep(1.2)
    mint_ok(sandbox)
    assert sandbox.stats()["tokens_minted"] == 11


def test_the_window_is_per_refresh_token(sandbox):
    for _ in range(10):
        mint_ok(sandbox)
    assert sandbox.mint().json() == THROTTLED
    other = sandbox.http.post("/__sandbox/credentials", json={}).json()
    body = mint_ok(sandbox, client_id=other["client_id"], client_secret=other["client_secret"], refresh_token=other["refresh_token"])
    assert crm_call(sandbox, body["access_token"]).status_code == 200


def test_sixteenth_live_token_invalidates_the_oldest(sandbox):
    sandbox.config(token_mint_limit=100)
    tokens = [mint_ok(sandbox)["access_token"] for _ in range(16)]
    assert_invalid_token(crm_call(sandbox, tokens[0]))
    assert_bookings_invalid_token(bookings_call(sandbox, tokens[0]))
    assert crm_call(sandbox, tokens[1]).status_code == 200
    assert crm_call(sandbox, tokens[15]).status_code == 200


def test_fifteen_live_tokens_all_work(sandbox):
    sandbox.config(token_mint_limit=100)
    tokens = [mint_ok(sandbox)["access_token"] for _ in range(15)]
    assert all(crm_call(sandbox, t).status_code == 200 for t in tokens)


def test_expired_tokens_do_not_count_as_live(sandbox):
    sandbox.config(token_mint_limit=100)
    oldest = mint_ok(sandbox)["access_token"]
    sandbox.config(token_ttl=1)
    for _ in range(14):
        mint_ok(sandbox)
    time.sleep(1.2)
    sandbox.config(token_ttl=3600)
    mint_ok(sandbox)
    # 16 minted, but only 2 live: the oldest is not pushed out by dead tokens
    assert crm_call(sandbox, oldest).status_code == 200


# ------------------------------------------------------------ bad credentials
@pytest.mark.parametrize(
    "overrides",
    [
        {"client_secret": "wrong-secret"},
        {"client_id": "1000.UNKNOWNCLIENT"},
        {"client_secret": ""},
    ],
    ids=["wrong-secret", "unknown-client", "empty-secret"],
)
def test_bad_client_answers_invalid_client(sandbox, overrides):
    r = sandbox.mint(**overrides)
    assert r.json() == {"error": "invalid_client"}
    assert sandbox.stats()["tokens_minted"] == 0


def test_wrong_refresh_token_answers_invalid_code(sandbox):
    r = sandbox.mint(refresh_token="1000.nope.nope")
    assert r.json() == {"error": "invalid_code"}
    assert sandbox.stats()["tokens_minted"] == 0


def test_refresh_token_of_another_client_answers_invalid_code(sandbox):
    other = sandbox.http.post("/__sandbox/credentials", json={}).json()
    r = sandbox.mint(refresh_token=other["refresh_token"])
    assert r.json() == {"error": "invalid_code"}


@pytest.mark.parametrize("grant_type", ["client_credentials", "password", ""])
def test_unsupported_grant_type(sandbox, grant_type):
    r = sandbox.mint(grant_type=grant_type)
    assert r.json() == {"error": "unsupported_grant_type"}
    assert sandbox.stats()["tokens_minted"] == 0


def test_wrong_method_on_the_token_endpoint_is_an_accounts_error(sandbox):
    r = sandbox.http.get("/oauth/v2/token")
    assert r.status_code == 405
    assert "error" in r.json()


# ------------------------------------------------------ authorization_code grant
def test_grant_code_exchange_answers_a_refresh_token(sandbox):
    r = exchange(sandbox, grant_code(sandbox))
    assert r.status_code == 200
    body = r.json()
    assert body["refresh_token"].startswith("1000.")
    assert body["expires_in"] == 3600
    assert body["token_type"] == "Bearer"
    assert body["api_domain"] == sandbox.url
    assert crm_call(sandbox, body["access_token"]).status_code == 200
    # the new refresh token mints on its own
    again = mint_ok(sandbox, refresh_token=body["refresh_token"])
    assert bookings_call(sandbox, again["access_token"]).status_code == 200


def test_grant_code_is_one_time(sandbox):
    code = grant_code(sandbox)
    assert "refresh_token" in exchange(sandbox, code).json()
    assert exchange(sandbox, code).json() == {"error": "invalid_code"}


def test_grant_code_with_its_scope(sandbox):
    body = exchange(sandbox, grant_code(sandbox, scope=["zohobookings.data.CREATE"])).json()
    assert body["scope"] == "zohobookings.data.CREATE"
    assert bookings_call(sandbox, body["access_token"]).status_code == 200
    r = crm_call(sandbox, body["access_token"])
    assert r.status_code == 401
    assert r.json()["code"] == "OAUTH_SCOPE_MISMATCH"


def test_expired_grant_code_answers_invalid_code(sandbox):
    code = grant_code(sandbox, ttl=0)
    assert exchange(sandbox, code).json() == {"error": "invalid_code"}


def test_unknown_grant_code_answers_invalid_code(sandbox):
    assert exchange(sandbox, "1000.not.a-code").json() == {"error": "invalid_code"}


def test_grant_code_with_a_wrong_secret_is_not_used_up(sandbox):
    code = grant_code(sandbox)
    assert exchange(sandbox, code, client_secret="wrong").json() == {"error": "invalid_client"}
    assert "refresh_token" in exchange(sandbox, code).json()


def test_twenty_first_refresh_token_invalidates_the_first(sandbox):
    refresh = [exchange(sandbox, grant_code(sandbox)).json()["refresh_token"] for _ in range(19)]
    # the sandbox's own refresh token is the client's first: it is the 20th alive
    mint_ok(sandbox)
    twenty_first = exchange(sandbox, grant_code(sandbox)).json()["refresh_token"]
    assert sandbox.mint().json() == {"error": "invalid_code"}
    mint_ok(sandbox, refresh_token=refresh[0])
    mint_ok(sandbox, refresh_token=twenty_first)


# ----------------------------------------------------------------------- revoke
def test_revoking_a_refresh_token_kills_its_access_tokens(sandbox):
    token = sandbox.token()
    assert crm_call(sandbox, token).status_code == 200
    r = revoke(sandbox, sandbox.creds["refresh_token"])
    assert r.status_code == 200
    assert_invalid_token(crm_call(sandbox, token))
    assert_bookings_invalid_token(bookings_call(sandbox, token))
    assert sandbox.mint().json() == {"error": "invalid_code"}
    # the admin API still answers (it names the revoked refresh token)
    creds = sandbox.http.get("/__sandbox/credentials")
    assert creds.status_code == 200
    assert creds.json()["refresh_token"] == sandbox.creds["refresh_token"]


def test_revoking_one_access_token_leaves_the_others(sandbox):
    first, second = sandbox.token(), sandbox.token()
    assert revoke(sandbox, first).status_code == 200
    assert_invalid_token(crm_call(sandbox, first))
    assert crm_call(sandbox, second).status_code == 200
    mint_ok(sandbox)


def test_revoking_an_unknown_token_fails(sandbox):
    r = revoke(sandbox, "1000.unknown.token")
    assert r.status_code == 400
    assert r.json()["error"] == "invalid_token"


def test_revoke_takes_a_form_body_too(sandbox):
    token = sandbox.token()
    assert sandbox.http.post("/oauth/v2/token/revoke", data={"token": token}).status_code == 200
    assert_invalid_token(crm_call(sandbox, token))


# ------------------------------------------------------------------ expiry
def test_expired_token_answers_invalid_token_on_crm_and_bookings(sandbox):
    sandbox.config(token_ttl=1)
    body = mint_ok(sandbox)
    assert body["expires_in"] == 1
    token = body["access_token"]
    assert crm_call(sandbox, token).status_code == 200
    time.sleep(1.2)
    assert_invalid_token(crm_call(sandbox, token))
    r = bookings_call(sandbox, token)
    assert_bookings_invalid_token(r)
    assert r.json()["response"]["returnvalue"]["code"] == "INVALID_TOKEN"
    # the refresh token is fine: a new access token works
    assert crm_call(sandbox, sandbox.token()).status_code == 200


def test_admin_expire_kills_every_live_token(sandbox):
    tokens = [sandbox.token(), sandbox.token()]
    r = sandbox.http.post("/__sandbox/tokens/expire")
    assert r.json() == {"expired": 2}
    for token in tokens:
        assert_invalid_token(crm_call(sandbox, token))


@pytest.mark.parametrize(
    "header",
    [None, "Zoho-oauthtoken", "Zoho-oauthtoken 1000.made.up", "Basic dXNlcjpwYXNz"],
    ids=["missing", "empty", "unknown", "other-scheme"],
)
def test_missing_or_wrong_token_answers_invalid_token(sandbox, header):
    headers = {"Authorization": header} if header else {}
    assert_invalid_token(sandbox.http.get(CRM_LIST, params=CRM_PARAMS, headers=headers))


def test_token_of_a_read_only_client_cannot_write(sandbox):
    creds = sandbox.http.post("/__sandbox/credentials", json={"permission": "read_only"}).json()
    token = mint_ok(sandbox, client_id=creds["client_id"], client_secret=creds["client_secret"], refresh_token=creds["refresh_token"])["access_token"]
    rec = crm_call(sandbox, token).json()["data"][0]
    r = sandbox.http.put(CRM_LIST, json={"data": [{"id": rec["id"], "Reschedule_Note": "x"}]}, headers=sandbox.headers(token))
    assert r.status_code == 403
    assert r.json()["code"] == "NO_PERMISSION"
