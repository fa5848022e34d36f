"""Lost deliveries in the sandbox: ``drop_bookings_webhooks``, ``drop_crm_notifications``, ``drop_seed``.

Fault injection for benchmarks (Zoho documents no such settings): a dropped
Bookings webhook or CRM notification is never POSTed, is counted as
``<kind>_dropped`` in ``GET /__sandbox/stats`` and is listed by
``GET /__sandbox/outbox``; Bulk Read callbacks are never dropped; a seed gives
the same drops for the same sequence of sends.

conftest's ``TEST_CONFIG`` does not name these settings, so every test here
puts them back to their defaults when it ends (fixture ``drops``).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote

import pytest

from sandbox.cli import build_parser, config_from_args
from sandbox.config import SandboxConfig

WATCH = "/crm/v7/actions/watch"
APPOINTMENTS = "Appointments__s"
DEFAULTS = {"drop_bookings_webhooks": 0.0, "drop_crm_notifications": 0.0, "drop_seed": None}
SETTINGS = tuple(DEFAULTS)


@pytest.fixture
def drops(sandbox):
    """The sandbox; the drop settings go back to their defaults afterwards."""
    try:
        yield sandbox
    finally:
        sandbox.config(**DEFAULTS)


# ------------------------------------------------------------------ helpers
def outbox(sandbox) -> list[dict[str, Any]]:
    """Every outbound delivery logged, once the queue is empty."""
    sandbox.drain()
    box = sandbox.http.get("/__sandbox/outbox").json()
    assert box["pending"] == 0
    return box["sent"]


def outbound(sandbox) -> dict[str, int]:
    return sandbox.stats()["outbound"]


def hook_up(sandbox, receiver) -> None:
    """Bookings webhooks to ``receiver``/bk, and a channel notifying ``receiver``/crm of Appointments__s edits."""
    sandbox.config(bookings_webhook_url=receiver.url + "/bk")
    expiry = (datetime.now(timezone.utc) + timedelta(days=6)).replace(microsecond=0).isoformat()
    channel = {"channel_id": "1000000068001", "events": [f"{APPOINTMENTS}.edit"], "channel_expiry": expiry,
               "token": "tok", "notify_url": receiver.url + "/crm"}
    with sandbox.client() as api:
        r = api.post(WATCH, json={"watch": [channel]})
    assert r.status_code == 200, r.text


def cancel_bookings(sandbox, n: int) -> list[str]:
    """Cancel the first ``n`` upcoming bookings as their owner would (one webhook each); their ids."""
    ids = [b["booking_id"] for b in sandbox.dump(module="bookings")["bookings"] if b["status"] == "UPCOMING"][:n]
    assert len(ids) == n, "the seed holds too few upcoming bookings"
    for booking_id in ids:
        r = sandbox.http.patch(f"/__sandbox/bookings/{quote(booking_id, safe='')}", json={"action": "cancel"})
        assert r.status_code == 200, r.text
    return ids


def edit_records(sandbox, n: int) -> list[str]:
    """Rename the first ``n`` Appointments__s records as a UI user (one notification each); their ids."""
    ids = [rec["id"] for rec in sandbox.dump(module=APPOINTMENTS)[APPOINTMENTS][:n]]
    assert len(ids) == n
    for i, rid in enumerate(ids):
        r = sandbox.http.patch(f"/__sandbox/crm/{APPOINTMENTS}/{rid}", json={"Appointment_Name": f"drop test {i}"})
        assert r.status_code == 200, r.text
    return ids


def dropped_ids(log: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """Booking ids of dropped webhooks and record ids of dropped notifications, in sending order."""
    webhooks = [e["payload"]["booking_id"] for e in log if e["kind"] == "bookings_webhook" and str(e["status"]).startswith("dropped")]
    notes = [e["payload"]["ids"][0] for e in log if e["kind"] == "notification" and str(e["status"]).startswith("dropped")]
    return webhooks, notes


def received(receiver, path: str) -> list[dict[str, Any]]:
    return [item for item in receiver.received if item["path"] == path]


# ------------------------------------------------------------------- tests
def test_drops_are_off_by_default_and_shown_by_get_config(drops):
    cfg = drops.http.get("/__sandbox/config").json()
    assert {k: cfg[k] for k in SETTINGS} == DEFAULTS
    cfg = drops.config(drop_bookings_webhooks=0.25, drop_crm_notifications=1, drop_seed=9)
    assert {k: cfg[k] for k in SETTINGS} == {"drop_bookings_webhooks": 0.25, "drop_crm_notifications": 1.0, "drop_seed": 9}
    assert {k: drops.http.get("/__sandbox/config").json()[k] for k in SETTINGS} == {
        "drop_bookings_webhooks": 0.25, "drop_crm_notifications": 1.0, "drop_seed": 9,
    }
    assert drops.config(drop_seed=None)["drop_seed"] is None


def test_drop_one_delivers_nothing_and_counts_every_drop(drops, receiver):
    hook_up(drops, receiver)
    drops.config(drop_bookings_webhooks=1.0, drop_crm_notifications=1.0)
    bookings = cancel_bookings(drops, 5)
    records = edit_records(drops, 4)
    log = outbox(drops)
    assert receiver.received == []
    assert outbound(drops) == {"bookings_webhook_dropped": 5, "notification_dropped": 4}
    assert dropped_ids(log) == (bookings, records)
    assert {(e["kind"], e["status"]) for e in log} == {
        ("bookings_webhook", "dropped (drop_bookings_webhooks setting)"),
        ("notification", "dropped (drop_crm_notifications setting)"),
    }
    assert {e["url"] for e in log} == {receiver.url + "/bk", receiver.url + "/crm"}


def test_drop_zero_delivers_everything(drops, receiver):
    hook_up(drops, receiver)
    drops.config(drop_bookings_webhooks=0.0, drop_crm_notifications=0.0, drop_seed=5)
    bookings = cancel_bookings(drops, 5)
    records = edit_records(drops, 4)
    log = outbox(drops)
    assert [item["json"]["booking_id"] for item in received(receiver, "/bk")] == bookings
    assert [item["json"]["ids"] for item in received(receiver, "/crm")] == [[rid] for rid in records]
    assert outbound(drops) == {"bookings_webhook_sent": 5, "notification_sent": 4}
    assert all(e["status"] == 200 for e in log)


def test_one_kind_dropped_leaves_the_other_alone(drops, receiver):
    hook_up(drops, receiver)
    drops.config(drop_bookings_webhooks=1.0)
    cancel_bookings(drops, 3)
    records = edit_records(drops, 3)
    outbox(drops)
    assert received(receiver, "/bk") == []
    assert [item["json"]["ids"] for item in received(receiver, "/crm")] == [[rid] for rid in records]
    assert outbound(drops) == {"bookings_webhook_dropped": 3, "notification_sent": 3}


def _half_run(sandbox, receiver, n: int) -> tuple[list[str], list[str]]:
    """Reset, hook up, send ``n`` webhooks and ``n`` notifications at drop 0.5; the dropped ids of each kind."""
    sandbox.http.post("/__sandbox/reset", json={}).raise_for_status()
    receiver.received.clear()
    hook_up(sandbox, receiver)
    bookings = cancel_bookings(sandbox, n)
    records = edit_records(sandbox, n)
    log = outbox(sandbox)
    dropped_bookings, dropped_records = dropped_ids(log)
    # what was not dropped arrived, and nothing else
    assert sorted(item["json"]["booking_id"] for item in received(receiver, "/bk")) == sorted(set(bookings) - set(dropped_bookings))
    assert sorted(item["json"]["ids"][0] for item in received(receiver, "/crm")) == sorted(set(records) - set(dropped_records))
    stats = outbound(sandbox)
    assert stats.get("bookings_webhook_dropped", 0) == len(dropped_bookings)
    assert stats.get("bookings_webhook_sent", 0) == n - len(dropped_bookings)
    assert stats.get("notification_dropped", 0) == len(dropped_records)
    assert stats.get("notification_sent", 0) == n - len(dropped_records)
    return dropped_bookings, dropped_records


def test_the_same_seed_drops_the_same_deliveries_after_each_reset(drops, receiver):
    n = 40
    drops.config(drop_bookings_webhooks=0.5, drop_crm_notifications=0.5, drop_seed=1234)
    first = _half_run(drops, receiver, n)
    second = _half_run(drops, receiver, n)
    assert first == second
    for dropped in first:
        assert n // 4 <= len(dropped) <= 3 * n // 4, dropped  # roughly half

    # another seed drops another set; putting the first seed back (no reset) restarts its draws
    drops.config(drop_seed=99)
    assert _half_run(drops, receiver, n) != first
    drops.http.post("/__sandbox/reset", json={}).raise_for_status()
    receiver.received.clear()
    hook_up(drops, receiver)
    drops.config(drop_seed=1234)
    cancel_bookings(drops, n)
    edit_records(drops, n)
    assert dropped_ids(outbox(drops)) == first


def test_no_seed_is_a_fixed_seed(drops, receiver):
    drops.config(drop_bookings_webhooks=0.5, drop_crm_notifications=0.5, drop_seed=None)
    first = _half_run(drops, receiver, 20)
    assert _half_run(drops, receiver, 20) == first
    drops.config(drop_seed=0)  # the documented default
    assert _half_run(drops, receiver, 20) == first


def test_bulk_read_callbacks_are_never_dropped(drops, receiver):
    drops.config(drop_bookings_webhooks=1.0, drop_crm_notifications=1.0, bulk_delay=0.05)
    with drops.client() as api:
        body = {"query": {"module": {"api_name": APPOINTMENTS}, "fields": ["Status"]},
                "callback": {"url": receiver.url + "/cb", "method": "post"}}
        r = api.post("/crm/bulk/v7/read", json=body)
        assert r.status_code == 201, r.text
        job_id = r.json()["data"][0]["details"]["id"]
    item = receiver.wait_for(lambda it: it["path"] == "/cb")
    assert item["json"]["data"][0]["id"] == job_id
    outbox(drops)
    assert len(received(receiver, "/cb")) == 1
    assert outbound(drops) == {"bulk_callback_sent": 1}


@pytest.mark.parametrize("name", ["drop_bookings_webhooks", "drop_crm_notifications"])
@pytest.mark.parametrize("value", [1.5, -0.1, "lots", "0.5", True, None, [0.5]])
def test_a_bad_fraction_answers_400_naming_it_and_changes_nothing(drops, name, value):
    before = drops.http.get("/__sandbox/config").json()
    r = drops.http.put("/__sandbox/config", json={"token_ttl": 5, name: value})
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["code"] == "INVALID_DATA" and body["status"] == "error"
    assert name in body["message"]
    assert body["details"] == {"name": name}
    assert drops.http.get("/__sandbox/config").json() == before


@pytest.mark.parametrize("value", [-1, 1.5, "7", True])
def test_a_bad_drop_seed_answers_400_naming_it(drops, value):
    before = drops.http.get("/__sandbox/config").json()
    r = drops.http.put("/__sandbox/config", json={"drop_seed": value})
    assert r.status_code == 400, r.text
    assert "drop_seed" in r.json()["message"] and r.json()["details"] == {"name": "drop_seed"}
    assert drops.http.get("/__sandbox/config").json() == before


def test_the_command_line_sets_the_drops():
    parser = build_parser()
    config = config_from_args(parser.parse_args(
        ["--drop-bookings-webhooks", "0.1", "--drop-crm-notifications", "0.25", "--drop-seed", "9"]
    ))
    assert (config.drop_bookings_webhooks, config.drop_crm_notifications, config.drop_seed) == (0.1, 0.25, 9)
    default = config_from_args(parser.parse_args([]))
    assert (default.drop_bookings_webhooks, default.drop_crm_notifications, default.drop_seed) == (0.0, 0.0, None)
    assert default == SandboxConfig()


@pytest.mark.parametrize(
    "args, option",
    [
        (["--drop-bookings-webhooks", "1.5"], "--drop-bookings-webhooks"),
        (["--drop-bookings-webhooks", "-0.1"], "--drop-bookings-webhooks"),
        (["--drop-crm-notifications", "some"], "--drop-crm-notifications"),
        (["--drop-seed", "x"], "--drop-seed"),
        (["--drop-seed", "-3"], "--drop-seed"),
    ],
)
def test_a_bad_drop_option_is_a_usage_error(capsys, args, option):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and option in err, err


def test_config_update_checks_the_range_too():
    config = SandboxConfig()
    with pytest.raises(ValueError, match="drop_crm_notifications"):
        config.update({"drop_bookings_webhooks": 0.5, "drop_crm_notifications": 2})
    assert config.drop_bookings_webhooks == 0.0  # all or nothing
    config.update({"drop_seed": "12", "drop_crm_notifications": "0.3"})
    assert (config.drop_seed, config.drop_crm_notifications) == (12, 0.3)
