"""Local services: the ``make up`` stack, whose Prefect server and sandbox ``make demo`` shares.

Everything binds to 127.0.0.1 and runs with a project-local ``PREFECT_HOME``
(``.prefect/``). Each detached service runs in its own process group, with its PID
(and the process's start time, so a recycled PID is never mistaken for ours) in
``PREFECT_HOME/<name>.pid`` and its output in ``PREFECT_HOME/<name>.log``:

==============  =========================================================  ===========
name            what                                                       port
==============  =========================================================  ===========
``server``      ``prefect server start`` (API and UI)                      4200
``sandbox``     ``python -m sandbox --db .data/sandbox.db``                8900
``receiver``    ``python -m deployments.webhook`` (Zoho calls -> events)   8765
``serve``       ``python -m deployments.serve`` (deployments, triggers)    none
==============  =========================================================  ===========

The Prefect server (``PREFECT_PORT``) is reused only when this checkout started it
(``server.pid`` in this ``PREFECT_HOME`` names it); anything else on the port (a
Prefect server of another checkout, something that is not a Prefect server) stops
``make up`` / ``make demo`` with one line naming it and how to pick another port.
Its UI calls the API on the same port (``PREFECT_UI_API_URL`` is set for it).

The demo (:mod:`deployments.demo`) starts (or reuses) the ``server`` and ``sandbox``
services, re-seeds the sandbox and saves the same blocks as ``up()``; both leave them
running. The addresses go to ``PREFECT_HOME/stack.json`` (:func:`record_stack`),
where ``appt-sync`` in a new shell finds the server.

``up()`` starts what is not running yet (PID file and health decide), onboards the
sandbox into the ``ZohoOAuth`` block ``zoho-sandbox`` and the ``AppointmentSyncConfig``
``sync-sandbox`` (state store ``.data/stack-state.db``), runs one full sync to set the base, then points the sandbox's
Bookings webhook and a CRM notification channel (kept in the ``NotificationChannel``
block ``crm-channel``, which ``renew-notification-channel`` renews) at the
receiver. From then on an
edit on either side reaches the other through receiver -> ``zoho.sync.requested``
event -> trigger -> ``sync-on-webhook`` run. The receiver's channel token, Bookings
secret and callback secret are generated once into ``PREFECT_HOME/receiver.env``
(mode 600) and never printed. ``down()`` stops exactly the process groups named by
PID files and removes the files.

``python -m deployments.stack up|down`` (``make up`` / ``make down``).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx

ROOT = Path(__file__).resolve().parents[1]

#: Detached services, in the order ``down()`` stops them (the server last).
SERVICES = ("serve", "receiver", "sandbox", "server")
DEFAULT_PORTS = {"prefect": 4200, "sandbox": 8900, "receiver": 8765}
OAUTH_BLOCK = "zoho-sandbox"
CONFIG_BLOCK = "sync-sandbox"
#: The ``NotificationChannel`` block of the CRM channel ``up()`` subscribes (what
#: ``renew-notification-channel`` renews), and the channel's id when it is new.
CHANNEL_BLOCK = "crm-channel"
CHANNEL_ID = 1000000068001
CHANNEL_EVENTS = ["Appointments__s.all"]
#: The receiver's secrets (``PREFECT_HOME/receiver.env``), as its settings read them.
SECRET_NAMES = ("APPT_SYNC_RECEIVER_CHANNEL_TOKEN", "APPT_SYNC_RECEIVER_BOOKINGS_SECRET", "APPT_SYNC_RECEIVER_CALLBACK_SECRET")
#: Defaults for the started processes (the caller's environment wins): the runner
#: looks for triggered runs every second; the receiver emits a lone id after 0.2 s
#: and then at most once per 2 s, which keeps a burst (and the echoes of the sync's
#: own writes) to a few flow runs.
#: See benchmarks/README.md ("webhook_latency.py") for the figures behind them.
TUNING = {"PREFECT_RUNNER_POLL_FREQUENCY": "1", "APPT_SYNC_RECEIVER_COALESCE_SECONDS": "2"}


def prefect_home() -> Path:
    """``PREFECT_HOME`` (the Makefile sets ``.prefect/``)."""
    return Path(os.environ.get("PREFECT_HOME") or ROOT / ".prefect")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def wait_healthy(url: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    """Wait until ``url`` answers 200; raises ``RuntimeError`` after ``timeout`` s or if ``proc`` died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _healthy(url):
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the process serving {url} exited with code {proc.returncode}")
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


