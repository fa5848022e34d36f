"""The scheduled deployments get runs from a real Prefect server's scheduler.

With SQLAlchemy 2.1.x, Prefect 3.8.8's scheduler failed on every loop
(``schedule_deployments() ... InvalidRequestError: Can't evaluate bulk DML
statement``, while inserting the runs), so ``sync-incremental``, ``refresh-token``,
``sync-full`` and ``renew-notification-channel`` never got a run; pyproject.toml
pins ``sqlalchemy<2.1`` for it. ``prefect_test_harness`` runs no scheduler, so this
test starts the server as ``make up`` does (``stack_server`` in conftest.py: the
stack's own ``ensure_prefect_server`` (``deployments.services``), scheduler loop shortened to 1 s), registers
the deployments as ``make up`` does (``python -m deployments.serve``), and checks
through the API that scheduled runs appear and in ``server.log`` that the
scheduler ran without an error. Both checks fail with SQLAlchemy 2.1: both
schedulers insert their runs through the same statement.

No run executes: the earliest is due 5 minutes after the deployments are
registered (``every-5-minutes``, anchored at registration), and the runner
(``serve``, its own process group) is stopped long before; the test checks that
every run is still ``SCHEDULED`` and that nothing of the runner's group is left.
"""

from __future__ import annotations

import sys
import time
from datetime import datetime, timedelta, timezone

import httpx

from deployments import processes

SCHEDULED = ("refresh-token", "sync-full", "sync-incremental", "sync-scan", "renew-notification-channel")
WAIT = 60  # seconds for the deployments to be served and scheduled (a few on an idle machine)


def _scheduler_lines(text: str) -> list[str]:
    """Lines of the server log that tell of a scheduler problem."""
    bad = ("InvalidRequestError", "Traceback", "| ERROR", "| CRITICAL", "Error scheduling deployment")
    return [line for line in text.splitlines() if any(b in line for b in bad)]


def _main_loop_done(text: str) -> bool:
    """Whether docket logged a finished ``schedule_deployments()`` (the main loop) in ``text``."""
    return any("\u21ab" in line and "schedule_deployments()" in line for line in text.splitlines())  # ↫: a perpetual task ended


def test_the_scheduler_creates_runs_of_the_served_deployments(stack_server, tmp_path):
    log = stack_server.log
    log_from = log.stat().st_size
    env = {**processes.base_env(tmp_path, stack_server.api), "PREFECT_LOGGING_LEVEL": "WARNING"}
    runner = processes.spawn("serve", [sys.executable, "-m", "deployments.serve"], tmp_path, env)
    runs: dict[str, list[dict]] = {}
    try:
        with httpx.Client(base_url=stack_server.api, timeout=30) as http:
            deadline = time.monotonic() + WAIT
            while time.monotonic() < deadline and runner.poll() is None:
                deployments = http.post("/deployments/filter", json={"deployments": {"name": {"any_": list(SCHEDULED)}}}).json()
                for d in deployments:
                    runs[d["name"]] = http.post("/flow_runs/filter", json={"deployments": {"id": {"any_": [d["id"]]}}, "limit": 200}).json()
                if len(runs) == len(SCHEDULED) and all(runs.values()):
                    break
                time.sleep(0.5)
            # The main loop (``schedule_deployments``, every second here) has run since.
            scheduled_at = time.monotonic()
            while time.monotonic() < scheduled_at + 15 and not _main_loop_done(log.read_bytes()[log_from:].decode(errors="replace")):
                time.sleep(0.5)
            served = http.get("/deployments/name/sync-appointments/sync-incremental").json()
    finally:
        assert processes.stop_pidfile(tmp_path / "serve.pid")
    text = log.read_text()
    assert not processes.group_members(runner.pid), "the runner's processes outlived the test"
    problems = _scheduler_lines(text)
    assert not problems, "the scheduler failed:\n" + "\n".join(problems[:20])
    assert set(runs) == set(SCHEDULED), f"deployments.serve registered {sorted(runs)}; see {tmp_path / 'serve.log'}"
    assert all(runs.values()), f"no scheduled runs for {[n for n, r in runs.items() if not r]}; server log tail:\n{text[-3000:]}"
    assert _main_loop_done(log.read_bytes()[log_from:].decode(errors="replace")), "the scheduler's main loop did not run"

    incremental = runs["sync-incremental"]
    assert len(incremental) >= 3  # PREFECT_SERVER_SERVICES_SCHEDULER_MIN_RUNS
    assert {r["state_type"] for rs in runs.values() for r in rs} == {"SCHEDULED"}  # nothing started
    assert all(r["auto_scheduled"] and r["parameters"] == {"config_block": "sync-sandbox", "mode": "incremental"} for r in incremental)
    starts = sorted(datetime.fromisoformat(r["next_scheduled_start_time"].replace("Z", "+00:00")) for r in incremental)
    assert all(b - a == timedelta(minutes=5) for a, b in zip(starts, starts[1:]))
    assert starts[0] > datetime.now(timezone.utc)
    assert served["schedules"] and served["schedules"][0]["schedule"]["interval"] == 300
