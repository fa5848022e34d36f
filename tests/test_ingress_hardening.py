"""Issue 14, B3-B7 and A9: what comes in from outside cannot stop a run or reach a stranger.

* **B3, ids.** The receiver keeps the CRM record ids of a notification (1-25 ASCII
  digits) and drops the rest, each with a reason in the answer and a warning; a
  webhook's ``booking_id`` must look like one (``#AN-00014``). Reads by id are cut
  into requests whose ``?ids=`` fits (count and URL length), over HTTP against the sandbox.
* **B4, nesting.** JSON nested deeper than 32 levels answers 400 before it is parsed
  (no ``RecursionError``, nothing logged as an error); the Bookings and callback routes
  check their secret before they read the body.
* **B5, the token stays home.** A ``download_url`` on another scheme, host or port (a
  loopback server on another port counts) gets nothing, not even a connection; the
  flow fails with :class:`~zoho.errors.ForeignHostError` on a forged callback.
* **B7, no token in a validation error.** A token answer that does not validate raises
  ``ZohoError`` ``INVALID_TOKEN_ANSWER`` whose text, traceback and chain hold no part
  of the token.
* **A9, the Bookings time zone.** Onboarding saves the workspace's zone: the sandbox's
  own for the local stack (so the window agrees with what the sandbox reads), the one
  ``appt-sync auth --bookings-time-zone`` gives for a real organisation, checked as an
  IANA name with a one-line error.

B6 (the callback secret kept out of flow-run parameters) is in ``tests/test_security.py``.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import traceback
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from pytest_httpx import HTTPXMock

from deployments import onboarding
from deployments.webhook import MAX_JSON_DEPTH, ReceiverSettings, booking_id_problem, create_receiver, crm_id_problem, json_depth
from sync import bulk_runs
from sync.store import open_store
from tests.conftest import ROOT
from zoho.auth import StaticTokenProvider
from zoho.clients import MAX_IDS_QUERY_CHARS, AccountsClient, ZohoClient, chunk_ids
from zoho.datacentres import Endpoints
from zoho.errors import ForeignHostError, ZohoError
from zoho.models import TokenResponse
from zoho.timefmt import from_bookings

TOKEN, SECRET, CB = "chan-tok-123", "bk-secret", "cb-secret"
NOTIFY = "/zoho/crm/notifications"
REAL_IDS = ["5545974000002000001", "5545974000002000011", "5545974000002000021"]


# ===================================================================== the receiver
class Receiver:
    """The webhook receiver app over ASGI, with the events it emitted."""

    def __init__(self, tmp_path: Path) -> None:
        self.store = f"sqlite:///{tmp_path / 'state.db'}"
        self.engine = open_store(self.store)
        bulk_runs.record_job_created(self.engine, "run-1", 1, "Appointments__s", "555", None)
        self.events: list[tuple[str, dict[str, Any]]] = []
        settings = ReceiverSettings(channel_token=TOKEN, bookings_secret=SECRET, callback_secret=CB, coalesce_seconds=3600, leading_edge=False,
                                    state_store_url=self.store, config_block="sync-test")
        self.app = create_receiver(settings, emit=lambda event, resource, payload: self.events.append((event, payload)))
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://receiver")

    @property
    def pending(self) -> dict[str, set[str]]:
        return self.app.state.coalescer.pending

    def quiet(self) -> bool:
        return not self.events and not any(self.pending.values())

    async def notify(self, ids: Any, **extra: Any) -> httpx.Response:
        body = {"token": TOKEN, "module": "Appointments__s", "operation": "update", "ids": ids, "channel_id": "1000000068001", **extra}
        return await self.client.post(NOTIFY, content=json.dumps(body).encode())


@pytest.fixture
async def receiver(tmp_path):
    r = Receiver(tmp_path)
    yield r
    await r.client.aclose()
    r.engine.dispose()


# -------------------------------------------------------------------- B3: ids
async def test_a_huge_id_is_dropped_and_the_real_ids_are_queued(receiver, caplog):
    huge = "7" * 100_000
    with caplog.at_level(logging.WARNING, logger="zoho_appointment_sync.webhook"):
        r = await receiver.notify([REAL_IDS[0], huge, *REAL_IDS[1:]])
    assert r.status_code == 202, r.text
    answer = r.json()
    assert answer["accepted"] == 3 and answer["dropped_count"] == 1
    [dropped] = answer["dropped"]
    assert dropped["id"] == "7" * 40 + "..." and dropped["reason"] == "100,000 characters (at most 25 digits)"
    [(event, payload)] = receiver.events
    assert event == "zoho.crm.notification" and payload["ids"] == REAL_IDS and payload["dropped"] == 1
    assert receiver.pending["crm_ids"] == set(REAL_IDS)
    [line] = [rec.getMessage() for rec in caplog.records if "dropped" in rec.getMessage()]
    assert "1 of 4 ids dropped" in line and "100,000 characters" in line and huge not in line and len(line) < 400


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("", "empty"),
        ("12a", "not all ASCII digits"),
        (" 123", "not all ASCII digits"),
        ("123\n", "not all ASCII digits"),
        ("１２３", "not all ASCII digits"),  # full-width digits: str.isdigit() says yes, Zoho says no
        ("1" * 26, "26 characters (at most 25 digits)"),
        (-5, "a negative number"),
        (1.5, "a number, not a string or integer"),
        (True, "a boolean, not a string or integer"),
        (None, "null, not a string or integer"),
        ({"id": "1"}, "an object, not a string or integer"),
        (["1"], "an array, not a string or integer"),
        ("1 OR 1=1", "not all ASCII digits"),
    ],
)
async def test_each_kind_of_bad_crm_id_is_dropped_with_its_reason(receiver, bad, reason):
    assert crm_id_problem(bad) == reason
    r = await receiver.notify([bad, "1" * 25, 42])
    assert r.status_code == 202, r.text
    assert r.json()["accepted"] == 2 and [d["reason"] for d in r.json()["dropped"]] == [reason]
    assert receiver.pending["crm_ids"] == {"1" * 25, "42"}  # the integer id as Zoho's digits


async def test_a_notification_with_no_good_id_is_refused_and_says_why(receiver):
    r = await receiver.notify(["abc", "", "9" * 30])
    assert r.status_code == 422
    assert "no CRM record id" in r.json()["error"] and r.json()["dropped_count"] == 3
    assert [d["reason"] for d in r.json()["dropped"]] == ["not all ASCII digits", "empty", "30 characters (at most 25 digits)"]
    assert receiver.quiet()


async def test_the_answer_lists_at_most_twenty_dropped_ids_and_counts_them_all(receiver):
    r = await receiver.notify([f"x{i}" for i in range(500)] + REAL_IDS)
    assert r.status_code == 202 and r.json()["accepted"] == 3
    assert r.json()["dropped_count"] == 500 and len(r.json()["dropped"]) == 20
    assert len(r.content) < 3_000


@pytest.mark.parametrize("good", ["#AN-00014", "#AN-1", "AN-00014", "#BK_2026.7", "4500000000123", "#" + "A" * 63])
def test_booking_ids_of_the_bookings_pattern_pass(good):
    assert booking_id_problem(good) is None


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("#", "not '#' then ASCII letters, digits, '-', '_' or '.'"),
        ("#AN 00014", "not '#' then ASCII letters, digits, '-', '_' or '.'"),
        ("#AN-00014\n", "not '#' then ASCII letters, digits, '-', '_' or '.'"),
        ("#-AN", "not '#' then ASCII letters, digits, '-', '_' or '.'"),
        ("#ÄN-1", "not '#' then ASCII letters, digits, '-', '_' or '.'"),
        ("Robert'); DROP TABLE bookings;--", "not '#' then ASCII letters, digits, '-', '_' or '.'"),
        ("#" + "A" * 64, "65 characters (at most 64)"),
        ("A" * 100_000, "100,000 characters (at most 64)"),
        (14, "int, not a string"),
        ({"id": "#AN-1"}, "an object, not a string"),
    ],
)
async def test_a_webhook_with_a_bad_booking_id_is_refused(receiver, bad, reason):
    assert booking_id_problem(bad) == reason
    r = await receiver.client.post("/zoho/bookings/webhook", json={"booking_id": bad, "status": "CANCEL"}, headers={"X-Zoho-Bookings-Secret": SECRET})
    assert r.status_code == 422 and reason in r.json()["error"] and len(r.content) < 400
    assert receiver.quiet()
    ok = await receiver.client.post("/zoho/bookings/webhook", json={"booking_id": "#AN-00014"}, headers={"X-Zoho-Bookings-Secret": SECRET})
    assert ok.status_code == 202 and receiver.pending["booking_ids"] == {"#AN-00014"}


def test_chunk_ids_cuts_by_count_and_by_url_length():
    ids = [str(10**24 + i) for i in range(250)]  # 25 digits each
    chunks = chunk_ids(ids, 100)
    assert [len(c) for c in chunks] == [100, 100, 50] and sum(chunks, []) == ids
    long_ids = [f"id-{i:03d}-" + "é" * 20 for i in range(100)]  # 128 URL characters each (é is %C3%A9)
    chunks = chunk_ids(long_ids, 100)
    assert sum(chunks, []) == long_ids and len(chunks) > 1
    for chunk in chunks:
        assert len(httpx.QueryParams({"ids": ",".join(chunk)}).__str__()) <= MAX_IDS_QUERY_CHARS + len("ids=")
    with pytest.raises(ValueError, match="100,000 characters") as refused:
        chunk_ids(["1", "2" * 100_000], 100)
    assert "2" * 50 not in str(refused.value)
    assert chunk_ids([], 100) == []


async def test_reads_by_id_fit_their_urls_against_the_sandbox(sandbox):
    """250 real ids read through ``chunk_ids``: three requests, every record, each URL short."""
    ids = [r["id"] for r in sandbox.dump(module="Appointments__s")["Appointments__s"]][:250]
    assert len(ids) == 250
    urls: list[int] = []

    async def on_request(request: httpx.Request) -> None:
        urls.append(len(str(request.url)))

    async with httpx.AsyncClient(event_hooks={"request": [on_request]}) as http:
        zoho = ZohoClient(Endpoints.for_data_centre("CUSTOM", sandbox.url), StaticTokenProvider(sandbox.token()), http=http)
        got: list[str] = []
        for chunk in chunk_ids(ids, 100):
            page = await zoho.crm.get_records("Appointments__s", ["id", "Booking_Id"], ids=chunk)
            got.extend(str(r["id"]) for r in page.data)
    assert sorted(got) == sorted(ids)
    assert len(urls) == 3 and max(urls) < 4_000, urls


# ----------------------------------------------------------------- B4: nesting
def nested(levels: int) -> str:
    return "[" * levels + "]" * levels


@pytest.mark.parametrize("route", ["crm", "bookings", "callback"])
async def test_deeply_nested_json_answers_400_without_a_traceback(receiver, route, caplog):
    body = {"crm": {"token": TOKEN, "module": "Appointments__s", "operation": "update", "ids": json.loads(nested(10))},
            "bookings": {"booking_id": "#AN-1"}, "callback": {"id": "555", "state": "COMPLETED"}}[route]
    text = json.dumps(body)[:-1] + ', "deep": ' + nested(2_000) + "}"
    path, params, headers = {"crm": (NOTIFY, {}, {}), "bookings": ("/zoho/bookings/webhook", {}, {"X-Zoho-Bookings-Secret": SECRET}),
                             "callback": ("/zoho/crm/bulk-read/callback", {"secret": CB}, {})}[route]
    with caplog.at_level(logging.DEBUG):
        r = await receiver.client.post(path, content=text.encode(), params=params, headers=headers)
    assert r.status_code == 400 and r.json() == {"error": f"the JSON is nested deeper than {MAX_JSON_DEPTH} levels"}
    assert receiver.quiet() and bulk_runs.get_job(receiver.engine, "555").state == "ADDED"
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR or rec.exc_info]
    assert "RecursionError" not in caplog.text and "Traceback" not in caplog.text


async def test_the_depth_limit_is_exact_and_brackets_in_strings_do_not_count(receiver):
    def notification(extra: str) -> bytes:
        return (json.dumps({"token": TOKEN, "module": "Appointments__s", "operation": "update", "ids": ["1"]})[:-1] + f', "x": {extra}}}').encode()

    assert (await receiver.client.post(NOTIFY, content=notification(nested(MAX_JSON_DEPTH - 1)))).status_code == 202  # 1 + 31 levels
    assert (await receiver.client.post(NOTIFY, content=notification(nested(MAX_JSON_DEPTH)))).status_code == 400  # 33 levels
    in_string = json.dumps("[" * 5_000 + '\\"{' * 100)
    assert (await receiver.client.post(NOTIFY, content=notification(in_string))).status_code == 202
    assert json_depth('{"a": "[[[", "b": ["\\"]["]}') == 2 and json_depth(nested(10_000), limit=32) == 33


async def test_a_utf16_body_still_parses(receiver):
    body = json.dumps({"token": TOKEN, "module": "Appointments__s", "operation": "update", "ids": ["123"]}).encode("utf-16")
    assert (await receiver.client.post(NOTIFY, content=body)).status_code == 202
    assert receiver.pending["crm_ids"] == {"123"}


@pytest.mark.parametrize("route", ["bookings", "callback"])
async def test_secret_routes_check_the_caller_before_reading_the_body(receiver, route):
    read: list[int] = []

    async def body():
        read.append(1)
        yield nested(2_000).encode()

    path = {"bookings": "/zoho/bookings/webhook", "callback": "/zoho/crm/bulk-read/callback"}[route]
    r = await receiver.client.post(path, content=body(), params={"secret": "wrong"})
    assert r.status_code == 401 and read == []  # the body was never pulled
    assert receiver.quiet()


# ------------------------------------------------------------ B5: the token stays home
class Stranger:
    """Another host: a TCP listener on another loopback port that records every connection it
    accepts and the first bytes sent on it (a request line and headers, any method)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.sock.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.received: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(1)
                try:
                    self.received.append(conn.recv(65_536))
                except OSError:
                    self.received.append(b"")
                conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nPK")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def stranger():
    s = Stranger()
    yield s
    s.close()


