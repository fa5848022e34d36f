"""The stack's Prefect server: reused only when this checkout started it, its UI on its own port.

``make up`` / ``make demo`` used to reuse any server answering on ``PREFECT_PORT``
(writing blocks and runs into somebody else's Prefect server, or crashing with a
long ValidationError on a server that is not Prefect's) and the UI of a server on
another port than 4200 called the API on 4200. One real server (``stack_server``,
shared with tests/test_schedules.py) and small stand-ins on free loopback ports.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from deployments import processes, services, stack


@pytest.fixture
def stand_in(request) -> Iterator[int]:
    """An HTTP server on a free loopback port answering every GET with ``request.param`` (a status code)."""
    status = request.param

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"true" if status == 200 else b"nope"
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def refusal(port: int, home) -> str:
    with pytest.raises(RuntimeError) as caught:
        services.ensure_prefect_server(port, home)
    message = str(caught.value)
    assert "\n" not in message, message
    return message


def test_the_ui_calls_the_api_on_its_own_port(stack_server):
    ui = httpx.get(f"http://127.0.0.1:{stack_server.port}/ui-settings", timeout=10).json()
    assert ui["api_url"] == stack_server.api
    assert urlsplit(ui["api_url"]).port == stack_server.port != 4200


def test_the_server_this_checkout_started_is_reused(stack_server):
    pidfile = stack_server.home / "server.pid"
    before = pidfile.read_text()
    assert services.ensure_prefect_server(stack_server.port, stack_server.home) == stack_server.api
    assert pidfile.read_text() == before
    assert services.read_stack(stack_server.home)["api"] == stack_server.api


def test_a_prefect_server_of_another_prefect_home_is_refused(stack_server, tmp_path):
    message = refusal(stack_server.port, tmp_path)
    assert message.startswith(f"port {stack_server.port} is held by a Prefect server not started from this checkout")
    assert f"PID {int((stack_server.home / 'server.pid').read_text().split()[0])}" in message and "PREFECT_PORT=" in message
    assert list(tmp_path.iterdir()) == []  # no stack.json, nothing started


def test_up_stops_at_a_foreign_server_before_starting_anything(stack_server, tmp_path):
    home = tmp_path / "prefect"
    ports = dict(prefect_port=stack_server.port, sandbox_port=processes.free_port(), receiver_port=processes.free_port())
    try:
        with pytest.raises(RuntimeError, match="held by a Prefect server not started from this checkout"):
            stack.up(home, tmp_path / "data", say=lambda _: None, **ports)
    finally:
        assert stack.down(home) == []


def test_this_checkouts_server_is_not_started_twice_on_another_port(stack_server):
    other = processes.free_port()
    message = refusal(other, stack_server.home)
    assert f"already runs on port {stack_server.port}" in message and f"PREFECT_PORT={stack_server.port}" in message


@pytest.mark.parametrize("stand_in", [200], indirect=True)
def test_a_prefect_like_server_is_refused(stand_in, tmp_path):
    message = refusal(stand_in, tmp_path)
    assert message.startswith(f"port {stand_in} is held by a Prefect server not started from this checkout")
    assert f"PID {os.getpid()}" in message and "PREFECT_PORT=" in message


@pytest.mark.parametrize("stand_in", [404], indirect=True)
def test_something_that_is_not_a_prefect_server_is_refused(stand_in, tmp_path):
    message = refusal(stand_in, tmp_path)
    assert message.startswith(f"port {stand_in} is held by something that is not a Prefect server (PID {os.getpid()}")
    assert "PREFECT_PORT=" in message


def test_prefects_own_background_server_is_left_to_prefect_server_stop(tmp_path):
    """``prefect server start --background`` writes the bare PID to the same ``server.pid``."""
    argv = [sys.executable, "-c", "import time; time.sleep(60)", "prefect.server.api.server:create_app"]  # its argv, as /proc shows it
    other = subprocess.Popen(argv)
    try:
        (tmp_path / "server.pid").write_text(str(other.pid))
        message = refusal(processes.free_port(), tmp_path)
        assert "`prefect server start --background`" in message and "`prefect server stop`" in message
        assert stack.down(tmp_path) == []
        assert other.poll() is None and (tmp_path / "server.pid").read_text() == str(other.pid)
    finally:
        other.kill()
        other.wait()
