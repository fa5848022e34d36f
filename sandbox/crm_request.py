"""What every CRM route checks first: the URL's API version, the module, the JSON body.

Shared by the records routes (:mod:`sandbox.crm`), the watch API
(:mod:`sandbox.watch`), Bulk Read (:mod:`sandbox.bulk`) and the admin edits
(:mod:`sandbox.admin`). ``{version}`` is ``v2``, ``v2.1`` or ``v3`` .. ``v8``;
anything else is ``INVALID_URL_PATTERN`` (404), a module the sandbox does not
serve is ``INVALID_MODULE`` and a body that is not JSON is ``INVALID_DATA``, with
the error bodies of Zoho's CRM documents (seeds 002/004, :mod:`sandbox.errors`).
"""

from __future__ import annotations

import json
import re
from typing import Any

from fastapi import Request

from .errors import CrmError
from .schema import MODULES

VERSION_RE = re.compile(r"^v(2(\.1)?|[3-8])$")

def check_version(version: str) -> int:
    """The major API version; raises ``INVALID_URL_PATTERN`` (404) for anything but v2..v8."""
    if not VERSION_RE.match(version):
        raise CrmError("INVALID_URL_PATTERN", 404)
    return int(version[1])

def check_module(module: str) -> None:
    """Raise ``INVALID_MODULE`` (400) unless the sandbox serves ``module``."""
    if module not in MODULES:
        raise CrmError("INVALID_MODULE", 400, details={"resource_path_index": 1})

async def json_body(request: Request) -> Any:
    """The request body parsed as JSON; ``INVALID_DATA`` (400) when it is not JSON."""
    raw = await request.body()
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise CrmError("INVALID_DATA", 400, "the input is not a valid JSON") from None
