"""CRM contract points of issue 14, over HTTP against the sandbox (and the Prefect harness for flows).

* Earlier reschedules (seeds 002/004): with ``refuse_earlier_reschedules`` the sandbox
  refuses an earlier move with ``DEPENDENT_FIELD_UNCHANGED``; the sync never takes that
  code as success without one ``GET`` of the record: the start is the target -> done,
  otherwise a reported, non-transient refusal with Zoho's reason.
* Notification channels (notifications docs v7/v8, crm-oas ``notifications.json``):
  ``PUT`` replaces a channel's details, ``PATCH`` changes what is given and with
  ``_delete_events`` removes events; an expiry over a week gives one hour, silently.
  The renew flow renews with ``PUT`` and reads the expiry back: a cut channel fails the
  run naming the expiry.
* Bulk Read refusals at create (crm-oas ``bulk_read.json``) through the client.
* Metadata of the modules lookups point to: ``settings/fields`` for ``Contacts``,
  ``Services__s``, ``Users``, and ``settings/modules``.
* One CRM record with a bad ``Appointment_Start_Time`` (set with the admin test aid)
  never stops an incremental or webhook run: it is reported, the rest applied, and it is
  synced once fixed.
"""

from __future__ import annotations

import logging
import ssl
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import httpx
import pytest
from pydantic import SecretStr

from blocks import NotificationChannel, ZohoOAuth
from blocks.sync_config import AppointmentSyncConfig
from deployments.demo import Pair, linked_pairs
from flows.notifications import ChannelExpiryCutError, renew_notification_channel
from flows.sync_appointments import sync_appointments
from sync.engine import Action, Kind, Side
from sync.report import SyncSummary
from tasks.sync import apply_crm_batch
from zoho.auth import StaticTokenProvider
from zoho.clients import ZohoClient
from zoho.datacentres import Endpoints
from zoho.errors import BulkReadRefusedError, NotFoundError
from zoho.models import BulkReadQuery, BulkReadRequest, Condition, ModuleRef, WatchChannel

UTC = timezone.utc
APPOINTMENTS = "Appointments__s"
WATCH = "/crm/v7/actions/watch"
TLS = ssl.create_default_context()
#: The reason seeds 002/004 give under ``DEPENDENT_FIELD_UNCHANGED``.
EARLIER_REASON = "The new appointment time has to be greater than the existing Appointment_Start_Time"
#: Bad values of ``Appointment_Start_Time`` a CRM record may hold (issue 14, B1).
BAD_STARTS = ["2026-05-01T10:00:00", "not-a-date", "2026-13-01T10:00:00+05:30"]


# ------------------------------------------------------------------ helpers
def crm_iso(instant: datetime, tz: str = "Asia/Kolkata") -> str:
    return instant.astimezone(ZoneInfo(tz)).replace(microsecond=0).isoformat()


def bookings_text(instant: datetime, tz: str) -> str:
    return instant.astimezone(ZoneInfo(tz)).strftime("%d-%b-%Y %H:%M:%S")


def pairs(sandbox) -> dict[str, Pair]:
    return linked_pairs(sandbox.dump())


def future(sandbox, n: int) -> list[Pair]:
    """``n`` agreeing, upcoming pairs starting more than a day from now."""
    soon = datetime.now(UTC) + timedelta(days=1)
    found = [
        p for p in sorted(pairs(sandbox).values(), key=lambda p: p.id)
        if p.booking["status"] == "UPCOMING" and p.crm["Status"] == "Scheduled" and p.start > soon
        and datetime.fromisoformat(p.crm["Appointment_Start_Time"]) == p.start
    ]
    assert len(found) >= n
    return found[:n]


def edit_crm(sandbox, crm_id: str, **fields: Any) -> dict[str, Any]:
    r = sandbox.http.patch(f"/__sandbox/crm/{APPOINTMENTS}/{crm_id}", json=fields)
    assert r.status_code == 200 and r.json()["data"][0]["code"] == "SUCCESS", r.text
    return r.json()["data"][0]


