"""serve.py and prefect.yaml define the same deployments, with resolvable entrypoints."""

from __future__ import annotations

import importlib
from pathlib import Path

import yaml

from deployments.serve import build

ROOT = Path(__file__).resolve().parents[1]


def test_serve_and_prefect_yaml_agree():
    served = {d.name: d for d in build("sync-acme", "zoho-acme")}
    spec = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())
    assert set(served) == {d["name"] for d in spec["deployments"]} == {
        "refresh-token", "sync-full", "sync-incremental", "sync-scan", "sync-on-webhook", "bulk-read-callback", "renew-notification-channel",
    }
    for d in spec["deployments"]:
        path, func = d["entrypoint"].split(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        assert callable(getattr(module, func))
    assert served["sync-incremental"].parameters == {"config_block": "sync-acme", "mode": "incremental"}
    assert served["sync-scan"].parameters == {"config_block": "sync-acme", "mode": "scan"}
    scan = next(d for d in spec["deployments"] if d["name"] == "sync-scan")
    assert scan["parameters"]["mode"] == "scan" and [s["interval"] for s in scan["schedules"]] == [served["sync-scan"].schedules[0].schedule.interval.total_seconds()]
    assert served["refresh-token"].parameters == {"block_name": "zoho-acme"}
    assert served["renew-notification-channel"].parameters == {"channel_block": "crm-channel"}
    other = {d.name: d for d in build("sync-acme", "zoho-acme", channel_block="crm-acme")}
    assert other["renew-notification-channel"].parameters == {"channel_block": "crm-acme"}
    renew = next(d for d in spec["deployments"] if d["name"] == "renew-notification-channel")
    assert [s["slug"] for s in renew["schedules"]] == ["daily"]


def test_the_webhook_deployment_is_triggered_by_the_receivers_event():
    hook = next(d for d in build("sync-acme", "zoho-acme") if d.name == "sync-on-webhook")
    from flows.sync_appointments import sync_records

    assert sync_records.name == "sync-appointments" and sync_records.retries == 2  # same flow, runs retried
    (trigger,) = hook.triggers
    assert trigger.expect == {"zoho.sync.requested"}
    assert trigger.match.model_dump().get("prefect.resource.id") == "zoho.sync.sync-acme"
    assert set(trigger.parameters) == {"config_block", "crm_module", "crm_ids", "deleted_crm_ids", "booking_ids", "booking_states"}
    spec = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())
    yaml_trigger = next(d for d in spec["deployments"] if d["name"] == "sync-on-webhook")["triggers"][0]
    assert yaml_trigger["parameters"] == trigger.parameters  # the same templates in both


def test_cloud_webhook_templates_emit_the_receivers_event():
    import json

    import jinja2

    env = jinja2.Environment()
    crm = env.from_string((ROOT / "deployments" / "cloud" / "crm-notification.webhook.j2").read_text())
    event = json.loads(crm.render(body={"module": "Appointments__s", "operation": "update", "ids": ["111", "222"]}))
    assert event["event"] == "zoho.sync.requested" and event["resource"]["prefect.resource.id"] == "zoho.sync.sync-sandbox"
    assert event["payload"] == {"config_block": "sync-sandbox", "crm_module": "Appointments__s", "crm_ids": ["111", "222"], "deleted_crm_ids": [], "booking_ids": [], "booking_states": {}}
    event = json.loads(crm.render(body={"module": "Events", "operation": "delete", "ids": ["333"]}))
    assert event["payload"] == {"config_block": "sync-sandbox", "crm_module": "Events", "crm_ids": [], "deleted_crm_ids": ["333"], "booking_ids": [], "booking_states": {}}
    bk = env.from_string((ROOT / "deployments" / "cloud" / "bookings.webhook.j2").read_text())
    event = json.loads(bk.render(body={"booking_id": "#AN-00014"}))
    assert event["payload"]["booking_ids"] == ["#AN-00014"] and event["payload"]["booking_states"] == {}
    assert event["payload"]["crm_module"] is None and event["payload"]["deleted_crm_ids"] == []
    state = {"status": "CANCEL", "start_time": "01-Nov-2026 10:00:00", "time_zone": "Asia/Kolkata"}
    event = json.loads(bk.render(body={"booking_id": "#AN-00014", **state}))
    assert event["payload"]["booking_states"] == {"#AN-00014": state}
    # the sync-on-webhook trigger matches these events
    hook = next(d for d in build("sync-sandbox", "zoho-sandbox") if d.name == "sync-on-webhook")
    assert hook.triggers[0].match.model_dump()["prefect.resource.id"] == event["resource"]["prefect.resource.id"]


