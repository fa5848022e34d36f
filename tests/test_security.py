"""Security: secrets kept out of Prefect, the receiver's checks, loopback binds, bound SQL parameters.

* **Secrets after the demo.** The demo (``deployments/demo.py``, what ``make demo``
  runs) runs once for this module in a subprocess with a temporary ``PREFECT_HOME``,
  a free ``PREFECT_PORT`` and ``SANDBOX_PORT`` (so it starts its own Prefect server
  and sandbox, never the developer's ``.prefect/`` stack on ports 4200/8900), a
  temporary data folder (where the sandbox keeps its OAuth state in SQLite) and Bulk
  Read work folder; ``appt-sync token`` then finds the server through
  ``PREFECT_HOME/stack.json`` (no ``PREFECT_API_URL``). Then every
  log, artifact, event (paged), block document (as the API shows it without
  ``include_secrets``), flow run (parameters and state), task run (state), their
  state histories, variables, deployments, automations and concurrency limits are
  read through the Prefect REST API with raw ``httpx``, and every file under
  ``PREFECT_HOME`` (the server's database and WAL included) plus the demo's output is
  read as bytes: none holds the client secret, a refresh token, an unused grant code or any
  access token the sandbox minted, while each demonstrably holds the non-secret data
  next to them (client id, booking ids, log lines).
* **The receiver**: the tokens are compared by ``hmac.compare_digest`` (its answer
  decides), an unset secret accepts nothing, a body over the limit is refused even
  when it is streamed without ``Content-Length``, no event without authentication,
  and ``python -m deployments.webhook`` binds 127.0.0.1 unless told otherwise. The
  Prefect server, sandbox and receiver that ``deployments/stack.py`` starts bind
  127.0.0.1, and so does the sandbox's command line by default.
* **The Bulk Read callback secret** (issue 14, B6): ``bulk-read`` takes the callback
  route and the name of a Secret block, builds the URL with ``?secret=`` inside the run
  (the sandbox's callback arrives with it), and no flow run, task run, log, event,
  artifact or block document the Prefect API shows holds the secret; a ``callback_url``
  that carries one is refused before any Zoho call.
* **SQL**: strings full of SQL metacharacters go through every text field that
  reaches the state store and come back byte for byte, with every table and its row
  count intact.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from sqlalchemy import func, inspect, select

from deployments import onboarding, processes, services, stack, webhook
from deployments.webhook import ReceiverSettings, create_receiver
from sync.bulk_load import appointments_mapping, events_mapping, load_csv_zip
from sync.bulk_runs import find_or_start_run, get_bookmark, get_job, mark_job, record_job_created, record_job_status, set_bookmark
from sync.engine import Action, Canon, Kind, Side, SideState
from sync.links import BookingRecord, SyncBase, applied_keys, changed_links, log_actions, retry_queue, upsert_bookings, upsert_crm_appointments, write_base
from sync.store import CrmAppointment, CrmEvent, open_store

ROOT = Path(__file__).resolve().parents[1]
UTC = timezone.utc


# ============================================================ secrets after the demo
@dataclass
class DemoRun:
    api: str
    home: Path
    output: str  # the demo's, then the refresh-token run's
    sandbox_db: Path
    creds: dict[str, str]  # GET /__sandbox/credentials
    seconds: float


def _run(argv: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """``argv`` in its own session (killed with everything it started on timeout); output captured."""
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"{argv[:4]} did not finish within {timeout:.0f} s:\n{output[-3000:]}")
    return subprocess.CompletedProcess(argv, proc.returncode, output)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoRun]:
    """The demo, run once, end to end, against its own Prefect server and sandbox on free ports; then one
    ``appt-sync token`` run that must refresh (the refresh path's logs and artifact are scanned too)."""
    root = tmp_path_factory.mktemp("demo")
    home, data, work = root / "prefect-home", root / "data", root / "work"
    sandbox_db = data / "sandbox.db"  # the stack's sandbox keeps its OAuth state here (``meta``)
    port, sandbox_port = processes.free_port(), processes.free_port()
    assert port != services.DEFAULT_PORTS["prefect"] and home != ROOT / ".prefect"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "APPT_SYNC_"))}
    env.update(PREFECT_HOME=str(home), PREFECT_PORT=str(port), SANDBOX_PORT=str(sandbox_port), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               DO_NOT_TRACK="1", APPT_SYNC_WORK_DIR=str(work), PYTHONUNBUFFERED="1")
    api = f"http://127.0.0.1:{port}/api"
    code = "import sys; from deployments.demo import run; sys.exit(run(data_dir=sys.argv[1]))"
    started = time.monotonic()
    try:
        done = _run([sys.executable, "-c", code, str(data)], env, 600)
        assert done.returncode == 0, f"the demo failed ({done.returncode}):\n{done.stdout[-3000:]}"
        seconds = time.monotonic() - started
        # The demo's sandbox keeps running (the stack's ``sandbox`` service) where the block points.
        r = httpx.post(f"{api}/block_documents/filter", json={"limit": 50, "include_secrets": False}, timeout=30)
        (block,) = [d for d in r.json() if d["block_type"]["slug"] == "zoho-oauth"]
        base_url = block["data"]["base_url"]
        assert base_url == f"http://127.0.0.1:{sandbox_port}" and block["name"] == stack.OAUTH_BLOCK
        creds = httpx.get(f"{base_url}/__sandbox/credentials", timeout=10).json()
        # In a new shell: no PREFECT_API_URL; the CLI finds the server in PREFECT_HOME/stack.json.
        refresh = _run([sys.executable, "-c", "from deployments.cli import app; app()", "token", "--block", block["name"], "--min-remaining-minutes", "120"],
                       env, 180)
        assert refresh.returncode == 0 and "refreshed: True" in refresh.stdout, refresh.stdout[-3000:]
        yield DemoRun(api, home, done.stdout + refresh.stdout, sandbox_db, creds, seconds)
    finally:
        stack.down(home)  # the Prefect server and the sandbox the demo started (detached) in our PREFECT_HOME


