"""Zoho API usage of one run: calls counted per API family as they are sent, and refused
before sending when the run's allowance is spent or Zoho has answered with its limit.

Zoho's limits ("API limits" of Zoho Bookings; "API Limits" of Zoho CRM, Kaizen #203):

* **Bookings**: calls per user per calendar day by plan (Free 250, Basic 1,000,
  Premium 3,000). Every call to ``/bookings/`` counts one; Accounts (token) calls
  do not count.
* **CRM**: credits over a rolling 24 hours. Most calls cost 1 credit; creating a Bulk
  Read job is taken as :data:`BULK_READ_CREDITS` (Zoho's credit table was not at hand:
  an assumption, the sandbox's default too).

A :class:`Meter` is installed for a run with :func:`metering` (a ``ContextVar``, so
every client and task of the run sees it). :class:`zoho.clients.ZohoClient` calls
:func:`admit` before each request and :func:`record` after each answer:

* a family Zoho answered with its limit (:func:`zoho.errors.is_limit_answer`) is
  *stopped* for the rest of the run: further calls raise
  :class:`~zoho.errors.ApiLimitError` without being sent;
* a call past the run's :class:`Allowance` raises
  :class:`~zoho.errors.BudgetReachedError` without being sent. Reads and writes
  have separate allowances, so reads stop first and the rest of the budget is kept
  for writes (:mod:`sync.budget` decides the figures).

Callers that can defer work ask :meth:`Meter.allows` first, so nothing is refused
mid-call in the normal case. No Prefect here, and no secrets: the meter sees methods
and paths only.
"""

from __future__ import annotations

import math
from collections import Counter
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Iterator, Literal

import httpx

from .errors import ApiLimitError, BudgetReachedError, is_limit_answer, retry_after_of

Family = Literal["bookings", "crm"]
Kind = Literal["read", "write"]

#: CRM credits charged for creating one Bulk Read job (assumption; see the module docstring).
BULK_READ_CREDITS = 50
#: Bookings API methods that change nothing (everything else under ``/bookings/`` is a write).
BOOKINGS_READS = frozenset({"getappointment", "fetchappointment", "availableslots", "services", "staffs", "resources", "workspaces"})


def classify(method: str, url: httpx.URL | str) -> tuple[Family, Kind, int] | None:
    """``(family, kind, cost)`` of a request, or None for calls Zoho does not count (Accounts).

    ``cost`` is in the family's unit: Bookings calls, CRM credits. CRM ``GET`` is a
    read, and so is creating a Bulk Read job (``POST /crm/bulk/{v}/read``: it only reads);
    other CRM methods are writes. Bookings: :data:`BOOKINGS_READS` are reads.
    """
    path = httpx.URL(url).path
    parts = [p for p in path.split("/") if p]
    if "bookings" in parts[:1]:
        return ("bookings", "read" if parts[-1] in BOOKINGS_READS else "write", 1)
    if parts[:1] == ["crm"]:
        if method.upper() == "POST" and len(parts) == 4 and parts[1] == "bulk" and parts[3] == "read":
            return ("crm", "read", BULK_READ_CREDITS)
        return ("crm", "read" if method.upper() == "GET" else "write", 1)
    return None


@dataclass
class Allowance:
    """What one run may spend of one family, in its unit (Bookings calls, CRM credits):
    reads while the run's spending stays within ``read_left``, writes within ``write_left``.
    ``math.inf``: no limit."""

    read_left: float = math.inf
    write_left: float = math.inf

    def left(self, kind: Kind) -> float:
        """The allowance of ``kind`` (not yet reduced by what the run spent)."""
        return self.read_left if kind == "read" else self.write_left


