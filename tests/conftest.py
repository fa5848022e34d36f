"""Shared fixtures: a real sandbox server on a free loopback port, and a receiver for its POSTs.

The sandbox runs as a subprocess (``python -m sandbox``) for the whole session;
every test that uses the ``sandbox`` fixture gets it freshly re-seeded with the
test settings below, so tests do not see each other's writes, tokens or faults.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request

from deployments import processes, services, stack

ROOT = Path(__file__).resolve().parents[1]

#: Settings every test starts from (see ``sandbox/config.py``).
TEST_CONFIG: dict[str, Any] = {
    "appointments": 300,
    "seed": 7,
    "anchor_date": "",
    "bulk_delay": 0.3,
    "bulk_page_size": 200_000,
    "bulk_downloads_per_minute": 10,
    "token_ttl": 3600,
    "token_mint_limit": 10,
    "token_window": 600,
    "max_active_tokens": 15,
    "ask_to_mark_completed": True,
    "job_sheet_mandatory": False,
    "refuse_earlier_reschedules": False,
    "bookings_webhook_url": "",
    "bookings_webhook_headers": {},
    "allow_remote_callbacks": False,
    "public_url": "",
    "bulk_result_ttl": 86_400,
    "bulk_job_failure_rate": 0.0,
    "org_time_zone": "Asia/Kolkata",
    "limits_enforced": False,
    "bookings_plan": "Premium",
    "bookings_limit_status": 429,
    "crm_edition": "Enterprise",
    "crm_users": 10,
    "crm_credit_limit": 0,
    "crm_bulk_read_credits": 50,
    "drop_bookings_webhooks": 0.0,
    "drop_crm_notifications": 0.0,
    "drop_seed": None,
}

#: One TLS context for every test client: httpx builds a new one per client
#: otherwise (~0.1 s each), although the sandbox is plain HTTP on loopback.
TLS = ssl.create_default_context()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str, timeout: float = 30.0) -> None:
    """Poll ``url`` until it answers 200, or fail the test run."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up within {timeout} s")


@contextlib.contextmanager
def sandbox_process(log_dir: Path, *args: str) -> Iterator[str]:
    """Run ``python -m sandbox --port <free> *args`` until the block ends; yields its base URL."""
    with services.sandbox_process(*args, log_dir=log_dir) as url:
        yield url


@pytest.fixture(scope="session")
def sandbox_server(tmp_path_factory: pytest.TempPathFactory):
    """``python -m sandbox`` on a free port for the session; yields its base URL."""
    with sandbox_process(tmp_path_factory.mktemp("sandbox"), "--appointments", "300", "--seed", "7", "--bulk-delay", "0.3") as url:
        yield url


@dataclass
class Sandbox:
    """A freshly reset sandbox and helpers to drive it over HTTP."""

    url: str
    http: httpx.Client
    creds: dict[str, str] = field(default_factory=dict)

    def mint(self, **overrides: str) -> httpx.Response:
        """``POST /oauth/v2/token`` with the sandbox's refresh token (form body)."""
        data = {
            "grant_type": "refresh_token",
            "client_id": self.creds["client_id"],
            "client_secret": self.creds["client_secret"],
            "refresh_token": self.creds["refresh_token"],
            **overrides,
        }
        return self.http.post("/oauth/v2/token", data=data)

    def token(self) -> str:
        """A fresh access token."""
        body = self.mint().json()
        assert "access_token" in body, body
        return body["access_token"]

    def headers(self, token: str | None = None) -> dict[str, str]:
        """``Authorization: Zoho-oauthtoken ...`` headers."""
        return {"Authorization": f"Zoho-oauthtoken {token or self.token()}"}

    def client(self, token: str | None = None) -> httpx.Client:
        """An httpx client on the sandbox with a valid token."""
        return httpx.Client(base_url=self.url, headers=self.headers(token), timeout=30, verify=TLS)

    def config(self, **changes: Any) -> dict[str, Any]:
        """Change sandbox settings."""
        r = self.http.put("/__sandbox/config", json=changes)
        assert r.status_code == 200, r.text
        return r.json()

    def faults(self, **groups: dict[str, float]) -> None:
        """Set faults per route group."""
        r = self.http.put("/__sandbox/faults", json=groups)
        assert r.status_code == 200, r.text

    def stats(self) -> dict[str, Any]:
        """``GET /__sandbox/stats``."""
        return self.http.get("/__sandbox/stats").json()

    def dump(self, **params: str) -> dict[str, Any]:
        """``GET /__sandbox/dump``."""
        return self.http.get("/__sandbox/dump", params=params).json()

    def drain(self) -> None:
        """Wait until the sandbox has sent every queued notification, webhook and callback."""
        self.http.post("/__sandbox/outbox/drain").raise_for_status()


