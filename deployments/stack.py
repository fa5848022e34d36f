"""``make up`` / ``make down``: bring the local stack up, or stop exactly what it started.

Everything binds to 127.0.0.1 and runs with a project-local ``PREFECT_HOME``
(``.prefect/``). The four services (the Prefect server, the Zoho sandbox, the
webhook receiver and ``python -m deployments.serve``) are in
:mod:`deployments.services`; how they are started detached, each in its own
process group with its PID (and start time) in ``PREFECT_HOME/<name>.pid`` and its
output in ``PREFECT_HOME/<name>.log``, is in :mod:`deployments.processes`.

``up()`` starts what is not running yet (PID file and health decide), onboards the
sandbox into the ``ZohoOAuth`` block ``zoho-sandbox`` and the ``AppointmentSyncConfig``
``sync-sandbox`` (state store ``.data/stack-state.db``), runs one full sync to set
the base, then points the sandbox's Bookings webhook and a CRM notification channel
(kept in the ``NotificationChannel`` block ``crm-channel``, which
``renew-notification-channel`` renews; it watches both modules ``sync-sandbox`` syncs,
``Appointments__s`` and ``Events``, and the receiver accepts both) at the receiver
(:mod:`deployments.onboarding`).
From then on an edit on either side reaches the other through receiver ->
``zoho.sync.requested`` event -> trigger -> ``sync-on-webhook`` run. The receiver's
channel token, Bookings secret and callback secret are generated once into
``PREFECT_HOME/receiver.env`` (mode 600) and never printed. ``down()`` stops
exactly the process groups named by PID files and removes the files.

The demo (:mod:`deployments.demo`) starts (or reuses) the ``server`` and ``sandbox``
services, re-seeds the sandbox and saves the same blocks as ``up()``; both leave them
running.

``python -m deployments.stack up|down`` (``make up`` / ``make down``).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from . import onboarding, processes, services
from .onboarding import CHANNEL_BLOCK, CONFIG_BLOCK, OAUTH_BLOCK
from .processes import ROOT, prefect_home

#: Detached services, in the order ``down()`` stops them (the server last).
SERVICES = ("serve", "receiver", "sandbox", "server")
#: Defaults for the started processes (the caller's environment wins): the runner
#: looks for triggered runs every second; the receiver emits a lone id after 0.2 s
#: and then at most once per 2 s, which keeps a burst (and the echoes of the sync's
#: own writes) to a few flow runs.
#: See benchmarks/README.md ("webhook_latency.py") for the figures behind them.
TUNING = {"PREFECT_RUNNER_POLL_FREQUENCY": "1", "APPT_SYNC_RECEIVER_COALESCE_SECONDS": "2"}


@dataclass
class Stack:
    """What ``up()`` brought up: addresses, and which services it started this time."""

    home: Path
    api: str
    sandbox: str
    receiver: str
    started: list[str] = field(default_factory=list)
    summary: Any = None

    @property
    def ui(self) -> str:
        return self.api.removesuffix("/api")


def ports(prefect_port: int | None = None, sandbox_port: int | None = None, receiver_port: int | None = None) -> dict[str, int]:
    """``{"prefect", "sandbox", "receiver"}``: the given port, else ``PREFECT_PORT``/``SANDBOX_PORT``/``RECEIVER_PORT``, else the default."""
    given = {"prefect": prefect_port, "sandbox": sandbox_port, "receiver": receiver_port}
    env = {"prefect": "PREFECT_PORT", "sandbox": "SANDBOX_PORT", "receiver": "RECEIVER_PORT"}
    return {k: int(v or os.environ.get(env[k]) or services.DEFAULT_PORTS[k]) for k, v in given.items()}


def up(
    home: Path | str | None = None,
    data_dir: Path | str | None = None,
    prefect_port: int | None = None,
    sandbox_port: int | None = None,
    receiver_port: int | None = None,
    appointments: int = 2000,
    oauth_block: str = OAUTH_BLOCK,
    config_block: str = CONFIG_BLOCK,
    say: Callable[[str], None] = print,
) -> Stack:
    """Bring the stack up (or confirm it is up); see the module docstring.

    ``home``: ``PREFECT_HOME`` (PID files, logs, ``receiver.env``, the server's
    database); ``data_dir``: the sandbox's database and the state store (default
    ``.data/``). Ports default to ``PREFECT_PORT``/``SANDBOX_PORT``/``RECEIVER_PORT``
    or 4200/8900/8765. Raises ``RuntimeError`` when a service does not come up (its
    log is in ``home``); what did start keeps running until ``down()``.
    """
    home = Path(home) if home else prefect_home()
    data = Path(data_dir) if data_dir else ROOT / ".data"
    home.mkdir(parents=True, exist_ok=True)
    data.mkdir(parents=True, exist_ok=True)
    port = ports(prefect_port, sandbox_port, receiver_port)
    if not (home / "receiver.env").exists():
        processes.stop_pidfile(home / "receiver.pid")  # new secrets: a running receiver would still check the old ones
    secret = services.receiver_secrets(home)

    # The server and the sandbox start side by side; the others need the server.
    api, server = services.start_server(port["prefect"], home)
    sandbox_url, box = services.start_sandbox(home, data, port["sandbox"], appointments)
    if server is not None:
        processes.wait_healthy(f"{api}/health", 90, server)
    if box is not None:
        processes.wait_healthy(f"{sandbox_url}/__sandbox/health", 60, box)
    env = {**TUNING, **processes.base_env(home, api)}
    receiver_env = {**env, **secret, "APPT_SYNC_RECEIVER_CONFIG_BLOCK": config_block, "APPT_SYNC_RECEIVER_STATE_STORE_URL": onboarding.state_store_url(data)}
    receiver_url, hook = services.start_receiver(home, port["receiver"], receiver_env)
    serve_started = time.time()
    runner = services.start_serve(home, {**env, "SYNC_CONFIG_BLOCK": config_block, "ZOHO_OAUTH_BLOCK": oauth_block, "NOTIFICATION_CHANNEL_BLOCK": CHANNEL_BLOCK})
    services.record_stack(home, api=api, sandbox=sandbox_url, receiver=receiver_url)
    stack = Stack(home, api, sandbox_url, receiver_url, [n for n, p in (("server", server), ("sandbox", box), ("receiver", hook), ("serve", runner)) if p is not None])

    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api}):
        onboarded = asyncio.run(onboarding.connect(sandbox_url, data, oauth_block, config_block))
        if onboarded:
            say(f"onboarded the sandbox: blocks '{oauth_block}' (ZohoOAuth) and '{config_block}' (AppointmentSyncConfig)")
        if stack.started or onboarded:
            say("running one full sync to set the base ...")
            from flows.sync_appointments import sync_appointments

            stack.summary = asyncio.run(sync_appointments(config_block=config_block, mode="full"))
            s = stack.summary
            say(f"full sync: {s.links} links, {s.agreed} agreed, {s.applied} applied, {s.failed} failed, {s.conflicts} conflicts")
        if hook is not None:
            processes.wait_healthy(f"{receiver_url}/healthz", 60, hook)
        services.wait_serving(api, serve_started if runner is not None else None, runner)
        onboarding.wire(sandbox_url, receiver_url, oauth_block, secret, config_block)
    return stack


def down(home: Path | str | None = None) -> list[str]:
    """Stop the services whose PID files are in ``home`` (default ``PREFECT_HOME``); returns their names.

    Each named process group gets SIGTERM, then SIGKILL after 15 s; every PID file
    is removed (a stale one only removed). A ``server.pid`` written by Prefect's own
    ``prefect server start --background`` is not ours: it and its server are left alone.
    """
    home = Path(home) if home else prefect_home()
    skip = {"server"} if services.prefect_background_pid(home) is not None else set()
    return [name for name in SERVICES if name not in skip and processes.stop_pidfile(home / f"{name}.pid")]


def _print_up(stack: Stack) -> None:
    started = ", ".join(stack.started) if stack.started else "nothing (already running)"
    print(f"""
started: {started}
  Prefect UI        {stack.ui}
  Prefect API       {stack.api}
  Zoho sandbox      {stack.sandbox}   (admin API under /__sandbox/)
  webhook receiver  {stack.receiver}  (/zoho/crm/notifications, /zoho/bookings/webhook)
logs and PID files in {stack.home}; receiver secrets in {stack.home / 'receiver.env'}
stop everything with: make down""", flush=True)


def main(argv: list[str] | None = None) -> int:
    """``python -m deployments.stack up|down``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m deployments.stack", description="Start or stop the local stack.")
    parser.add_argument("command", choices=["up", "down"])
    args = parser.parse_args(argv)
    if args.command == "down":
        stopped = down()
        print(f"stopped: {', '.join(stopped)}" if stopped else "nothing to stop")
        return 0
    # Task-run lines of the first full sync stay in the UI; the terminal shows warnings.
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    try:
        _print_up(up())
    except RuntimeError as exc:
        print(f"make up failed: {exc}\n(logs in {prefect_home()}; `make down` stops what did start)", file=sys.stderr)
        return 1
    except Exception:
        print(f"make up failed (logs in {prefect_home()}; `make down` stops what did start):", file=sys.stderr)
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