@dataclass
class Meter:
    """Counts one run's Zoho calls and refuses those past its allowances (see the module docstring).

    ``spent``: units spent per family (Bookings calls, CRM credits); ``calls``: calls per
    ``(family, kind)``; ``refused``: calls not sent per ``(family, kind)``; ``stopped``:
    families Zoho answered with its limit, with Zoho's message.
    """

    allowances: dict[str, Allowance] = field(default_factory=dict)
    spent: Counter[str] = field(default_factory=Counter)
    calls: Counter[tuple[str, str]] = field(default_factory=Counter)
    refused: Counter[tuple[str, str]] = field(default_factory=Counter)
    stopped: dict[str, str] = field(default_factory=dict)

    def allows(self, family: Family, kind: Kind, cost: int = 1) -> bool:
        """Whether a call of ``cost`` units fits what is left (and the family is not stopped)."""
        if family in self.stopped:
            return False
        allowance = self.allowances.get(family)
        return allowance is None or self.spent[family] + cost <= allowance.left(kind)

    def left(self, family: Family, kind: Kind) -> float:
        """Units the run may still spend on ``kind`` calls of ``family`` (0 when stopped)."""
        if family in self.stopped:
            return 0
        allowance = self.allowances.get(family)
        return math.inf if allowance is None else max(0.0, allowance.left(kind) - self.spent[family])

    def admit(self, method: str, url: httpx.URL | str) -> None:
        """Raise instead of sending when the call's family is stopped (:class:`ApiLimitError`)
        or the call does not fit the run's allowance (:class:`BudgetReachedError`)."""
        what = classify(method, url)
        if what is None:
            return
        family, kind, cost = what
        endpoint = f"{method.upper()} {httpx.URL(url).path}"
        details = {"family": family, "kind": kind}
        if family in self.stopped:
            self.refused[(family, kind)] += 1
            raise ApiLimitError("API_LIMIT_REACHED", f"not sent: Zoho answered its {family} limit earlier in this run ({self.stopped[family]})", details, None, endpoint)
        if not self.allows(family, kind, cost):
            self.refused[(family, kind)] += 1
            raise BudgetReachedError("BUDGET_REACHED", f"not sent: the day's {family} budget left for {kind}s is spent", details, None, endpoint)

    def record(self, method: str, url: httpx.URL | str, status_code: int, code: str | None = None, retry_after: float | None = None, message: str = "") -> None:
        """Count an answered call; a limit answer (:func:`zoho.errors.is_limit_answer`) stops its family."""
        what = classify(method, url)
        if what is None:
            return
        family, kind, cost = what
        self.spent[family] += cost
        self.calls[(family, kind)] += 1
        if is_limit_answer(status_code, code, retry_after):
            self.stopped.setdefault(family, message or f"HTTP {status_code} {code or ''}".strip())

    def by_family(self) -> dict[str, dict[str, int]]:
        """``{family: {"reads": n, "writes": n, "units": n, "refused": n}}`` for the families used."""
        families = {f for f, _ in self.calls} | {f for f, _ in self.refused} | set(self.spent)
        return {
            f: {
                "reads": self.calls[(f, "read")],
                "writes": self.calls[(f, "write")],
                "units": int(self.spent[f]),
                "refused": self.refused[(f, "read")] + self.refused[(f, "write")],
            }
            for f in sorted(families)
        }


#: The meter of the current run; None: calls are neither counted nor limited.
_meter: ContextVar[Meter | None] = ContextVar("zoho_usage_meter", default=None)


@contextmanager
def metering(meter: Meter) -> Iterator[Meter]:
    """Count and limit every Zoho call made in this context (and tasks started from it) with ``meter``."""
    token = _meter.set(meter)
    try:
        yield meter
    finally:
        _meter.reset(token)


def current_meter() -> Meter | None:
    """The meter installed by :func:`metering`, if any."""
    return _meter.get()


async def admit(request: httpx.Request) -> None:
    """httpx ``request`` event hook: :meth:`Meter.admit` with the current meter (none: nothing)."""
    meter = _meter.get()
    if meter is not None:
        meter.admit(request.method, request.url)


async def record(response: httpx.Response) -> None:
    """httpx ``response`` event hook: :meth:`Meter.record` with the current meter.

    Reads the body of Bookings answers and of 429s (small JSON) to find a limit code;
    other bodies (Bulk Read downloads) are left unread.
    """
    meter = _meter.get()
    if meter is None:
        return
    request = response.request
    what = classify(request.method, request.url)
    if what is None:
        return
    code, message = None, ""
    if what[0] == "bookings" or response.status_code == 429:
        await response.aread()
        code, message = _code_of(response)
    meter.record(request.method, request.url, response.status_code, code, retry_after_of(response), message)


def _code_of(response: httpx.Response) -> tuple[str | None, str]:
    """``(code, message)`` of a CRM or Bookings failure body; ``(None, "")`` when it has none."""
    try:
        body = response.json()
    except ValueError:
        return None, ""
    if not isinstance(body, dict):
        return None, ""
    inner = body.get("response")
    if isinstance(inner, dict):
        value = inner.get("returnvalue")
        if inner.get("status") == "success" and not (isinstance(value, dict) and value.get("status") == "failure"):
            return None, ""
        body = value if isinstance(value, dict) else {}
    code = body.get("code")
    return (str(code) if code else None), str(body.get("message") or "")[:200]
