"""``page_token`` for ``GET /crm/{version}/{module}`` beyond the 2,000 records ``page`` reaches.

Zoho's records API answers ``next_page_token`` (and ``page_token_expiry``, a day
ahead) when more records follow; the next call passes it as ``page_token``. The
sandbox's token is opaque to the client: base64 (URL-safe, unpadded) of the
offset, the sort and the expiry. A token that is not one of ours, or has
expired, is ``INVALID_DATA`` with ``details.param_name = "page_token"``.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from . import clock
from .errors import CrmError

#: The fields a list can be sorted by (``sort_by``).
SORT_FIELDS = ("id", "Created_Time", "Modified_Time")
#: How long a token stays valid, in seconds.
TOKEN_TTL = 86400

def encode_token(offset: int, sort_by: str, sort_order: str) -> str:
    """A ``page_token`` for the page starting at ``offset`` in this sort, valid for a day."""
    raw = json.dumps({"o": offset, "s": sort_by, "d": sort_order, "e": clock.timestamp() + TOKEN_TTL})
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

def decode_token(token: str) -> dict[str, Any]:
    """The offset and sort of a ``page_token``; ``INVALID_DATA`` when it is not one of ours or expired."""
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        valid = (
            isinstance(data, dict)
            and type(data["o"]) is int and data["o"] >= 0
            and data["s"] in SORT_FIELDS and data["d"] in ("asc", "desc")
            and isinstance(data["e"], (int, float))
        )
    except (ValueError, KeyError, TypeError):
        valid = False
    if not valid:
        raise CrmError("INVALID_DATA", 400, "invalid page_token", {"param_name": "page_token"})
    if data["e"] < clock.timestamp():
        raise CrmError("INVALID_DATA", 400, "page_token expired", {"param_name": "page_token"})
    return data
