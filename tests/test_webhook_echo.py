"""Bookings webhook echoes: a webhook reporting what the state store already holds queues no sync.

The receiver is built as in ``test_webhook_receiver.py`` (a fake ``emit``, a long
coalescing window so queued ids stay visible); the state store is a temporary
SQLite file seeded with :func:`sync.links.upsert_bookings`.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from asgi_lifespan import LifespanManager

from deployments.webhook import ReceiverSettings, create_receiver, reported_state
from sync.echoes import StoredBooking, same_state
from sync.engine import Canon, bookings_canon
from sync.links import upsert_bookings
from sync.store import open_store

UTC = timezone.utc
SECRET = "bk-secret"
BOOKING = "#AN-00042"
#: The stored start: 04:30 UTC is 10:00 in Kolkata (+05:30) and 00:30 in New York (EDT, -04:00) on 1 Nov 2026.
START = datetime(2026, 11, 1, 4, 30, tzinfo=UTC)


class Events(list):
    def __call__(self, event, resource, payload):
        self.append((event, resource, payload))

    def named(self, name):
        return [p for e, _, p in self if e == name]


def webhook(**overrides):
    """The sandbox's webhook payload (``sandbox/bookings.py`` ``webhook``) for the stored booking."""
    body = {"event": "appointment_rescheduled", "booking_id": BOOKING, "status": "UPCOMING", "start_time": "01-Nov-2026 10:00:00",
            "end_time": "01-Nov-2026 10:30:00", "time_zone": "Asia/Kolkata", "staff_id": "st-1", "service_id": "sv-1",
            "changed_by": "api", "event_time": "2026-10-20T08:00:00+00:00"}
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def seed(url, status="UPCOMING", start=START):
    engine = open_store(url)
    upsert_bookings(engine, [{"booking_id": BOOKING, "start_time": start, "end_time": start + timedelta(minutes=30), "status": status,
                              "time_zone": "Asia/Kolkata", "staff_id": "st-1", "service_id": "sv-1"}], datetime(2026, 10, 20, tzinfo=UTC))
    engine.dispose()


class Receiver:
    def __init__(self, client, events, app):
        self.client, self.events, self.app = client, events, app

    @property
    def coalescer(self):
        return self.app.state.coalescer

    async def post(self, body):
        return await self.client.post("/zoho/bookings/webhook", json=body, headers={"X-Zoho-Bookings-Secret": SECRET})

    def webhook_events(self):
        return self.events.named("zoho.bookings.webhook")


def _receiver(url, **overrides):
    events = Events()
    settings = ReceiverSettings(bookings_secret=SECRET, coalesce_seconds=3600, leading_edge=False, state_store_url=url, config_block="sync-test", **overrides)
    app = create_receiver(settings, emit=events)
    return app, events


