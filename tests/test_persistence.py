"""``--db``: records, OAuth grants and tokens survive a restart; and the command line's options.

Each test starts its own ``python -m sandbox`` subprocesses on free loopback
ports and stops them in ``finally``.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator
from zoneinfo import ZoneInfo

import httpx
import pytest

from conftest import ROOT, sandbox_process

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
DOCUMENTED_OPTIONS = ("--host", "--port", "--appointments", "--seed", "--db")


# ------------------------------------------------------------------ helpers
@contextlib.contextmanager
def running(db: Path, *args: str) -> Iterator[httpx.Client]:
    """A ``python -m sandbox --db db`` subprocess; yields an admin client on it."""
    with sandbox_process(db.parent, "--db", str(db), *args) as url:
        with httpx.Client(base_url=url, timeout=30) as http:
            yield http


def mint(http: httpx.Client, creds: dict[str, str], refresh_token: str | None = None) -> str:
    r = http.post(
        "/oauth/v2/token",
        data={
            "grant_type": "refresh_token",
            "client_id": creds["client_id"],
            "client_secret": creds["client_secret"],
            "refresh_token": refresh_token or creds["refresh_token"],
        },
    )
    body = r.json()
    assert "access_token" in body, body
    return body["access_token"]


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Zoho-oauthtoken {token}"}


def booking(http: httpx.Client, token: str, booking_id: str) -> httpx.Response:
    return http.get("/bookings/v1/json/getappointment", params={"booking_id": booking_id}, headers=auth(token))


def crm_record(http: httpx.Client, token: str, record_id: str) -> httpx.Response:
    return http.get(f"/crm/v7/Appointments__s/{record_id}", headers=auth(token))


def fmt(local: datetime) -> str:
    return f"{local.day:02d}-{MONTHS[local.month - 1]}-{local.year:04d} {local:%H:%M:%S}"


def later_start(b: dict) -> str:
    """``b``'s start moved 3 days and 1 hour later, as wall time in its own time zone."""
    start = datetime.strptime(b["start_time"], "%d-%b-%Y %H:%M:%S").replace(tzinfo=ZoneInfo(b["time_zone"]))
    return fmt((start.astimezone(timezone.utc) + timedelta(days=3, hours=1)).astimezone(ZoneInfo(b["time_zone"])))


def without_url(b: dict) -> dict:
    return {k: v for k, v in b.items() if k != "summary_url"}


def counts(http: httpx.Client) -> list[int]:
    d = http.get("/__sandbox/dump").json()
    return [len(d[k]) for k in ("Appointments__s", "Events", "bookings")]


# -------------------------------------------------------------- persistence
def test_changes_and_tokens_survive_a_restart(tmp_path):
    db = tmp_path / "sb.sqlite"
    with running(db, "--appointments", "50") as http:
        creds = http.get("/__sandbox/credentials").json()
        token = mint(http, creds)
        assert counts(http) == [50, 50, 50]
        bookings = http.get("/__sandbox/dump", params={"module": "bookings"}).json()["bookings"]
        b = next(x for x in bookings if x["status"] == "UPCOMING")
        new_start = later_start(b)
        r = http.post(
            "/bookings/v1/json/rescheduleappointment",
            data={"booking_id": b["booking_id"], "start_time": new_start},
            headers=auth(token),
        )
        assert r.json()["response"]["status"] == "success", r.text
        appts = http.get("/__sandbox/dump", params={"module": "Appointments__s"}).json()["Appointments__s"]
        appt = next(a for a in appts if a["Status"] == "Scheduled" and a["Booking_Id"] != b["booking_id"])
        r = http.patch(f"/__sandbox/crm/Appointments__s/{appt['id']}", json={"Status": "Cancelled"})
        assert r.json()["data"][0]["code"] == "SUCCESS", r.text
        code = http.post("/__sandbox/grant-code", json={}).json()["code"]
        exchanged = http.post(
            "/oauth/v2/token",
            data={"grant_type": "authorization_code", "client_id": creds["client_id"], "client_secret": creds["client_secret"], "code": code},
        ).json()
        second_refresh = exchanged["refresh_token"]
        before = http.get("/__sandbox/dump").json()

    # a different --appointments does not re-seed: the file wins
    with running(db, "--appointments", "10") as http:
        again = http.get("/__sandbox/credentials").json()
        for key in ("client_id", "client_secret", "refresh_token", "scope"):
            assert again[key] == creds[key]
        assert counts(http) == [50, 50, 50]
        # the token minted before the restart still works, on both systems
        value = booking(http, token, b["booking_id"]).json()["response"]
        assert value["status"] == "success"
        assert value["returnvalue"]["start_time"] == new_start
        rec = crm_record(http, token, appt["id"])
        assert rec.status_code == 200
        assert rec.json()["data"][0]["Status"] == "Cancelled"
        # the CRM side of the rescheduled booking did not move
        after = http.get("/__sandbox/dump").json()
        assert after["Appointments__s"] == before["Appointments__s"]
        # (summary_url names the server's address, which changed with the port)
        assert [without_url(x) for x in after["bookings"]] == [without_url(x) for x in before["bookings"]]
        # the credentials and the exchanged refresh token still mint
        assert crm_record(http, mint(http, creds), appt["id"]).status_code == 200
        assert booking(http, mint(http, creds, second_refresh), b["booking_id"]).status_code == 200
        # the code was used before the restart: still used
        r = http.post(
            "/oauth/v2/token",
            data={"grant_type": "authorization_code", "client_id": creds["client_id"], "client_secret": creds["client_secret"], "code": code},
        )
        assert r.json() == {"error": "invalid_code"}