# ------------------------------------------------------------ processes and PID files
def _proc_stat(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name (state first), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rpartition(")")[2].split()


def _start_time(pid: int) -> str | None:
    """The process's start time (clock ticks after boot), None if unknown."""
    fields = _proc_stat(pid)
    return fields[19] if fields and len(fields) > 19 else None


def _reap(pid: int) -> None:
    """Collect ``pid``'s exit status if it is our child (so it does not linger as a zombie)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except (ChildProcessError, OSError):
        pass


def _group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``."""
    _reap(pgid)
    proc = Path("/proc")
    if not proc.is_dir():  # not Linux: ask the kernel about the group as a whole
        try:
            os.killpg(pgid, 0)
            return [pgid]
        except (ProcessLookupError, PermissionError):
            return []
    members = []
    for entry in proc.iterdir():
        if entry.name.isdigit():
            fields = _proc_stat(int(entry.name))
            if fields and len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
                members.append(int(entry.name))
    return members


def _write_pidfile(path: Path, pid: int) -> None:
    """``<pid> <start time>``: the start time tells a recycled PID from ours."""
    path.write_text(f"{pid} {_start_time(pid) or ''}".strip() + "\n")


def _owned_pid(path: Path) -> int | None:
    """The PID in ``path`` if that process is still the group leader we started, else None."""
    try:
        parts = path.read_text().split()
        pid = int(parts[0])
    except (OSError, ValueError, IndexError):
        return None
    fields = _proc_stat(pid)
    if fields is None or fields[0] == "Z" or fields[2] != str(pid):
        return None  # gone, a zombie, or not a group leader: not a group we started
    if len(parts) > 1 and _start_time(pid) != parts[1]:
        return None  # the PID was recycled by another process
    return pid


def _running(path: Path) -> int | None:
    """The PID of the service ``path`` names while its process group is alive."""
    pid = _owned_pid(path) if path.exists() else None
    return pid if pid is not None and _group_members(pid) else None


def stop_pidfile(path: Path, timeout: float = 15.0) -> bool:
    """Stop the process group named in ``path`` (if it is still ours) and remove the file.

    SIGTERM, then SIGKILL for what is left after ``timeout`` seconds. Returns
    whether there was a file. A stale file (dead or recycled PID) is only removed.
    """
    if not path.exists():
        return False
    pid = _owned_pid(path)
    if pid is not None:
        _signal_group(pid, signal.SIGTERM)
        if not _wait_gone(pid, timeout):
            _signal_group(pid, signal.SIGKILL)
            _wait_gone(pid, 5)
    path.unlink(missing_ok=True)
    return True


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _wait_gone(pgid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _group_members(pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _spawn(name: str, argv: list[str], home: Path, env: dict[str, str]) -> subprocess.Popen:
    """Start ``argv`` detached (own session), logging to ``home/<name>.log``, PID in ``home/<name>.pid``."""
    home.mkdir(parents=True, exist_ok=True)
    with (home / f"{name}.log").open("a") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=ROOT, start_new_session=True)
    _write_pidfile(home / f"{name}.pid", proc.pid)
    return proc


def _base_env(home: Path, api: str | None = None) -> dict[str, str]:
    """The environment of every started process: quiet, offline, inside ``home``."""
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("PREFECT_API_URL", None)
    # The CLI quiets its own console (deployments.cli_errors); the services' logs keep INFO.
    env.pop("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", None)
    if api:
        env["PREFECT_API_URL"] = api
    return env


# ------------------------------------------------------------------ the stack file
#: ``PREFECT_HOME/stack.json``: what this checkout's stack serves, for ``appt-sync`` in a
#: new shell (which has neither ``PREFECT_HOME`` nor ``PREFECT_API_URL`` set).
STACK_FILE = "stack.json"


def record_stack(home: Path, **urls: str) -> None:
    """Merge ``urls`` (``api``, ``sandbox``, ``receiver``: base URLs) into ``home/stack.json``."""
    import json

    path = home / STACK_FILE
    data = read_stack(home) or {}
    data.update(urls)
    home.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def read_stack(home: Path | None = None) -> dict[str, str] | None:
    """``home/stack.json`` as written by :func:`record_stack` (``api`` is the Prefect API URL), or None."""
    import json

    try:
        data = json.loads(((Path(home) if home else prefect_home()) / STACK_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# ------------------------------------------------------------------ the Prefect server
#: What Prefect's own ``prefect server start --background`` runs (its ``server.pid``
#: holds the bare PID of this process, in the same file name as ours).
_PREFECT_BACKGROUND_APP = "prefect.server.api.server:create_app"


def _cmdline(pid: int) -> list[str]:
    """``pid``'s argv (empty when unknown)."""
    try:
        return [a for a in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0") if a]
    except OSError:
        return []


def _argv_port(pid: int) -> int | None:
    """The ``--port`` ``pid`` was started with (our server's argv), None if unknown."""
    argv = _cmdline(pid)
    try:
        return int(argv[argv.index("--port") + 1])
    except (ValueError, IndexError):
        return None


def _port_taken(port: int) -> bool:
    """Whether something holds 127.0.0.1:``port`` (bound or listening), as the server's own bind would see it."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _listener(port: int) -> int | None:
    """The PID of the process listening on TCP ``port`` (Linux, processes we may inspect), else None."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) > 9 and cols[3] == "0A" and int(cols[1].rpartition(":")[2], 16) == port:  # 0A: LISTEN
                inodes.add(f"socket:[{cols[9]}]")
    if not inodes:
        return None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) in inodes for fd in (entry / "fd").iterdir()):
                return int(entry.name)
        except OSError:
            continue
    return None


def _prefect_background_pid(home: Path) -> int | None:
    """The server Prefect's own ``prefect server start --background`` started in ``home``, while it runs.

    Prefect writes the bare PID to ``home/server.pid``, the name our PID file has
    (ours adds the start time): such a file is never taken for ours, nor removed.
    """
    try:
        parts = (home / "server.pid").read_text().split()
        pid = int(parts[0]) if len(parts) == 1 else None
    except (OSError, ValueError, IndexError):
        return None
    fields = _proc_stat(pid) if pid else None
    if fields is None or fields[0] == "Z" or _PREFECT_BACKGROUND_APP not in _cmdline(pid):
        return None
    return pid


def _port_holder(port: int, home: Path) -> str:
    """One line: what holds ``port`` (not this checkout's server) and how to choose another port."""
    kind = f"a Prefect server not started from this checkout (PREFECT_HOME={home})" if _healthy(f"http://127.0.0.1:{port}/api/health") else "something that is not a Prefect server"
    pid = _listener(port)
    who = f" (PID {pid}: {' '.join(_cmdline(pid))[:100]})" if pid else ""
    other = next((p for p in range(port + 1, port + 50) if not _port_taken(p)), port + 1)
    return f"port {port} is held by {kind}{who}; stop it or choose another port, e.g. PREFECT_PORT={other} make up (or make demo)"


def _start_server(port: int, home: Path) -> tuple[str, subprocess.Popen | None]:
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
    of its own, stopped as a group by :func:`stop_pidfile`. ``prefect server stop``
    cannot read our ``server.pid`` (``make down`` stops it).
    """
    api, pidfile = f"http://127.0.0.1:{port}/api", home / "server.pid"
    ours = _running(pidfile)
    if ours is not None:
        serving = _argv_port(ours)
        if serving not in (None, port):
            raise RuntimeError(f"this checkout's Prefect server already runs on port {serving} (PREFECT_HOME={home}): use PREFECT_PORT={serving}, or `make down` first")
        if _healthy(f"{api}/health") or _answers_soon(pidfile, f"{api}/health"):
            return api, None
        stop_pidfile(pidfile)  # ours, but hung
    background = _prefect_background_pid(home)
    if background is not None:
        raise RuntimeError(f"a Prefect server started by `prefect server start --background` (PID {background}) runs in PREFECT_HOME={home}: stop it with `prefect server stop` first")
    stop_pidfile(pidfile)  # a stale file (dead or recycled PID)
    if _port_taken(port):
        raise RuntimeError(_port_holder(port, home))
    argv = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    env = {**_base_env(home), "PREFECT_SERVER_API_HOST": "127.0.0.1", "PREFECT_SERVER_API_PORT": str(port), "PREFECT_UI_API_URL": api}
    return api, _spawn("server", argv, home, env)


def ensure_prefect_server(port: int = 4200, home: Path | None = None) -> str:
    """This checkout's Prefect server on 127.0.0.1:``port``; returns its API URL (``http://127.0.0.1:<port>/api``).

    ``home`` is its ``PREFECT_HOME`` (default :func:`prefect_home`). The server is
    reused when this stack started it (``home/server.pid``), else started detached and
    waited for (90 s); either way ``home/stack.json`` gets ``api``. Raises
    ``RuntimeError`` with one line when the port is held by anything else (see
    :func:`_start_server`) or the server does not come up (see ``home/server.log``).
    """
    home = Path(home) if home else prefect_home()
    api, proc = _start_server(port, home)
    if proc is not None:
        wait_healthy(f"{api}/health", 90, proc)
    record_stack(home, api=api)
    return api


# ------------------------------------------------------------------------- the sandbox
@contextmanager
def sandbox_process(*args: str, log_dir: Path | None = None) -> Iterator[str]:
    """``python -m sandbox --port <free> *args`` for the block's duration; yields its base URL.

    The log goes to ``log_dir`` (default: ``PREFECT_HOME``).
    """
    port = free_port()
    folder = log_dir or prefect_home()
    folder.mkdir(parents=True, exist_ok=True)
    log = (folder / f"sandbox-{port}.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "sandbox", "--port", str(port), *args],
        stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(f"{url}/__sandbox/health", 60, proc)
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
    return url, _ensure("sandbox", argv, home, _base_env(home), f"{url}/__sandbox/health")


def state_store_url(data: Path) -> str:
    """The state store of the ``sync-sandbox`` config (``make up`` and ``make demo``): ``data/stack-state.db``."""
    return f"sqlite:///{data / 'stack-state.db'}"


async def save_sync_config(config_block: str, oauth_block: str, data: Path) -> None:
    """Save the ``AppointmentSyncConfig`` ``config_block`` for the sandbox (the one ``up()`` and the demo use)."""
    from blocks import AppointmentSyncConfig

    await AppointmentSyncConfig(oauth_block=oauth_block, bookings_time_zone="Asia/Kolkata", state_store_url=state_store_url(data)).asave(config_block, overwrite=True)


# ---------------------------------------------------------------------------- secrets
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


# ------------------------------------------------------------------------------ up()
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


def _ports(prefect_port: int | None, sandbox_port: int | None, receiver_port: int | None) -> dict[str, int]:
    given = {"prefect": prefect_port, "sandbox": sandbox_port, "receiver": receiver_port}
    env = {"prefect": "PREFECT_PORT", "sandbox": "SANDBOX_PORT", "receiver": "RECEIVER_PORT"}
    return {k: int(v or os.environ.get(env[k]) or DEFAULT_PORTS[k]) for k, v in given.items()}


def _answers_soon(pidfile: Path, health: str, timeout: float = 60) -> bool:
    """Whether the live service of ``pidfile`` (still starting, or slow) answers ``health`` within ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while _running(pidfile):
        if _healthy(health):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return False


def _ensure(name: str, argv: list[str], home: Path, env: dict[str, str], health: str | None) -> subprocess.Popen | None:
    """Start service ``name`` unless its PID file names a live group (and ``health`` answers)."""
    pidfile = home / f"{name}.pid"
    if _running(pidfile) and (health is None or _healthy(health) or _answers_soon(pidfile, health)):
        return None
    stop_pidfile(pidfile)  # stale, or alive but not answering
    if health and _healthy(health):
        raise RuntimeError(f"{health} answers, but not from a process this stack started (no PID file in {home}): stop it or pick another port")
    return _spawn(name, argv, home, env)


def _wait_serving(api: str, since: float | None, proc: subprocess.Popen | None, timeout: float = 90) -> None:
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


async def _connect(sandbox_url: str, data: Path, oauth_block: str, config_block: str) -> bool:
    """Make sure ``oauth_block`` works with this sandbox (onboard if not) and save ``config_block``.

    Returns whether the sandbox was onboarded now.
    """
    from pydantic import SecretStr

    from blocks.zoho_oauth import ZohoOAuth
    from zoho.errors import ZohoError

    from .onboarding import onboard, sandbox_grant

    onboarded = False
    try:
        block = await ZohoOAuth.aload(oauth_block)
        if block.base_url != sandbox_url:
            raise ValueError("another sandbox")
        async with block.get_client() as zoho:
            await zoho.crm.get_watch()  # the grant still works (the sandbox may have been re-seeded)
    except (ValueError, ZohoError):
        client_id, secret, code, scopes = sandbox_grant(sandbox_url)
        await onboard(oauth_block, client_id=client_id, client_secret=SecretStr(secret), code=SecretStr(code), data_centre="CUSTOM", base_url=sandbox_url, scopes=scopes)
        onboarded = True
    await save_sync_config(config_block, oauth_block, data)
    return onboarded


async def subscribe_channel(oauth_block: str, notify_url: str, token: str, channel_block: str = CHANNEL_BLOCK) -> None:
    """Subscribe the CRM notification channel to ``notify_url`` with ``token`` and keep it in a block.

    The ``NotificationChannel`` block ``channel_block`` (created or updated: same
    channel id, the receiver's token) is what the daily ``renew-notification-channel``
    deployment renews, so the channel keeps the token the receiver checks.
    """
    from prefect.exceptions import ObjectNotFound
    from pydantic import SecretStr

    from blocks.notification_channel import NotificationChannel
    from blocks.zoho_oauth import ZohoOAuth
    from zoho.models import WatchChannel

    try:
        channel = await NotificationChannel.aload(channel_block)
    except (ValueError, ObjectNotFound):
        channel = NotificationChannel(oauth_block=oauth_block, channel_id=CHANNEL_ID, events=CHANNEL_EVENTS, notify_url=notify_url, token=SecretStr(token))
    channel.oauth_block, channel.notify_url, channel.token = oauth_block, notify_url, SecretStr(token)
    expiry = (datetime.now(timezone.utc) + timedelta(hours=channel.lifetime_hours)).replace(microsecond=0)
    watch = WatchChannel(channel_id=channel.channel_id, events=channel.events, channel_expiry=expiry, token=channel.token, notify_url=notify_url)
    async with (await ZohoOAuth.aload(oauth_block)).get_client() as zoho:
        (result,) = await zoho.crm.watch([watch])
    if not result.ok:
        raise RuntimeError(f"the sandbox refused the notification channel: {result.code} {result.message}")
    channel.channel_expiry = expiry
    await channel.asave(channel_block, overwrite=True)


async def unsubscribe_channel(oauth_block: str, channel_block: str = CHANNEL_BLOCK) -> None:
    """Unsubscribe the CRM notification channel of ``channel_block`` (the benchmark pauses notifications so)."""
    from blocks.notification_channel import NotificationChannel
    from blocks.zoho_oauth import ZohoOAuth

    channel = await NotificationChannel.aload(channel_block)
    async with (await ZohoOAuth.aload(oauth_block)).get_client() as zoho:
        await zoho.crm.unwatch([channel.channel_id])


def wire(sandbox_url: str, receiver_url: str, oauth_block: str, secret: dict[str, str]) -> None:
    """Point the sandbox's Bookings webhook and a CRM notification channel at the receiver.

    The Bookings secret travels in a header (not in the URL, which the sandbox's
    outbox log shows); the sandbox keeps its settings in memory, so this runs on
    every ``up()``.
    """
    hook = {"bookings_webhook_url": f"{receiver_url}/zoho/bookings/webhook", "bookings_webhook_headers": {"X-Zoho-Bookings-Secret": secret["APPT_SYNC_RECEIVER_BOOKINGS_SECRET"]}}
    httpx.put(f"{sandbox_url}/__sandbox/config", json=hook, timeout=10).raise_for_status()
    asyncio.run(subscribe_channel(oauth_block, f"{receiver_url}/zoho/crm/notifications", secret["APPT_SYNC_RECEIVER_CHANNEL_TOKEN"]))


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
    ports = _ports(prefect_port, sandbox_port, receiver_port)
    if not (home / "receiver.env").exists():
        stop_pidfile(home / "receiver.pid")  # new secrets: a running receiver would still check the old ones
    secret = receiver_secrets(home)
    sandbox_url, receiver_url = f"http://127.0.0.1:{ports['sandbox']}", f"http://127.0.0.1:{ports['receiver']}"

    # The server and the sandbox start side by side; the others need the server.
    api, server = _start_server(ports["prefect"], home)
    _, box = start_sandbox(home, data, ports["sandbox"], appointments)
    if server is not None:
        wait_healthy(f"{api}/health", 90, server)
    if box is not None:
        wait_healthy(f"{sandbox_url}/__sandbox/health", 60, box)
    env = {**TUNING, **_base_env(home, api)}
    receiver_env = {**env, **secret, "APPT_SYNC_RECEIVER_CONFIG_BLOCK": config_block, "APPT_SYNC_RECEIVER_STATE_STORE_URL": state_store_url(data)}
    hook = _ensure("receiver", [sys.executable, "-m", "deployments.webhook", "--host", "127.0.0.1", "--port", str(ports["receiver"])], home, receiver_env, f"{receiver_url}/healthz")
    serve_started = time.time()
    serve_env = {**env, "SYNC_CONFIG_BLOCK": config_block, "ZOHO_OAUTH_BLOCK": oauth_block, "NOTIFICATION_CHANNEL_BLOCK": CHANNEL_BLOCK}
    runner = _ensure("serve", [sys.executable, "-m", "deployments.serve"], home, serve_env, None)
    record_stack(home, api=api, sandbox=sandbox_url, receiver=receiver_url)
    stack = Stack(home, api, sandbox_url, receiver_url, [n for n, p in (("server", server), ("sandbox", box), ("receiver", hook), ("serve", runner)) if p is not None])

    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api}):
        onboarded = asyncio.run(_connect(sandbox_url, data, oauth_block, config_block))
        if onboarded:
            say(f"onboarded the sandbox: blocks '{oauth_block}' (ZohoOAuth) and '{config_block}' (AppointmentSyncConfig)")
        if stack.started or onboarded:
            say("running one full sync to set the base ...")
            from flows.sync_appointments import sync_appointments

            stack.summary = asyncio.run(sync_appointments(config_block=config_block, mode="full"))
            s = stack.summary
            say(f"full sync: {s.links} links, {s.agreed} agreed, {s.applied} applied, {s.failed} failed, {s.conflicts} conflicts")
        if hook is not None:
            wait_healthy(f"{receiver_url}/healthz", 60, hook)
        _wait_serving(api, serve_started if runner is not None else None, runner)
        wire(sandbox_url, receiver_url, oauth_block, secret)
    return stack


def down(home: Path | str | None = None) -> list[str]:
    """Stop the services whose PID files are in ``home`` (default ``PREFECT_HOME``); returns their names.

    Each named process group gets SIGTERM, then SIGKILL after 15 s; every PID file
    is removed (a stale one only removed). A ``server.pid`` written by Prefect's own
    ``prefect server start --background`` is not ours: it and its server are left alone.
    """
    home = Path(home) if home else prefect_home()
    skip = {"server"} if _prefect_background_pid(home) is not None else set()
    return [name for name in SERVICES if name not in skip and stop_pidfile(home / f"{name}.pid")]


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