@pytest.fixture
async def zoho_sandbox(sandbox):
    """A client of the sandbox (its CRM and Bookings calls carry a real token), and the token."""
    token = sandbox.token()
    async with ZohoClient(Endpoints.for_data_centre("CUSTOM", sandbox.url), StaticTokenProvider(token)) as zoho:
        yield zoho, token


def foreign_urls(sandbox_url: str, stranger: str) -> list[str]:
    """URLs of another origin: a server on another port, the other scheme, a scheme-relative one."""
    host_port = stranger.split("://", 1)[1]
    return [
        f"{stranger}/steal/crm/bulk/v7/read/1/result",
        f"//{host_port}/steal/scheme-relative",
        sandbox_url.replace("http://", "https://") + "/crm/bulk/v7/read/1/result",
        f"http://localhost:{sandbox_url.rsplit(':', 1)[1]}/crm/bulk/v7/read/1/result",  # same port, another host name
    ]


async def test_a_foreign_download_url_gets_nothing_not_even_a_connection(sandbox, zoho_sandbox, stranger):
    zoho, token = zoho_sandbox
    for url in foreign_urls(sandbox.url, stranger.url):
        sink = io.BytesIO()
        with pytest.raises(ForeignHostError) as refused:
            await zoho.crm.download_bulk_result(url, sink)
        error = refused.value
        assert error.code == "FOREIGN_HOST" and not error.transient and sink.getvalue() == b""
        assert error.details["allowed"] == sandbox.url and "steal" not in str(error) and token not in str(error)
    assert stranger.received == []  # the stranger heard nothing