def set_raw(sandbox, crm_id: str, **values: Any) -> httpx.Response:
    return sandbox.http.patch(f"/__sandbox/crm/{APPOINTMENTS}/{crm_id}/raw", json={"set": values})


def edit_booking(sandbox, booking_id: str, **body: Any) -> None:
    r = sandbox.http.patch(f"/__sandbox/bookings/{quote(booking_id, safe='')}", json=body)
    assert r.status_code == 200 and r.json()["response"]["status"] == "success", r.text


def calls(sandbox) -> dict[str, int]:
    return sandbox.stats()["calls"]


def assert_error(r: httpx.Response, status_code: int, code: str) -> dict[str, Any]:
    assert r.status_code == status_code, r.text
    body = r.json()
    assert body["code"] == code and body["status"] == "error" and isinstance(body["details"], dict), body
    return body


@pytest.fixture
def api(sandbox):
    with httpx.Client(base_url=sandbox.url, headers=sandbox.headers(), timeout=30, verify=TLS) as client:
        yield client


@pytest.fixture
async def oauth_block(sandbox, prefect_api) -> str:
    name = f"crm-contract-{uuid.uuid4().hex[:8]}"
    await ZohoOAuth(
        client_id=sandbox.creds["client_id"],
        client_secret=SecretStr(sandbox.creds["client_secret"]),
        refresh_token=SecretStr(sandbox.creds["refresh_token"]),
        data_centre="CUSTOM",
        base_url=sandbox.url,
    ).asave(name)
    return name


@pytest.fixture
async def zoho(sandbox):
    """The project's client on the sandbox, with a fresh access token."""
    async with ZohoClient(Endpoints.for_data_centre("CUSTOM", sandbox.url), StaticTokenProvider(sandbox.token())) as client:
        yield client


@dataclass
class Org:
    name: str

    async def sync(self, mode: str = "scan", **kwargs: Any) -> SyncSummary:
        return await sync_appointments(config_block=self.name, mode=mode, **kwargs)


@pytest.fixture
async def org(sandbox, oauth_block, tmp_path) -> Org:
    """An ``AppointmentSyncConfig`` on the sandbox with a fresh state store; windows wide enough
    that a scan sees every edit."""
    name = f"crm-contract-sync-{uuid.uuid4().hex[:8]}"
    await AppointmentSyncConfig(
        oauth_block=oauth_block,
        bookings_time_zone="Asia/Kolkata",
        state_store_url=f"sqlite:///{tmp_path / 'state.db'}",
        bookings_past_days=35,
        bookings_future_days=400,
        scan_past_hours=35 * 24,
        scan_future_hours=400 * 24,
        scan_max_calls=100,
    ).asave(name)
    return Org(name)


# ======================================================= A3 earlier reschedules
def test_earlier_moves_are_accepted_by_default_and_refused_with_the_setting(sandbox, api):
    first, second = future(sandbox, 2)
    start = datetime.fromisoformat(first.crm["Appointment_Start_Time"])

    r = api.put(f"/crm/v7/{APPOINTMENTS}", json={"data": [{"id": first.crm["id"], "Appointment_Start_Time": crm_iso(start - timedelta(hours=2))}]})
    assert r.status_code == 200 and r.json()["data"][0]["code"] == "SUCCESS", r.text  # default: accepted

    sandbox.config(refuse_earlier_reschedules=True)
    other = datetime.fromisoformat(second.crm["Appointment_Start_Time"])
    r = api.put(f"/crm/v7/{APPOINTMENTS}", json={"data": [
        {"id": second.crm["id"], "Appointment_Start_Time": crm_iso(other - timedelta(minutes=15))},
        {"id": first.crm["id"], "Appointment_Start_Time": crm_iso(start + timedelta(hours=1))},
    ]})
    assert r.status_code == 207, r.text
    refused, moved = r.json()["data"]
    assert (refused["code"], refused["status"]) == ("DEPENDENT_FIELD_UNCHANGED", "error")
    assert refused["message"].startswith(EARLIER_REASON) and refused["details"]["api_name"] == "Appointment_Start_Time"
    assert moved["code"] == "SUCCESS"  # later than its (moved) start: accepted
    now = {r["id"]: r for r in sandbox.dump(module=APPOINTMENTS)[APPOINTMENTS]}
    assert datetime.fromisoformat(now[second.crm["id"]]["Appointment_Start_Time"]) == other  # nothing changed
    assert sandbox.config()["refuse_earlier_reschedules"] is True


