"""The webhook receiver: Zoho's calls in, Prefect events out (FastAPI + uvicorn).

The OSS Prefect server has no webhook endpoint, so this small app checks the
caller, turns each accepted call into a Prefect event (visible in the UI's event
feed) and answers at once; deployment triggers start the flows.

Routes:

* ``POST /zoho/crm/notifications``: Zoho CRM's notification payload
  (``shared/zoho-api-notes.md``). The channel ``token`` is compared in constant
  time; ``module`` must be one we sync and ``operation`` one of ``insert``,
  ``update``, ``delete``, ``restore``. Event ``zoho.crm.notification``.
* ``POST /zoho/bookings/webhook``: JSON with at least ``booking_id``, authenticated
  by a shared secret in the ``X-Zoho-Bookings-Secret`` header or ``?secret=``.
  Event ``zoho.bookings.webhook`` for every accepted call, its payload with
  ``"echo": true|false``. An *echo* (the webhook Bookings sends for the sync's own
  write) is not queued for a sync, which saves one metered ``getappointment``: the
  payload carries ``status``, ``start_time`` (``dd-MMM-yyyy HH:mm:ss``) and
  ``time_zone``, and the state store's ``bookings`` row of that booking has the same
  start instant (UTC, to the second) and the same canonical status
  (:func:`sync.echoes.is_echo`). Anything missing, unparsable or unknown, no stored
  row, or a store that cannot be read (a warning is logged): not an echo, the id is
  queued as usual. The answer is still 202, with ``"echo": true`` when skipped.
  ``skip_echoes=False`` (``APPT_SYNC_RECEIVER_SKIP_ECHOES``) queues every id.
* ``POST /zoho/crm/bulk-read/callback?secret=...``: a Bulk Read job's status JSON;
  recorded in the state store (where the waiting ``bulk-read`` flow sees it) and
  emitted as ``zoho.bulk_read.callback``.
* ``GET /healthz``: ``status``, ``pending_ids`` (queued, not yet emitted) and
  ``echoes_skipped`` (Bookings echoes not queued since start).

Bad JSON, a wrong token or secret, a body over 1 MB, an unknown module or
operation get a clear 4xx and no event. A burst does not become a storm: ids are
coalesced and emitted as ``zoho.sync.requested`` events (at most 500 ids each),
which the ``sync-on-webhook`` deployment's trigger turns into one flow run each.
Leading edge and throttle: when the receiver has been idle, the first id is
emitted ``leading_seconds`` (0.2 s) after it arrives, so a single edit is not held
back; while ids keep coming, at most one event per ``coalesce_seconds`` (2 s).
Ids are kept until their event is emitted.

A ``zoho.sync.requested`` event links to what it asks about (:func:`sync_related`):
the organisation (``zoho.sync.<config block>``, role ``organisation``), each booking
(``zoho.appointment.<booking id>``, role ``booking``) and CRM record
(``zoho.crm.record.<id>``, role ``crm-record``), the resource ids the sync flow's
``zoho.appointment.*`` events carry, so the event feed connects a request, the run
its trigger starts (Prefect relates the run to its ``triggering-event``) and the
changes it applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import inspect
import json
import logging
import threading
from collections import defaultdict
from datetime import datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

log = logging.getLogger("zoho_appointment_sync.webhook")

CRM_OPERATIONS = frozenset({"insert", "update", "delete", "restore"})
MAX_IDS_PER_EVENT = 500
#: Ids named as related resources per event (Prefect allows 100 related resources; the payload has them all).
MAX_RELATED_IDS = 90


def sync_related(config_block: str, kind: str, ids: list[str]) -> list[dict[str, str]]:
    """Related resources of a ``zoho.sync.requested`` event: the organisation, then the first
    :data:`MAX_RELATED_IDS` of ``ids`` (``kind``: ``booking_ids`` or ``crm_ids``) with their roles."""
    related = [{"prefect.resource.id": f"zoho.sync.{config_block}", "prefect.resource.role": "organisation", "prefect.resource.name": config_block}]
    for i in ids[:MAX_RELATED_IDS]:
        if kind == "booking_ids":
            related.append({"prefect.resource.id": f"zoho.appointment.{i}", "prefect.resource.role": "booking", "prefect.resource.name": i})
        else:
            related.append({"prefect.resource.id": f"zoho.crm.record.{i}", "prefect.resource.role": "crm-record", "prefect.resource.name": i})
    return related


def _takes_related(emit: Any) -> bool:
    """Whether ``emit`` accepts a ``related`` keyword (older three-argument emitters do not)."""
    try:
        params = inspect.signature(emit).parameters
    except (TypeError, ValueError):
        return False
    return "related" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


class ReceiverSettings(BaseSettings):
    """Receiver configuration from ``APPT_SYNC_RECEIVER_*`` environment variables.

    ``channel_token``: the token the CRM notification channel was subscribed with.
    ``bookings_secret``: the shared secret of the Bookings webhook.
    ``callback_secret``: the secret in the Bulk Read callback URL.
    ``config_block``: the ``AppointmentSyncConfig`` the requested syncs run with.
    ``skip_echoes``: queue no sync for a Bookings webhook that reports what the state
    store already holds (module docstring); False queues every booking id.
    """

    model_config = SettingsConfigDict(env_prefix="APPT_SYNC_RECEIVER_")

    channel_token: SecretStr = SecretStr("")
    bookings_secret: SecretStr = SecretStr("")
    callback_secret: SecretStr = SecretStr("")
    config_block: str = "sync-sandbox"
    modules: frozenset[str] = frozenset({"Appointments__s"})
    state_store_url: str | None = None
    coalesce_seconds: float = 2.0
    leading_edge: bool = True
    leading_seconds: float = 0.2
    max_body_bytes: int = 1_048_576
    skip_echoes: bool = True


def _same(given: str | None, expected: SecretStr) -> bool:
    """Constant-time comparison; an unset expected secret accepts nothing.

    ``surrogatepass``: a string from JSON may hold a lone surrogate (``"\\ud800"``),
    which plain UTF-8 cannot encode; it is compared (and fails) like any wrong value.
    """
    secret = expected.get_secret_value()
    return bool(secret) and given is not None and hmac.compare_digest(given.encode("utf-8", "surrogatepass"), secret.encode())


def _record_id(value: Any) -> bool:
    """A record id as Zoho sends one: a non-empty string or an integer (not a boolean)."""
    return (isinstance(value, str) and value != "") or (isinstance(value, int) and not isinstance(value, bool))


#: The Bulk Read job status fields the state store keeps, and the JSON types each may have (None: absent or null).
_JOB_RESULT_TYPES: dict[str, tuple[type, ...]] = {"count": (int,), "page": (int,), "more_records": (bool,), "next_page_token": (str,), "download_url": (str,), "error_message": (dict,)}


def _bulk_job(body: Any) -> dict[str, Any] | None:
    """The job of a Bulk Read callback body (``{"data": [job]}`` or the job itself), or None when it
    is not a job status JSON: ``id`` a record id, ``state`` a non-empty string, ``result`` (if any)
    an object whose known fields have their JSON types."""
    data = body.get("data") if isinstance(body, dict) else None
    job = data[0] if isinstance(data, list) and data and isinstance(data[0], dict) else body
    if not isinstance(job, dict) or not _record_id(job.get("id")) or not isinstance(job.get("state"), str) or not job["state"]:
        return None
    result = job.get("result")
    if result is None:
        return job
    if not isinstance(result, dict):
        return None
    for name, types in _JOB_RESULT_TYPES.items():
        value = result.get(name)
        if value is not None and (not isinstance(value, types) or (isinstance(value, bool) and bool not in types)):
            return None
    return job


def reported_state(body: dict[str, Any]) -> tuple[datetime, str] | None:
    """The (start, status) a Bookings webhook reports: ``start_time`` (``dd-MMM-yyyy HH:mm:ss``,
    wall time in ``time_zone``) as an aware instant, and ``status`` as sent. None when ``status``,
    ``start_time`` or ``time_zone`` is missing or not a non-empty string, the time or zone does
    not parse, or the status is unknown (:func:`sync.engine.bookings_canon`): such a webhook is never an echo."""
    from sync.engine import bookings_canon
    from zoho.timefmt import from_bookings

    status, start_time, time_zone = body.get("status"), body.get("start_time"), body.get("time_zone")
    if not all(isinstance(v, str) and v for v in (status, start_time, time_zone)):
        return None
    try:
        bookings_canon(status)
        # ZoneInfo: ValueError (a malformed key), KeyError (ZoneInfoNotFoundError), OSError (a folder, a long name).
        return from_bookings(start_time, time_zone), status
    except (ValueError, KeyError, OSError):
        return None


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class Coalescer:
    """Collects ids per kind and emits them as ``zoho.sync.requested`` events.

    Timing (``ReceiverSettings``): idle, the first id is emitted ``leading_seconds``
    after it arrives; then at most one flush per ``coalesce_seconds`` while ids keep
    coming. ``leading_edge=False`` flushes on a fixed ``coalesce_seconds`` tick.
    """

    def __init__(self, settings: ReceiverSettings, emit: Any) -> None:
        self.settings = settings
        self.emit = emit
        self._related = _takes_related(emit)
        self.pending: dict[str, set[str]] = defaultdict(set)
        self.emitted_events = 0
        #: Bookings webhooks recognised as echoes of our own writes, whose ids were not queued.
        self.echoes_skipped = 0
        self._wake = asyncio.Event()

    def add(self, kind: str, ids: list[str]) -> None:
        """Queue ``ids`` of ``kind`` (``crm_ids`` or ``booking_ids``)."""
        self.pending[kind].update(ids)
        self._wake.set()

    def flush(self) -> int:
        """Emit what is pending; returns the number of events. Ids stay queued if emitting fails."""
        sent = 0
        for kind in ("crm_ids", "booking_ids"):
            ids = sorted(self.pending.get(kind, ()))
            for i in range(0, len(ids), MAX_IDS_PER_EVENT):
                chunk = ids[i : i + MAX_IDS_PER_EVENT]
                payload = {"config_block": self.settings.config_block, "crm_ids": [], "booking_ids": []}
                payload[kind] = chunk
                resource = {"prefect.resource.id": f"zoho.sync.{self.settings.config_block}"}
                related = {"related": sync_related(self.settings.config_block, kind, chunk)} if self._related else {}
                try:
                    self.emit("zoho.sync.requested", resource, payload, **related)
                except Exception:  # noqa: BLE001 - keep the ids; the next window tries again
                    log.exception("could not emit zoho.sync.requested; %s ids kept for the next window", len(ids) - i)
                    self.emitted_events += sent
                    return sent
                self.pending[kind].difference_update(chunk)
                sent += 1
        self.emitted_events += sent
        return sent

    async def run(self) -> None:
        """Flush as described in the class docstring until cancelled (then flush once more)."""
        window, leading = self.settings.coalesce_seconds, self.settings.leading_seconds if self.settings.leading_edge else None
        try:
            while True:
                if leading is None:
                    await asyncio.sleep(window)
                    self.flush()
                    continue
                await self._wake.wait()  # idle until an id arrives
                await asyncio.sleep(leading)  # let the ids of one edit arrive together
                self._wake.clear()
                self.flush()
                if any(self.pending.values()):  # emitting failed: try again after the window
                    self._wake.set()
                await asyncio.sleep(window)  # ids arriving meanwhile wait for the next flush
        finally:
            self.flush()


def prefect_emit(event: str, resource: dict[str, str], payload: dict[str, Any], related: list[dict[str, str]] | None = None) -> None:
    """Emit a Prefect event (needs ``PREFECT_API_URL``); ``related``: related resources (``prefect.resource.id`` and ``.role`` each)."""
    from prefect.events import emit_event

    emit_event(event=event, resource=resource, payload=payload, related=related)


def create_receiver(settings: ReceiverSettings | None = None, emit: Any = prefect_emit) -> FastAPI:
    """The receiver app. ``emit(event, resource, payload[, related=...])`` is swappable for tests
    (an emitter without a ``related`` keyword gets none)."""
    settings = settings or ReceiverSettings()
    coalescer = Coalescer(settings, emit)

    engines: list[Any] = []
    opening = threading.Lock()

    def store() -> Any:
        """The state store's engine, made on first use (tables checked once), kept until shutdown.
        Blocking (it may upgrade the schema): call it in a worker thread. Raises what
        :func:`sync.store.open_store` raises; the next call tries again."""
        with opening:
            if not engines:
                from sync.store import open_store

                engines.append(open_store(settings.state_store_url))
            return engines[0]

    def echo(booking_id: str, start: datetime, status: str) -> bool:
        """Whether the webhook is an echo (:func:`sync.echoes.is_echo`); False, with a one-line
        warning, when the store cannot be opened or read. Blocking: run it in a worker thread."""
        from sync.echoes import is_echo

        try:
            return is_echo(store(), booking_id, start, status)
        except Exception as exc:  # noqa: BLE001 - any failure means "not an echo": the booking is read as before
            message = str(exc).splitlines()[0] if str(exc) else ""
            if settings.state_store_url:  # the URL may hold a password
                message = message.replace(settings.state_store_url, "<state store url>")
            log.warning("echo check of booking %s failed (%s: %s); the booking is queued for a sync", booking_id, type(exc).__name__, message[:200])
            return False

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        task = asyncio.create_task(coalescer.run())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            for engine in engines:
                engine.dispose()

    app = FastAPI(title="zoho-appointment-sync webhook receiver", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.coalescer = coalescer
    app.state.settings = settings

    async def read_json(request: Request) -> tuple[Any, JSONResponse | None]:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > settings.max_body_bytes:
            return None, _error(413, f"body over {settings.max_body_bytes} bytes")
        body = bytearray()
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > settings.max_body_bytes:
                return None, _error(413, f"body over {settings.max_body_bytes} bytes")
        try:
            parsed = json.loads(body)
            # A "\ud800" escape decodes to a lone surrogate: no UTF-8 text (nor a Prefect event) can hold it.
            json.dumps(parsed, ensure_ascii=False).encode("utf-8")
            return parsed, None
        except (ValueError, UnicodeError):
            return None, _error(400, "the body is not valid JSON")

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "pending_ids": sum(len(v) for v in coalescer.pending.values()), "echoes_skipped": coalescer.echoes_skipped}

    @app.post("/zoho/crm/notifications")
    async def crm_notification(request: Request) -> JSONResponse:
        body, error = await read_json(request)
        if error:
            return error
        if not isinstance(body, dict):
            return _error(400, "expected a JSON object")
        if not _same(body.get("token") if isinstance(body.get("token"), str) else None, settings.channel_token):
            return _error(401, "wrong or missing channel token")
        module, operation, ids = body.get("module"), body.get("operation"), body.get("ids")
        if not isinstance(module, str) or module not in settings.modules:
            return _error(422, f"module {module!r} is not synced (expected one of {sorted(settings.modules)})")
        if not isinstance(operation, str) or operation not in CRM_OPERATIONS:
            return _error(422, f"unknown operation {operation!r} (expected one of {sorted(CRM_OPERATIONS)})")
        if not isinstance(ids, list) or not ids or not all(_record_id(i) for i in ids):
            return _error(422, "ids must be a non-empty list of record ids")
        ids = [str(i) for i in ids]
        emit("zoho.crm.notification", {"prefect.resource.id": f"zoho.crm.{module}"}, {"module": module, "operation": operation, "ids": ids, "channel_id": str(body.get("channel_id"))})
        if operation != "delete":
            coalescer.add("crm_ids", ids)
        return JSONResponse({"accepted": len(ids)}, status_code=202)

    @app.post("/zoho/bookings/webhook")
    async def bookings_webhook(request: Request) -> JSONResponse:
        given = request.headers.get("x-zoho-bookings-secret") or request.query_params.get("secret")
        if not _same(given, settings.bookings_secret):
            return _error(401, "wrong or missing shared secret")
        body, error = await read_json(request)
        if error:
            return error
        booking_id = body.get("booking_id") if isinstance(body, dict) else None
        if not isinstance(booking_id, str) or not booking_id:
            return _error(422, "the payload has no booking_id")
        reported = reported_state(body) if settings.skip_echoes else None
        echoed = reported is not None and await asyncio.to_thread(echo, booking_id, *reported)
        payload = {k: body.get(k) for k in ("booking_id", "event", "status", "start_time", "time_zone")}
        emit("zoho.bookings.webhook", {"prefect.resource.id": f"zoho.bookings.{booking_id}"}, {**payload, "echo": echoed})
        if echoed:
            coalescer.echoes_skipped += 1
            return JSONResponse({"accepted": 1, "echo": True}, status_code=202)
        coalescer.add("booking_ids", [booking_id])
        return JSONResponse({"accepted": 1}, status_code=202)

    @app.post("/zoho/crm/bulk-read/callback")
    async def bulk_callback(request: Request) -> JSONResponse:
        if not _same(request.query_params.get("secret"), settings.callback_secret):
            return _error(401, "wrong or missing callback secret")
        body, error = await read_json(request)
        if error:
            return error
        job = _bulk_job(body)
        if job is None:
            return _error(422, "expected the Bulk Read job status JSON (id, state, result)")
        from sync.bulk_runs import record_callback

        await asyncio.to_thread(lambda: record_callback(store(), {"data": [job]}))
        emit(
            "zoho.bulk_read.callback",
            {"prefect.resource.id": f"zoho.bulk_read.{job['id']}", "zoho.organisation": settings.config_block},
            {"config_block": settings.config_block, "job_id": str(job["id"]), "state": job["state"], "result": job.get("result") or {}},
        )
        return JSONResponse({"accepted": 1}, status_code=202)

    return app


def main() -> None:  # pragma: no cover - exercised by make up
    """``python -m deployments.webhook [--host 127.0.0.1] [--port 8765]``."""
    import argparse

    import uvicorn

    parser = argparse.ArgumentParser(description="Zoho webhook receiver")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    uvicorn.run(create_receiver(), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":  # pragma: no cover
    main()
