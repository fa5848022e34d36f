"""zoho.paging cursors and the token policy zoho.auth.needs_refresh."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from zoho.auth import needs_refresh
from zoho.models import Booking, BookingsPage, BulkReadQuery, BulkReadRequest, ModuleRef, RecordsPage
from zoho.paging import BookingsPaging, BulkReadPaging, CrmRecordsPaging, PageInfo


def test_crm_records_switch_to_page_token_past_2000() -> None:
    cursor, asked = CrmRecordsPaging(), []
    while cursor:
        asked.append(cursor.params)
        n = len(asked)
        cursor = cursor.after(RecordsPage(info={"more_records": n < 12, "next_page_token": f"t{n}"}))
    assert [p["page"] for p in asked] == list(range(1, 13)) and cursor.page == 12
    assert all(p["page_token"] is None and p["per_page"] == 200 for p in asked[:10])
    assert [p["page_token"] for p in asked[10:]] == ["t10", "t11"]


def test_bookings_pages_until_next_page_available_is_false_or_empty() -> None:
    booking = Booking(booking_id="#AN-1", start_time="01-Jan-2030 10:00:00", time_zone="UTC", status="upcoming")
    cursor = BookingsPaging(per_page=100)
    assert cursor.params == {"page": 1, "per_page": 100}
    cursor = cursor.after(BookingsPage(response=[booking], next_page_available=True))
    assert cursor and cursor.params == {"page": 2, "per_page": 100}
    assert not cursor.after(BookingsPage(response=[], next_page_available=True))
    assert not cursor.after(PageInfo(False))


def test_bulk_read_next_job_query() -> None:
    base = BulkReadRequest(query=BulkReadQuery(module=ModuleRef(api_name="Appointments__s")))
    cursor = BulkReadPaging()
    assert cursor.request(base).query.page_token is None
    cursor = cursor.after(PageInfo(True, "tok"))
    assert (cursor.page, cursor.params) == (2, {"page_token": "tok"})
    assert cursor.request(base).query.page_token == "tok" and base.query.page_token is None
    done = cursor.after(PageInfo(False))
    assert not done and done.page == 2


def test_needs_refresh_caps_the_margin_at_half_the_lifetime() -> None:
    now = datetime(2030, 1, 1, tzinfo=timezone.utc)
    margin = timedelta(minutes=5)
    assert needs_refresh(None, None, margin, now)
    assert needs_refresh(now + timedelta(minutes=4), None, margin, now)
    assert not needs_refresh(now + timedelta(minutes=6), None, margin, now)
    # a 4-minute token: margin 2 minutes, so it is used until then
    assert not needs_refresh(now + timedelta(minutes=3), timedelta(minutes=4), margin, now)
    assert needs_refresh(now + timedelta(minutes=2), timedelta(minutes=4), margin, now)