async def test_dependent_field_unchanged_is_done_only_when_a_read_shows_the_target(sandbox, oauth_block):
    first, second = future(sandbox, 2)
    later = first.start + timedelta(hours=3)
    move = Action(first.id, first.crm["id"], Side.CRM, Kind.RESCHEDULE, first.tz, start=later)

    (sent,) = await apply_crm_batch.fn(oauth_block, APPOINTMENTS, [move])
    assert sent.ok and sent.code == "SUCCESS"
    before = calls(sandbox).get("GET /crm/{version}/{module}/{record_id}", 0)

    # the same write again (its answer was lost): CRM answers DEPENDENT_FIELD_UNCHANGED, one read shows it done
    (again,) = await apply_crm_batch.fn(oauth_block, APPOINTMENTS, [move])
    assert (again.ok, again.code) == (True, "DEPENDENT_FIELD_UNCHANGED") and "checked" in again.message
    assert calls(sandbox)["GET /crm/{version}/{module}/{record_id}"] == before + 1

    # an earlier move CRM refuses: the read shows the old start, so the refusal stands, not transient
    sandbox.config(refuse_earlier_reschedules=True)
    earlier = Action(second.id, second.crm["id"], Side.CRM, Kind.RESCHEDULE, second.tz, start=second.start - timedelta(days=1))
    (refused,) = await apply_crm_batch.fn(oauth_block, APPOINTMENTS, [earlier])
    assert (refused.ok, refused.code, refused.transient, refused.maybe_done) == (False, "DEPENDENT_FIELD_UNCHANGED", False, True)  # a checked refusal
    assert EARLIER_REASON in refused.message and "CRM still shows start" in refused.message
    assert calls(sandbox)["GET /crm/{version}/{module}/{record_id}"] == before + 2


async def test_a_check_that_cannot_read_leaves_the_refusal_standing_and_transient(sandbox, oauth_block, monkeypatch):
    from zoho.clients import CrmClient

    (pair,) = future(sandbox, 1)
    sandbox.config(refuse_earlier_reschedules=True)

    async def unreadable(self, module: str, record_id: str, fields: Any = None) -> dict[str, Any]:
        raise NotFoundError("NO_CONTENT", "gone", {}, 204, "GET")

    monkeypatch.setattr(CrmClient, "get_record", unreadable)
    earlier = Action(pair.id, pair.crm["id"], Side.CRM, Kind.RESCHEDULE, pair.tz, start=pair.start - timedelta(hours=1))
    (outcome,) = await apply_crm_batch.fn(oauth_block, APPOINTMENTS, [earlier])
    assert (outcome.ok, outcome.code, outcome.transient, outcome.maybe_done) == (False, "DEPENDENT_FIELD_UNCHANGED", True, False)
    assert "could not be read again" in outcome.message


