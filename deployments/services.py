"""The stack's four services, each started (or reused) on 127.0.0.1, and ``stack.json``.

==============  =========================================================  ===========
name            what                                                       port
==============  =========================================================  ===========
``server``      ``prefect server start`` (API and UI)                      4200
``sandbox``     ``python -m sandbox --db .data/sandbox.db``                8900
``receiver``    ``python -m deployments.webhook`` (Zoho calls -> events)   8765
``serve``       ``python -m deployments.serve`` (deployments, triggers)    none
==============  =========================================================  ===========

Each runs detached in its own process group with a PID file and a log in
``PREFECT_HOME`` (:mod:`deployments.processes`). The Prefect server
(``PREFECT_PORT``) is reused only when this checkout started it (``server.pid`` in
this ``PREFECT_HOME`` names it); anything else on the port (a Prefect server of
another checkout, something that is not a Prefect server) stops ``make up`` /
``make demo`` with one line naming it and how to pick another port. Its UI calls
the API on the same port (``PREFECT_UI_API_URL`` is set for it).

The receiver's channel token, Bookings secret and callback secret are generated
once into ``PREFECT_HOME/receiver.env`` (mode 600, :func:`receiver_secrets`) and
handed to it through its environment. The addresses go to
``PREFECT_HOME/stack.json`` (:func:`record_stack`), where ``appt-sync`` in a new
shell finds the server.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

import httpx

from . import processes
from .processes import ROOT, prefect_home

DEFAULT_PORTS = {"prefect": 4200, "sandbox": 8900, "receiver": 8765}


# ------------------------------------------------------------------ the stack file
#: ``PREFECT_HOME/stack.json``: what this checkout's stack serves, for ``appt-sync`` in a
#: new shell (which has neither ``PREFECT_HOME`` nor ``PREFECT_API_URL`` set).
STACK_FILE = "stack.json"


def record_stack(home: Path, **urls: str) -> None:
    """Merge ``urls`` (``api``, ``sandbox``, ``receiver``: base URLs) into ``home/stack.json``."""
    path = home / STACK_FILE
    data = read_stack(home) or {}
    data.update(urls)
    home.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def read_stack(home: Path | None = None) -> dict[str, str] | None:
    """``home/stack.json`` as written by :func:`record_stack` (``api`` is the Prefect API URL), or None."""
    try:
        data = json.loads(((Path(home) if home else prefect_home()) / STACK_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# ------------------------------------------------------------------ the Prefect server
#: What Prefect's own ``prefect server start --background`` runs (its ``server.pid``
#: holds the bare PID of this process, in the same file name as ours).
PREFECT_BACKGROUND_APP = "prefect.server.api.server:create_app"


def prefect_background_pid(home: Path) -> int | None:
    """The server Prefect's own ``prefect server start --background`` started in ``home``, while it runs.

    Prefect writes the bare PID to ``home/server.pid``, the name our PID file has
    (ours adds the start time): such a file is never taken for ours, nor removed.
    """
    try:
        parts = (home / "server.pid").read_text().split()
        pid = int(parts[0]) if len(parts) == 1 else None
    except (OSError, ValueError, IndexError):
        return None
    fields = processes.proc_stat(pid) if pid else None
    if fields is None or fields[0] == "Z" or PREFECT_BACKGROUND_APP not in processes.cmdline(pid):
        return None
    return pid


def start_server(port: int, home: Path) -> tuple[str, subprocess.Popen | None]:
    """``(api, proc)``: this checkout's Prefect server on 127.0.0.1:``port``.

    Reused (``proc`` None) only when ``home/server.pid`` names a live process group
    this stack started (PID and start time agree) that serves ``port``; otherwise one
    is started detached (``proc``; the caller waits for ``api/health``), logging to
    ``home/server.log``. Its environment pins ``PREFECT_SERVER_API_HOST``/``_PORT``
    and ``PREFECT_UI_API_URL``, so the UI calls this API (not :4200).

    Raises ``RuntimeError`` (one line) when ``port`` is held by anything else (a
    Prefect server of another checkout or ``PREFECT_HOME``, or something that is not
    a Prefect server), when this checkout's server already runs on another port, or
    when Prefect's own background server runs in ``home``.

    Why not Prefect's ``prefect server start --background`` / ``prefect server
    stop`` (tried with Prefect 3.8.8): its output goes to a pipe nobody reads once the
    CLI has exited (no log file to point at: a failing scheduler goes unseen); it
    stays in the caller's session and process group; its PID file holds a bare PID,
    which ``prefect server stop`` signals without checking it is still the server and
    without waiting for it to exit; and its UI reads :4200 for any ``--port``. So the
    server runs here as ``prefect server start`` in the foreground of a process group
    of its own, stopped as a group by :func:`~deployments.processes.stop_pidfile`.
    ``prefect server stop`` cannot read our ``server.pid`` (``make down`` stops it).
    """
    api, pidfile = f"http://127.0.0.1:{port}/api", home / "server.pid"
    ours = processes.running(pidfile)
    if ours is not None:
        serving = processes.argv_port(ours)
        if serving not in (None, port):
            raise RuntimeError(f"this checkout's Prefect server already runs on port {serving} (PREFECT_HOME={home}): use PREFECT_PORT={serving}, or `make down` first")
        if processes.healthy(f"{api}/health") or processes.answers_soon(pidfile, f"{api}/health"):
            return api, None
        processes.stop_pidfile(pidfile)  # ours, but hung
    background = prefect_background_pid(home)
    if background is not None:
        raise RuntimeError(f"a Prefect server started by `prefect server start --background` (PID {background}) runs in PREFECT_HOME={home}: stop it with `prefect server stop` first")
    processes.stop_pidfile(pidfile)  # a stale file (dead or recycled PID)
    if processes.port_taken(port):
        raise RuntimeError(processes.port_holder(port, home))
    argv = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    env = {**processes.base_env(home), "PREFECT_SERVER_API_HOST": "127.0.0.1", "PREFECT_SERVER_API_PORT": str(port), "PREFECT_UI_API_URL": api}
    return api, processes.spawn("server", argv, home, env)


def ensure_prefect_server(port: int = 4200, home: Path | None = None) -> str:
    """This checkout's Prefect server on 127.0.0.1:``port``; returns its API URL (``http://127.0.0.1:<port>/api``).

    ``home`` is its ``PREFECT_HOME`` (default :func:`~deployments.processes.prefect_home`).
    The server is reused when this stack started it (``home/server.pid``), else started
    detached and waited for (90 s); either way ``home/stack.json`` gets ``api``. Raises
    ``RuntimeError`` with one line when the port is held by anything else (see
    :func:`start_server`) or the server does not come up (see ``home/server.log``).
    """
    home = Path(home) if home else prefect_home()
    api, proc = start_server(port, home)
    if proc is not None:
        processes.wait_healthy(f"{api}/health", 90, proc)
    record_stack(home, api=api)
    return api


# ------------------------------------------------------------------------- the sandbox
@contextmanager
def sandbox_process(*args: str, log_dir: Path | None = None) -> Iterator[str]:
    """``python -m sandbox --port <free> *args`` for the block's duration; yields its base URL.

    The log goes to ``log_dir`` (default: ``PREFECT_HOME``).
    """
    port = processes.free_port()
    folder = log_dir or prefect_home()
    folder.mkdir(parents=True, exist_ok=True)
    log = (folder / f"sandbox-{port}.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "sandbox", "--port", str(port), *args],
        stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        processes.wait_healthy(f"{url}/__sandbox/health", 60, proc)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def sandbox(appointments: int = 2000, *args: str) -> Any:
    """A sandbox seeded with ``appointments`` (see :func:`sandbox_process`)."""
    return sandbox_process("--appointments", str(appointments), *args)


def start_sandbox(home: Path, data: Path, port: int, appointments: int = 2000) -> tuple[str, subprocess.Popen | None]:
    """``(url, proc)``: the stack's detached ``sandbox`` service on 127.0.0.1:``port``.

    Its records, grants and channels are kept in ``data/sandbox.db``; PID file and
    log in ``home``. A running one (its PID file names a live group that answers) is
    reused and ``proc`` is None; otherwise one is started (``appointments`` seeded)
    and the caller waits for ``url/__sandbox/health``. Raises ``RuntimeError`` when
    something this stack did not start answers on ``port``. ``up()`` and the demo
    share it, so the demo's blocks keep pointing at a sandbox that runs on.
    """
    url = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "sandbox", "--host", "127.0.0.1", "--port", str(port),
            "--db", str(data / "sandbox.db"), "--appointments", str(appointments), "--bulk-delay", "1"]
    return url, processes.ensure_service("sandbox", argv, home, processes.base_env(home), f"{url}/__sandbox/health")


# ------------------------------------------------------------------------ the receiver
#: The receiver's secrets (``PREFECT_HOME/receiver.env``), as its settings read them.
SECRET_NAMES = ("APPT_SYNC_RECEIVER_CHANNEL_TOKEN", "APPT_SYNC_RECEIVER_BOOKINGS_SECRET", "APPT_SYNC_RECEIVER_CALLBACK_SECRET")


def receiver_secrets(home: Path) -> dict[str, str]:
    """The receiver's secrets from ``home/receiver.env``, generated (mode 600) on first use."""
    path = home / "receiver.env"
    values: dict[str, str] = {}
    if path.exists():
        os.chmod(path, 0o600)
        for line in path.read_text().splitlines():
            name, sep, value = line.partition("=")
            if sep and name.strip() in SECRET_NAMES:
                values[name.strip()] = value.strip()
    missing = [n for n in SECRET_NAMES if not values.get(n)]
    if missing:
        values.update({n: secrets.token_urlsafe(24) for n in missing})  # 32 characters; Zoho allows 50
        home.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("# Secrets of the webhook receiver (make up). Keep private.\n")
            f.writelines(f"{n}={values[n]}\n" for n in SECRET_NAMES)
        os.replace(tmp, path)
    return {n: values[n] for n in SECRET_NAMES}


