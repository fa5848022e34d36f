"""The webhook receiver: caller checks, clear 4xx answers, events, and burst coalescing."""

from __future__ import annotations

import asyncio
import contextlib
import json

import httpx
import pytest
from asgi_lifespan import LifespanManager

from deployments.webhook import Coalescer, ReceiverSettings, create_receiver

TOKEN, SECRET, CB = "chan-tok-123", "bk-secret", "cb-secret"


class Events(list):
    def __call__(self, event, resource, payload):
        self.append((event, resource, payload))

    def named(self, name):
        return [p for e, _, p in self if e == name]


@pytest.fixture
async def receiver(tmp_path):
    events = Events()
    settings = ReceiverSettings(channel_token=TOKEN, bookings_secret=SECRET, callback_secret=CB, coalesce_seconds=3600, leading_edge=False,
                                state_store_url=f"sqlite:///{tmp_path / 's.db'}", config_block="sync-test")
    app = create_receiver(settings, emit=events)
    async with LifespanManager(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://receiver") as client:
            yield client, events, app.state.coalescer


def notification(**overrides):
    return {"server_time": 1718117126473, "query_params": {}, "module": "Appointments__s", "resource_uri": "x", "ids": ["111", "222"],
            "affected_fields": [], "operation": "update", "channel_id": "1000000068001", "token": TOKEN, **overrides}


async def test_a_valid_notification_is_an_event_and_a_pending_sync(receiver):
    client, events, coalescer = receiver
    r = await client.post("/zoho/crm/notifications", json=notification())
    assert r.status_code == 202
    assert events.named("zoho.crm.notification") == [{"module": "Appointments__s", "operation": "update", "ids": ["111", "222"], "channel_id": "1000000068001"}]
    assert coalescer.pending["crm_ids"] == {"111", "222"}
    assert TOKEN not in json.dumps(list(events))


@pytest.mark.parametrize(
    "body, status",
    [
        (notification(token="wrong"), 401),
        (notification(token=None), 401),
        (notification(module="Leads"), 422),
        (notification(operation="explode"), 422),
        (notification(ids=[]), 422),
        (notification(ids="111"), 422),
    ],
    ids=["wrong-token", "no-token", "unknown-module", "unknown-operation", "no-ids", "ids-not-a-list"],
)
async def test_bad_notifications_get_a_4xx_and_no_event(receiver, body, status):
    client, events, coalescer = receiver
    r = await client.post("/zoho/crm/notifications", json=body)
    assert r.status_code == status and "error" in r.json()
    assert events == [] and not coalescer.pending["crm_ids"]


async def test_bad_json_and_oversize_bodies(receiver):
    client, events, _ = receiver
    assert (await client.post("/zoho/crm/notifications", content=b"{not json")).status_code == 400
    big = json.dumps(notification(affected_fields=["x" * 100] * 11_000)).encode()
    assert len(big) > 1_048_576
    assert (await client.post("/zoho/crm/notifications", content=big)).status_code == 413
    assert events == []


async def test_bookings_webhook_needs_the_secret_and_a_booking_id(receiver):
    client, events, coalescer = receiver
    payload = {"event": "appointment_cancelled", "booking_id": "#AN-00001", "status": "CANCEL"}
    assert (await client.post("/zoho/bookings/webhook", json=payload)).status_code == 401
    assert (await client.post("/zoho/bookings/webhook", json=payload, headers={"X-Zoho-Bookings-Secret": "nope"})).status_code == 401
    assert (await client.post("/zoho/bookings/webhook", json={"event": "x"}, params={"secret": SECRET})).status_code == 422
    assert events == []
    assert (await client.post("/zoho/bookings/webhook", json=payload, headers={"X-Zoho-Bookings-Secret": SECRET})).status_code == 202
    assert (await client.post("/zoho/bookings/webhook", json={**payload, "booking_id": "#AN-00002"}, params={"secret": SECRET})).status_code == 202
    assert coalescer.pending["booking_ids"] == {"#AN-00001", "#AN-00002"}
    assert [p["booking_id"] for p in events.named("zoho.bookings.webhook")] == ["#AN-00001", "#AN-00002"]


async def test_bulk_read_callback_lands_in_the_state_store(receiver, tmp_path):
    from sync.bulk_runs import get_job, record_job_created
    from sync.store import open_store

    client, events, _ = receiver
    engine = open_store(f"sqlite:///{tmp_path / 's.db'}")
    record_job_created(engine, "run-1", 1, "Appointments__s", "555", None)
    job = {"id": "555", "state": "COMPLETED", "result": {"page": 1, "count": 3, "download_url": "/crm/bulk/v7/read/555/result", "more_records": False}}
    assert (await client.post("/zoho/crm/bulk-read/callback", json={"data": [job]})).status_code == 401
    r = await client.post("/zoho/crm/bulk-read/callback", json={"data": [job]}, params={"secret": CB})
    assert r.status_code == 202
    stored = get_job(engine, "555")
    assert stored.state == "COMPLETED" and stored.count == 3 and stored.download_url.endswith("/555/result")
    assert events.named("zoho.bulk_read.callback") == [{"config_block": "sync-test", "job_id": "555", "state": "COMPLETED", "result": job["result"]}]
    # what the bulk-read-callback deployment's trigger matches
    from prefect.events.schemas.events import Resource

    from deployments.serve import build

    deployments = await asyncio.to_thread(build, "sync-test", "zoho-test")  # to_deployment is async-dispatched
    (trigger,) = next(d for d in deployments if d.name == "bulk-read-callback").triggers
    assert [trigger.match.matches(Resource.model_validate(r)) for e, r, _ in events if e == "zoho.bulk_read.callback"] == [True]


async def test_a_burst_becomes_a_few_sync_requests_and_loses_no_id(receiver):
    client, events, coalescer = receiver
    sent = set()
    for window in range(5):  # five coalescing windows
        for n in range(200):
            rid = f"{window:02d}{n:04d}"
            sent.add(rid)
            assert (await client.post("/zoho/crm/notifications", json=notification(ids=[rid]))).status_code == 202
        coalescer.flush()
    requests = events.named("zoho.sync.requested")
    assert len(requests) == 5
    assert {i for p in requests for i in p["crm_ids"]} == sent
    assert all(p["config_block"] == "sync-test" for p in requests)
    assert len(events.named("zoho.crm.notification")) == 1000


def test_ids_are_kept_when_emitting_fails():
    calls = []

    def flaky(event, resource, payload):
        calls.append(payload)
        if len(calls) == 1:
            raise RuntimeError("Prefect API down")

    c = Coalescer(ReceiverSettings(), flaky)
    c.add("crm_ids", ["1", "2"])
    assert c.flush() == 0 and c.pending["crm_ids"] == {"1", "2"}
    assert c.flush() == 1 and not c.pending["crm_ids"]
    assert calls[-1]["crm_ids"] == ["1", "2"]


async def test_an_idle_receiver_emits_the_first_id_at_once_then_throttles():
    """Leading edge: a lone edit is not held for the window; later ids wait for it."""
    emitted = []
    c = Coalescer(ReceiverSettings(coalesce_seconds=3600, leading_seconds=0.01), lambda e, r, p: emitted.append(p))
    task = asyncio.create_task(c.run())
    try:
        c.add("crm_ids", ["1"])
        for _ in range(200):
            if emitted:
                break
            await asyncio.sleep(0.01)
        assert [p["crm_ids"] for p in emitted] == [["1"]]  # long before the 3600 s window
        c.add("crm_ids", ["2", "3"])
        await asyncio.sleep(0.2)
        assert len(emitted) == 1 and c.pending["crm_ids"] == {"2", "3"}  # throttled until the window ends
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert [p["crm_ids"] for p in emitted] == [["1"], ["2", "3"]]  # flushed on shutdown, nothing lost


def test_large_bursts_are_chunked():
    emitted = []
    c = Coalescer(ReceiverSettings(), lambda e, r, p: emitted.append(p))
    c.add("crm_ids", [str(i) for i in range(1200)])
    assert c.flush() == 3
    assert sum(len(p["crm_ids"]) for p in emitted) == 1200


async def test_healthz(receiver):
    client, _, _ = receiver
    assert (await client.get("/healthz")).json()["status"] == "ok"