@pytest.fixture
def sandbox(sandbox_server: str):
    """The session's sandbox, re-seeded with :data:`TEST_CONFIG` for this test."""
    with httpx.Client(base_url=sandbox_server, timeout=60, verify=TLS) as http:
        r = http.put("/__sandbox/config", json=TEST_CONFIG)
        assert r.status_code == 200, r.text
        http.delete("/__sandbox/faults").raise_for_status()
        http.post("/__sandbox/reset", json={}).raise_for_status()
        creds = http.get("/__sandbox/credentials").json()
        yield Sandbox(sandbox_server, http, creds)


@dataclass
class Receiver:
    """A loopback HTTP server that records every POST it receives."""

    url: str
    received: list[dict[str, Any]] = field(default_factory=list)
    status_code: int = 200

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0) -> dict[str, Any]:
        """The first received request (``{"path", "headers", "json"}``) matching ``predicate``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for item in list(self.received):
                if predicate(item):
                    return item
            time.sleep(0.05)
        raise AssertionError(f"nothing matching arrived within {timeout} s; got {self.received!r}")


@pytest.fixture(scope="session")
def _receiver_server():
    app = FastAPI()
    receiver = Receiver(url="")

    @app.post("/{path:path}")
    async def collect(path: str, request: Request):
        try:
            body = await request.json()
        except ValueError:
            body = None
        receiver.received.append({"path": "/" + path, "headers": dict(request.headers), "query": dict(request.query_params), "json": body})
        from fastapi.responses import JSONResponse

        return JSONResponse({"ok": True}, status_code=receiver.status_code)

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    receiver.url = f"http://127.0.0.1:{port}"
    yield receiver
    server.should_exit = True
    thread.join(5)


@pytest.fixture
def receiver(_receiver_server: Receiver) -> Receiver:
    """The receiver, emptied for this test."""
    _receiver_server.received.clear()
    _receiver_server.status_code = 200
    return _receiver_server


@pytest.fixture(scope="session")
def prefect_api() -> str:
    """A temporary Prefect server for the session (``prefect_test_harness``); yields its API URL."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield PREFECT_API_URL.value()


@dataclass
class StackServer:
    """This checkout's Prefect server as ``make up`` / ``make demo`` start it (``services.ensure_prefect_server``)."""

    api: str
    port: int
    home: Path

    @property
    def log(self) -> Path:
        return self.home / "server.log"


@pytest.fixture(scope="session")
def stack_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackServer]:
    """A real Prefect server started by ``services.ensure_prefect_server`` on a free port, own ``PREFECT_HOME``.

    Its scheduler loops every second (``..._SCHEDULER_LOOP_SECONDS``, 60 s by
    default) and its log has INFO lines of the root logger, so ``server.log`` shows
    each ``schedule_deployments()`` run of the scheduler (tests/test_schedules.py).
    ``stack.down`` stops it at the end; no process of its group may be left.
    """
    home, port = tmp_path_factory.mktemp("stack-prefect"), free_port()
    with pytest.MonkeyPatch.context() as mp:  # only the server's environment (``processes.spawn`` copies os.environ)
        mp.setenv("PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS", "1")
        mp.setenv("PREFECT_LOGGING_ROOT_LEVEL", "INFO")
        try:
            api = services.ensure_prefect_server(port, home)
        except BaseException:
            stack.down(home)
            raise
    pid = int((home / "server.pid").read_text().split()[0])
    try:
        yield StackServer(api, port, home)
    finally:
        stopped = stack.down(home)
        assert stopped == ["server"] and not processes.group_members(pid), f"the Prefect server's group {pid} outlived stack.down()"


def _not_prefect_api(request: httpx.Request) -> bool:
    """pytest-httpx's ``should_mock``: every call but the Prefect API's (``/api/...``)."""
    return not request.url.path.startswith("/api/")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Let Prefect's own calls through pytest-httpx's mock.

    Prefect's log and event workers flush records of earlier tests in the background
    (``POST /api/logs/``); caught by the mock of a later ``httpx_mock`` test, such a
    call failed that test at teardown as an unexpected request. Zoho's paths
    (``/oauth``, ``/crm``, ``/bookings``) are still all mocked.
    """
    for item in items:
        item.add_marker(pytest.mark.httpx_mock(should_mock=_not_prefect_api))