async def test_the_sync_reports_an_earlier_move_crm_refuses_with_zohos_reason(sandbox, org):
    await org.sync("full")
    moved, kept = future(sandbox, 2)
    sandbox.config(refuse_earlier_reschedules=True)
    edit_booking(sandbox, moved.id, start_time=bookings_text(moved.start - timedelta(days=1), moved.tz))
    edit_booking(sandbox, kept.id, start_time=bookings_text(kept.start + timedelta(days=1), kept.tz))
    sandbox.http.delete("/__sandbox/stats").raise_for_status()

    summary = await org.sync("scan")

    (failure,) = summary.failures
    assert (failure["booking_id"], failure["crm_id"], failure["code"]) == (moved.id, moved.crm["id"], "DEPENDENT_FIELD_UNCHANGED")
    assert EARLIER_REASON in failure["message"] and "CRM still shows start" in failure["message"]
    assert summary.applied == 1 and summary.failed == 1
    now = pairs(sandbox)
    assert datetime.fromisoformat(now[moved.id].crm["Appointment_Start_Time"]) == moved.start  # CRM refused: not moved
    assert datetime.fromisoformat(now[kept.id].crm["Appointment_Start_Time"]) == kept.start + timedelta(days=1)
    stats = sandbox.stats()
    assert stats["calls"]["PUT /crm/{version}/{module}"] == 1 and stats["calls"]["GET /crm/{version}/{module}/{record_id}"] == 1
    assert stats["writes"] == {"Appointments__s": 1}

    # not sent again from the same base: later runs report it (a rule conflict with Zoho's reason), no PUT
    sandbox.http.delete("/__sandbox/stats").raise_for_status()
    again = await org.sync("scan")
    assert again.failed == 0 and again.applied == 0
    (held,) = [c for c in again.conflict_list if c["booking_id"] == moved.id]
    assert held["kind"] == "rule" and "DEPENDENT_FIELD_UNCHANGED" in held["reason"] and EARLIER_REASON in held["reason"]
    assert "PUT /crm/{version}/{module}" not in sandbox.stats()["calls"]


# ======================================================= A5 notification channels
def entry(receiver, channel_id: str = "1000000068001", **overrides: Any) -> dict[str, Any]:
    expiry = (datetime.now(UTC) + timedelta(days=6)).replace(microsecond=0).isoformat()
    return {"channel_id": channel_id, "events": ["Appointments__s.all"], "channel_expiry": expiry, "token": "tok-1", "notify_url": receiver.url + "/crm", **overrides}


def listed(api: httpx.Client, channel_id: str = "1000000068001") -> dict[str, Any] | None:
    r = api.get(WATCH, params={"channel_id": channel_id})
    assert r.status_code in (200, 204), r.text
    return r.json()["watch"][0] if r.status_code == 200 else None


def one_hour_from_now(value: str) -> bool:
    return abs(datetime.fromisoformat(value) - (datetime.now(UTC) + timedelta(hours=1))) < timedelta(minutes=1)


def test_put_replaces_a_channels_details(sandbox, api, receiver):
    assert api.post(WATCH, json={"watch": [entry(receiver, events=["Appointments__s.all", "Events.all"], return_affected_field_values=True)]}).status_code == 200

    r = api.put(WATCH, json={"watch": [{"channel_id": "1000000068001", "events": ["Events.edit"], "notify_url": receiver.url + "/new"}]})

    assert r.status_code == 200, r.text
    assert r.json()["watch"][0]["message"] == "Successfully updated the subscribe details"
    channel = listed(api)
    assert channel["events"] == ["Events.edit"] and channel["notify_url"] == receiver.url + "/new"
    assert channel["return_affected_field_values"] is False  # replaced: what the entry left out is the default
    assert one_hour_from_now(channel["channel_expiry"])  # no channel_expiry: one hour
    # the token went too: a notification carries none
    rec = next(r for r in sandbox.dump(module="Events")["Events"])
    sandbox.http.patch(f"/__sandbox/crm/Events/{rec['id']}", json={"Venue": "Room 4"}).raise_for_status()
    got = receiver.wait_for(lambda item: item["path"] == "/new")
    assert got["json"]["token"] is None


def test_put_of_a_channel_that_is_not_subscribed_is_refused(sandbox, api, receiver):
    r = api.put(WATCH, json={"watch": [entry(receiver)]})
    assert r.status_code == 400 and r.json()["watch"][0]["code"] == "INVALID_DATA", r.text
    assert listed(api) is None


