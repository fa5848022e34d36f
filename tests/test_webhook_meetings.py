"""CRM Meetings (``Events``) next to ``Appointments__s`` at the webhook receiver, the trigger and onboarding.

The receiver is built as in ``test_webhook_receiver.py`` (a fake ``emit``, a long
coalescing window so queued ids stay visible until a test flushes). The contract:
a CRM notification's ids are queued per module, ``insert``/``update``/``restore``
as ``crm_ids`` and ``delete`` as ``deleted_crm_ids`` (the latest notification of
an id in a window decides); a ``zoho.sync.requested`` event carries one module's
ids (``crm_module``) or booking ids (``crm_module`` null), never two modules.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import httpx
import pytest
import yaml
from asgi_lifespan import LifespanManager

from deployments.webhook import CRM_MODULES, MAX_IDS_PER_EVENT, MAX_RELATED_IDS, Coalescer, ReceiverSettings, create_receiver

ROOT = Path(__file__).resolve().parents[1]
TOKEN, SECRET = "chan-tok-123", "bk-secret"
PAYLOAD_KEYS = {"config_block", "crm_module", "crm_ids", "deleted_crm_ids", "booking_ids", "booking_states"}


class Emitted(list):
    """A fake emitter that takes related resources (as ``prefect_emit`` does)."""

    def __call__(self, event, resource, payload, related=None):
        self.append({"event": event, "resource": resource, "payload": payload, "related": related})

    def requests(self):
        return [e["payload"] for e in self if e["event"] == "zoho.sync.requested"]


@pytest.fixture
async def receiver(tmp_path):
    emitted = Emitted()
    settings = ReceiverSettings(channel_token=TOKEN, bookings_secret=SECRET, coalesce_seconds=3600, leading_edge=False,
                                state_store_url=f"sqlite:///{tmp_path / 's.db'}", config_block="sync-test")
    app = create_receiver(settings, emit=emitted)
    async with LifespanManager(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://receiver") as client:
            yield client, emitted, app.state.coalescer


def notification(module="Events", operation="update", ids=("111",), **overrides):
    return {"server_time": 1718117126473, "query_params": {}, "module": module, "resource_uri": "x", "ids": list(ids),
            "affected_fields": [], "operation": operation, "channel_id": "1000000068001", "token": TOKEN, **overrides}


async def notify(client, *args, **kwargs):
    r = await client.post("/zoho/crm/notifications", json=notification(*args, **kwargs))
    assert r.status_code == 202, r.text
    return r


# ----------------------------------------------------------------------------- queueing per module and kind
def test_the_receiver_accepts_both_modules_by_default(monkeypatch):
    assert ReceiverSettings().modules == CRM_MODULES == {"Appointments__s", "Events"}
    monkeypatch.setenv("APPT_SYNC_RECEIVER_MODULES", '["Events"]')
    assert ReceiverSettings().modules == {"Events"}


@pytest.mark.parametrize("operation, kind", [("insert", "crm_ids"), ("update", "crm_ids"), ("restore", "crm_ids"), ("delete", "deleted_crm_ids")])
async def test_a_meetings_notification_is_queued_for_its_module_and_kind(receiver, operation, kind):
    client, emitted, coalescer = receiver
    await notify(client, "Events", operation, ["111", "222"])
    assert coalescer.crm == {"Events": {"111": kind, "222": kind}}
    assert coalescer.pending[kind] == {"111", "222"} and (await client.get("/healthz")).json()["pending_ids"] == 2
    notified = [e["payload"] for e in emitted if e["event"] == "zoho.crm.notification"]
    assert notified == [{"module": "Events", "operation": operation, "ids": ["111", "222"], "channel_id": "1000000068001"}]
    assert coalescer.flush() == 1
    (request,) = emitted.requests()
    other = "deleted_crm_ids" if kind == "crm_ids" else "crm_ids"
    assert request == {"config_block": "sync-test", "crm_module": "Events", kind: ["111", "222"], other: [], "booking_ids": [], "booking_states": {}}
    assert (await client.get("/healthz")).json()["pending_ids"] == 0 and not coalescer.crm


async def test_delete_after_update_in_one_window_is_a_delete_and_a_later_restore_reads_it(receiver):
    client, emitted, coalescer = receiver
    await notify(client, "Events", "update", ["111", "222"])
    await notify(client, "Events", "delete", ["111"])
    assert coalescer.pending["crm_ids"] == {"222"} and coalescer.pending["deleted_crm_ids"] == {"111"}
    assert (await client.get("/healthz")).json()["pending_ids"] == 2  # each id once
    coalescer.flush()
    assert emitted.requests()[-1]["crm_ids"] == ["222"] and emitted.requests()[-1]["deleted_crm_ids"] == ["111"]

    await notify(client, "Events", "delete", ["333"])
    await notify(client, "Events", "restore", ["333"])  # restored from the recycle bin: read it again
    await notify(client, "Events", "update", ["444"])
    await notify(client, "Events", "delete", ["444"])
    await notify(client, "Events", "update", ["444"])  # the latest notification decides
    coalescer.flush()
    last = emitted.requests()[-1]
    assert last["crm_module"] == "Events" and last["crm_ids"] == ["333", "444"] and last["deleted_crm_ids"] == []


async def test_a_window_of_both_modules_and_a_booking_emits_one_event_each_never_mixed(receiver):
    client, emitted, coalescer = receiver
    await notify(client, "Appointments__s", "update", ["100", "101"])
    await notify(client, "Events", "update", ["200"])
    await notify(client, "Events", "delete", ["201"])
    await notify(client, "Appointments__s", "delete", ["102"])
    r = await client.post("/zoho/bookings/webhook", json={"booking_id": "#AN-00007"}, headers={"X-Zoho-Bookings-Secret": SECRET})
    assert r.status_code == 202
    assert coalescer.pending["crm_ids"] == {"100", "101", "200"} and coalescer.pending["deleted_crm_ids"] == {"102", "201"}
    assert (await client.get("/healthz")).json()["pending_ids"] == 6
    assert coalescer.flush() == 3
    requests = emitted.requests()
    assert all(set(p) == PAYLOAD_KEYS and p["config_block"] == "sync-test" for p in requests)
    by_module = {p["crm_module"]: p for p in requests}
    assert len(by_module) == 3
    assert by_module["Appointments__s"] == {"config_block": "sync-test", "crm_module": "Appointments__s", "crm_ids": ["100", "101"], "deleted_crm_ids": ["102"],
                                           "booking_ids": [], "booking_states": {}}
    assert by_module["Events"] == {"config_block": "sync-test", "crm_module": "Events", "crm_ids": ["200"], "deleted_crm_ids": ["201"],
                                  "booking_ids": [], "booking_states": {}}
    assert by_module[None] == {"config_block": "sync-test", "crm_module": None, "crm_ids": [], "deleted_crm_ids": [], "booking_ids": ["#AN-00007"], "booking_states": {}}


async def test_the_same_id_named_by_two_modules_is_queued_for_each(receiver):
    client, emitted, coalescer = receiver
    await notify(client, "Appointments__s", "update", ["777"])
    await notify(client, "Events", "delete", ["777"])
    assert coalescer.crm == {"Appointments__s": {"777": "crm_ids"}, "Events": {"777": "deleted_crm_ids"}}
    assert (await client.get("/healthz")).json()["pending_ids"] == 2
    coalescer.flush()
    assert {(p["crm_module"], tuple(p["crm_ids"]), tuple(p["deleted_crm_ids"])) for p in emitted.requests()} == {
        ("Appointments__s", ("777",), ()), ("Events", (), ("777",))}


@pytest.mark.parametrize("module", ["Leads", "Meetings", "events", "Appointments", ""])
async def test_a_module_not_synced_gets_a_422_and_no_event(receiver, module):
    client, emitted, coalescer = receiver
    r = await client.post("/zoho/crm/notifications", json=notification(module=module))
    assert r.status_code == 422 and "is not synced" in r.json()["error"] and "Events" in r.json()["error"]
    assert emitted == [] and coalescer.pending_ids == 0


async def test_a_receiver_configured_for_one_module_refuses_the_other(tmp_path):
    emitted = Emitted()
    settings = ReceiverSettings(channel_token=TOKEN, coalesce_seconds=3600, leading_edge=False, modules=frozenset({"Appointments__s"}),
                                state_store_url=f"sqlite:///{tmp_path / 's.db'}")
    app = create_receiver(settings, emit=emitted)
    async with LifespanManager(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://receiver") as client:
        assert (await client.post("/zoho/crm/notifications", json=notification("Events"))).status_code == 422
        assert (await client.post("/zoho/crm/notifications", json=notification("Appointments__s"))).status_code == 202
    assert [p["crm_module"] for p in emitted.requests()] == ["Appointments__s"]  # flushed on shutdown


# ----------------------------------------------------------------------------- chunks, failures, related resources
def test_each_event_holds_at_most_the_limit_of_one_modules_ids():
    emitted = Emitted()
    c = Coalescer(ReceiverSettings(config_block="sync-test"), emitted)
    c.add("crm_ids", [f"1{i:04d}" for i in range(400)], module="Events")
    c.add("deleted_crm_ids", [f"2{i:04d}" for i in range(300)], module="Events")
    c.add("crm_ids", [f"3{i:04d}" for i in range(10)], module="Appointments__s")
    assert c.flush() == 3
    requests = emitted.requests()
    assert all(len(p["crm_ids"]) + len(p["deleted_crm_ids"]) <= MAX_IDS_PER_EVENT for p in requests)
    events = [p for p in requests if p["crm_module"] == "Events"]
    assert len(events) == 2
    assert sorted(i for p in events for i in p["crm_ids"]) == [f"1{i:04d}" for i in range(400)]
    assert sorted(i for p in events for i in p["deleted_crm_ids"]) == [f"2{i:04d}" for i in range(300)]
    (appointments,) = [p for p in requests if p["crm_module"] == "Appointments__s"]
    assert len(appointments["crm_ids"]) == 10 and appointments["deleted_crm_ids"] == []
    for e in emitted:  # valid Prefect events: at most 100 related resources, the module named on each record
        from prefect.events import Event

        Event(event=e["event"], resource=e["resource"], related=e["related"], payload=e["payload"])
        records = [r for r in e["related"] if r["prefect.resource.role"] == "crm-record"]
        assert len(records) == min(MAX_RELATED_IDS, len(e["payload"]["crm_ids"]) + len(e["payload"]["deleted_crm_ids"]))
        assert {r["zoho.crm.module"] for r in records} == {e["payload"]["crm_module"]}
        assert e["related"][0]["prefect.resource.role"] == "organisation"


def test_ids_of_each_module_and_kind_are_kept_when_emitting_fails():
    calls = []

    def flaky(event, resource, payload):
        calls.append(payload)
        if len(calls) == 2:
            raise RuntimeError("Prefect API down")

    c = Coalescer(ReceiverSettings(), flaky)
    c.add("crm_ids", ["1"], module="Appointments__s")
    c.add("deleted_crm_ids", ["2"], module="Events")
    c.add("booking_ids", ["#AN-1"])
    assert c.flush() == 1  # Appointments__s went out; Events failed, so the bookings waited
    assert c.crm == {"Events": {"2": "deleted_crm_ids"}} and c.bookings == {"#AN-1"}
    assert c.flush() == 2 and c.pending_ids == 0
    assert [(p["crm_module"], p["deleted_crm_ids"], p["booking_ids"]) for p in calls[2:]] == [("Events", ["2"], []), (None, [], ["#AN-1"])]


def test_crm_ids_queued_without_a_module_are_appointments():
    emitted = Emitted()
    c = Coalescer(ReceiverSettings(), emitted)
    c.add("crm_ids", ["1"])
    c.flush()
    assert emitted.requests()[0]["crm_module"] == "Appointments__s"
    with pytest.raises(ValueError, match="unknown kind"):
        c.add("meeting_ids", ["1"])


# ----------------------------------------------------------------------------- the trigger passes the module and the deletes on
def _hook():
    from deployments.serve import build

    return next(d for d in build("sync-test", "zoho-test") if d.name == "sync-on-webhook")


def _render(parameters, payload):
    """What Prefect's ``run-deployment`` action makes of the trigger's parameters for an event with ``payload``
    (v1 templates upgraded, then hydrated with Jinja as the server does)."""
    import copy
    from datetime import datetime, timezone

    from prefect.server.events.actions import RunDeployment
    from prefect.server.events.schemas.events import ReceivedEvent
    from prefect.utilities.schema_tools.hydration import HydrationContext, hydrate

    params = copy.deepcopy(parameters)
    RunDeployment._upgrade_v1_templates(params)
    event = ReceivedEvent(id=uuid.uuid4(), occurred=datetime.now(timezone.utc), event="zoho.sync.requested",
                          resource={"prefect.resource.id": "zoho.sync.sync-test"}, payload=payload)
    return hydrate(params, HydrationContext(raise_on_error=True, render_jinja=True, jinja_context={"event": event}))


async def test_the_trigger_passes_crm_module_and_deleted_crm_ids(receiver):
    client, emitted, coalescer = receiver
    (trigger,) = (await asyncio.to_thread(_hook)).triggers  # to_deployment is async-dispatched
    assert {"crm_module", "deleted_crm_ids"} <= set(trigger.parameters)
    assert set(trigger.parameters) == PAYLOAD_KEYS  # every key of the payload, nothing else
    spec = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())
    assert next(d for d in spec["deployments"] if d["name"] == "sync-on-webhook")["triggers"][0]["parameters"] == trigger.parameters

    await notify(client, "Events", "delete", ["201"])
    await notify(client, "Events", "update", ["200"])
    await client.post("/zoho/bookings/webhook", json={"booking_id": "#AN-00007"}, headers={"X-Zoho-Bookings-Secret": SECRET})
    coalescer.flush()
    rendered = {p["crm_module"]: _render(trigger.parameters, p) for p in emitted.requests()}
    assert rendered["Events"] == {"config_block": "sync-test", "crm_module": "Events", "crm_ids": ["200"], "deleted_crm_ids": ["201"], "booking_ids": [], "booking_states": {}}
    assert rendered[None] == {"config_block": "sync-test", "crm_module": None, "crm_ids": [], "deleted_crm_ids": [], "booking_ids": ["#AN-00007"], "booking_states": {}}
    for e in emitted:
        if e["event"] == "zoho.sync.requested":
            from prefect.events.schemas.events import Resource

            assert trigger.match.matches(Resource.model_validate(e["resource"]))
    # every payload key is templated as is: None and lists come through as themselves (Prefect adds ``| tojson``)
    assert trigger.parameters == {k: f"{{{{ event.payload.{k} }}}}" for k in PAYLOAD_KEYS}


# ----------------------------------------------------------------------------- the sandbox organisation syncs both modules
def test_a_channel_watches_every_synced_module():
    from blocks import AppointmentSyncConfig
    from blocks.notification_channel import module_events

    assert module_events(AppointmentSyncConfig(crm_modules=["Appointments__s", "Events"]).synced_modules) == ["Appointments__s.all", "Events.all"]
    assert module_events(AppointmentSyncConfig().synced_modules) == ["Appointments__s.all"]
    assert module_events(["Events", "Events"]) == ["Events.all"]


def test_onboarding_asks_for_the_meetings_scope():
    from deployments.onboarding import SCOPES
    from sandbox.state import scope_covers

    for needed in ("ZohoCRM.modules.Events.READ", "ZohoCRM.modules.Events.UPDATE", "ZohoCRM.modules.Events.DELETE", "ZohoCRM.notifications.ALL"):
        assert scope_covers(list(SCOPES), needed), needed


async def test_the_sandbox_config_syncs_both_modules_and_its_channel_watches_both(sandbox, prefect_api, tmp_path):
    """``make up`` / ``make demo``: the ``sync-sandbox`` config syncs Appointments and Meetings, and the channel
    ``wire`` subscribes watches both (nothing is changed here, so the sandbox notifies nobody)."""
    from blocks import AppointmentSyncConfig
    from blocks.notification_channel import NotificationChannel
    from deployments import onboarding

    oauth, config, channel = (f"{p}-{uuid.uuid4().hex[:8]}" for p in ("mtg-oauth", "mtg-sync", "mtg-channel"))
    await onboarding.connect(sandbox.url, tmp_path, oauth, config)
    cfg = await AppointmentSyncConfig.aload(config)
    assert cfg.synced_modules == ["Appointments__s", "Events"]
    assert (cfg.bookings_plan, cfg.crm_edition, cfg.bookings_page_size) == ("premium", "enterprise", 100)  # the rest as before
    await onboarding.subscribe_receiver_channel(oauth, "http://127.0.0.1:9/zoho/crm/notifications", TOKEN, channel_block=channel, config_block=config)
    block = await NotificationChannel.aload(channel)
    assert block.events == ["Appointments__s.all", "Events.all"]
    from blocks.zoho_oauth import ZohoOAuth

    async with (await ZohoOAuth.aload(oauth)).get_client() as zoho:
        assert (await zoho.crm.get_channel(block.channel_id))["events"] == ["Appointments__s.all", "Events.all"]
