"""Onboarding: turn a Zoho grant code into a saved ``ZohoOAuth`` block.

Follows Zoho's OAuth steps (self client -> grant code -> ``grant_type=authorization_code``
-> refresh token); see README "Connecting to Zoho".
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import httpx
from pydantic import SecretStr

from blocks.zoho_oauth import ZohoOAuth
from zoho.clients import ZohoClient
from zoho.datacentres import DataCentre, Endpoints


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