def test_patch_changes_only_what_is_given_and_delete_events_removes_them(sandbox, api, receiver):
    asked = entry(receiver)
    assert api.post(WATCH, json={"watch": [asked]}).status_code == 200

    r = api.patch(WATCH, json={"watch": [{"channel_id": "1000000068001", "events": ["Events.edit"]}]})
    assert r.status_code == 200, r.text
    channel = listed(api)
    assert channel["events"] == ["Appointments__s.all", "Events.edit"]  # added, the rest kept
    assert datetime.fromisoformat(channel["channel_expiry"]) == datetime.fromisoformat(asked["channel_expiry"])  # not given: kept
    assert channel["notify_url"] == asked["notify_url"]

    r = api.patch(WATCH, json={"watch": [{"channel_id": "1000000068001", "events": ["Appointments__s.all"], "_delete_events": True}]})
    assert r.status_code == 200, r.text
    assert listed(api)["events"] == ["Events.edit"]

    r = api.patch(WATCH, json={"watch": [{"channel_id": "1000000068001", "channel_expiry": (datetime.now(UTC) + timedelta(days=9)).isoformat()}]})
    assert r.status_code == 200 and one_hour_from_now(listed(api)["channel_expiry"])  # over a week: one hour, silently

    r = api.patch(WATCH, json={"watch": [{"channel_id": "1000000068001", "_delete_events": True}]})
    assert r.status_code == 400 and r.json()["watch"][0]["code"] == "MANDATORY_NOT_FOUND"

    r = api.patch(WATCH, json={"watch": [{"channel_id": "1000000068001", "events": ["Events.edit"], "_delete_events": True}]})
    assert r.status_code == 200 and r.json()["watch"][0]["message"] == "Successfully removed the subscribe details"
    assert listed(api) is None  # its last event removed: no channel


async def test_the_client_speaks_every_watch_verb(sandbox, zoho, receiver):
    expiry = (datetime.now(UTC) + timedelta(days=5)).replace(microsecond=0)
    channel = WatchChannel(channel_id=1000000068009, events=["Appointments__s.all"], channel_expiry=expiry, token=SecretStr("tok"), notify_url=receiver.url + "/c")

    assert [r.ok for r in await zoho.crm.watch([channel])] == [True]
    assert datetime.fromisoformat((await zoho.crm.get_channel(1000000068009))["channel_expiry"]) == expiry

    too_far = channel.model_copy(update={"channel_expiry": datetime.now(UTC) + timedelta(days=8)})
    assert [r.ok for r in await zoho.crm.update_watch([too_far])] == [True]
    got = await zoho.crm.get_channel(1000000068009)
    assert one_hour_from_now(got["channel_expiry"])  # what the client must read back to notice

    assert [r.ok for r in await zoho.crm.patch_watch([{"channel_id": 1000000068009, "events": ["Events.all"]}])] == [True]
    assert (await zoho.crm.get_channel(1000000068009))["events"] == ["Appointments__s.all", "Events.all"]
    assert [r.ok for r in await zoho.crm.unwatch_events(1000000068009, ["Appointments__s.all"])] == [True]
    assert (await zoho.crm.get_channel(1000000068009))["events"] == ["Events.all"]
    assert await zoho.crm.get_channel(1000000060000) is None


@pytest.fixture
async def channel_block(oauth_block, receiver):
    async def make(**overrides: Any) -> NotificationChannel:
        block = NotificationChannel(oauth_block=oauth_block, channel_id=uuid.uuid4().int % 10**12 + 10**12, notify_url=receiver.url + "/zoho/crm/notifications", **overrides)
        await block.asave(f"crm-channel-{uuid.uuid4().hex[:8]}")
        return block

    return make


