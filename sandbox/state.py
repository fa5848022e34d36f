"""Everything the sandbox remembers: records, OAuth grants, bulk jobs, channels, counters.

One :class:`SandboxState` per server. All handlers run on one event loop, so the
state needs no locks; the only work done off the loop (writing a Bulk Read zip)
reads a snapshot list of record dicts, and records are replaced whole on every
write, never changed in place.

With ``--db PATH`` records, OAuth clients, refresh tokens, access tokens, grant
codes and notification channels are also kept in a SQLite file (parameterised
statements only) and loaded on the next start (the file wins over
``--appointments``/``--seed``; ``POST /__sandbox/reset`` re-seeds the file too);
Bulk Read jobs, faults and counters are kept in memory only.
"""

from __future__ import annotations

import hashlib
import json
import random
import secrets
import sqlite3
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from . import clock
from . import seed as seeding
from .config import SandboxConfig
from .limits import Usage

DEFAULT_SCOPES = (
    "ZohoCRM.modules.ALL",
    "ZohoCRM.bulk.read",
    "ZohoCRM.settings.fields.READ",
    "ZohoCRM.settings.modules.READ",
    "ZohoCRM.notifications.ALL",
    "zohobookings.data.CREATE",
)

_MODULE_ALIASES = {"appointments__s": "appointments", "events": "events"}


def token_label(token: str) -> str:
    """A short, non-reversible label for a token, safe to show in stats."""
    return hashlib.sha256(token.encode()).hexdigest()[:10]


def _normalise_scope(scope: str) -> str:
    parts = scope.strip().lower().split(".")
    return ".".join(_MODULE_ALIASES.get(p, p) for p in parts)


def scope_covers(granted: list[str], required: str) -> bool:
    """Whether any granted scope covers ``required``.

    ``X.ALL`` covers every scope under ``X`` (``ZohoCRM.modules.ALL`` covers
    ``ZohoCRM.modules.appointments.UPDATE``); module names match with or without
    the ``__s`` suffix; comparison ignores case.
    """
    want = _normalise_scope(required)
    for g in granted:
        have = _normalise_scope(g)
        if have == want:
            return True
        if have.endswith(".all") and want.startswith(have[: -len("all")]):
            return True
        # ZohoCRM.modules.appointments.ALL covers .READ/.UPDATE of that module
        if have.endswith(".all") and want.rsplit(".", 1)[0] == have.rsplit(".", 1)[0]:
            return True
    return False


@dataclass
class BulkJob:
    """One Bulk Read job (module, query, timing, result)."""

    id: str
    module: str
    query: dict[str, Any]
    file_type: str
    created_at: float
    created_time: str
    callback: dict[str, Any] | None
    token: str
    offset: int
    page: int
    error: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    zip_bytes: bytes | None = None
    finished_at: float | None = None
    callback_sent: bool = False


