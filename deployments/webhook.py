"""The webhook receiver: Zoho's calls in, Prefect events out (FastAPI + uvicorn).

The OSS Prefect server has no webhook endpoint, so this small app checks the
caller, turns each accepted call into a Prefect event (visible in the UI's event
feed) and answers at once; deployment triggers start the flows.

Routes:

* ``POST /zoho/crm/notifications``: Zoho CRM's notification payload
  (``shared/zoho-api-notes.md``). The channel ``token`` is compared in constant
  time; ``module`` must be one we sync (``modules``, default ``Appointments__s`` and
  ``Events``, CRM Meetings; any other: 422) and ``operation`` one of ``insert``,
  ``update``, ``delete``, ``restore``. Event ``zoho.crm.notification``. The ids are
  queued per module: ``insert``, ``update``, ``restore`` as records to read
  (``crm_ids``), ``delete`` as records deleted in CRM (``deleted_crm_ids``).
* ``POST /zoho/bookings/webhook``: JSON with at least ``booking_id`` (a booking id:
  see "Ids" below), authenticated by a shared secret in the
  ``X-Zoho-Bookings-Secret`` header or ``?secret=``, checked before the body is read.
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

Bad JSON, JSON nested deeper than :data:`MAX_JSON_DEPTH` (checked before it is
parsed, so no recursion error), a wrong token or secret, a body over 1 MB, an
unknown module or operation get a clear 4xx and no event. The Bookings and
callback secrets (header or query) are checked before the body is read; the CRM
channel token travels inside the body, so that route checks it after the bounded
parse.

Ids (:func:`crm_id_problem`, :func:`booking_id_problem`): a CRM record id is 1 to
:data:`MAX_CRM_ID_DIGITS` ASCII digits (a JSON string or a non-negative integer);
a booking id is an optional ``#`` and then 1 to 63 ASCII letters, digits, ``-``,
``_`` or ``.``, starting with a letter or digit (``#AN-00014``). A notification's
bad ids are dropped, each with a reason, in a warning log line and in the answer
(``{"accepted": 3, "dropped": [{"id": "<first 40 characters>", "reason": ...}]}``;
at most :data:`MAX_DROPPED_SHOWN` listed, ``dropped_count`` counts them all), and
the good ones are queued; a notification with no good id, or a webhook whose
``booking_id`` is bad, answers 422 and emits nothing. The sync reads CRM records by
id in requests that fit a URL (:func:`zoho.clients.chunk_ids`).

A burst does not become a storm: ids are coalesced and emitted as ``zoho.sync.requested`` events (at most 500 ids each),
which the ``sync-on-webhook`` deployment's trigger turns into one flow run each.
An event's payload is ``{"config_block", "crm_module", "crm_ids", "deleted_crm_ids",
"booking_ids", "booking_states"}`` (the parameters the trigger passes on): either the
CRM ids of one module (``crm_module`` its API name, ``crm_ids`` and ``deleted_crm_ids``
together at most 500, ``booking_ids`` empty, ``booking_states`` ``{}``) or booking ids
(``crm_module`` null, both CRM lists empty); modules are never mixed in one event. A
CRM record's latest notification in a window decides its list: deleted after an
update, it is in ``deleted_crm_ids`` only; updated or restored after a delete, in
``crm_ids`` only.
Leading edge and throttle: when the receiver has been idle, the first id is
emitted ``leading_seconds`` (0.2 s) after it arrives, so a single edit is not held
back; while ids keep coming, at most one event per ``coalesce_seconds`` (2 s).
Ids are kept until their event is emitted. An event of booking ids also carries
what each booking's latest webhook reported (``booking_states``: ``status``,
``start_time``, ``time_zone`` as sent): the sync run checks it against the store
again when it reads (after any run writing to that booking has committed), so an
echo that arrived before the write's answer was stored still costs no read.

A ``zoho.sync.requested`` event links to what it asks about (:func:`sync_related`):
the organisation (``zoho.sync.<config block>``, role ``organisation``), each booking
(``zoho.appointment.<booking id>``, role ``booking``) and CRM record
(``zoho.crm.record.<id>``, role ``crm-record``, its module in the label
``zoho.crm.module``), the resource ids the sync flow's ``zoho.appointment.*`` events
carry, so the event feed connects a request, the run its trigger starts (Prefect
relates the run to its ``triggering-event``) and the changes it applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import inspect
import json
import logging
import re
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
#: The CRM modules the receiver accepts notifications of unless configured (``APPT_SYNC_RECEIVER_MODULES``).
CRM_MODULES = frozenset({"Appointments__s", "Events"})
#: The module of CRM ids queued without one (:meth:`Coalescer.add`): the receiver's only module before Meetings.
DEFAULT_MODULE = "Appointments__s"
#: The payload list a CRM notification's ids go to, by operation.
CRM_ID_KINDS = {"insert": "crm_ids", "update": "crm_ids", "restore": "crm_ids", "delete": "deleted_crm_ids"}
MAX_IDS_PER_EVENT = 500
#: Ids named as related resources per event (Prefect allows 100 related resources; the payload has them all).
MAX_RELATED_IDS = 90
#: Deepest JSON nesting (objects and arrays) a body may have; Zoho's payloads have 4 levels at most.
MAX_JSON_DEPTH = 32
#: Most digits of a CRM record id (Zoho's ids are 64-bit numbers: 19 digits today).
MAX_CRM_ID_DIGITS = 25
#: A CRM record id: ASCII digits only.
CRM_ID = re.compile(r"[0-9]{1,%d}" % MAX_CRM_ID_DIGITS)
#: A Bookings booking id (``#AN-00014``; the letters are the workspace's prefix): an optional ``#``,
#: then a letter or digit and up to 62 more letters, digits, ``-``, ``_`` or ``.`` (ASCII).
BOOKING_ID = re.compile(r"#?[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
#: Dropped ids listed in an answer and a log line (the count covers them all).
MAX_DROPPED_SHOWN = 20
#: Characters of a dropped id shown in the answer and the log.
ID_PREVIEW = 40


def sync_related(config_block: str, kind: str, ids: list[str], module: str | None = None) -> list[dict[str, str]]:
    """Related resources of a ``zoho.sync.requested`` event: the organisation, then the first
    :data:`MAX_RELATED_IDS` of ``ids`` (``kind``: ``booking_ids``, or ``crm_ids`` / ``deleted_crm_ids``
    of CRM ``module``, named in each record's ``zoho.crm.module`` label) with their roles."""
    related = [{"prefect.resource.id": f"zoho.sync.{config_block}", "prefect.resource.role": "organisation", "prefect.resource.name": config_block}]
    for i in ids[:MAX_RELATED_IDS]:
        if kind == "booking_ids":
            related.append({"prefect.resource.id": f"zoho.appointment.{i}", "prefect.resource.role": "booking", "prefect.resource.name": i})
        else:
            record = {"prefect.resource.id": f"zoho.crm.record.{i}", "prefect.resource.role": "crm-record", "prefect.resource.name": i}
            related.append({**record, "zoho.crm.module": module} if module else record)
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
    ``modules``: the CRM modules whose notifications are accepted (default both
    ``Appointments__s`` and ``Events``; e.g. ``APPT_SYNC_RECEIVER_MODULES='["Events"]'``).
    ``skip_echoes``: queue no sync for a Bookings webhook that reports what the state
    store already holds (module docstring); False queues every booking id.
    """

    model_config = SettingsConfigDict(env_prefix="APPT_SYNC_RECEIVER_")

    channel_token: SecretStr = SecretStr("")
    bookings_secret: SecretStr = SecretStr("")
    callback_secret: SecretStr = SecretStr("")
    config_block: str = "sync-sandbox"
    modules: frozenset[str] = CRM_MODULES
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


_JSON_TYPES = {dict: "an object", list: "an array", float: "a number", bool: "a boolean", type(None): "null"}


def crm_id_problem(value: Any) -> str | None:
    """Why ``value`` (one item of a notification's ``ids``) is not a CRM record id, or None when it is.

    A CRM record id is 1 to :data:`MAX_CRM_ID_DIGITS` ASCII digits, sent as a JSON
    string or a non-negative integer. The reason is a few words (``"not all ASCII
    digits"``, ``"100,000 characters (at most 25 digits)"``) and never quotes the value.
    """
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return f"{_JSON_TYPES.get(type(value), type(value).__name__)}, not a string or integer"
    if isinstance(value, int) and value < 0:
        return "a negative number"
    text = str(value)
    if not text:
        return "empty"
    if len(text) > MAX_CRM_ID_DIGITS:
        return f"{len(text):,} characters (at most {MAX_CRM_ID_DIGITS} digits)"
    return None if CRM_ID.fullmatch(text) else "not all ASCII digits"


def booking_id_problem(value: Any) -> str | None:
    """Why ``value`` (a webhook's ``booking_id``) is not a Bookings booking id, or None when it is.

    The rule (:data:`BOOKING_ID`): a string, an optional ``#``, then a letter or digit
    and up to 62 more ASCII letters, digits, ``-``, ``_`` or ``.``: ``#AN-00014`` and
    other workspace prefixes pass; whitespace, quotes, control or non-ASCII characters
    and anything over 64 characters do not. Never quotes the value.
    """
    if not isinstance(value, str):
        return f"{_JSON_TYPES.get(type(value), type(value).__name__)}, not a string"
    if not value:
        return "empty"
    if len(value) > 64:
        return f"{len(value):,} characters (at most 64)"
    return None if BOOKING_ID.fullmatch(value) else "not '#' then ASCII letters, digits, '-', '_' or '.'"


def _preview(value: Any) -> str:
    """The first :data:`ID_PREVIEW` characters of a dropped id (``...`` marks a cut), for answers and logs."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= ID_PREVIEW else text[:ID_PREVIEW] + "..."


def json_depth(text: str, limit: int | None = None) -> int:
    """How deeply the arrays and objects of JSON ``text`` nest (``{"a": [1]}``: 2), brackets inside
    strings not counted; with ``limit``, counting stops once the depth passes it (the answer is
    then ``limit + 1``). Linear in ``len(text)`` and never recursive, so it bounds a parse before
    :func:`json.loads` recurses; ``text`` need not be valid JSON (then the count is only a guide)."""
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    depth = deepest = 0
    for char in brackets:
        if char in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if limit is not None and deepest > limit:
                    break
        else:
            depth -= 1
    return deepest


#: A JSON string literal (escapes included), and a run of characters that are no bracket.
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


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
    """Collects ids per kind (and CRM ids per module) and emits them as ``zoho.sync.requested`` events.

    Timing (``ReceiverSettings``): idle, the first id is emitted ``leading_seconds``
    after it arrives; then at most one flush per ``coalesce_seconds`` while ids keep
    coming. ``leading_edge=False`` flushes on a fixed ``coalesce_seconds`` tick.
    The payloads are those of the module docstring: one module's CRM ids, or booking ids.
    """

    def __init__(self, settings: ReceiverSettings, emit: Any) -> None:
        self.settings = settings
        self.emit = emit
        self._related = _takes_related(emit)
        #: Queued CRM ids by module: each id's list (``crm_ids`` or ``deleted_crm_ids``), its latest notification's.
        self.crm: dict[str, dict[str, str]] = {}
        #: Queued booking ids.
        self.bookings: set[str] = set()
        #: The state the latest webhook of each queued booking reported (``status``, ``start_time``,
        #: ``time_zone`` as sent), passed on as ``booking_states`` so the sync run can skip reading a
        #: booking whose webhook only repeats what the store holds by the time the run reads.
        self.states: dict[str, dict[str, str]] = {}
        self.emitted_events = 0
        #: Bookings webhooks recognised as echoes of our own writes, whose ids were not queued.
        self.echoes_skipped = 0
        self._wake = asyncio.Event()

    @property
    def pending(self) -> dict[str, set[str]]:
        """A snapshot of the queued ids by kind (``crm_ids``, ``deleted_crm_ids`` of every module, ``booking_ids``)."""
        view: dict[str, set[str]] = defaultdict(set)
        view["booking_ids"] = set(self.bookings)
        for queued in self.crm.values():
            for crm_id, kind in queued.items():
                view[kind].add(crm_id)
        return view

    @property
    def pending_ids(self) -> int:
        """How many ids are queued (a CRM id once per module that named it)."""
        return len(self.bookings) + sum(len(queued) for queued in self.crm.values())

    def add(self, kind: str, ids: list[str], states: dict[str, dict[str, str]] | None = None, module: str = DEFAULT_MODULE) -> None:
        """Queue ``ids`` of ``kind``: ``crm_ids`` (records to read) or ``deleted_crm_ids`` (records deleted)
        of CRM ``module``, or ``booking_ids``; ``states``: what the webhook of a booking reported (the
        latest wins; a webhook without one forgets an earlier one). A CRM id queued again moves to
        ``kind``: the latest notification decides."""
        if kind == "booking_ids":
            self.bookings.update(ids)
            for booking_id in ids:
                if states and booking_id in states:
                    self.states[booking_id] = states[booking_id]
                else:
                    self.states.pop(booking_id, None)
        elif kind in ("crm_ids", "deleted_crm_ids"):
            self.crm.setdefault(module, {}).update(dict.fromkeys(ids, kind))
        else:
            raise ValueError(f"unknown kind of ids {kind!r}")
        self._wake.set()

    def _send(self, payload: dict[str, Any], kind: str, ids: list[str], module: str | None) -> bool:
        """Emit one event; False (ids kept, logged) when emitting fails."""
        resource = {"prefect.resource.id": f"zoho.sync.{self.settings.config_block}"}
        related = {"related": sync_related(self.settings.config_block, kind, ids, module)} if self._related else {}
        try:
            self.emit("zoho.sync.requested", resource, payload, **related)
        except Exception:  # noqa: BLE001 - keep the ids; the next window tries again
            log.exception("could not emit zoho.sync.requested; %s ids kept for the next window", self.pending_ids)
            return False
        return True

    def flush(self) -> int:
        """Emit what is pending (each module's CRM ids, then booking ids); returns the number of events.
        Ids stay queued if emitting fails (and the flush stops there)."""
        sent = 0
        base = {"config_block": self.settings.config_block, "crm_module": None, "crm_ids": [], "deleted_crm_ids": [], "booking_ids": [], "booking_states": {}}
        for module in sorted(self.crm):
            queued = self.crm[module]
            ids = sorted(queued)
            for i in range(0, len(ids), MAX_IDS_PER_EVENT):
                chunk = ids[i : i + MAX_IDS_PER_EVENT]
                payload = {**base, "crm_module": module,
                           "crm_ids": [c for c in chunk if queued[c] == "crm_ids"], "deleted_crm_ids": [c for c in chunk if queued[c] == "deleted_crm_ids"]}
                if not self._send(payload, "crm_ids", chunk, module):
                    self.emitted_events += sent
                    return sent
                for c in chunk:
                    del queued[c]
                sent += 1
            del self.crm[module]
        ids = sorted(self.bookings)
        for i in range(0, len(ids), MAX_IDS_PER_EVENT):
            chunk = ids[i : i + MAX_IDS_PER_EVENT]
            payload = {**base, "booking_ids": chunk, "booking_states": {b: self.states[b] for b in chunk if b in self.states}}
            if not self._send(payload, "booking_ids", chunk, None):
                self.emitted_events += sent
                return sent
            self.bookings.difference_update(chunk)
            for b in chunk:
                self.states.pop(b, None)
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
                if self.pending_ids:  # emitting failed: try again after the window
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
        """``(parsed body, None)``, or ``(None, answer)``: 413 past ``max_body_bytes`` (read no further),
        400 for a body that is not JSON, holds a lone surrogate, or nests deeper than :data:`MAX_JSON_DEPTH`."""
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > settings.max_body_bytes:
            return None, _error(413, f"body over {settings.max_body_bytes} bytes")
        body = bytearray()
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > settings.max_body_bytes:
                return None, _error(413, f"body over {settings.max_body_bytes} bytes")
        try:
            text = bytes(body).decode(json.detect_encoding(body), "surrogatepass")  # what json.loads(bytes) does
            if json_depth(text, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:  # before json.loads recurses into it
                return None, _error(400, f"the JSON is nested deeper than {MAX_JSON_DEPTH} levels")
            parsed = json.loads(text)
            # A "\ud800" escape decodes to a lone surrogate: no UTF-8 text (nor a Prefect event) can hold it.
            json.dumps(parsed, ensure_ascii=False).encode("utf-8")
            return parsed, None
        except (ValueError, UnicodeError):
            return None, _error(400, "the body is not valid JSON")
        except RecursionError:  # not reached after the depth check; kept so no parse can answer 500
            return None, _error(400, f"the JSON is nested deeper than {MAX_JSON_DEPTH} levels")

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "pending_ids": coalescer.pending_ids, "echoes_skipped": coalescer.echoes_skipped}

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
        if not isinstance(ids, list) or not ids:
            return _error(422, "ids must be a non-empty list of record ids")
        problems = [(i, crm_id_problem(i)) for i in ids]
        dropped = [{"id": _preview(i), "reason": why} for i, why in problems if why is not None]
        ids = list(dict.fromkeys(str(i) for i, why in problems if why is None))
        report = {"dropped": dropped[:MAX_DROPPED_SHOWN], "dropped_count": len(dropped)} if dropped else {}
        if dropped:
            shown = "; ".join(f"{d['id']!r}: {d['reason']}" for d in dropped[:5])
            log.warning("CRM notification (%s %s): %s of %s ids dropped, not CRM record ids (%s%s)",
                        module, operation, len(dropped), len(problems), shown, "; ..." if len(dropped) > 5 else "")
        if not ids:
            return JSONResponse({"error": f"no CRM record id in ids (1 to {MAX_CRM_ID_DIGITS} digits each)", **report}, status_code=422)
        notified = {"module": module, "operation": operation, "ids": ids, "channel_id": str(body.get("channel_id"))}
        emit("zoho.crm.notification", {"prefect.resource.id": f"zoho.crm.{module}"}, {**notified, **({"dropped": len(dropped)} if dropped else {})})
        coalescer.add(CRM_ID_KINDS[operation], ids, module=module)
        return JSONResponse({"accepted": len(ids), **report}, status_code=202)

    @app.post("/zoho/bookings/webhook")
    async def bookings_webhook(request: Request) -> JSONResponse:
        given = request.headers.get("x-zoho-bookings-secret") or request.query_params.get("secret")
        if not _same(given, settings.bookings_secret):
            return _error(401, "wrong or missing shared secret")
        body, error = await read_json(request)
        if error:
            return error
        booking_id = body.get("booking_id") if isinstance(body, dict) else None
        if booking_id is None or booking_id == "":
            return _error(422, "the payload has no booking_id")
        problem = booking_id_problem(booking_id)
        if problem is not None:
            log.warning("Bookings webhook dropped: booking_id %r is not a booking id (%s)", _preview(booking_id), problem)
            return _error(422, f"booking_id {_preview(booking_id)!r} is not a Bookings booking id: {problem}")
        reported = reported_state(body) if settings.skip_echoes else None
        echoed = reported is not None and await asyncio.to_thread(echo, booking_id, *reported)
        payload = {k: body.get(k) for k in ("booking_id", "event", "status", "start_time", "time_zone")}
        emit("zoho.bookings.webhook", {"prefect.resource.id": f"zoho.bookings.{booking_id}"}, {**payload, "echo": echoed})
        if echoed:
            coalescer.echoes_skipped += 1
            return JSONResponse({"accepted": 1, "echo": True}, status_code=202)
        states = {booking_id: {k: body[k] for k in ("status", "start_time", "time_zone")}} if reported is not None else None
        coalescer.add("booking_ids", [booking_id], states)
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