async def test_the_flow_renews_an_active_channel_with_put_and_checks_its_expiry(sandbox, channel_block):
    block = await channel_block(lifetime_hours=48)
    name = block._block_document_name
    first = await renew_notification_channel(channel_block=name)
    assert first["verb"] == "POST" and first["problem"] is None
    saved = await NotificationChannel.aload(name)
    saved.renew_before_hours, saved.lifetime_hours = 100, 167
    await saved.asave(name, overwrite=True)

    report = await renew_notification_channel(channel_block=name)

    assert report["renewed"] and report["verb"] == "PUT" and report["problem"] is None
    stats = calls(sandbox)
    assert stats["POST /crm/{version}/actions/watch"] == 1 and stats["PUT /crm/{version}/actions/watch"] == 1
    assert stats["GET /crm/{version}/actions/watch"] >= 4  # a list and a read-back per run
    with sandbox.client() as api:
        zoho_expiry = datetime.fromisoformat(listed(api, str(block.channel_id))["channel_expiry"])
    assert abs(zoho_expiry - (datetime.now(UTC) + timedelta(hours=167))) < timedelta(minutes=2)
    assert (await NotificationChannel.aload(name)).channel_expiry == zoho_expiry


async def test_a_channel_zoho_cuts_to_one_hour_fails_the_run_naming_the_expiry(sandbox, channel_block, caplog):
    caplog.set_level(logging.WARNING)
    block = await channel_block(lifetime_hours=168)
    # Zoho's clock 10 minutes behind ours: our "one week" is more than a week for Zoho, which
    # then gives one hour, silently (notifications docs)
    sandbox.http.put("/__sandbox/clock", json={"advance_seconds": -600}).raise_for_status()

    with pytest.raises(ChannelExpiryCutError) as cut:
        await renew_notification_channel(channel_block=block._block_document_name)

    got = (await NotificationChannel.aload(block._block_document_name)).channel_expiry
    assert got is not None and abs(got - (datetime.now(UTC) + timedelta(minutes=50))) < timedelta(minutes=2)  # the block keeps Zoho's expiry
    assert cut.value.code == "CHANNEL_EXPIRY_CUT" and got.astimezone(UTC).isoformat() in cut.value.message
    assert "one hour" in cut.value.message and "more than a week" in cut.value.message
    assert any("expiry check failed" in r.getMessage() and got.astimezone(UTC).isoformat() in r.getMessage() for r in caplog.records)
    assert block.token.get_secret_value() not in str(cut.value)


# ======================================================= A6 Bulk Read refusals
async def test_the_client_raises_bulk_read_refusals_naming_what_zoho_names(sandbox, zoho):
    def request(**query: Any) -> BulkReadRequest:
        return BulkReadRequest(query=BulkReadQuery(module=ModuleRef(api_name=query.pop("module", APPOINTMENTS)), **query))

    cases = [
        (request(fields=["Status", "Booking_Idx"]), "FIELD_NOT_SUPPORTED", "field Booking_Idx of Appointments__s"),
        (request(fields=["Status"], criteria=Condition.of("Booking_Idx", "equal", "x")), "INVALID_CRITERIA", "field Booking_Idx"),
        (request(fields=["Status"], criteria=Condition.of("Status", "between", ["a", "b"])), "INVALID_CRITERIA", "comparator 'between'"),
        (request(module="Leadz"), "MODULE_NOT_SUPPORTED", "module Leadz"),
    ]
    for req, code, named in cases:
        with pytest.raises(BulkReadRefusedError) as refused:
            await zoho.crm.create_bulk_read(req)
        assert (refused.value.code, refused.value.status_code, refused.value.transient) == (code, 400, False)
        assert named in refused.value.message, refused.value.message
    assert sandbox.stats()["bulk_jobs_created"] == 0

    with pytest.raises(NotFoundError) as missing:
        await zoho.crm.get_bulk_read("5545974000009999999")
    assert (missing.value.code, missing.value.status_code) == ("RESOURCE_NOT_FOUND", 404)


# ======================================================= A7 metadata
@pytest.mark.parametrize(("module", "some"), [("Contacts", {"Last_Name": "text", "Email": "email", "Owner": "ownerlookup"}),
                                             ("Services__s", {"Service_Name": "text", "Duration": "integer", "Price": "currency"}),
                                             ("Users", {"first_name": "text", "email": "email", "status": "picklist"})])