def sandbox_secrets(db: Path) -> dict[str, Any]:
    """The sandbox's OAuth state after the demo: what it handed out (``--db`` keeps it in ``meta``)."""
    with sqlite3.connect(db) as con:
        (body,) = con.execute("SELECT body FROM meta WHERE key = ?", ("oauth",)).fetchone()
    return json.loads(body)


def paged(http: httpx.Client, path: str, body: dict[str, Any] | None = None, limit: int = 200) -> list[Any]:
    """Every item of a ``/filter`` endpoint, ``limit`` at a time."""
    out: list[Any] = []
    while True:
        r = http.post(path, json={**(body or {}), "limit": limit, "offset": len(out)})
        assert r.status_code == 200, f"{path}: {r.status_code} {r.text[:300]}"
        page = r.json()
        out.extend(page)
        if len(page) < limit:
            return out


def all_events(http: httpx.Client) -> list[dict[str, Any]]:
    """Every event (first page by POST, then ``next_page`` links)."""
    window = {"occurred": {"since": "2000-01-01T00:00:00Z", "until": (datetime.now(UTC) + timedelta(days=1)).isoformat()}}
    r = http.post("/events/filter", json={"filter": window, "limit": 50})
    assert r.status_code == 200, r.text[:300]
    page = r.json()
    events, total = list(page["events"]), page["total"]
    while page.get("next_page"):
        r = http.get(page["next_page"])
        assert r.status_code == 200, r.text[:300]
        page = r.json()
        events.extend(page["events"])
    assert len(events) >= total  # events still arriving while paging only add to the first page's total
    return events


def prefect_corpus(api: str) -> tuple[dict[str, str], dict[str, Any]]:
    """Everything the Prefect API shows a user without asking for secrets, as text per source;
    and the ``ZohoOAuth`` block documents loaded *with* secrets (to know what to look for)."""
    with httpx.Client(base_url=api, timeout=30) as http:
        flow_runs = paged(http, "/flow_runs/filter", {"sort": "ID_DESC"})
        task_runs = paged(http, "/task_runs/filter", {"sort": "ID_DESC"})
        sources = {
            "logs": paged(http, "/logs/filter", {"sort": "TIMESTAMP_DESC"}),
            "artifacts": paged(http, "/artifacts/filter", {"sort": "CREATED_DESC"}),
            "events": all_events(http),
            "block_documents": paged(http, "/block_documents/filter", {"include_secrets": False}),
            "flow_runs": flow_runs,
            "task_runs": task_runs,
            "flow_run_states": [http.get("/flow_run_states/", params={"flow_run_id": f["id"]}).json() for f in flow_runs],
            "task_run_states": [http.get("/task_run_states/", params={"task_run_id": t["id"]}).json() for t in task_runs],
            "variables": paged(http, "/variables/filter"),
            "deployments": paged(http, "/deployments/filter"),
            "automations": paged(http, "/automations/filter"),
            "concurrency_limits": http.post("/v2/concurrency_limits/filter", json={"limit": 200}).json(),
        }
        secret_docs = [d for d in paged(http, "/block_documents/filter", {"include_secrets": True}) if d["block_type"]["slug"] == "zoho-oauth"]
    return {name: json.dumps(items) for name, items in sources.items()}, {"raw": sources, "oauth": secret_docs}


