"""Detached local processes: PID files with start times, process groups, health checks.

What ``make up`` / ``make down`` (:mod:`deployments.stack`) need to start a service
once and stop exactly what they started, on Linux (``/proc``):

* :func:`spawn` starts a command in a session (and process group) of its own,
  output to ``<home>/<name>.log``, and writes ``<home>/<name>.pid`` as
  ``<pid> <start time>``: the start time (clock ticks after boot, ``/proc/<pid>/stat``)
  tells our process from another that the system has since given the same PID.
* :func:`running` says whether the group a PID file names is still ours and alive;
  :func:`stop_pidfile` stops that group (SIGTERM, then SIGKILL) and removes the
  file; a stale file (dead or recycled PID) is only removed, never signalled.
* :func:`ensure_service` starts a service unless its PID file names a live group
  that answers its health URL.
* :func:`port_holder` says in one line what holds a port (a Prefect server of
  another checkout, or something else, with its PID and command line).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def prefect_home() -> Path:
    """``PREFECT_HOME`` (the Makefile sets ``.prefect/``)."""
    return Path(os.environ.get("PREFECT_HOME") or ROOT / ".prefect")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------- health
def healthy(url: str) -> bool:
    """Whether ``url`` answers 200 within 2 s."""
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def wait_healthy(url: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    """Wait until ``url`` answers 200; raises ``RuntimeError`` after ``timeout`` s or if ``proc`` died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if healthy(url):
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the process serving {url} exited with code {proc.returncode}")
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


def answers_soon(pidfile: Path, health: str, timeout: float = 60) -> bool:
    """Whether the live service of ``pidfile`` (still starting, or slow) answers ``health`` within ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while running(pidfile):
        if healthy(health):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return False


# ---------------------------------------------------------------- /proc and groups
def proc_stat(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name (state first), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rpartition(")")[2].split()


def cmdline(pid: int) -> list[str]:
    """``pid``'s argv (empty when unknown)."""
    try:
        return [a for a in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0") if a]
    except OSError:
        return []


def argv_port(pid: int) -> int | None:
    """The ``--port`` ``pid`` was started with, None if unknown."""
    argv = cmdline(pid)
    try:
        return int(argv[argv.index("--port") + 1])
    except (ValueError, IndexError):
        return None


def _start_time(pid: int) -> str | None:
    """The process's start time (clock ticks after boot), None if unknown."""
    fields = proc_stat(pid)
    return fields[19] if fields and len(fields) > 19 else None


def _reap(pid: int) -> None:
    """Collect ``pid``'s exit status if it is our child (so it does not linger as a zombie)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except (ChildProcessError, OSError):
        pass


def group_members(pgid: int) -> list[int]:
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
            fields = proc_stat(int(entry.name))
            if fields and len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
                members.append(int(entry.name))
    return members


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _wait_gone(pgid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while group_members(pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


# ---------------------------------------------------------------------- PID files
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
    fields = proc_stat(pid)
    if fields is None or fields[0] == "Z" or fields[2] != str(pid):
        return None  # gone, a zombie, or not a group leader: not a group we started
    if len(parts) > 1 and _start_time(pid) != parts[1]:
        return None  # the PID was recycled by another process
    return pid


def running(path: Path) -> int | None:
    """The PID of the service ``path`` names while its process group is alive."""
    pid = _owned_pid(path) if path.exists() else None
    return pid if pid is not None and group_members(pid) else None


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


# ------------------------------------------------------------------------ starting
def base_env(home: Path, api: str | None = None) -> dict[str, str]:
    """The environment of every started process: quiet, offline, inside ``home``."""
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("PREFECT_API_URL", None)
    # The CLI quiets its own console (deployments.cli_errors); the services' logs keep INFO.
    env.pop("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", None)
    if api:
        env["PREFECT_API_URL"] = api
    return env


def spawn(name: str, argv: list[str], home: Path, env: dict[str, str]) -> subprocess.Popen:
    """Start ``argv`` detached (own session), logging to ``home/<name>.log``, PID in ``home/<name>.pid``."""
    home.mkdir(parents=True, exist_ok=True)
    with (home / f"{name}.log").open("a") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=ROOT, start_new_session=True)
    _write_pidfile(home / f"{name}.pid", proc.pid)
    return proc


def ensure_service(name: str, argv: list[str], home: Path, env: dict[str, str], health: str | None) -> subprocess.Popen | None:
    """Start service ``name`` unless its PID file names a live group (and ``health`` answers).

    Returns the started process (the caller waits for ``health``), or None when the
    running one was kept. Raises ``RuntimeError`` when ``health`` answers from a
    process this stack did not start.
    """
    pidfile = home / f"{name}.pid"
    if running(pidfile) and (health is None or healthy(health) or answers_soon(pidfile, health)):
        return None
    stop_pidfile(pidfile)  # stale, or alive but not answering
    if health and healthy(health):
        raise RuntimeError(f"{health} answers, but not from a process this stack started (no PID file in {home}): stop it or pick another port")
    return spawn(name, argv, home, env)


# ---------------------------------------------------------------------------- ports
def port_taken(port: int) -> bool:
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


def port_holder(port: int, home: Path) -> str:
    """One line: what holds ``port`` (not this checkout's server) and how to choose another port."""
    kind = f"a Prefect server not started from this checkout (PREFECT_HOME={home})" if healthy(f"http://127.0.0.1:{port}/api/health") else "something that is not a Prefect server"
    pid = _listener(port)
    who = f" (PID {pid}: {' '.join(cmdline(pid))[:100]})" if pid else ""
    other = next((p for p in range(port + 1, port + 50) if not port_taken(p)), port + 1)
    return f"port {port} is held by {kind}{who}; stop it or choose another port, e.g. PREFECT_PORT={other} make up (or make demo)"
