"""``appt-sync`` finds the stack ``make up`` / ``make demo`` started, and the demo's ending.

The CLI runs as a subprocess with a temporary ``PREFECT_HOME`` and no
``PREFECT_API_URL`` (a new shell): it must take the server from
``PREFECT_HOME/stack.json``, or say in one line which server it looked for and exit 1,
never starting a temporary server. The demo's ready-to-paste ``curl`` edits are run
as printed against the session's sandbox.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx

from deployments import processes, services
from deployments.demo import example_edits, linked_meetings, linked_pairs, seeded_no_shows
from deployments.onboarding import SCOPES

ROOT = Path(__file__).resolve().parents[1]


def appt_sync(home: Path, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """``appt-sync *argv`` in a new shell's environment: ``PREFECT_HOME=home`` and no other Prefect setting."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1")
    return subprocess.run([sys.executable, "-c", "from deployments.cli import app; app()", *argv],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_without_a_recorded_server_the_cli_says_so_in_one_line(tmp_path):
    done = appt_sync(tmp_path, "sync", "--dry-run")
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0 and "Traceback" not in done.stderr + done.stdout
    assert str(tmp_path / "stack.json") in done.stderr and "make up" in done.stderr and "PREFECT_API_URL" in done.stderr
    assert not list(tmp_path.glob("*.db"))  # no temporary server (its database) in PREFECT_HOME


def test_a_recorded_server_that_does_not_answer_is_named_and_nothing_is_started(tmp_path):
    api = f"http://127.0.0.1:{processes.free_port()}/api"
    services.record_stack(tmp_path, api=api)
    done = appt_sync(tmp_path, "sync", "--dry-run")
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr.strip().count("\n") == 0 and "Traceback" not in done.stderr + done.stdout
    assert api in done.stderr and "make up" in done.stderr and "make demo" in done.stderr
    assert "temporary" not in (done.stdout + done.stderr).lower() and not list(tmp_path.glob("*.db"))


def test_commands_without_prefect_and_help_need_no_stack(tmp_path):
    assert appt_sync(tmp_path, "sync", "--help", timeout=60).returncode == 0
    assert appt_sync(tmp_path, "sandbox", "--help", timeout=60).returncode == 0


def test_the_cli_uses_the_recorded_server_and_keeps_the_terminal_quiet(tmp_path, sandbox, prefect_api):
    services.record_stack(tmp_path, api=prefect_api)
    name = f"cli-{uuid.uuid4().hex[:8]}"
    saved = appt_sync(tmp_path, "auth", "--sandbox", sandbox.url, "--block", name)
    assert saved.returncode == 0 and f"Saved ZohoOAuth block '{name}'" in saved.stdout, saved.stdout + saved.stderr
    found = httpx.post(f"{prefect_api}/block_documents/filter", json={"block_documents": {"name": {"any_": [name]}}, "limit": 5}, timeout=30).json()
    assert [d["name"] for d in found] == [name]  # saved on the recorded server, not a temporary one
    assert found[0]["data"]["scopes"] == list(SCOPES)  # the sandbox's grant has the least-privilege scopes of README

    refreshed = appt_sync(tmp_path, "token", "--block", name, "--min-remaining-minutes", "120")
    assert refreshed.returncode == 0 and "refreshed: True" in refreshed.stdout, refreshed.stdout + refreshed.stderr
    # Run and task logs go to the server only; nothing is left for the events worker at exit.
    assert "Finished in state" not in refreshed.stderr and "Still processing items" not in refreshed.stderr, refreshed.stderr
    logs = httpx.post(f"{prefect_api}/logs/filter", json={"limit": 200, "sort": "TIMESTAMP_DESC"}, timeout=30).json()
    assert any("Finished in state" in log["message"] for log in logs)


def test_the_demo_s_example_edits_work_as_printed(sandbox):
    dump = sandbox.dump()
    assert seeded_no_shows(dump) > 0  # what the full sync turns into CRM cancellations (initial_source Bookings)
    lines = example_edits(dump, sandbox.url)
    commands = [line.strip() for line in lines if line.strip().startswith("curl ")]
    assert len(commands) == 3 and "%23AN-" in commands[0] and "#" not in commands[0] and "/crm/Events/" in commands[2]
    before = linked_pairs(dump)
    meetings_before = linked_meetings(dump)
    for command in commands:
        out = subprocess.run(shlex.split(command) + ["-s", "-f"], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, (command, out.stdout, out.stderr)
    after = linked_pairs(sandbox.dump())
    changed = {k for k in before if (before[k].start, before[k].booking["status"], before[k].crm["Status"]) != (after[k].start, after[k].booking["status"], after[k].crm["Status"])}
    assert len(changed) == 2
    moved = [k for k in changed if after[k].start != before[k].start]
    wall = [datetime.strptime(pairs[moved[0]].booking["start_time"], "%d-%b-%Y %H:%M:%S") for pairs in (before, after)]
    assert len(moved) == 1 and wall[1] - wall[0] == timedelta(days=1)  # a day later on the booking's own clock
    cancelled = [k for k in changed if after[k].crm["Status"] == "Cancelled"]
    assert len(cancelled) == 1
    now = datetime.now(timezone.utc)
    assert all(now < after[k].start < now + timedelta(days=30) for k in changed)  # near-future appointments
    assert json.loads(commands[1].split("-d ", 1)[1].strip("'"))["Status"] == "Cancelled"
    meetings_after = linked_meetings(sandbox.dump())
    dragged = [k for k in meetings_before if meetings_before[k].crm["Start_DateTime"] != meetings_after[k].crm["Start_DateTime"]]
    assert len(dragged) == 1 and dragged[0] not in changed  # a Meeting of a third booking, one hour later
    hour = [datetime.fromisoformat(m[dragged[0]].crm["Start_DateTime"]) for m in (meetings_before, meetings_after)]
    assert hour[1] - hour[0] == timedelta(hours=1)