def test_no_secret_reaches_prefect_or_the_demo_output(demo: DemoRun):
    oauth, creds = sandbox_secrets(demo.sandbox_db), demo.creds
    corpus, seen = prefect_corpus(demo.api)
    (block,) = seen["oauth"]
    data = block["data"]

    access_tokens = set(oauth["access_tokens"]) | {t for g in oauth["refresh_tokens"].values() for t in g["active"]}
    minted = sum(len(g["mints"]) for g in oauth["refresh_tokens"].values())
    # ``mints`` lists every mint of the last 10 minutes, and a token (1 hour) is forgotten only at a
    # mint after it expired: these are all the tokens the demo and the refresh minted, not a sample.
    assert demo.seconds < 540 and 2 <= minted == len(access_tokens), (demo.seconds, minted, len(access_tokens))
    assert data["client_id"] == creds["client_id"] and data["client_secret"] == creds["client_secret"]
    assert data["refresh_token"] in oauth["refresh_tokens"] and data["access_token"] in access_tokens
    secrets = {"client_secret": creds["client_secret"], "sandbox refresh_token": creds["refresh_token"]}
    secrets |= {f"client_secret of {cid}": c["client_secret"] for cid, c in oauth["clients"].items()}
    secrets |= {f"refresh_token #{i}": t for i, t in enumerate(oauth["refresh_tokens"])}
    secrets |= {f"access_token #{i}": t for i, t in enumerate(sorted(access_tokens))}
    secrets |= {f"grant_code #{i}": c for i, c in enumerate(oauth["grant_codes"])}
    assert all(len(v) >= 20 for v in secrets.values())

    files = {str(p.relative_to(demo.home)): p.read_bytes().decode("latin-1") for p in sorted(demo.home.rglob("*")) if p.is_file()}
    everything = {**corpus, **{f"file {name}": text for name, text in files.items()}, "demo output": demo.output}
    leaks = [(what, where) for where, text in everything.items() for what, value in secrets.items() if value in text]
    assert leaks == [], f"secrets found: {leaks}"
    # The same search does find them where they belong: the block read with include_secrets.
    unmasked = json.dumps(seen["oauth"])
    assert all(data[k] in unmasked for k in ("client_secret", "refresh_token", "access_token"))
    print(f"scanned {', '.join(f'{k}: {len(v):,} chars' for k, v in everything.items())}; {len(secrets)} secrets; demo {demo.seconds:.0f} s")

    # ... and the sources are the real thing: the non-secret data next to the secrets is there.
    booking_ids = set(re.findall(r"#AN-\d{5}", demo.output))
    assert booking_ids
    assert creds["client_id"] in corpus["block_documents"] and '"********"' in corpus["block_documents"]  # shown, secrets masked
    assert any(b in corpus["events"] for b in booking_ids) and "zoho.appointment." in corpus["events"]
    assert any(b in corpus["artifacts"] for b in booking_ids)
    assert "Sync done" in corpus["logs"] and stack.CONFIG_BLOCK in corpus["flow_runs"]
    assert len(seen["raw"]["task_runs"]) > 10 and all(seen["raw"]["task_run_states"])
    assert "prefect.db" in files and "Sync done" in files["prefect.db"] + files.get("prefect.db-wal", "")


# ===================================================================== the receiver
TOKEN, SECRET, CB = "chan-tok-123", "bk-secret", "cb-secret"
NOTIFICATION = {"module": "Appointments__s", "operation": "update", "ids": ["111"], "channel_id": "1000000068001"}
BOOKING = {"event": "appointment_cancelled", "booking_id": "#AN-00001", "status": "CANCEL"}
JOB = {"id": "555", "state": "COMPLETED", "result": {"page": 1, "count": 3, "more_records": False, "download_url": "/crm/bulk/v7/read/555/result"}}


class Events(list):
    def __call__(self, event, resource, payload):
        self.append((event, resource, payload))