@dataclass
class Stats:
    """API-call counters served by ``GET /__sandbox/stats``."""

    calls: Counter = field(default_factory=Counter)
    calls_by_group: Counter = field(default_factory=Counter)
    calls_by_token: Counter = field(default_factory=Counter)
    tokens_minted: int = 0
    tokens_minted_by_refresh_token: Counter = field(default_factory=Counter)
    token_requests_throttled: int = 0
    faults: Counter = field(default_factory=Counter)
    writes: Counter = field(default_factory=Counter)
    #: accepted writes per record, admin edits included: ``"Appointments__s:<id>"``,
    #: ``"Events:<id>"``, ``"bookings:<booking_id>"`` (sums to ``writes``)
    writes_by_record: Counter = field(default_factory=Counter)
    outbound: Counter = field(default_factory=Counter)
    bulk_jobs_created: int = 0
    bulk_downloads: int = 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready counters."""
        return {
            "calls": dict(self.calls),
            "calls_by_group": dict(self.calls_by_group),
            "calls_by_token": dict(self.calls_by_token),
            "total_calls": sum(self.calls_by_group.values()),
            "tokens_minted": self.tokens_minted,
            "tokens_minted_by_refresh_token": dict(self.tokens_minted_by_refresh_token),
            "token_requests_throttled": self.token_requests_throttled,
            "faults_injected": dict(self.faults),
            "writes": dict(self.writes),
            "writes_by_record": dict(self.writes_by_record),
            "outbound": dict(self.outbound),
            "bulk_jobs_created": self.bulk_jobs_created,
            "bulk_downloads": self.bulk_downloads,
        }


class Persistence:
    """Optional SQLite file holding records, OAuth grants and channels as JSON."""

    def __init__(self, path: str) -> None:
        self.conn = sqlite3.connect(path, check_same_thread=False)
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS records (kind TEXT NOT NULL, key TEXT NOT NULL, body TEXT NOT NULL, PRIMARY KEY (kind, key))"
        )
        self.conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, body TEXT NOT NULL)")
        self.conn.commit()

    def load(self, kind: str) -> dict[str, dict]:
        """All records of ``kind`` (key -> record)."""
        rows = self.conn.execute("SELECT key, body FROM records WHERE kind = ?", (kind,))
        return {key: json.loads(body) for key, body in rows}

    def save_many(self, kind: str, items: dict[str, dict]) -> None:
        """Upsert records of ``kind``."""
        self.conn.executemany(
            "INSERT OR REPLACE INTO records (kind, key, body) VALUES (?, ?, ?)",
            [(kind, key, json.dumps(body)) for key, body in items.items()],
        )
        self.conn.commit()

    def delete_many(self, kind: str, keys: list[str]) -> None:
        """Forget records of ``kind``."""
        self.conn.executemany("DELETE FROM records WHERE kind = ? AND key = ?", [(kind, key) for key in keys])
        self.conn.commit()

    def clear(self) -> None:
        """Forget every record and meta value."""
        self.conn.execute("DELETE FROM records")
        self.conn.execute("DELETE FROM meta")
        self.conn.commit()

    def get_meta(self, key: str) -> Any:
        """A stored meta value, or ``None``."""
        row = self.conn.execute("SELECT body FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def set_meta(self, key: str, value: Any) -> None:
        """Store a meta value."""
        self.conn.execute("INSERT OR REPLACE INTO meta (key, body) VALUES (?, ?)", (key, json.dumps(value)))
        self.conn.commit()


class SandboxState:
    """Records, OAuth, jobs, channels, faults and counters of one sandbox."""

    def __init__(self, config: SandboxConfig, db_path: str | None = None) -> None:
        self.config = config
        self.persistence = Persistence(db_path) if db_path else None
        self.reset(keep_persisted=True)

    # ------------------------------------------------------------------ set-up
    def reset(self, keep_persisted: bool = False) -> None:
        """Re-seed the data and forget tokens, jobs, channels, faults and counters;
        the clock goes back to real time and API-limit usage to zero.

        The sandbox's own credentials (``GET /__sandbox/credentials``) are derived
        from the seed, so they stay valid across a reset with the same seed.
        """
        clock.set_real()
        cfg = self.config
        p = self.persistence
        loaded = False
        if p is not None and keep_persisted:
            appointments = p.load("Appointments__s")
            if appointments:
                self.appointments = appointments
                self.events = p.load("Events")
                self.bookings = p.load("bookings")
                meta = p.get_meta("state") or {}
                self.next_crm_id = int(meta.get("next_crm_id", seeding.CRM_ID_BASE + 10 * len(appointments)))
                loaded = True
        if not loaded:
            self.appointments, self.events, self.bookings, self.next_crm_id = seeding.generate(cfg)
            if p is not None:
                p.clear()
                p.save_many("Appointments__s", self.appointments)
                p.save_many("Events", self.events)
                p.save_many("bookings", self.bookings)
        self.usage = Usage()
        self.rng = random.Random(cfg.seed)
        self.jobs: dict[str, BulkJob] = {}
        self.job_seq = 0
        self.downloads: deque[float] = deque()
        self.faults: dict[str, dict[str, float]] = {}
        self.stats = Stats()
        self.outbox_log: deque[dict[str, Any]] = deque(maxlen=500)
        self._init_oauth(loaded)
        self.channels: dict[str, dict[str, Any]] = (p.get_meta("channels") or {}) if (p and loaded) else {}
        self._save_meta()

    def _init_oauth(self, loaded: bool) -> None:
        saved = self.persistence.get_meta("oauth") if (self.persistence and loaded) else None
        if saved:
            self.clients = saved["clients"]
            self.refresh_tokens = saved["refresh_tokens"]
            self.access_tokens = saved["access_tokens"]
            self.grant_codes = saved["grant_codes"]
            self.default_client_id = saved.get("default_client_id") or next(iter(self.clients))
            self.default_refresh_token = saved.get("default_refresh_token") or next(
                (rt for rt, g in self.refresh_tokens.items() if g["client_id"] == self.default_client_id), ""
            )
            return
        self.clients: dict[str, dict[str, Any]] = {}
        self.refresh_tokens: dict[str, dict[str, Any]] = {}
        self.access_tokens: dict[str, dict[str, Any]] = {}
        self.grant_codes: dict[str, dict[str, Any]] = {}
        digest = hashlib.sha256(f"zoho-sandbox-{self.config.seed}".encode()).hexdigest()
        client_id = "1000." + digest[:30].upper()
        secret = hashlib.sha256(f"zoho-sandbox-secret-{self.config.seed}".encode()).hexdigest()[:42]
        self.clients[client_id] = {"client_secret": secret, "redirect_uri": ""}
        refresh = f"1000.{digest[8:40]}.{digest[40:64]}"
        self.refresh_tokens[refresh] = self.new_grant(client_id, list(DEFAULT_SCOPES), "full")
        self.default_client_id = client_id
        self.default_refresh_token = refresh

    @staticmethod
    def new_grant(client_id: str, scopes: list[str], permission: str) -> dict[str, Any]:
        """What a refresh token grants (client, scopes, permission), with no access token minted yet."""
        return {"client_id": client_id, "scope": scopes, "permission": permission, "mints": [], "active": []}

    def _save_meta(self) -> None:
        if self.persistence is None:
            return
        self.persistence.set_meta("state", {"next_crm_id": self.next_crm_id})
        self.persistence.set_meta(
            "oauth",
            {
                "clients": self.clients,
                "refresh_tokens": self.refresh_tokens,
                "access_tokens": self.access_tokens,
                "grant_codes": self.grant_codes,
                "default_client_id": self.default_client_id,
                "default_refresh_token": self.default_refresh_token,
            },
        )
        self.persistence.set_meta("channels", self.channels)

    def save_oauth(self) -> None:
        """Persist OAuth grants (no-op without ``--db``)."""
        self._save_meta()

    def save_channels(self) -> None:
        """Persist notification channels (no-op without ``--db``)."""
        self._save_meta()

    def save_records(self, kind: str, items: dict[str, dict]) -> None:
        """Persist changed records of ``kind`` (no-op without ``--db``)."""
        if self.persistence is not None and items:
            self.persistence.save_many(kind, items)

    def delete_records(self, kind: str, keys: list[str]) -> None:
        """Forget deleted records of ``kind`` in the file too (no-op without ``--db``)."""
        if self.persistence is not None and keys:
            self.persistence.delete_many(kind, keys)

    # -------------------------------------------------------------- credentials
    def default_credentials(self) -> dict[str, str]:
        """Client id, secret and refresh token of the sandbox's own self client.

        A revoked (or pushed-out) refresh token is still named, with an empty
        ``scope``: it answers ``invalid_code`` until the next reset.
        """
        client_id = self.default_client_id
        refresh = self.default_refresh_token
        grant = self.refresh_tokens.get(refresh)
        return {
            "client_id": client_id,
            "client_secret": self.clients[client_id]["client_secret"],
            "refresh_token": refresh,
            "scope": ",".join(grant["scope"]) if grant else "",
        }

    def new_client(self, scopes: list[str], permission: str = "full") -> dict[str, str]:
        """A fresh self client with its own refresh token (for scope and permission tests)."""
        client_id = "1000." + secrets.token_hex(15).upper()
        secret = secrets.token_hex(21)
        refresh = f"1000.{secrets.token_hex(16)}.{secrets.token_hex(16)}"
        self.clients[client_id] = {"client_secret": secret, "redirect_uri": ""}
        self.refresh_tokens[refresh] = self.new_grant(client_id, scopes, permission)
        self.save_oauth()
        return {"client_id": client_id, "client_secret": secret, "refresh_token": refresh, "scope": ",".join(scopes)}

    def new_grant_code(self, client_id: str, scopes: list[str], ttl: float = 600) -> str:
        """A one-time grant code for the ``authorization_code`` grant (valid ``ttl`` seconds)."""
        code = f"1000.{secrets.token_hex(16)}.{secrets.token_hex(16)}"
        self.grant_codes[code] = {"client_id": client_id, "scope": scopes, "expires_at": clock.timestamp() + ttl}
        self.save_oauth()
        return code

    # -------------------------------------------------------------------- ids
    def new_crm_id(self) -> str:
        """The next CRM record id (19 digits, like Zoho's)."""
        self.next_crm_id += 1
        return str(self.next_crm_id)

    def new_job_id(self) -> str:
        """The next Bulk Read job id."""
        self.job_seq += 1
        return str(5545974000003000000 + self.job_seq * 3 + self.rng.randrange(3))

    # ----------------------------------------------------------------- lookups
    def module_store(self, module: str) -> dict[str, dict]:
        """The CRM records of ``module`` (``Appointments__s`` or ``Events``)."""
        return self.appointments if module == "Appointments__s" else self.events

    def crm_by_booking(self, module: str, booking_id: str) -> dict | None:
        """The CRM record of ``module`` linked to ``booking_id``, if any."""
        for rec in self.module_store(module).values():
            if rec.get("Booking_Id") == booking_id:
                return rec
        return None
