"""``make demo`` / ``appt-sync demo``: the pipeline's steps, end to end, against a local sandbox.

Until the sync flows land (issue 5) this walks through what exists: it starts the
sandbox on a free 127.0.0.1 port, mints an access token, reads the CRM field
metadata, runs a Bulk Read of ``Appointments__s`` through its states and reads
the CSV from the zip, exports ``Events`` as ICS, reschedules one appointment in
CRM as a user would and carries the change to Zoho Bookings in the booking's own
time zone (seed 000's recipe), and prints the sandbox's API-call counters. It
talks plain HTTP (httpx) so it needs nothing but the sandbox.
"""

from __future__ import annotations

import csv
import io
import socket
import subprocess
import sys
import time
import zipfile
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _say(step: str, text: str = "") -> None:
    print(f"\n== {step}" + (f"\n   {text}" if text else ""), flush=True)


def _bookings_time(instant: datetime, tz: str) -> str:
    local = instant.astimezone(ZoneInfo(tz))
    months = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()
    return f"{local.day:02d}-{months[local.month - 1]}-{local.year} {local:%H:%M:%S}"


def run(appointments: int = 2000, port: int = 0) -> int:
    """Run the demo; returns a process exit code (0: every step worked)."""
    port = port or _free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "sandbox", "--port", str(port), "--appointments", str(appointments), "--bulk-delay", "1.5"],
        cwd=ROOT,
    )
    try:
        with httpx.Client(base_url=base, timeout=30) as http:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if http.get("/__sandbox/health").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or proc.poll() is not None:
                    print("the sandbox did not start", file=sys.stderr)
                    return 1
                time.sleep(0.2)
            return _walk(http)
    finally:
        proc.terminate()
        proc.wait(10)


def _walk(http: httpx.Client) -> int:
    creds = http.get("/__sandbox/credentials").json()
    _say("1. OAuth: refresh token -> access token", f"client {creds['client_id'][:12]}..., scopes {creds['scope']}")
    token = http.post(
        "/oauth/v2/token",
        data={k: creds[k] for k in ("client_id", "client_secret", "refresh_token")} | {"grant_type": "refresh_token"},
    ).json()
    print(f"   access token ******** expires_in={token['expires_in']} s, api_domain={token['api_domain']}")
    http.headers["Authorization"] = f"Zoho-oauthtoken {token['access_token']}"

    fields = http.get("/crm/v7/settings/fields", params={"module": "Appointments__s"}).json()["fields"]
    _say("2. CRM field metadata", f"Appointments__s has {len(fields)} fields, e.g. " + ", ".join(f["api_name"] for f in fields[1:6]))

    now = datetime.now(timezone.utc).replace(microsecond=0)
    window = [(now - timedelta(days=7)).isoformat(), (now + timedelta(days=30)).isoformat()]
    query = {
        "module": {"api_name": "Appointments__s"},
        "fields": ["Appointment_Start_Time", "Appointment_End_Time", "Status", "Booking_Id", "Modified_Time"],
        "criteria": {"field": {"api_name": "Appointment_Start_Time"}, "comparator": "between", "value": window},
        "page": 1,
    }
    _say("3. Bulk Read of Appointments__s starting in the next 30 days (or the last 7)")
    job = http.post("/crm/bulk/v7/read", json={"query": query}).json()["data"][0]["details"]
    seen = None
    while True:
        status = http.get(f"/crm/bulk/v7/read/{job['id']}").json()["data"][0]
        if status["state"] != seen:
            seen = status["state"]
            print(f"   job {job['id']}: {seen}")
        if seen in ("COMPLETED", "FAILURE"):
            break
        time.sleep(0.3)
    if seen == "FAILURE":
        print(f"   failed: {status['result']['error_message']}")
        return 1
    result = status["result"]
    archive = zipfile.ZipFile(io.BytesIO(http.get(result["download_url"]).content))
    rows = list(csv.DictReader(io.TextIOWrapper(archive.open(f"{job['id']}.csv"), encoding="utf-8")))
    print(f"   {result['count']} records in {archive.namelist()[0]}, more_records={result['more_records']}")
    print("   by Status: " + ", ".join(f"{k} {v}" for k, v in Counter(r["Status"] for r in rows).most_common()))

    _say("4. Bulk Read of Events as ICS")
    ev = http.post("/crm/bulk/v7/read", json={"query": {"module": {"api_name": "Events"}}, "file_type": "ics"}).json()
    ev_id = ev["data"][0]["details"]["id"]
    while (s := http.get(f"/crm/bulk/v7/read/{ev_id}").json()["data"][0])["state"] not in ("COMPLETED", "FAILURE"):
        time.sleep(0.3)
    ics = zipfile.ZipFile(io.BytesIO(http.get(s["result"]["download_url"]).content)).read(f"{ev_id}.ics").decode()
    print(f"   {ics.count('BEGIN:VEVENT')} meetings in {ev_id}.ics")

    _say("5. A user reschedules an appointment in CRM; the change goes to Bookings")
    upcoming = next(r for r in rows if r["Status"] == "Scheduled")
    old = datetime.fromisoformat(upcoming["Appointment_Start_Time"])
    new = old + timedelta(hours=1)
    edit = http.patch(f"/__sandbox/crm/Appointments__s/{upcoming['Id']}", json={"Appointment_Start_Time": new.isoformat()})
    print(f"   CRM {upcoming['Id']} ({upcoming['Booking_Id']}): {old.isoformat()} -> {new.isoformat()} [{edit.json()['data'][0]['code']}]")
    booking = http.get("/bookings/v1/json/getappointment", params={"booking_id": upcoming["Booking_Id"]}).json()["response"]["returnvalue"]
    wanted = _bookings_time(new, booking["time_zone"])
    print(f"   booking {booking['booking_id']} in {booking['time_zone']}: {booking['start_time']} -> {wanted}")
    for attempt in (1, 2):
        current = http.get("/bookings/v1/json/getappointment", params={"booking_id": booking["booking_id"]}).json()["response"]["returnvalue"]
        if current["start_time"] == wanted:
            print(f"   pass {attempt}: Bookings already at {wanted}: nothing sent (the loop guard)")
            continue
        r = http.post("/bookings/v1/json/rescheduleappointment", data={"booking_id": booking["booking_id"], "start_time": wanted})
        print(f"   pass {attempt}: rescheduleappointment -> {r.json()['response']['status']}")

    stats = http.get("/__sandbox/stats").json()
    _say("6. API calls the sandbox counted", f"{stats['total_calls']} calls, {stats['tokens_minted']} access token minted")
    for route, n in sorted(stats["calls"].items()):
        print(f"   {n:4d}  {route}")
    print("\nDemo complete. The sync flows (issue 5) will replace steps 3-5 with one Prefect flow run.")
    return 0


if __name__ == "__main__":
    sys.exit(run())