async def test_the_auth_refuses_every_request_to_another_origin(zoho_sandbox, stranger):
    zoho, token = zoho_sandbox
    request = zoho.http.build_request("POST", f"{stranger.url}/steal")
    with pytest.raises(ForeignHostError):
        await zoho.http.send(request, auth=zoho.crm.auth)
    assert "Authorization" not in request.headers and stranger.received == []
    assert (await zoho.crm.get_watch()) is not None  # its own host still gets the token


async def test_relative_and_same_origin_download_urls_still_download(sandbox, zoho_sandbox):
    from zoho.models import BulkReadQuery, BulkReadRequest, ModuleRef

    zoho, _ = zoho_sandbox
    job = await zoho.crm.create_bulk_read(BulkReadRequest(query=BulkReadQuery(module=ModuleRef(api_name="Appointments__s"), fields=["id"])))
    deadline = time.monotonic() + 30
    while (status := await zoho.crm.get_bulk_read(job.id)).state.value != "COMPLETED":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    relative = status.result.download_url
    assert relative.startswith("/")
    for url in (relative, sandbox.url + relative, sandbox.url.replace("http://", "HTTP://") + relative):
        sink = io.BytesIO()
        assert await zoho.crm.download_bulk_result(url, sink) > 0 and sink.getvalue()[:2] == b"PK"


