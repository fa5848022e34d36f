"""``make up`` / ``make down`` (``deployments.stack.up`` / ``down``).

The integration test starts the whole stack (Prefect server, sandbox, webhook
receiver, ``deployments.serve``) on free loopback ports with a temporary
``PREFECT_HOME`` and data folder, so it never meets a developer's own stack; an
edit through the sandbox admin API must reach the other side with nobody running a
command (receiver -> ``zoho.sync.requested`` -> trigger -> ``sync-on-webhook``),
and ``down()`` must leave no process and no PID file behind. The unit tests check
that ``down()`` stops only what its PID files name.
"""

from __future__ import annotations

import asyncio
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import httpx

from deployments import processes, services, stack

WAIT = 90  # seconds an edit may take to show on the other side (bounded, not asserted as a figure)


def eventually(check: Callable[[], bool], timeout: float = WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.5)
    return False


def pids(home: Path) -> dict[str, int]:
    return {name: int((home / f"{name}.pid").read_text().split()[0]) for name in stack.SERVICES if (home / f"{name}.pid").exists()}


def a_future_link(http: httpx.Client) -> tuple[dict, dict]:
    """A CRM appointment and its booking, both still to come (Scheduled / UPCOMING)."""
    dump = http.get("/__sandbox/dump").json()
    bookings = {b["booking_id"]: b for b in dump["bookings"]}
    return next(
        (a, bookings[a["Booking_Id"]])
        for a in dump["Appointments__s"]
        if a["Status"] == "Scheduled" and bookings.get(a["Booking_Id"], {}).get("status") == "UPCOMING"
    )


def crm_status(http: httpx.Client, booking_id: str) -> str:
    return http.get("/__sandbox/dump", params={"module": "Appointments__s", "booking_id": booking_id}).json()["Appointments__s"][0]["Status"]


def channel_problem(api: str) -> str | None:
    """Why ``renew-notification-channel`` would subscribe the stack's channel again (None: no reason)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.notifications import channel_status

    with temporary_settings({PREFECT_API_URL: api}):
        return asyncio.run(channel_status(stack.CHANNEL_BLOCK))["problem"]


def test_an_edit_reaches_the_other_side_by_itself_and_down_stops_everything(tmp_path, capsys):
    home, data = tmp_path / "prefect", tmp_path / "data"
    ports = dict(prefect_port=processes.free_port(), sandbox_port=processes.free_port(), receiver_port=processes.free_port())
    said: list[str] = []
    started: dict[str, int] = {}
    try:
        up = stack.up(home, data, appointments=120, say=said.append, **ports)
        started = pids(home)
        assert set(up.started) == set(started) == set(stack.SERVICES)
        again = stack.up(home, data, appointments=120, say=said.append, **ports)
        assert again.started == [] and pids(home) == started  # a second `make up` starts no duplicate

        with httpx.Client(base_url=up.sandbox, timeout=30) as http:
            _, booking = a_future_link(http)
            r = http.patch(f"/__sandbox/bookings/{booking['booking_id'].replace('#', '%23')}", json={"action": "cancel"})
            assert r.status_code == 200, r.text
            assert eventually(lambda: crm_status(http, booking["booking_id"]) == "Cancelled"), (
                f"the Bookings cancellation of {booking['booking_id']} did not reach CRM; see {home}/serve.log"
            )
        assert channel_problem(up.api) is None  # the daily renewal finds the channel up() subscribed as it should be
    finally:
        stopped = stack.down(home)

    assert set(stopped) == set(stack.SERVICES)
    assert not list(home.glob("*.pid"))
    assert all(not processes.group_members(pid) for pid in started.values())
    secrets = services.receiver_secrets(home)
    assert stat.S_IMODE((home / "receiver.env").stat().st_mode) == 0o600
    shown = "\n".join(said) + capsys.readouterr().out
    assert not any(value in shown for value in secrets.values())


# ------------------------------------------------------------------ down()
def sleeper() -> subprocess.Popen:
    """A process in its own group, as ``up()`` starts its services."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)


def test_down_without_pid_files_does_nothing(tmp_path):
    (tmp_path / "server.log").write_text("kept")
    assert stack.down(tmp_path) == []
    assert [p.name for p in tmp_path.iterdir()] == ["server.log"]


def test_down_removes_a_stale_pid_file_of_a_dead_process(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    dead.wait()
    (tmp_path / "sandbox.pid").write_text(f"{dead.pid}\n")
    assert stack.down(tmp_path) == ["sandbox"]
    assert not (tmp_path / "sandbox.pid").exists()


def test_down_leaves_a_process_alone_when_its_pid_was_recycled(tmp_path):
    other = sleeper()
    try:
        (tmp_path / "receiver.pid").write_text(f"{other.pid} 1\n")  # same PID, another start time: not ours
        assert stack.down(tmp_path) == ["receiver"]
        assert other.poll() is None
        assert not (tmp_path / "receiver.pid").exists()
    finally:
        other.kill()
        other.wait()


def test_down_stops_the_process_group_its_pid_file_names(tmp_path):
    ours = processes.spawn("serve", [sys.executable, "-c", "import time; time.sleep(60)"], tmp_path, {})
    assert stack.down(tmp_path) == ["serve"]
    assert ours.wait(5) is not None
    assert not processes.group_members(ours.pid)
    assert not (tmp_path / "serve.pid").exists()