def test_revocations_and_resets_are_persisted(tmp_path):
    db = tmp_path / "sb.sqlite"
    with running(db, "--appointments", "30") as http:
        creds = http.get("/__sandbox/credentials").json()
        kept, revoked = mint(http, creds), mint(http, creds)
        assert http.post("/oauth/v2/token/revoke", params={"token": revoked}).status_code == 200
        first = http.get("/__sandbox/dump", params={"booking_id": "#AN-00001"}).json()["bookings"][0]
        token = mint(http, creds)
        bookings = http.get("/__sandbox/dump", params={"module": "bookings"}).json()["bookings"]
        b = next(x for x in bookings if x["status"] == "UPCOMING")
        r = http.post("/bookings/v1/json/updateappointment", data={"booking_id": b["booking_id"], "action": "cancel"}, headers=auth(token))
        assert r.json()["response"]["status"] == "success"

    with running(db) as http:
        assert booking(http, kept, "#AN-00001").status_code == 200
        assert booking(http, revoked, "#AN-00001").status_code == 401
        assert http.get("/__sandbox/dump", params={"booking_id": b["booking_id"]}).json()["bookings"][0]["status"] == "CANCEL"
        # a reset re-seeds the file too
        assert http.post("/__sandbox/reset", json={"appointments": 30}).status_code == 200

    with running(db) as http:
        assert counts(http) == [30, 30, 30]
        assert http.get("/__sandbox/dump", params={"booking_id": "#AN-00001"}).json()["bookings"][0]["booking_id"] == first["booking_id"]
        restored = http.get("/__sandbox/dump", params={"booking_id": b["booking_id"]}).json()["bookings"][0]
        assert restored["status"] == b["status"] == "UPCOMING"
        # a reset forgets tokens; the seed's credentials mint again
        assert booking(http, kept, "#AN-00001").status_code == 401
        assert booking(http, mint(http, creds), "#AN-00001").status_code == 200


# ---------------------------------------------------------------------- CLI
def _help(*command: str) -> str:
    out = subprocess.run([*command, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_python_m_sandbox_help_lists_the_documented_options():
    text = _help(sys.executable, "-m", "sandbox")
    for option in DOCUMENTED_OPTIONS:
        assert option in text
    assert "127.0.0.1" in text  # the safe default bind address is stated


def test_appt_sync_sandbox_help_lists_the_documented_options():
    exe = Path(sys.executable).parent / "appt-sync"
    if not exe.exists():
        pytest.skip("appt-sync is not installed in this environment")
    text = _help(str(exe), "sandbox")
    for option in DOCUMENTED_OPTIONS:
        assert option in text