async def test_a_forged_callback_fails_the_read_and_the_stranger_gets_nothing(sandbox, prefect_api, tmp_path, stranger):
    """The flow waits for the callback through the store; a forged one (state COMPLETED, an absolute
    ``download_url`` on another port) arrives first. The page fails with ForeignHostError, at once."""
    from blocks import ZohoOAuth
    from flows.bulk_read import bulk_read

    block = f"forged-{uuid.uuid4().hex[:8]}"
    await ZohoOAuth(client_id=sandbox.creds["client_id"], client_secret=SecretStr(sandbox.creds["client_secret"]),
                    refresh_token=SecretStr(sandbox.creds["refresh_token"]), data_centre="CUSTOM", base_url=sandbox.url).asave(block)
    sandbox.config(bulk_delay=5.0)  # Zoho's own callback comes long after the forged one
    store_url = f"sqlite:///{tmp_path / 'state.db'}"
    engine = open_store(store_url)
    stop = threading.Event()
    forged: list[str] = []

    def forge() -> None:
        """A stranger who knows the callback secret: answer every new job with its own download URL."""
        from sqlmodel import Session, select

        from sync.tables import BulkJob

        while not stop.is_set():
            with Session(engine) as s:
                jobs = [j.id for j in s.exec(select(BulkJob)) if j.state != "COMPLETED"]  # the flow's own status read may come after
            for job_id in jobs:
                bulk_runs.record_callback(engine, {"data": [{"id": job_id, "state": "COMPLETED", "result": {
                    "page": 1, "count": 1, "more_records": False, "download_url": f"{stranger.url}/steal/{job_id}"}}]})
                forged.append(job_id)
            time.sleep(0.02)

    thread = threading.Thread(target=forge, daemon=True)
    thread.start()
    started = time.monotonic()
    try:
        with pytest.raises(ForeignHostError, match="refused to send the access token"):
            await bulk_read(oauth_block=block, store_url=store_url, work_dir=str(tmp_path / "work"), callback_url=f"{sandbox.url}/no-such-receiver",
                            poll_seconds=0.1, poll_max_seconds=60, timeout_seconds=30)
    finally:
        stop.set()
        thread.join(5)
        engine.dispose()
    assert forged and time.monotonic() - started < 20  # not retried: it failed at once
    assert stranger.received == []