def test_settings_fields_describe_the_modules_lookups_point_to(api, module, some):
    r = api.get("/crm/v8/settings/fields", params={"module": module})
    assert r.status_code == 200, r.text
    fields = {f["api_name"]: f for f in r.json()["fields"]}
    assert {k: fields[k]["data_type"] for k in some} == some
    for f in fields.values():  # the keys of crm-oas v8.0 fields.json clients read
        assert {"api_name", "id", "data_type", "json_type", "field_label", "display_label", "lookup", "pick_list_values", "system_mandatory", "read_only"} <= set(f)
    assert len({f["id"] for f in fields.values()}) == len(fields)


def test_every_lookup_resolves_to_a_module_with_metadata(api):
    """What Zoho's SDK does to read a record with lookups: each lookup's ``lookup.module``, then that module's fields."""
    modules = {m["api_name"]: m for m in api.get("/crm/v7/settings/modules").json()["modules"]}
    seen = set()
    for module in (APPOINTMENTS, "Events"):
        for f in api.get("/crm/v7/settings/fields", params={"module": module}).json()["fields"]:
            target = {"lookup": f["lookup"].get("module", {}).get("api_name"), "ownerlookup": "Users"}.get(f["data_type"])
            if target is None:
                continue
            assert target in modules and modules[target]["api_supported"], (module, f["api_name"], target)
            if f["data_type"] == "lookup":
                assert f["lookup"]["module"]["id"] == modules[target]["id"]
            assert api.get("/crm/v7/settings/fields", params={"module": target}).status_code == 200
            seen.add((module, f["api_name"], target))
    assert {("Appointments__s", "Service_Name", "Services__s"), ("Appointments__s", "Appointment_For", "Contacts"),
            ("Appointments__s", "Owner", "Users"), ("Events", "Who_Id", "Contacts")} <= seen


def test_settings_modules_lists_and_filters_the_modules(api):
    r = api.get("/crm/v8/settings/modules")
    assert r.status_code == 200, r.text
    modules = r.json()["modules"]
    assert {m["api_name"] for m in modules} == {APPOINTMENTS, "Events", "Contacts", "Services__s", "Users"}
    for m in modules:
        assert {"id", "api_name", "module_name", "singular_label", "plural_label", "api_supported", "status", "generated_type", "profiles"} <= set(m)
    assert api.get("/crm/v8/settings/modules", params={"status": "visible"}).json()["modules"] == modules
    assert api.get("/crm/v8/settings/modules", params={"status": "user_hidden"}).status_code == 204
    body = assert_error(api.get("/crm/v8/settings/modules", params={"status": "visible,hidden"}), 400, "INVALID_DATA")
    assert (body["details"]["param_name"], body["details"]["index"]) == ("status", 1)
    (one,) = api.get("/crm/v8/settings/modules/Services__s").json()["modules"]
    assert one == next(m for m in modules if m["api_name"] == "Services__s")
    assert_error(api.get("/crm/v8/settings/modules/Leadz"), 400, "INVALID_MODULE")
    assert_error(api.get("/crm/v8/settings/fields", params={"module": "Leadz"}), 400, "INVALID_MODULE")
    # metadata only: the sandbox holds no Contacts records
    assert_error(api.get("/crm/v8/Contacts", params={"fields": "Last_Name"}), 400, "INVALID_MODULE")


def test_settings_modules_needs_its_scope(sandbox):
    creds = sandbox.http.post("/__sandbox/credentials", json={"scope": ["ZohoCRM.modules.ALL", "ZohoCRM.settings.fields.READ"]}).json()
    token = sandbox.mint(client_id=creds["client_id"], client_secret=creds["client_secret"], refresh_token=creds["refresh_token"]).json()["access_token"]
    with sandbox.client(token) as c:
        assert_error(c.get("/crm/v7/settings/modules"), 401, "OAUTH_SCOPE_MISMATCH")
        assert c.get("/crm/v7/settings/fields", params={"module": "Users"}).status_code == 200


