"""Local services for the demo (and later ``make up``): a Prefect server and a sandbox.

The Prefect server runs on 127.0.0.1 with the project-local ``PREFECT_HOME``
(``.prefect/``), detached, with its PID in ``.prefect/server.pid`` so it can be
reused by the next run and stopped exactly. The sandbox runs as a child process.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

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


def ensure_prefect_server(port: int = 4200) -> str:
    """The API URL of a Prefect server on 127.0.0.1:``port``: reused when up, else started detached."""
    api = f"http://127.0.0.1:{port}/api"
    if _healthy(f"{api}/health"):
        return api
    home = prefect_home()
    home.mkdir(parents=True, exist_ok=True)
    log = (home / "server.log").open("a")
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=ROOT,
    )
    (home / "server.pid").write_text(str(proc.pid))
    wait_healthy(f"{api}/health", 90, proc)
    return api


def stop_pidfile(path: Path) -> bool:
    """Stop the process group named in ``path`` (if it is still ours) and remove the file."""
    if not path.exists():
        return False
    try:
        pid = int(path.read_text().strip())
        os.killpg(pid, signal.SIGTERM)
    except (ValueError, ProcessLookupError, PermissionError):
        pass
    path.unlink(missing_ok=True)
    return True


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