# ------------------------------------------------------- B7: no token in the error
BAD_ANSWERS = [
    {"expires_in_sec": "soon"},  # a model-level error: pydantic showed the whole answer
    {"expires_in": "an hour"},
    {"api_domain": 5},
    {"refresh_token": 123456789012345678901234},
    {"token_type": ["Bearer"], "scope": {"a": 1}},
]


@pytest.mark.parametrize("extra", BAD_ANSWERS, ids=["expires_in_sec", "expires_in", "api_domain", "refresh_token", "two-fields"])
async def test_a_token_answer_that_does_not_validate_shows_no_token(httpx_mock: HTTPXMock, extra):
    access, refresh = "1000.a7c3e9f1d2b4c6e8a0b1c2d3e4f5a6b7.0f1e2d3c4b5a69788796a5b4c3d2e1f0", "1000.refresh9d8c7b6a5f4e3d2c1b0a"
    answer = {"access_token": access, "refresh_token": refresh, "expires_in": 3600, "api_domain": "https://www.zohoapis.com", **extra}
    httpx_mock.add_response(method="POST", url="https://accounts.zoho.com/oauth/v2/token", json=answer)
    async with httpx.AsyncClient() as http:
        with pytest.raises(ZohoError) as caught:
            await AccountsClient(http, "https://accounts.zoho.com").refresh("1000.CLIENT", SecretStr("client-secret"), SecretStr(refresh))
    error = caught.value
    assert error.code == "INVALID_TOKEN_ANSWER" and not error.transient
    for field in extra:
        assert field in error.message
    shown = "".join(traceback.format_exception(error)) + repr(error) + repr(error.__dict__)
    parts = [access[5:13], access[-8:], refresh[5:13]] + ([str(extra["refresh_token"])[:8]] if "refresh_token" in extra else [])
    for part in parts:
        assert part not in shown, part  # not even the first characters after "1000."
    assert error.__cause__ is None and error.__suppress_context__