@dataclass
class Receiver:
    client: httpx.AsyncClient
    events: Events
    app: Any
    engine: Any

    def quiet(self) -> bool:
        """No event emitted and no id queued for one."""
        return not self.events and not any(self.app.state.coalescer.pending.values())

    async def call(self, route: str, credential: str | None, body: Any = None, content: Any = None) -> httpx.Response:
        """POST to ``route`` (crm, bookings, callback) with ``credential`` where that route expects it."""
        params, headers = {}, {}
        if route == "crm":
            body = {**body, "token": credential} if credential is not None and body is not None else body
        elif route == "bookings" and credential is not None:
            headers["X-Zoho-Bookings-Secret"] = credential
        elif route == "callback" and credential is not None:
            params["secret"] = credential
        path = {"crm": "/zoho/crm/notifications", "bookings": "/zoho/bookings/webhook", "callback": "/zoho/crm/bulk-read/callback"}[route]
        if content is None:
            content = json.dumps(body).encode()
        return await self.client.post(path, content=content, params=params, headers=headers)


def make_receiver(tmp_path: Path, **overrides: Any) -> Receiver:
    store = f"sqlite:///{tmp_path / 'state.db'}"
    engine = open_store(store)
    record_job_created(engine, "run-1", 1, "Appointments__s", "555", None)
    settings = ReceiverSettings(**{"channel_token": TOKEN, "bookings_secret": SECRET, "callback_secret": CB, "coalesce_seconds": 3600,
                                   "state_store_url": store, "config_block": "sync-test", **overrides})
    events = Events()
    app = create_receiver(settings, emit=events)  # no lifespan: ids stay queued where the test can see them
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://receiver")
    return Receiver(client, events, app, engine)


@pytest.fixture
async def receiver(tmp_path):
    r = make_receiver(tmp_path)
    yield r
    await r.client.aclose()
    r.engine.dispose()


ROUTE_BODIES = {"crm": NOTIFICATION, "bookings": BOOKING, "callback": {"data": [JOB]}}
RIGHT = {"crm": TOKEN, "bookings": SECRET, "callback": CB}


async def test_tokens_are_compared_by_hmac_compare_digest_and_its_answer_decides(receiver, monkeypatch):
    calls: list[tuple[bytes, bytes]] = []
    verdict = {"value": False}

    def compare_digest(a, b):
        calls.append((a, b))
        return verdict["value"]

    monkeypatch.setattr(webhook.hmac, "compare_digest", compare_digest)
    for route in ROUTE_BODIES:
        calls.clear()
        verdict["value"] = False  # the right secret, refused by compare_digest: refused
        assert (await receiver.call(route, RIGHT[route], ROUTE_BODIES[route])).status_code == 401
        assert calls == [(RIGHT[route].encode(), RIGHT[route].encode())]
        verdict["value"] = True  # a wrong secret, accepted by compare_digest: accepted
        assert (await receiver.call(route, "wrong", ROUTE_BODIES[route])).status_code == 202
        assert calls[-1] == (b"wrong", RIGHT[route].encode())
    assert [e for e, _, _ in receiver.events] == ["zoho.crm.notification", "zoho.bookings.webhook", "zoho.bulk_read.callback"]


@pytest.mark.parametrize("route", sorted(ROUTE_BODIES))
async def test_no_event_without_authentication(route, receiver):
    for credential in (None, "", "wrong", RIGHT[route] + "x", RIGHT[route].upper(), RIGHT[route][:-1]):
        r = await receiver.call(route, credential, ROUTE_BODIES[route])
        assert r.status_code == 401 and "error" in r.json(), (credential, r.text)
    assert receiver.quiet()
    assert get_job(receiver.engine, "555").state == "ADDED"  # the callback changed nothing in the store
    assert (await receiver.call(route, RIGHT[route], ROUTE_BODIES[route])).status_code == 202  # the same call, authenticated
    assert receiver.events


async def test_an_unset_secret_accepts_nothing(tmp_path):
    r = make_receiver(tmp_path, channel_token="", bookings_secret="", callback_secret="")
    try:
        for route in ROUTE_BODIES:
            for credential in (None, ""):
                assert (await r.call(route, credential, ROUTE_BODIES[route])).status_code == 401
        assert r.quiet()
    finally:
        await r.client.aclose()
        r.engine.dispose()