@pytest.fixture
def store_url(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    seed(url)
    return url


@pytest.fixture
async def make(store_url):
    """``await make(**settings)``: a running receiver on the seeded store (or ``state_store_url=...``)."""
    stack = []

    async def build(**overrides):
        app, events = _receiver(overrides.pop("state_store_url", store_url), **overrides)
        manager = LifespanManager(app)
        await manager.__aenter__()
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://receiver")
        stack.append((manager, client))
        return Receiver(client, events, app)

    yield build
    for manager, client in reversed(stack):
        await client.aclose()
        await manager.__aexit__(None, None, None)


async def assert_queued(r, body):
    """The webhook is accepted, recorded as no echo, and its booking id queued for a sync."""
    response = await r.post(body)
    assert response.status_code == 202
    assert response.json() == {"accepted": 1}
    assert r.coalescer.pending["booking_ids"] == {body["booking_id"]}
    assert [p["echo"] for p in r.webhook_events()] == [False]
    assert r.coalescer.echoes_skipped == 0


# ----------------------------------------------------------------------------- echoes skipped


async def test_an_echo_is_recorded_but_queues_no_sync(make):
    r = await make()
    response = await r.post(webhook())
    assert response.status_code == 202 and response.json() == {"accepted": 1, "echo": True}
    assert not r.coalescer.pending["booking_ids"]
    assert r.webhook_events() == [{"booking_id": BOOKING, "event": "appointment_rescheduled", "status": "UPCOMING",
                                   "start_time": "01-Nov-2026 10:00:00", "time_zone": "Asia/Kolkata", "echo": True}]
    assert r.coalescer.flush() == 0 and r.events.named("zoho.sync.requested") == []
    health = (await r.client.get("/healthz")).json()
    assert health == {"status": "ok", "pending_ids": 0, "echoes_skipped": 1}


async def test_the_same_instant_in_another_time_zone_is_an_echo(make):
    r = await make()
    response = await r.post(webhook(start_time="01-Nov-2026 00:30:00", time_zone="America/New_York"))  # EDT: 04:30 UTC
    assert response.json().get("echo") is True
    assert not r.coalescer.pending["booking_ids"]


async def test_ongoing_and_upcoming_are_the_same_canonical_status(make):
    assert bookings_canon("ONGOING") == bookings_canon("UPCOMING") == Canon.SCHEDULED
    r = await make()
    response = await r.post(webhook(status="ONGOING"))
    assert response.json() == {"accepted": 1, "echo": True}
    assert not r.coalescer.pending["booking_ids"] and r.coalescer.echoes_skipped == 1


async def test_a_finished_status_matches_itself(tmp_path, make):
    url = f"sqlite:///{tmp_path / 'cancelled.db'}"
    seed(url, status="CANCEL")
    r = await make(state_store_url=url)
    assert (await r.post(webhook(status="cancel", event="appointment_cancelled"))).json().get("echo") is True  # any case
    assert not r.coalescer.pending["booking_ids"]


async def test_the_store_is_read_off_the_event_loop(make, monkeypatch):
    import sync.echoes

    threads = []
    real = sync.echoes.is_echo

    def spy(*args, **kwargs):
        threads.append(threading.current_thread())
        return real(*args, **kwargs)

    monkeypatch.setattr(sync.echoes, "is_echo", spy)
    r = await make()
    assert (await r.post(webhook())).json().get("echo") is True
    assert len(threads) == 1 and threads[0] is not threading.main_thread()


# ----------------------------------------------------------------------------- not echoes: queued as before


@pytest.mark.parametrize(
    "overrides",
    [
        {"start_time": "01-Nov-2026 10:01:00"},
        {"start_time": "01-Nov-2026 10:00:01"},  # to the second
        {"start_time": "02-Nov-2026 10:00:00"},
        {"time_zone": "Europe/London"},  # the same wall time elsewhere is another instant
    ],
    ids=["a-minute-later", "a-second-later", "a-day-later", "other-zone-same-wall-time"],
)
async def test_a_different_start_is_queued(make, overrides):
    await assert_queued(await make(), webhook(**overrides))


@pytest.mark.parametrize("status", ["CANCEL", "COMPLETED", "NO_SHOW"])
async def test_a_different_canonical_status_is_queued(make, status):
    await assert_queued(await make(), webhook(status=status))


@pytest.mark.parametrize("missing", ["status", "start_time", "time_zone"])
async def test_a_payload_without_the_fields_is_queued(make, missing):
    body = webhook()
    del body[missing]
    await assert_queued(await make(), body)


async def test_a_bare_booking_id_is_queued(make):
    await assert_queued(await make(), {"booking_id": BOOKING})


async def test_an_unknown_booking_is_queued(make):
    await assert_queued(await make(), webhook(booking_id="#AN-99999"))


@pytest.mark.parametrize(
    "overrides",
    [
        {"start_time": "2026-11-01 10:00:00"},
        {"start_time": "01-Foo-2026 10:00:00"},
        {"start_time": "31-Nov-2026 10:00:00"},
        {"start_time": "01-Nov-2026 10:00"},
        {"start_time": ""},
        {"start_time": 1793514600},
        {"time_zone": "Mars/Olympus_Mons"},
        {"time_zone": "America"},  # a folder of the tz database: OSError, not ValueError
        {"time_zone": "../etc/passwd"},
        {"time_zone": ["Asia/Kolkata"]},
        {"status": "WEIRD"},
        {"status": ""},
        {"status": {"value": "UPCOMING"}},
    ],
    ids=["iso", "bad-month", "no-such-day", "no-seconds", "empty-time", "number", "unknown-zone", "zone-folder", "zone-path",
         "zone-list", "unknown-status", "empty-status", "status-object"],
)
async def test_unparsable_or_unknown_values_are_queued(make, overrides):
    await assert_queued(await make(), webhook(**overrides))


async def test_skip_echoes_false_queues_every_id(make):
    await assert_queued(await make(skip_echoes=False), webhook())


def test_skip_echoes_is_on_by_default_and_set_by_the_environment(monkeypatch):
    assert ReceiverSettings().skip_echoes is True
    monkeypatch.setenv("APPT_SYNC_RECEIVER_SKIP_ECHOES", "false")
    assert ReceiverSettings().skip_echoes is False


@pytest.mark.parametrize("kind", ["folder", "no-such-dialect", "refused"])
async def test_an_unreadable_store_is_no_echo_and_one_warning(make, tmp_path, caplog, kind):
    url = {"folder": f"sqlite:///{tmp_path}",  # a directory, not a database file
           "no-such-dialect": "nosuchdb://user:hunter2@127.0.0.1/x",
           "refused": "postgresql://user:hunter2@127.0.0.1:1/x"}[kind]
    r = await make(state_store_url=url)
    with caplog.at_level(logging.WARNING, logger="zoho_appointment_sync.webhook"):
        await assert_queued(r, webhook())
    records = [rec for rec in caplog.records if rec.name == "zoho_appointment_sync.webhook"]
    assert len(records) == 1 and records[0].levelno == logging.WARNING
    assert records[0].exc_info is None  # no traceback
    assert BOOKING in records[0].getMessage() and "hunter2" not in caplog.text


async def test_a_store_without_the_table_is_no_echo(tmp_path, make):
    from sqlalchemy import create_engine, text

    url = f"sqlite:///{tmp_path / 'other.db'}"
    seed(url)
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE bookings"))
    engine.dispose()
    await assert_queued(await make(state_store_url=url), webhook())


# ----------------------------------------------------------------------------- the pure parts


def test_reported_state_parses_the_bookings_time_in_its_zone():
    start, status = reported_state(webhook())
    assert start == START and status == "UPCOMING"
    assert reported_state(webhook(start_time="1-nov-2026 10:00:00")) == (START, "UPCOMING")
    assert reported_state(webhook(status="WEIRD")) is None
    assert reported_state({"booking_id": BOOKING}) is None


def test_same_state_compares_instants_to_the_second_and_canonical_statuses():
    stored = StoredBooking(BOOKING, START.replace(microsecond=400_000), "UPCOMING")
    assert same_state(START, "ongoing", stored)
    assert same_state(START.astimezone(timezone(timedelta(hours=5, minutes=30))), "PENDING", stored)
    assert not same_state(START + timedelta(seconds=1), "UPCOMING", stored)
    assert not same_state(START, "CANCEL", stored)
    assert not same_state(START, "UPCOMING", None)
    assert not same_state(START, "UPCOMING", StoredBooking(BOOKING, None, "UPCOMING"))
    assert not same_state(START, "UPCOMING", StoredBooking(BOOKING, START, "WEIRD"))  # an unknown stored status
    assert not same_state(START, "WEIRD", stored)
    with pytest.raises(ValueError, match="naive"):
        same_state(START.replace(tzinfo=None), "UPCOMING", stored)


# ----------------------------------------------------------------------------- the state goes on to the run
async def test_a_queued_booking_carries_its_latest_reported_state_to_the_sync_request(make):
    """An echo can arrive before the write's answer is stored: the receiver then queues it, with what
    the webhook reported, and the sync run checks that again once the writing run has committed."""
    r = await make()
    await r.post(webhook(start_time="01-Nov-2026 11:00:00"))  # not what the store holds (yet)
    await r.post(webhook(start_time="01-Nov-2026 12:00:00", status="CANCEL"))  # the latest wins
    other = "#AN-77"
    await r.post(webhook(booking_id=other, status=None))  # no state: none passed on
    assert r.coalescer.flush() == 1
    (request,) = r.events.named("zoho.sync.requested")
    assert sorted(request["booking_ids"]) == sorted([other, BOOKING])
    assert request["booking_states"] == {BOOKING: {"status": "CANCEL", "start_time": "01-Nov-2026 12:00:00", "time_zone": "Asia/Kolkata"}}
    assert r.coalescer.states == {}  # forgotten once emitted


async def test_a_later_webhook_without_a_state_forgets_the_earlier_one(make):
    r = await make()
    await r.post(webhook(start_time="01-Nov-2026 11:00:00"))
    await r.post(webhook(start_time=None))
    r.coalescer.flush()
    (request,) = r.events.named("zoho.sync.requested")
    assert request["booking_ids"] == [BOOKING] and request["booking_states"] == {}