def test_the_token_model_hides_its_input_in_errors():
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as caught:
        TokenResponse.model_validate({"access_token": "1000.secretsecretsecret", "expires_in_sec": "soon"})
    assert "secretsecret" not in str(caught.value) and "1000.se" not in str(caught.value)


# ------------------------------------------------------------- A9: the time zone
def test_check_time_zone_takes_iana_names_only():
    assert onboarding.check_time_zone("Europe/Berlin") == "Europe/Berlin" and onboarding.check_time_zone("UTC") == "UTC"
    for bad, hint in [("asia/kolkata", "did you mean Asia/Kolkata?"), ("Mars/Olympus_Mons", "e.g. Europe/Berlin"), ("", "e.g."),
                      ("../../etc/passwd", "e.g."), ("localtime", "e.g."), ("+05:30", "e.g.")]:
        with pytest.raises(ValueError, match="is not an IANA time zone") as refused:
            onboarding.check_time_zone(bad)
        assert hint in str(refused.value) and "\n" not in str(refused.value)


async def test_the_stack_config_takes_the_sandboxes_time_zone_and_its_window_agrees(sandbox, prefect_api, tmp_path):
    """``connect`` (``make up``; the demo saves the same way) saves the sandbox's ``org_time_zone``; a window
    read in it finds a booking at its exact start, a window read as UTC does not."""
    from blocks import AppointmentSyncConfig

    oauth, config = f"tz-{uuid.uuid4().hex[:8]}", f"tz-sync-{uuid.uuid4().hex[:8]}"
    for zone in ("Asia/Kolkata", "America/New_York"):
        sandbox.config(org_time_zone=zone)
        await onboarding.connect(sandbox.url, tmp_path, oauth, config)
        cfg = await AppointmentSyncConfig.aload(config)
        assert cfg.bookings_time_zone == zone == onboarding.sandbox_time_zone(sandbox.url)
        booking = next(b for b in sandbox.dump()["bookings"] if b["status"] == "UPCOMING")
        start = from_bookings(booking["start_time"], booking["time_zone"])
        async with ZohoClient(Endpoints.for_data_centre("CUSTOM", sandbox.url), StaticTokenProvider(sandbox.token())) as zoho:
            found = await zoho.bookings.fetch_appointments(start, start, cfg.bookings_time_zone, per_page=100)
            as_utc = await zoho.bookings.fetch_appointments(start, start, "UTC", per_page=100)
        assert booking["booking_id"] in [b.booking_id for b in found.response]
        assert booking["booking_id"] not in [b.booking_id for b in as_utc.response]


