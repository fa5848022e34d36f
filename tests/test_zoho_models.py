"""Models, time formats and data centres of the pure Zoho layer (``zoho/``).

Shapes come from ``shared/zoho-api-notes.md`` and the seeds: the Bulk Read
criteria tree of seed 001, the ``Appointments__s`` update keys of seed 002 and the
Bookings ``dd-MMM-yyyy HH:mm:ss`` wall times of seed 000.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from zoho.datacentres import DataCentre, Endpoints
from zoho.models import (
    FIELD_TYPES,
    AppointmentUpdate,
    Booking,
    BulkReadJob,
    BulkReadQuery,
    BulkReadRequest,
    BulkState,
    Callback,
    Condition,
    Group,
    ModuleRef,
    Notification,
    TokenResponse,
    WatchChannel,
    all_of,
    any_of,
    check_criteria,
)
from zoho.timefmt import from_bookings, require_aware, to_bookings, to_crm

IST = ZoneInfo("Asia/Kolkata")
NEW_YORK = ZoneInfo("America/New_York")
UTC = timezone.utc


def cond(field: str, comparator: str, value: object) -> dict:
    """A criteria condition as seed 001 writes it."""
    return {"field": {"api_name": field}, "comparator": comparator, "value": value}


def dumped(model) -> dict:
    return model.model_dump(mode="json", exclude_none=True)


# ------------------------------------------------------------------ criteria
def test_condition_serialises_as_seed_001() -> None:
    assert dumped(Condition.of("Status", "equal", "Scheduled")) == cond("Status", "equal", "Scheduled")


def test_nested_groups_serialise_as_seed_001() -> None:
    start = datetime(2023, 4, 15, 17, 58, 47, 123456, tzinfo=IST)
    end = datetime(2023, 6, 1, 12, 28, 47, tzinfo=UTC)
    criteria = any_of(
        all_of(Condition.of("Status", "equal", "Scheduled"), Condition.of("Owner", "in", ["5545974000000393001", "5545974000000393011"])),
        any_of(Condition.of("Appointment_Name", "contains", "Boyle"), Condition.of("Created_Time", "between", [start, end])),
    )
    assert dumped(criteria) == {
        "group_operator": "or",
        "group": [
            {
                "group_operator": "and",
                "group": [
                    cond("Status", "equal", "Scheduled"),
                    cond("Owner", "in", ["5545974000000393001", "5545974000000393011"]),
                ],
            },
            {
                "group_operator": "or",
                "group": [
                    cond("Appointment_Name", "contains", "Boyle"),
                    # ISO 8601, offset kept, microseconds dropped
                    cond("Created_Time", "between", ["2023-04-15T17:58:47+05:30", "2023-06-01T12:28:47+00:00"]),
                ],
            },
        ],
    }


def test_criteria_tree_parses_from_json() -> None:
    body = {"group_operator": "and", "group": [cond("Status", "in", ["Scheduled"]), {"group_operator": "or", "group": [cond("Duration", "greater_than", 30)]}]}
    tree = Group.model_validate(body)
    assert isinstance(tree.group[0], Condition)
    assert isinstance(tree.group[1], Group)
    assert dumped(tree) == body


def test_single_part_is_not_wrapped() -> None:
    only = Condition.of("Status", "equal", "Scheduled")
    assert all_of(only) is only
    assert any_of(only) is only


@pytest.mark.parametrize("value", [[1], [1, 2, 3], "2023-01-01", None])
@pytest.mark.parametrize("comparator", ["between", "not_between"])
def test_between_needs_two_values(comparator: str, value: object) -> None:
    with pytest.raises(ValidationError, match="low, high"):
        Condition.of("Duration", comparator, value)


@pytest.mark.parametrize("value", [[], "Scheduled", None])
@pytest.mark.parametrize("comparator", ["in", "not_in"])
def test_in_needs_a_non_empty_list(comparator: str, value: object) -> None:
    with pytest.raises(ValidationError, match="non-empty list"):
        Condition.of("Status", comparator, value)


@pytest.mark.parametrize(
    "comparator,value",
    [("greater_equal", datetime(2024, 1, 1, 9, 0)), ("between", [datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 2)])],
)
def test_naive_datetime_is_rejected(comparator: str, value: object) -> None:
    with pytest.raises(ValidationError, match="timezone-aware"):
        Condition.of("Modified_Time", comparator, value)


def test_group_needs_a_part_and_a_known_operator() -> None:
    with pytest.raises(ValidationError):
        Group(group_operator="and", group=[])
    with pytest.raises(ValidationError):
        Group(group_operator="xor", group=[Condition.of("Status", "equal", "Scheduled")])


def test_unknown_comparator_is_rejected() -> None:
    with pytest.raises(ValidationError):
        Condition.of("Status", "like", "Sched%")


def test_check_criteria_accepts_valid_comparators() -> None:
    criteria = all_of(
        Condition.of("Appointment_Start_Time", "between", [datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 2, 1, tzinfo=UTC)]),
        any_of(Condition.of("Status", "in", ["Scheduled", "Overdue"]), Condition.of("Appointment_Name", "starts_with", "Consult")),
    )
    check_criteria(criteria, FIELD_TYPES["Appointments__s"])  # does not raise


@pytest.mark.parametrize(
    "condition",
    [
        Condition.of("Appointment_Start_Time", "starts_with", "2024"),
        Condition.of("Status", "greater_than", "Scheduled"),
        Condition.of("Duration", "contains", "3"),
    ],
)
def test_check_criteria_rejects_a_comparator_invalid_for_the_type(condition: Condition) -> None:
    nested = all_of(Condition.of("Status", "equal", "Scheduled"), any_of(Condition.of("Duration", "equal", 30), condition))
    with pytest.raises(ValueError, match=condition.comparator):
        check_criteria(nested, FIELD_TYPES["Appointments__s"])


def test_check_criteria_rejects_an_unknown_field() -> None:
    with pytest.raises(ValueError, match="No_Such_Field"):
        check_criteria(Condition.of("No_Such_Field", "equal", 1), FIELD_TYPES["Appointments__s"])


# ----------------------------------------------------------------- bulk read
def test_bulk_read_request_body() -> None:
    request = BulkReadRequest(
        query=BulkReadQuery(
            module=ModuleRef(api_name="Appointments__s"),
            fields=["id", "Status"],
            criteria=Condition.of("Modified_Time", "greater_equal", datetime(2024, 5, 1, 8, 0, 0, 500000, tzinfo=UTC)),
            page=1,
        ),
        callback=Callback(url="https://hooks.example.test/bulk"),
    )
    assert request.to_json() == {
        "query": {
            "module": {"api_name": "Appointments__s"},
            "fields": ["id", "Status"],
            "criteria": cond("Modified_Time", "greater_equal", "2024-05-01T08:00:00+00:00"),
            "page": 1,
        },
        "callback": {"url": "https://hooks.example.test/bulk", "method": "post"},
        "file_type": "csv",
    }


@pytest.mark.parametrize("module,fields", [("Appointments__s", []), ("Contacts", []), ("Events", ["Event_Title"])])
def test_ics_only_for_events_without_fields(module: str, fields: list[str]) -> None:
    with pytest.raises(ValidationError, match="ics"):
        BulkReadRequest(query=BulkReadQuery(module=ModuleRef(api_name=module), fields=fields), file_type="ics")


def test_ics_for_events() -> None:
    request = BulkReadRequest(query=BulkReadQuery(module=ModuleRef(api_name="Events")), file_type="ics")
    assert request.to_json()["file_type"] == "ics"


def test_bulk_page_must_be_positive() -> None:
    with pytest.raises(ValidationError):
        BulkReadQuery(module=ModuleRef(api_name="Appointments__s"), page=0)


@pytest.mark.parametrize(
    "state,terminal",
    [("ADDED", False), ("QUEUED", False), ("IN PROGRESS", False), ("COMPLETED", True), ("FAILURE", True)],
)
def test_bulk_states(state: str, terminal: bool) -> None:
    job = BulkReadJob.model_validate({"id": "554023000000568002", "operation": "read", "state": state})
    assert job.state is BulkState(state)
    assert job.state.is_terminal is terminal


def test_unknown_bulk_state_is_rejected() -> None:
    with pytest.raises(ValidationError):
        BulkReadJob.model_validate({"id": "1", "state": "IN_PROGRESS"})


# ---------------------------------------------------------------- OAuth answer
def test_token_response_seconds() -> None:
    answer = TokenResponse.model_validate(
        {"access_token": "1000.abc", "expires_in": 3600, "api_domain": "https://www.zohoapis.eu", "token_type": "Bearer"}
    )
    assert (answer.expires_in, answer.api_domain) == (3600, "https://www.zohoapis.eu")
    assert "1000.abc" not in repr(answer)


def test_token_response_legacy_expires_in_sec_wins() -> None:
    answer = TokenResponse.model_validate({"access_token": "1000.abc", "expires_in_sec": 3600, "expires_in": 3600000})
    assert answer.expires_in == 3600


def test_token_response_milliseconds() -> None:
    assert TokenResponse.model_validate({"access_token": "1000.abc", "expires_in": 3_600_000}).expires_in == 3600


# -------------------------------------------------------- appointment updates
def test_update_builders_match_seed_002_sample_input() -> None:
    updates = [
        AppointmentUpdate.reschedule(
            "5545974000002254155", datetime(2023, 4, 5, 10, 0, tzinfo=IST), "By Team", "Member is unavailable due to unexpected reasons"
        ),
        AppointmentUpdate.cancel("5545974000002254060", "By Customer", "Customer Unavailable"),
        AppointmentUpdate.complete("5545974000002254135", "Delivered", "Delivered on time"),
    ]
    assert [u.to_json() for u in updates] == [
        {
            "id": "5545974000002254155",
            "Appointment_Start_Time": "2023-04-05T10:00:00+05:30",
            "Reschedule_Reason": "By Team",
            "Reschedule_Note": "Member is unavailable due to unexpected reasons",
        },
        {"id": "5545974000002254060", "Status": "Cancelled", "Cancellation_Reason": "By Customer", "Cancellation_Note": "Customer Unavailable"},
        {"id": "5545974000002254135", "Status": "Completed", "Job_Sheet_Name": "Delivered", "Job_Sheet_Description__s": "Delivered on time"},
    ]


def test_update_builders_leave_unset_keys_out() -> None:
    assert AppointmentUpdate.reschedule("1", datetime(2023, 4, 5, 4, 30, 0, 999, tzinfo=UTC)).to_json() == {
        "id": "1",
        "Appointment_Start_Time": "2023-04-05T04:30:00+00:00",
    }
    assert AppointmentUpdate.cancel("2").to_json() == {"id": "2", "Status": "Cancelled", "Cancellation_Reason": "By Customer"}
    assert AppointmentUpdate.complete("3").to_json() == {"id": "3", "Status": "Completed"}


def test_update_rejects_naive_times_and_unknown_values() -> None:
    with pytest.raises(ValidationError, match="timezone-aware"):
        AppointmentUpdate.reschedule("1", datetime(2023, 4, 5, 10, 0))
    with pytest.raises(ValidationError):
        AppointmentUpdate.cancel("1", reason="By Robot")
    with pytest.raises(ValidationError):
        AppointmentUpdate(id="1", Status="Done")


# ----------------------------------------------------------- notifications
def test_watch_channel_reveals_the_token_only_in_the_body() -> None:
    channel = WatchChannel(
        channel_id=1000000068001,
        events=["Appointments__s.all"],
        channel_expiry=datetime(2024, 6, 18, 10, 0, tzinfo=UTC),
        token="chan-secret-1",
        notify_url="https://hooks.example.test/zoho",
        return_affected_field_values=True,
    )
    assert channel.to_json() == {
        "channel_id": 1000000068001,
        "events": ["Appointments__s.all"],
        "channel_expiry": "2024-06-18T10:00:00+00:00",
        "token": "chan-secret-1",
        "notify_url": "https://hooks.example.test/zoho",
        "return_affected_field_values": True,
    }
    assert "chan-secret-1" not in repr(channel)


def test_watch_channel_limits() -> None:
    with pytest.raises(ValidationError, match="50"):
        WatchChannel(channel_id=1, events=["Appointments__s.all"], token="x" * 51, notify_url="https://hooks.example.test/zoho")
    with pytest.raises(ValidationError, match="timezone-aware"):
        WatchChannel(channel_id=1, events=["Appointments__s.all"], channel_expiry=datetime(2024, 6, 18), notify_url="https://hooks.example.test/zoho")


def test_notification_accepts_unknown_operations() -> None:
    note = Notification.model_validate(
        {
            "server_time": 1718117126473,
            "query_params": {},
            "module": "Appointments__s",
            "resource_uri": "https://www.zohoapis.com/crm/v7/Appointments__s",
            "ids": ["5545974000002254155"],
            "affected_fields": [],
            "operation": "restore",
            "channel_id": "1000000068001",
            "token": "chan-secret-1",
        }
    )
    assert (note.operation, note.ids) == ("restore", ["5545974000002254155"])


# -------------------------------------------------------------- time formats
def test_to_crm_keeps_offset_and_drops_fractions() -> None:
    assert to_crm(datetime(2023, 4, 5, 10, 0, 0, 654321, tzinfo=IST)) == "2023-04-05T10:00:00+05:30"
    with pytest.raises(ValueError, match="timezone-aware"):
        to_crm(datetime(2023, 4, 5, 10, 0))
    with pytest.raises(ValueError, match="start"):
        require_aware(datetime(2023, 4, 5), "start")


def test_booking_times_seed_000() -> None:
    booking = Booking.model_validate(
        {
            "booking_id": "#AN-00014",
            "start_time": "28-May-2019 13:00:00",
            "end_time": "28-May-2019 13:30:00",
            "time_zone": "Asia/Calcutta",
            "status": "upcoming",
        }
    )
    assert booking.start == datetime(2019, 5, 28, 7, 30, tzinfo=UTC)
    assert booking.end - booking.start == timedelta(minutes=30)


#: Zone, and instants (UTC) on both sides of its DST changes and inside them (first
#: occurrences only: a fold's second occurrence writes the same text, see below).
ROUND_TRIP_ZONES = {
    # US: 2024-03-10 02:00 -> 03:00, 2024-11-03 02:00 -> 01:00
    "America/New_York": ["2024-03-10T06:59:59", "2024-03-10T07:00:00", "2024-11-03T05:30:00", "2024-11-03T07:00:00", "2024-07-01T16:00:00"],
    # UK: 2024-03-31 01:00 -> 02:00, 2024-10-27 02:00 -> 01:00
    "Europe/London": ["2024-03-31T00:59:59", "2024-03-31T01:00:00", "2024-10-27T00:30:00", "2024-10-27T02:00:00", "2024-12-31T23:59:59"],
    # Sydney: 2024-04-07 03:00 -> 02:00, 2024-10-06 02:00 -> 03:00
    "Australia/Sydney": ["2024-04-06T15:30:00", "2024-04-06T17:00:00", "2024-10-05T15:59:59", "2024-10-05T16:00:00", "2024-02-29T00:00:00"],
    # India: no DST
    "Asia/Kolkata": ["2024-03-10T07:00:00", "2024-11-03T06:30:00", "2024-01-01T00:00:00"],
}


@pytest.mark.parametrize(
    "zone,instant",
    [(zone, instant) for zone, instants in ROUND_TRIP_ZONES.items() for instant in instants],
)
def test_bookings_round_trip(zone: str, instant: str) -> None:
    moment = datetime.fromisoformat(instant).replace(tzinfo=UTC)
    text = to_bookings(moment, zone)
    assert from_bookings(text, zone) == moment


@pytest.mark.parametrize(
    "zone,moment,text",
    [
        ("America/New_York", datetime(2024, 3, 10, 6, 59, tzinfo=UTC), "10-Mar-2024 01:59:00"),
        ("America/New_York", datetime(2024, 3, 10, 7, 0, tzinfo=UTC), "10-Mar-2024 03:00:00"),
        ("Europe/London", datetime(2024, 7, 1, 12, 0, tzinfo=UTC), "01-Jul-2024 13:00:00"),
        ("Australia/Sydney", datetime(2024, 1, 1, 0, 0, tzinfo=UTC), "01-Jan-2024 11:00:00"),
        ("Asia/Kolkata", datetime(2023, 4, 5, 4, 30, tzinfo=UTC), "05-Apr-2023 10:00:00"),
    ],
)
def test_to_bookings_wall_time(zone: str, moment: datetime, text: str) -> None:
    assert to_bookings(moment, zone) == text


@pytest.mark.parametrize(
    "zone,text,earlier_utc",
    [
        ("America/New_York", "03-Nov-2024 01:30:00", datetime(2024, 11, 3, 5, 30, tzinfo=UTC)),
        ("Europe/London", "27-Oct-2024 01:30:00", datetime(2024, 10, 27, 0, 30, tzinfo=UTC)),
        ("Australia/Sydney", "07-Apr-2024 02:30:00", datetime(2024, 4, 6, 15, 30, tzinfo=UTC)),
    ],
)
def test_fold_takes_the_earlier_instant(zone: str, text: str, earlier_utc: datetime) -> None:
    parsed = from_bookings(text, zone)
    assert parsed.fold == 0
    assert parsed == earlier_utc
    assert parsed.astimezone(ZoneInfo(zone)).strftime("%H:%M") == text[-8:-3]
    assert hash(parsed) == hash(earlier_utc)
    # the same wall time an hour later writes the same text: the second occurrence is not recoverable
    assert to_bookings(earlier_utc + timedelta(hours=1), zone) == text


def test_gap_wall_time_uses_the_offset_before_the_change() -> None:
    # 02:30 does not exist in New York on 2024-03-10; zoneinfo reads it with EST (-05:00)
    assert from_bookings("10-Mar-2024 02:30:00", "America/New_York") == datetime(2024, 3, 10, 7, 30, tzinfo=UTC)


@pytest.mark.parametrize("text", ["2024-03-10 01:00:00", "10-Foo-2024 01:00:00", "10-Mar-2024", "31-Feb-2024 10:00:00", "10-Mar-2024 25:00:00", ""])
def test_from_bookings_rejects_other_formats(text: str) -> None:
    with pytest.raises(ValueError, match="dd-MMM-yyyy"):
        from_bookings(text, "Asia/Kolkata")


def test_from_bookings_month_is_case_insensitive() -> None:
    assert from_bookings("05-APR-2023 10:00:00", "Asia/Kolkata") == datetime(2023, 4, 5, 4, 30, tzinfo=UTC)


# --------------------------------------------------------------- data centres
@pytest.mark.parametrize(
    "dc,accounts,api",
    [
        ("US", "https://accounts.zoho.com", "https://www.zohoapis.com"),
        ("EU", "https://accounts.zoho.eu", "https://www.zohoapis.eu"),
        ("IN", "https://accounts.zoho.in", "https://www.zohoapis.in"),
        ("AU", "https://accounts.zoho.com.au", "https://www.zohoapis.com.au"),
        ("JP", "https://accounts.zoho.jp", "https://www.zohoapis.jp"),
        ("CA", "https://accounts.zohocloud.ca", "https://www.zohoapis.ca"),
        ("SA", "https://accounts.zoho.sa", "https://www.zohoapis.sa"),
        ("CN", "https://accounts.zoho.com.cn", "https://www.zohoapis.com.cn"),
    ],
)
def test_endpoints_per_data_centre(dc: str, accounts: str, api: str) -> None:
    for key in (dc, DataCentre(dc)):
        endpoints = Endpoints.for_data_centre(key)
        assert endpoints == Endpoints(accounts=accounts, crm=api, bookings=f"{api}/bookings/v1/json")


def test_every_data_centre_is_covered() -> None:
    for dc in DataCentre:
        if dc is not DataCentre.CUSTOM:
            assert Endpoints.for_data_centre(dc).accounts.startswith("https://accounts.")


def test_custom_needs_a_base_url() -> None:
    with pytest.raises(ValueError, match="base_url"):
        Endpoints.for_data_centre("CUSTOM")
    endpoints = Endpoints.for_data_centre("CUSTOM", base_url="http://127.0.0.1:8900/")
    assert endpoints == Endpoints(
        accounts="http://127.0.0.1:8900", crm="http://127.0.0.1:8900", bookings="http://127.0.0.1:8900/bookings/v1/json"
    )


def test_unknown_data_centre() -> None:
    with pytest.raises(ValueError):
        Endpoints.for_data_centre("MARS")


def test_api_domain_overrides_crm_and_bookings() -> None:
    endpoints = Endpoints.for_data_centre("US", api_domain="https://www.zohoapis.eu/")
    assert endpoints == Endpoints(
        accounts="https://accounts.zoho.com", crm="https://www.zohoapis.eu", bookings="https://www.zohoapis.eu/bookings/v1/json"
    )
    custom = Endpoints.for_data_centre("CUSTOM", base_url="http://127.0.0.1:8900", api_domain="http://127.0.0.1:8901")
    assert (custom.accounts, custom.crm) == ("http://127.0.0.1:8900", "http://127.0.0.1:8901")