def start_receiver(home: Path, port: int, env: dict[str, str]) -> tuple[str, subprocess.Popen | None]:
    """``(url, proc)``: the webhook receiver on 127.0.0.1:``port`` (``env`` carries its secrets and settings).

    A running one that answers ``/healthz`` is reused (``proc`` None); otherwise the
    caller waits for ``url/healthz``.
    """
    url = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "deployments.webhook", "--host", "127.0.0.1", "--port", str(port)]
    return url, processes.ensure_service("receiver", argv, home, env, f"{url}/healthz")


# --------------------------------------------------------------------------- serve
def start_serve(home: Path, env: dict[str, str]) -> subprocess.Popen | None:
    """``python -m deployments.serve`` (every deployment and the ``sync-on-webhook`` trigger), unless it runs."""
    return processes.ensure_service("serve", [sys.executable, "-m", "deployments.serve"], home, env, None)


def wait_serving(api: str, since: float | None, proc: subprocess.Popen | None, timeout: float = 90) -> None:
    """Wait until ``sync-on-webhook`` is served (the runner polled it after ``since``) and its trigger exists."""
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=api, timeout=10) as http:
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"python -m deployments.serve exited with code {proc.returncode} (see serve.log)")
            r = http.get("/deployments/name/sync-appointments/sync-on-webhook")
            if r.status_code == 200:
                polled = r.json().get("last_polled")
                fresh = since is None or (polled and datetime.fromisoformat(polled.replace("Z", "+00:00")).timestamp() >= since - 1)
                related = http.get(f"/automations/related-to/prefect.deployment.{r.json()['id']}")
                if fresh and related.status_code == 200 and related.json():
                    return
            time.sleep(0.5)
    raise RuntimeError(f"the sync-on-webhook deployment was not served within {timeout:.0f} s (see serve.log)")