# ======================================================= B1 one bad CRM record
def test_the_raw_aid_stores_a_bad_value_and_the_sandbox_keeps_answering(sandbox, api, receiver):
    (pair,) = future(sandbox, 1)
    rid = pair.crm["id"]
    api.post(WATCH, json={"watch": [entry(receiver)]}).raise_for_status()
    before = pair.crm["Modified_Time"]

    r = set_raw(sandbox, rid, Appointment_Start_Time="not-a-date")

    assert r.status_code == 200 and r.json()["data"][0]["Appointment_Start_Time"] == "not-a-date", r.text
    got = api.get(f"/crm/v7/{APPOINTMENTS}/{rid}").json()["data"][0]
    assert got["Appointment_Start_Time"] == "not-a-date" and got["Status"] == "Scheduled" and got["Modified_Time"] >= before
    page = api.get(f"/crm/v7/{APPOINTMENTS}", params={"fields": "Appointment_Start_Time,Status", "ids": rid})
    assert page.status_code == 200 and page.json()["data"][0]["Appointment_Start_Time"] == "not-a-date"
    assert receiver.wait_for(lambda item: rid in ((item["json"] or {}).get("ids") or []))["json"]["affected_fields"] == [{rid: ["Appointment_Start_Time"]}]
    assert "Appointments__s" not in sandbox.stats()["writes"]  # a test aid, not a write
    # a UI edit with a good start fixes it
    edit_crm(sandbox, rid, Appointment_Start_Time=crm_iso(pair.start + timedelta(hours=1)))
    fixed = api.get(f"/crm/v7/{APPOINTMENTS}/{rid}").json()["data"][0]
    assert datetime.fromisoformat(fixed["Appointment_Start_Time"]) == pair.start + timedelta(hours=1)
    # what the aid may not set
    assert_error(set_raw(sandbox, rid, Modified_Time="x"), 400, "INVALID_DATA")
    assert_error(set_raw(sandbox, rid, No_Such_Field="x"), 400, "INVALID_DATA")


@pytest.mark.parametrize("bad", BAD_STARTS, ids=["no offset", "not a date", "month 13"])
async def test_one_bad_record_never_stops_an_incremental_run(sandbox, org, bad):
    await org.sync("full")
    broken, *good = future(sandbox, 6)
    assert set_raw(sandbox, broken.crm["id"], Appointment_Start_Time=bad).status_code == 200
    for p in good:
        edit_crm(sandbox, p.crm["id"], Appointment_Start_Time=crm_iso(p.start + timedelta(hours=2)))

    summary = await org.sync("incremental")

    (failure,) = summary.failures
    assert (failure["crm_id"], failure["booking_id"], failure["code"]) == (broken.crm["id"], broken.id, "INVALID_RECORD")
    assert "Appointment_Start_Time" in failure["message"] and bad in failure["message"]
    assert summary.applied == 5 and summary.invalid == 1
    now = pairs(sandbox)
    for p in good:  # all five good changes reached Bookings
        assert now[p.id].start == p.start + timedelta(hours=2)
    assert now[broken.id].start == broken.start  # nothing sent for the bad one

    # fixed in CRM: the next run picks it up
    fixed_to = broken.start + timedelta(hours=4)
    edit_crm(sandbox, broken.crm["id"], Appointment_Start_Time=crm_iso(fixed_to))
    again = await org.sync("incremental")
    assert again.failed == 0 and again.applied == 1
    assert pairs(sandbox)[broken.id].start == fixed_to


async def test_one_bad_record_never_stops_a_webhook_run(sandbox, org):
    await org.sync("full")
    broken, *good = future(sandbox, 4)
    set_raw(sandbox, broken.crm["id"], Appointment_Start_Time="not-a-date").raise_for_status()
    for p in good:
        edit_crm(sandbox, p.crm["id"], Status="Cancelled")

    summary = await org.sync(crm_ids=[broken.crm["id"], *(p.crm["id"] for p in good)])

    assert [(f["crm_id"], f["code"]) for f in summary.failures] == [(broken.crm["id"], "INVALID_RECORD")]
    assert summary.applied == 3
    now = pairs(sandbox)
    assert all(now[p.id].booking["status"] == "CANCEL" for p in good)
    assert now[broken.id].booking["status"] == "UPCOMING"
