"""Zoho data centres and their base URLs.

Source: Zoho Accounts "multi-dc" and CRM v8 "Multi DC Support"
(``shared/zoho-api-notes.md``). ``api_domain`` returned by the token call wins for
CRM calls; Bookings lives on the same API host under ``/bookings/v1/json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class DataCentre(str, Enum):
    """Zoho's data centres, plus ``CUSTOM`` for one base URL serving everything (the sandbox)."""

    US = "US"
    EU = "EU"
    IN = "IN"
    AU = "AU"
    JP = "JP"
    CA = "CA"
    SA = "SA"
    CN = "CN"
    CUSTOM = "CUSTOM"

    @classmethod
    def _missing_(cls, value: object) -> "DataCentre":
        """Accept any case (``eu``); otherwise a ``ValueError`` that lists the valid data centres."""
        if isinstance(value, str) and value.strip().upper() in cls.__members__:
            return cls[value.strip().upper()]
        raise ValueError(f"unknown data centre {value!r}: use one of {valid_data_centres()}")


def valid_data_centres() -> str:
    """``US, EU, IN, AU, JP, CA, SA, CN, or CUSTOM with a base URL`` (for messages)."""
    return ", ".join(dc.value for dc in DataCentre if dc is not DataCentre.CUSTOM) + ", or CUSTOM with a base URL"


#: data centre -> (accounts host, API host)
_HOSTS: dict[DataCentre, tuple[str, str]] = {
    DataCentre.US: ("https://accounts.zoho.com", "https://www.zohoapis.com"),
    DataCentre.EU: ("https://accounts.zoho.eu", "https://www.zohoapis.eu"),
    DataCentre.IN: ("https://accounts.zoho.in", "https://www.zohoapis.in"),
    DataCentre.AU: ("https://accounts.zoho.com.au", "https://www.zohoapis.com.au"),
    DataCentre.JP: ("https://accounts.zoho.jp", "https://www.zohoapis.jp"),
    DataCentre.CA: ("https://accounts.zohocloud.ca", "https://www.zohoapis.ca"),
    DataCentre.SA: ("https://accounts.zoho.sa", "https://www.zohoapis.sa"),
    DataCentre.CN: ("https://accounts.zoho.com.cn", "https://www.zohoapis.com.cn"),
}


@dataclass(frozen=True)
class Endpoints:
    """Base URLs of one Zoho account: Accounts, CRM (``api_domain``) and Bookings.

    ``crm`` is the API domain (``https://www.zohoapis.com``); ``bookings`` ends
    with ``/bookings/v1/json``. No trailing slashes.
    """

    accounts: str
    crm: str
    bookings: str

    @classmethod
    def for_data_centre(cls, dc: DataCentre | str, base_url: str | None = None, api_domain: str | None = None) -> "Endpoints":
        """Endpoints of data centre ``dc``; ``base_url`` is required for ``CUSTOM`` and
        serves Accounts, CRM and Bookings alike. ``api_domain`` (from the token
        answer) overrides the CRM and Bookings host.

        Raises ``ValueError`` for an unknown data centre or a ``CUSTOM`` one without ``base_url``.
        """
        dc = DataCentre(dc)
        if dc is DataCentre.CUSTOM:
            if not base_url:
                raise ValueError("data centre CUSTOM needs a base_url (appt-sync auth --base-url; e.g. the sandbox's http://127.0.0.1:8900)")
            accounts = api = base_url.rstrip("/")
        else:
            accounts, api = _HOSTS[dc]
        api = (api_domain or api).rstrip("/")
        return cls(accounts=accounts, crm=api, bookings=f"{api}/bookings/v1/json")