@pytest.fixture(scope="module")
def cli(prefect_api: str, tmp_path_factory: pytest.TempPathFactory):
    """``appt-sync *args`` in a subprocess on the session's Prefect server: ``(code, stdout, stderr)``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_LOGGING_", "ZOHO_"))}
    env.update(PREFECT_API_URL=prefect_api, PREFECT_HOME=str(tmp_path_factory.mktemp("tz-cli-home")), PYTHONUNBUFFERED="1", COLUMNS="200")

    def run(*args: str, **extra: str) -> tuple[int, str, str]:
        done = subprocess.run([sys.executable, "-m", "deployments.cli", *args], cwd=ROOT, env={**env, **extra}, capture_output=True, text=True,
                              timeout=120, stdin=subprocess.DEVNULL)
        return done.returncode, done.stdout, done.stderr

    return run


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--config", "sync-x", "--bookings-time-zone", "Mars/Olympus_Mons"], ["--bookings-time-zone", "'Mars/Olympus_Mons' is not an IANA time zone"]),
        (["--config", "sync-x", "--bookings-time-zone", "europe/berlin"], ["did you mean Europe/Berlin?"]),
        (["--config", "sync-x"], ["--bookings-time-zone", "give the Bookings workspace's IANA time zone"]),
        (["--bookings-time-zone", "UTC"], ["--bookings-time-zone", "give --config NAME too"]),
    ],
    ids=["unknown-zone", "wrong-case", "zone-missing", "config-missing"],
)
def test_auth_checks_the_time_zone_in_one_line_before_using_the_grant(cli, args, needles):
    code, out, err = cli("auth", "--client-id", "1000.X", "--data-centre", "EU", *args, ZOHO_CLIENT_SECRET="s3cret-client", ZOHO_GRANT_CODE="1000.grant")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("appt-sync auth:") and all(n in lines[0] for n in needles), lines[0]
    assert "Traceback" not in out + err and "s3cret-client" not in out + err


def test_auth_saves_the_organisations_time_zone(cli, sandbox, prefect_api):
    from blocks import AppointmentSyncConfig

    oauth, config = f"tz-{uuid.uuid4().hex[:8]}", f"sync-{uuid.uuid4().hex[:8]}"
    code, out, err = cli("auth", "--sandbox", sandbox.url, "--block", oauth, "--config", config)
    assert code == 0, err
    assert f"Created AppointmentSyncConfig block '{config}' (oauth_block {oauth}, Bookings time zone Asia/Kolkata)" in out
    saved = AppointmentSyncConfig.load(config)
    assert (saved.oauth_block, saved.bookings_time_zone) == (oauth, "Asia/Kolkata")

    from sync.engine import Policy

    saved.conflict_policy = Policy.CRM_WINS
    saved.save(config, overwrite=True)
    code, out, err = cli("auth", "--sandbox", sandbox.url, "--block", oauth, "--config", config, "--bookings-time-zone", "Europe/Berlin")
    assert code == 0 and "Updated AppointmentSyncConfig" in out, err
    again = AppointmentSyncConfig.load(config)
    assert (again.bookings_time_zone, again.conflict_policy.value) == ("Europe/Berlin", "crm_wins")  # the rest kept
