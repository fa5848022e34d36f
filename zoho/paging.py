"""Pagination of Zoho's list APIs, written once: "the next page's request given the last answer".

A *cursor* is a small immutable value describing the next page to ask for. The
caller drives the loop, so each page can stay one Prefect task run (retried on its
own); this module does no I/O and knows nothing of Prefect::

    cursor = CrmRecordsPaging()
    while cursor:                                   # False once the last page was read
        answer = await zoho.crm.get_records(module, fields, **cursor.params)
        cursor = cursor.after(answer)               # the next page, or a finished cursor
    pages_read = cursor.page

Public API (stable; every cursor is a frozen dataclass):

``PageAnswer`` (Protocol)
    What ``after`` reads from an answer: ``more_records: bool`` and
    ``next_page_token: str | None``. :class:`~zoho.models.RecordsPage`,
    :class:`~zoho.models.BookingsPage`, :class:`~zoho.models.BulkReadResult` and the
    stored Bulk Read job rows (``sync.bulk_runs``) all have both.
``PageInfo(more_records, next_page_token=None)``
    A concrete ``PageAnswer`` for callers holding the two values (e.g. a task that
    returns a tuple).
``Paging`` (Protocol)
    What every cursor offers: ``page`` (1-based number of the page to read next;
    once finished, of the last page read, i.e. the number of pages read),
    ``bool(cursor)`` (another page is to be read), ``params`` (keyword arguments
    for the client method that reads a page) and ``after(answer) -> same type``.
``CrmRecordsPaging(page=1, per_page=200, page_token=None, done=False)``
    CRM records API (``GET /crm/{version}/{module}``): ``page``/``per_page`` up
    to 2,000 records, then ``page_token`` from the previous answer's
    ``info.next_page_token``. ``params``: ``page``, ``per_page``, ``page_token``
    (for :meth:`zoho.clients.CrmClient.get_records`, which sends ``page_token``
    instead of ``page`` when it is set).
``BookingsPaging(page=1, per_page=50, done=False)``
    Bookings ``fetchappointment``: ``page`` + 1 while ``next_page_available`` (and
    the page was not empty; an HTTP 204 is an empty page). ``params``: ``page``, ``per_page`` (for
    :meth:`zoho.clients.BookingsClient.fetch_appointments`).
``BulkReadPaging(page=1, page_token=None, done=False)``
    CRM Bulk Read: one job per page; a job whose ``result.more_records`` is true
    gives the next job's ``query.page_token`` (``result.next_page_token``).
    ``params``: ``page_token``; ``request(base)``: a copy of the
    :class:`~zoho.models.BulkReadRequest` with that token in its query.
``CRM_PAGE_LIMIT``
    2,000: records reachable with ``page``/``per_page``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Protocol, Self, runtime_checkable

from .models import BulkReadRequest

#: Records the CRM records API serves by ``page``/``per_page``; beyond, ``page_token`` is required.
CRM_PAGE_LIMIT = 2000


@runtime_checkable
class PageAnswer(Protocol):
    """The paging part of a list answer: whether more records exist, and the token to reach them."""

    @property
    def more_records(self) -> bool | None: ...

    @property
    def next_page_token(self) -> str | None: ...


@dataclass(frozen=True)
class PageInfo:
    """A :class:`PageAnswer` from plain values (``more_records``; ``next_page_token`` or None)."""

    more_records: bool
    next_page_token: str | None = None


class Paging(Protocol):
    """A cursor: the next page to read. See the module docstring."""

    page: int

    def __bool__(self) -> bool: ...

    @property
    def params(self) -> dict[str, Any]: ...

    def after(self, answer: PageAnswer) -> Self: ...


@dataclass(frozen=True)
class CrmRecordsPaging:
    """Paging of ``GET /crm/{version}/{module}`` (Zoho CRM API "Get Records": ``page``,
    ``per_page`` (200 at most), and ``page_token`` for records beyond the 2,000th).

    ``after(answer)``: finished when ``answer.more_records`` is false; else the next
    page, carrying ``answer.next_page_token`` once ``page * per_page`` reaches
    :data:`CRM_PAGE_LIMIT` (and on every page after, once a token is in use).
    ``page`` keeps counting on token pages (it names the page, Zoho ignores it).
    """

    page: int = 1
    per_page: int = 200
    page_token: str | None = None
    done: bool = False

    def __bool__(self) -> bool:
        return not self.done

    @property
    def params(self) -> dict[str, Any]:
        """``{"page": int, "per_page": int, "page_token": str | None}``."""
        return {"page": self.page, "per_page": self.per_page, "page_token": self.page_token}

    def after(self, answer: PageAnswer) -> Self:
        """The cursor for the page after the one ``answer`` is (see the class docstring)."""
        if not answer.more_records:
            return replace(self, done=True)
        token = self.page_token
        if self.page * self.per_page >= CRM_PAGE_LIMIT or token:
            token = answer.next_page_token
        return replace(self, page=self.page + 1, page_token=token)


@dataclass(frozen=True)
class BookingsPaging:
    """Paging of Bookings ``fetchappointment`` (Zoho Bookings API "Fetch Appointment":
    ``page`` and ``per_page`` form fields; the answer's ``next_page_available``).

    Paging is not documented: ``per_page`` defaults to 50, the cap a public client uses
    (100 halves the calls where the workspace accepts it), and an empty page may come as
    HTTP 204 with no body (the client reads it as an empty :class:`~zoho.models.BookingsPage`).
    ``after(answer)``: finished when ``answer.more_records`` is false (for a
    :class:`~zoho.models.BookingsPage`: ``next_page_available`` false, or a page with no
    booking at all, read or rejected), else ``page + 1``.
    """

    page: int = 1
    per_page: int = 50
    done: bool = False

    def __bool__(self) -> bool:
        return not self.done

    @property
    def params(self) -> dict[str, Any]:
        """``{"page": int, "per_page": int}``."""
        return {"page": self.page, "per_page": self.per_page}

    def after(self, answer: PageAnswer) -> Self:
        """The cursor for the page after the one ``answer`` is."""
        if not answer.more_records:
            return replace(self, done=True)
        return replace(self, page=self.page + 1)


@dataclass(frozen=True)
class BulkReadPaging:
    """Paging of CRM Bulk Read (Zoho CRM API "Create Bulk Read Job": one job per page of
    up to 200,000 records; ``result.more_records`` and ``result.next_page_token`` of a
    finished job give the next job's ``query.page_token``).

    ``page`` is the 1-based page (job) index. ``after(answer)``: ``answer`` is the
    finished job's ``result`` (or its stored row); finished when ``more_records``
    is false, else ``page + 1`` with ``page_token = answer.next_page_token``.
    """

    page: int = 1
    page_token: str | None = None
    done: bool = False

    def __bool__(self) -> bool:
        return not self.done

    @property
    def params(self) -> dict[str, Any]:
        """``{"page_token": str | None}``: the next job's ``query.page_token``."""
        return {"page_token": self.page_token}

    def request(self, base: BulkReadRequest) -> BulkReadRequest:
        """A deep copy of ``base`` whose ``query.page_token`` is this page's token (None for page 1)."""
        page_request = base.model_copy(deep=True)
        page_request.query.page_token = self.page_token
        return page_request

    def after(self, answer: PageAnswer) -> Self:
        """The cursor for the job after the one whose result ``answer`` is."""
        if not answer.more_records:
            return replace(self, done=True)
        return replace(self, page=self.page + 1, page_token=answer.next_page_token)