@pytest.mark.parametrize("route", sorted(ROUTE_BODIES))
async def test_an_oversize_body_is_refused_even_without_content_length(route, receiver):
    limit = receiver.app.state.settings.max_body_bytes
    assert limit == 1_048_576  # the default: 1 MB
    body = {**(ROUTE_BODIES[route] if route != "callback" else JOB), "token": TOKEN, "padding": ""}
    base = len(json.dumps(body).encode())

    def padded(size: int) -> bytes:
        data = json.dumps({**body, "padding": "x" * (size - base)}).encode()
        assert len(data) == size
        return data

    async def streamed(data: bytes):  # a generator body: sent chunked, with no Content-Length
        for i in range(0, len(data), 65_536):
            yield data[i : i + 65_536]

    r = await receiver.call(route, RIGHT[route], content=streamed(padded(limit + 1)))
    assert r.status_code == 413 and receiver.quiet()
    r = await receiver.call(route, RIGHT[route], content=padded(limit + 1))
    assert r.status_code == 413 and receiver.quiet()
    assert get_job(receiver.engine, "555").state == "ADDED"
    r = await receiver.call(route, RIGHT[route], content=streamed(padded(limit)))  # exactly the limit is fine
    assert r.status_code == 202 and receiver.events


def test_the_receiver_binds_loopback_unless_told_otherwise(monkeypatch):
    import uvicorn

    runs: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: runs.append(kwargs))
    monkeypatch.setattr(sys, "argv", ["deployments.webhook"])
    webhook.main()
    monkeypatch.setattr(sys, "argv", ["deployments.webhook", "--host", "0.0.0.0", "--port", "9999"])
    webhook.main()
    assert [(r["host"], r["port"]) for r in runs] == [("127.0.0.1", 8765), ("0.0.0.0", 9999)]


def test_the_stack_binds_every_service_to_loopback(tmp_path, monkeypatch):
    """``make up``/``make demo``: the Prefect server, sandbox and receiver get ``--host 127.0.0.1``."""
    spawned: dict[str, list[str]] = {}
    monkeypatch.setenv("PREFECT_SERVER_API_HOST", "0.0.0.0")  # a developer's setting: the explicit --host wins over it
    monkeypatch.setattr(processes, "healthy", lambda url: False)
    monkeypatch.setattr(processes, "answers_soon", lambda *a, **k: False)
    monkeypatch.setattr(processes, "wait_healthy", lambda *a, **k: None)
    monkeypatch.setattr(processes, "spawn", lambda name, argv, home, env: spawned.setdefault(name, argv) and None)

    assert services.ensure_prefect_server(4321, tmp_path) == "http://127.0.0.1:4321/api"

    async def connected(*args: Any) -> bool:
        return False

    monkeypatch.setattr(onboarding, "connect", connected)
    monkeypatch.setattr(services, "wait_serving", lambda *a, **k: None)
    monkeypatch.setattr(onboarding, "wire", lambda *a, **k: None)
    stack.up(home=tmp_path, data_dir=tmp_path, prefect_port=4321, sandbox_port=4322, receiver_port=4323, say=lambda _: None)

    def host(argv: list[str]) -> str:
        return argv[argv.index("--host") + 1]

    assert {name: host(argv) for name, argv in spawned.items() if name != "serve"} == {"server": "127.0.0.1", "sandbox": "127.0.0.1", "receiver": "127.0.0.1"}
    assert spawned["server"][:4] == [sys.executable, "-m", "prefect", "server"]


def test_the_sandbox_command_line_binds_loopback_by_default(monkeypatch):
    import sandbox.app
    import sandbox.cli
    from sandbox.cli import build_parser, main

    served: list[tuple[str, int]] = []
    monkeypatch.setattr(sandbox.app, "serve", lambda config, host, port, db, log_level: served.append((host, port)))
    monkeypatch.setattr(sandbox.cli, "port_problem", lambda host, port: None)  # 8900 may be in use (make up)
    main([])
    main(["--host", "0.0.0.0"])
    assert build_parser().parse_args([]).host == "127.0.0.1"
    assert served == [("127.0.0.1", 8900), ("0.0.0.0", 8900)]


# ======================================================== the Bulk Read callback secret
@pytest.fixture
async def sandbox_block(sandbox, prefect_api) -> str:
    """A saved ZohoOAuth block for the sandbox; its name."""
    import uuid

    from pydantic import SecretStr

    from blocks import ZohoOAuth

    name = f"cb-{uuid.uuid4().hex[:8]}"
    await ZohoOAuth(client_id=sandbox.creds["client_id"], client_secret=SecretStr(sandbox.creds["client_secret"]),
                    refresh_token=SecretStr(sandbox.creds["refresh_token"]), data_centre="CUSTOM", base_url=sandbox.url).asave(name)
    return name