def test_bulk_read_callback_deployment_and_cloud_template_agree():
    """The Cloud template's event carries what the bulk-read-callback trigger matches and templates."""
    import json

    import jinja2

    callback = next(d for d in build("sync-sandbox", "zoho-sandbox") if d.name == "bulk-read-callback")
    (trigger,) = callback.triggers
    assert trigger.expect == {"zoho.bulk_read.callback"}
    assert set(trigger.parameters) == {"config_block", "job_id", "state", "result"}
    template = jinja2.Environment().from_string((ROOT / "deployments" / "cloud" / "bulk-read-callback.webhook.j2").read_text())
    job = {"id": 5545974000003000005, "operation": "read", "state": "COMPLETED",
           "result": {"page": 1, "count": 3, "download_url": "/crm/bulk/v7/read/5545974000003000005/result", "more_records": False}}
    for body in ({"data": [job]}, job):  # both shapes Zoho's callback may take
        event = json.loads(template.render(body=body))
        assert event["event"] == "zoho.bulk_read.callback"
        assert event["payload"] == {"config_block": "sync-sandbox", "job_id": "5545974000003000005", "state": "COMPLETED", "result": job["result"]}
        assert trigger.match.matches(_resource(event["resource"]))
    spec = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())
    yaml_trigger = next(d for d in spec["deployments"] if d["name"] == "bulk-read-callback")["triggers"][0]
    assert yaml_trigger["match"] == {"prefect.resource.id": "zoho.bulk_read.*", "zoho.organisation": "sync-sandbox"}
    assert set(yaml_trigger["parameters"]) == set(trigger.parameters)


def _resource(labels):
    from prefect.events.schemas.events import Resource

    return Resource.model_validate(labels)


def test_prefect_deploy_all_creates_every_deployment_and_trigger(prefect_api, tmp_path):
    """``prefect deploy --all --prefect-file deployments/prefect.yaml`` (README) works against a real server."""
    import os
    import subprocess
    import sys

    import httpx

    env = {**os.environ, "PREFECT_API_URL": prefect_api, "PREFECT_HOME": str(tmp_path), "APPT_SYNC_HOME": str(ROOT)}
    prefect = [sys.executable, "-m", "prefect"]
    pool = httpx.post(f"{prefect_api}/work_pools/", json={"name": "appt-sync", "type": "process"}, timeout=30)
    assert pool.status_code in (201, 409), pool.text
    done = subprocess.run([*prefect, "--no-prompt", "deploy", "--all", "--prefect-file", "deployments/prefect.yaml"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    spec = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())
    deployed = httpx.post(f"{prefect_api}/deployments/filter", json={"limit": 50}, timeout=30).json()
    assert {d["name"] for d in deployed} >= {d["name"] for d in spec["deployments"]}
    assert all(d["work_pool_name"] == "appt-sync" for d in deployed if d["name"] in {s["name"] for s in spec["deployments"]})
    automations = httpx.post(f"{prefect_api}/automations/filter", json={"limit": 50}, timeout=30).json()
    expected = {e for d in spec["deployments"] for t in d.get("triggers", []) for e in t["expect"]}
    assert {e for a in automations for e in a["trigger"].get("expect", [])} >= expected == {"zoho.sync.requested", "zoho.bulk_read.callback"}