async def test_the_callback_secret_is_built_in_the_run_and_never_a_flow_run_parameter(sandbox, sandbox_block, _receiver_server, prefect_api, tmp_path):
    """Issue 14, B6: ``bulk-read`` takes the callback route and a Secret block's name; Zoho gets the URL with
    ``?secret=`` (the callback arrives with it), and nothing Prefect keeps holds the secret."""
    import secrets
    import uuid

    from prefect.blocks.system import Secret

    from flows.bulk_read import bulk_read

    callback_secret, secret_block = "cb-" + secrets.token_urlsafe(24), f"cb-secret-{uuid.uuid4().hex[:8]}"
    await Secret(value=callback_secret).asave(secret_block)
    _receiver_server.received.clear()
    route = f"{_receiver_server.url}/zoho/crm/bulk-read/callback"
    result = await bulk_read(oauth_block=sandbox_block, store_url=f"sqlite:///{tmp_path / 'state.db'}", work_dir=str(tmp_path / "work"),
                             callback_url=route, callback_secret_block=secret_block, poll_seconds=0.1, poll_max_seconds=1.0, timeout_seconds=60)
    assert result["records"] == 300
    sandbox.drain()
    called = _receiver_server.wait_for(lambda item: item["path"] == "/zoho/crm/bulk-read/callback")
    assert called["query"] == {"secret": callback_secret}  # the URL Zoho called was built inside the run

    corpus, _ = prefect_corpus(prefect_api)
    assert [where for where, text in corpus.items() if callback_secret in text] == []
    assert secret_block in corpus["flow_runs"] and route in corpus["flow_runs"]  # the parameters hold the references


async def test_a_callback_url_carrying_its_secret_is_refused_before_any_call(sandbox, sandbox_block, prefect_api, tmp_path):
    from flows.bulk_read import CallbackSecretInParametersError, bulk_read

    for url in ("https://hooks.example.com/zoho/crm/bulk-read/callback?secret=s3cr3t-in-url", "https://user:s3cr3t-in-url@hooks.example.com/cb"):
        with pytest.raises(CallbackSecretInParametersError) as refused:
            await bulk_read(oauth_block=sandbox_block, store_url=f"sqlite:///{tmp_path / 'state.db'}", work_dir=str(tmp_path / "work"), callback_url=url)
        assert "s3cr3t-in-url" not in str(refused.value) and "callback_secret_block" in str(refused.value)
    assert sandbox.stats()["bulk_jobs_created"] == 0


async def test_callback_target_takes_the_secret_by_reference(prefect_api, monkeypatch):
    import uuid

    from prefect.blocks.system import Secret

    from flows.bulk_read import CALLBACK_SECRET_ENV, callback_target

    route = "https://hooks.example.com/zoho/crm/bulk-read/callback"
    monkeypatch.delenv(CALLBACK_SECRET_ENV, raising=False)
    assert await callback_target(None) is None
    assert await callback_target(route) == route  # nothing to add
    monkeypatch.setenv(CALLBACK_SECRET_ENV, "from-env")
    assert await callback_target(route) == route + "?secret=from-env"  # the receiver's own setting, in its environment
    assert await callback_target(route + "?org=acme") == route + "?org=acme&secret=from-env"
    plain, url = f"cb-{uuid.uuid4().hex[:8]}", f"cb-{uuid.uuid4().hex[:8]}"
    await Secret(value="from-block").asave(plain)
    await Secret(value="https://api.prefect.cloud/hooks/AbCdEf123").asave(url)  # a Prefect Cloud webhook: the URL is the credential
    assert await callback_target(route, plain) == route + "?secret=from-block"  # the block wins over the environment
    assert await callback_target(None, url) == "https://api.prefect.cloud/hooks/AbCdEf123"
    with pytest.raises(ValueError, match="give callback_url"):
        await callback_target(None, plain)


# ============================================================================== SQL
META = [
    "'; DROP TABLE crm_appointments; --",
    '" OR 1=1 --',
    "' OR '1'='1",
    "Robert'); DROP TABLE bookings;--",
    "1; DELETE FROM sync_base",
    "%", "_", "%_%", "a%b_c",
    "\\", "\\'", "\\\"", "C:\\path\\to\\%d",
    "''", '""', "`id`", "[id]", "?", "?, ?", ":id", "$1", "%s", "%(id)s", "{0}", "{id}",
    "/* comment */", "-- comment", "#AN-00001' --",
    "ünïcødé ✓ 日本語 🙂", "\u202e\u200b zero-width", "tab\there", "line\nbreak", "cr\r\nlf", "  padded  ",
]
assert len(set(META)) == len(META)
INJECTION = "nothing' OR '1'='1"  # matches no stored value unless the SQL is built from text
T0 = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)


def table_counts(engine) -> dict[str, int]:
    names = set(inspect(engine).get_table_names())
    from sqlmodel import SQLModel

    with engine.connect() as conn:
        return {t.name: conn.execute(select(func.count()).select_from(t)).scalar_one() for t in SQLModel.metadata.sorted_tables if t.name in names}


def csv_zip(path: Path, header: list[str], rows: list[list[str]], job_id: str) -> Path:
    import csv
    import io
    import zipfile

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{job_id}.csv", out.getvalue())
    return path


def test_sql_metacharacters_round_trip_through_every_text_field_of_the_store(tmp_path):
    engine = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    tables = set(inspect(engine).get_table_names())
    n = len(META)

    # Bulk Read CSV -> crm_appointments (Id, Booking_Id, Status) and crm_events (Id, Booking_Id, Event_Title)
    before = table_counts(engine)
    # (the CSV's Booking_Id values carry a prefix so that these records do not join the bookings below)
    rows = [[f"bulk{m}", f"csv{m}", "2026-06-01T09:00:00+00:00", "2026-06-01T09:30:00+00:00", "30", m, "2026-05-01T09:00:00Z"] for m in META]
    report = load_csv_zip(engine, csv_zip(tmp_path / "a.zip", ["Id", "Booking_Id", "Appointment_Start_Time", "Appointment_End_Time", "Duration", "Status", "Modified_Time"], rows, "J1"), "J1", appointments_mapping())
    assert (report.loaded, report.rejected) == (n, 0)
    rows = [[f"ev{m}", m, m, "2026-06-01T09:00:00+00:00", "2026-06-01T09:30:00+00:00", "2026-05-01T09:00:00Z"] for m in META]
    report = load_csv_zip(engine, csv_zip(tmp_path / "e.zip", ["Id", "Booking_Id", "Event_Title", "Start_DateTime", "End_DateTime", "Modified_Time"], rows, "J2"), "J2", events_mapping())
    assert (report.loaded, report.rejected) == (n, 0)
    with engine.connect() as conn:
        appts = {r.id: (r.booking_id, r.status) for r in conn.execute(select(CrmAppointment.__table__))}
        events = {r.id: (r.booking_id, r.title) for r in conn.execute(select(CrmEvent.__table__))}
    assert appts == {f"bulk{m}": (f"csv{m}", m) for m in META}
    assert events == {f"ev{m}": (m, m) for m in META}

    # upsert_crm_appointments / upsert_bookings: the linked pairs changed_links reads
    crm_rows = [{"id": f"crm{m}", "booking_id": m, "start_time": T0 + timedelta(hours=i), "end_time": T0 + timedelta(hours=i, minutes=30),
                 "duration": 30, "status": "Scheduled", "modified_time": T0, "job_id": m} for i, m in enumerate(META)]
    assert upsert_crm_appointments(engine, crm_rows) == n
    bk_rows = [{"booking_id": m, "start_time": T0 + timedelta(hours=i, minutes=15), "end_time": None, "status": "UPCOMING",
                "time_zone": m, "staff_id": m, "service_id": m} for i, m in enumerate(META)]
    assert upsert_bookings(engine, bk_rows) == n
    with engine.connect() as conn:
        stored = {r.booking_id: (r.time_zone, r.staff_id, r.service_id, r.status) for r in conn.execute(select(BookingRecord.__table__))}
    assert stored == {m: (m, m, m, "UPCOMING") for m in META}

    # changed_links(engine, booking_ids): exactly the ids asked for, taken literally
    for ids in (META, META[:5], ["%"], ["_"], ["\\"], [INJECTION], ["' OR 1=1 --"]):
        links = list(changed_links(engine, ids))
        assert [(l.booking_id, l.crm_id, l.time_zone) for l in links] == sorted((m, f"crm{m}", m) for m in META if m in ids)

    # write_base: links whose base is their current state drop out of changed_links
    half = META[: n // 2]
    write_base(engine, [(m, f"crm{m}", m, SideState(T0 + timedelta(hours=i), Canon.SCHEDULED), SideState(T0 + timedelta(hours=i, minutes=15), Canon.SCHEDULED))
                        for i, m in enumerate(half)])
    with engine.connect() as conn:
        bases = {r.booking_id: (r.crm_id, r.time_zone) for r in conn.execute(select(SyncBase.__table__))}
    assert bases == {m: (f"crm{m}", m) for m in half}
    assert [l.booking_id for l in changed_links(engine, META)] == sorted(META[n // 2 :])

    # the action log and retry queue
    actions = [Action(m, f"crm{m}", Side.CRM, Kind.CANCEL, m, note=m, since=m) for m in META]
    log_actions(engine, META[0], [(a, "applied" if i % 2 else "failed", META[-1 - i], META[i]) for i, a in enumerate(actions)])
    assert applied_keys(engine, [a.key for a in actions] + [INJECTION, "%"]) == {a.key for i, a in enumerate(actions) if i % 2}
    queue = {q.key: (q.run_id, q.booking_id, q.crm_id, q.code, q.message) for q in retry_queue(engine)}
    assert queue == {a.key: (META[0], a.booking_id, a.crm_id, META[-1 - i], META[i]) for i, a in enumerate(actions) if not i % 2}

    # Bulk Read runs, jobs and bookmarks
    for i, m in enumerate(META):
        run, resumed = find_or_start_run(engine, m, {"module": m, "criteria": {"api_name": m, "value": m}})
        assert not resumed and run.module == m
        again, resumed = find_or_start_run(engine, m, {"module": m, "criteria": {"api_name": m, "value": m}})
        assert resumed and again.id == run.id
        record_job_created(engine, run.id, 1, m, f"job{m}", m)
        stored_job = record_job_status(engine, {"id": f"job{m}", "state": "FAILURE", "result": {"error_message": {"code": m, "message": m}}})
        assert (stored_job.module, stored_job.page_token, stored_job.error_code, stored_job.error_message) == (m, m, m, m)
        mark_job(engine, f"job{m}", download_url=m, next_page_token=m)
        job = get_job(engine, f"job{m}")
        assert (job.id, job.run_id, job.download_url, job.next_page_token) == (f"job{m}", run.id, m, m)
        set_bookmark(engine, m, T0 + timedelta(minutes=i))
    assert [get_bookmark(engine, m) for m in META] == [T0 + timedelta(minutes=i) for i in range(n)]
    assert get_bookmark(engine, INJECTION) is None and get_job(engine, INJECTION) is None

    # the end: every table still there, with exactly the rows written
    assert set(inspect(engine).get_table_names()) == tables
    assert table_counts(engine) == {
        **before, "crm_appointments": 2 * n, "crm_events": n, "bulk_read_runs": n, "bulk_jobs": n, "rejected_records": 0, "bookmarks": n,
        "bookings": n, "sync_base": n // 2, "sync_actions": n,
    }
    engine.dispose()


async def test_sql_metacharacters_in_webhook_ids_are_dropped_and_job_ids_reach_the_store_unchanged(tmp_path):
    """CRM record ids (digits) and booking ids (``#AN-00014``) with SQL metacharacters are no ids: the
    receiver drops them (issue 14, B3) and queues the real id next to them; Bulk Read job ids are
    taken as sent and come back from the store byte for byte."""
    r = make_receiver(tmp_path)
    try:
        response = await r.call("crm", TOKEN, {**NOTIFICATION, "ids": [*META, "111"]})
        assert response.status_code == 202
        assert response.json()["accepted"] == 1 and response.json()["dropped_count"] == len(META)
        (notified,) = [p for e, _, p in r.events if e == "zoho.crm.notification"]
        assert notified["ids"] == ["111"] and r.app.state.coalescer.pending["crm_ids"] == {"111"}
        assert (await r.call("crm", TOKEN, {**NOTIFICATION, "ids": META})).status_code == 422  # no id at all: nothing queued
        for m in META:
            assert (await r.call("bookings", SECRET, {**BOOKING, "booking_id": m})).status_code == 422, m
        assert [e for e, _, _ in r.events if e == "zoho.bookings.webhook"] == []
        assert not r.app.state.coalescer.pending["booking_ids"]
        before = table_counts(r.engine)
        for m in META:
            record_job_created(r.engine, m, 1, m, m, m)
            job = {"id": m, "state": "COMPLETED", "result": {"count": 3, "more_records": True, "next_page_token": m, "download_url": m}}
            assert (await r.call("callback", CB, {"data": [job]})).status_code == 202
            stored = get_job(r.engine, m)
            assert (stored.state, stored.next_page_token, stored.download_url, stored.run_id, stored.module) == ("COMPLETED", m, m, m, m)
        assert [p["job_id"] for e, _, p in r.events if e == "zoho.bulk_read.callback"] == META
        assert table_counts(r.engine) == {**before, "bulk_jobs": before["bulk_jobs"] + len(META)}
    finally:
        await r.client.aclose()
        r.engine.dispose()
