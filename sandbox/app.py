"""The sandbox's ASGI application: routes, error bodies, fault injection and counters.

Errors always come in the shape of the API the call was aimed at, never as HTML
or a stack trace: CRM (and anything unknown) ``{"code", "details", "message",
"status": "error"}`` (an unknown route ``INVALID_URL_PATTERN`` 404, a wrong method
``INVALID_REQUEST_METHOD``, a crash ``INTERNAL_ERROR`` 500), Bookings the failure
envelope with the HTTP status, Accounts ``{"error": ...}``. Injected faults
(:class:`FaultsAndStats`) use the same shapes; Accounts answers a 429 fault with
Zoho's "Access Denied" body and a 500 fault with ``{"error": "server_error"}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from . import admin, auth, bookings, bulk, crm, limits, watch
from .config import SandboxConfig
from .errors import BookingsError, CrmError
from .outbox import Outbox
from .state import SandboxState, token_label


class DroppedConnection(Exception):
    """Raised after the status line to make the server close the socket (fault ``drop``)."""


class _QuietDrops(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], DroppedConnection))


def route_group(path: str) -> str | None:
    """``accounts``, ``bulk``, ``crm``, ``bookings``, ``admin``, or None for anything else."""
    if path.startswith("/oauth/"):
        return "accounts"
    if path.startswith("/crm/bulk/"):
        return "bulk"
    if path.startswith("/crm/"):
        return "crm"
    if path.startswith("/bookings/"):
        return "bookings"
    if path.startswith("/__sandbox"):
        return "admin"
    return None


def _fault_body(group: str, kind: str) -> dict[str, Any]:
    if group == "bookings":
        message = "Internal Server Error" if kind == "500" else "Too many requests"
        return {"response": {"returnvalue": {"message": message}, "status": "failure"}}
    if group == "accounts":
        return dict(auth.THROTTLED) if kind == "429" else {"error": "server_error"}
    if kind == "500":
        return CrmError("INTERNAL_ERROR", 500).body()
    return CrmError("TOO_MANY_REQUESTS", 429).body()


class FaultsAndStats:
    """ASGI middleware: counts every API call, applies Zoho's API limits
    (:mod:`sandbox.limits`, before any fault) and injects the configured faults."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        group = route_group(scope.get("path", "")) if scope["type"] == "http" else None
        if group in (None, "admin"):
            await self.app(scope, receive, send)
            return
        state: SandboxState = scope["app"].state.sandbox
        headers = dict(scope.get("headers") or [])
        authz = headers.get(b"authorization", b"").decode("latin-1")
        token = authz.partition(" ")[2].strip()
        spec: dict[str, float] = {**state.faults.get("all", {}), **state.faults.get(group, {})}
        usage = state.usage
        method, path = scope["method"], scope.get("path", "")
        admitted = False
        try:
            refusal = limits.admit(usage, state.config, group, method, path, headers)
            if refusal is not None:
                await _answer(send, refusal[1], refusal[2], refusal[3])
                raise _Answered()
            admitted = True
            if spec:
                await self._inject(state, group, spec, send)
            await self.app(scope, receive, send)
        except _Answered:
            pass
        finally:
            if admitted:
                limits.release(usage, group, method, path, headers)
            label = f"{scope['method']} {_route_template(scope)}"
            state.stats.calls[label] += 1
            state.stats.calls_by_group[group] += 1
            if token:
                state.stats.calls_by_token[token_label(token)] += 1

    async def _inject(self, state: SandboxState, group: str, spec: dict[str, float], send: Any) -> None:
        rng = state.rng
        if spec.get("delay"):
            state.stats.faults[f"{group}:delay"] += 1
            await asyncio.sleep(spec["delay"])
        if rng.random() < spec.get("drop", 0):
            state.stats.faults[f"{group}:drop"] += 1
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"1000")]})
            raise DroppedConnection()
        for kind, key in (("500", "error_500"), ("429", "error_429")):
            if rng.random() < spec.get(key, 0):
                state.stats.faults[f"{group}:{kind}"] += 1
                body = json.dumps(_fault_body(group, kind)).encode()
                hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
                if kind == "429":
                    hdrs.append((b"retry-after", str(int(spec.get("retry_after", 1))).encode()))
                await send({"type": "http.response.start", "status": int(kind), "headers": hdrs})
                await send({"type": "http.response.body", "body": body})
                raise _Answered()


async def _answer(send: Any, status: int, body: dict[str, Any], headers: dict[str, str]) -> None:
    raw = json.dumps(body).encode()
    hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]
    hdrs += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": raw})


def _route_template(scope: dict) -> str:
    """The route template a request matches (``/crm/{version}/{module}``), else its path.

    A call the fault injector answered never reached the router, so the route is
    looked up here: every call to one route is counted under one name.
    """
    route = scope.get("route")
    if route is None:
        probe = {k: v for k, v in scope.items() if k != "route"}
        for candidate in scope["app"].state.api_routes:
            try:
                match, _ = candidate.matches(probe)
            except Exception:  # noqa: BLE001 - a route that cannot tell is no match
                continue
            if match == Match.FULL:
                route = candidate
                break
    return getattr(route, "path", scope["path"])


class _Answered(Exception):
    """The fault injector has already answered the request."""


def create_app(config: SandboxConfig | None = None, db_path: str | None = None) -> FastAPI:
    """Build the sandbox app for ``config`` (defaults: 2,000 appointments, seed 42).

    ``db_path``: a SQLite file that keeps records, OAuth grants and channels
    across restarts (default: memory only).
    """
    config = config or SandboxConfig()
    state = SandboxState(config, db_path)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        worker = asyncio.create_task(app.state.outbox.run())
        try:
            yield
        finally:
            worker.cancel()
            for task in app.state.bulk_tasks.values():
                task.cancel()

    app = FastAPI(
        title="Zoho sandbox",
        description="A Zoho-compatible local server: Accounts, CRM, Bulk Read, notifications, Bookings.",
        docs_url=None,
        redoc_url=None,
        openapi_url="/__sandbox/openapi.json",
        lifespan=lifespan,
    )
    app.state.sandbox = state
    app.state.outbox = Outbox(state)
    app.state.bulk_tasks = {}

    @app.exception_handler(CrmError)
    async def _crm_error(request: Request, exc: CrmError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(BookingsError)
    async def _bookings_error(request: Request, exc: BookingsError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return CrmError("INVALID_DATA", 400, "invalid data", {"errors": len(exc.errors())}).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if request.url.path.startswith("/bookings/"):
            return BookingsError("Invalid URL: check the API path", exc.status_code).response()
        if request.url.path.startswith("/oauth/"):
            return JSONResponse({"error": "invalid_request"}, status_code=exc.status_code)
        if exc.status_code == 405:
            return CrmError("INVALID_REQUEST_METHOD", 400).response()
        return CrmError("INVALID_URL_PATTERN", 404).response()

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        if request.url.path.startswith("/bookings/"):
            return BookingsError("Internal Server Error", 500).response()
        if request.url.path.startswith("/oauth/"):
            return JSONResponse({"error": "server_error"}, status_code=500)
        return CrmError("INTERNAL_ERROR", 500).response()

    routers = (admin.router, auth.router, bulk.router, bookings.router, watch.router, crm.router)
    for router in routers:
        app.include_router(router)
    #: The routes in matching order, for naming calls the fault injector answered.
    app.state.api_routes = [route for router in routers for route in router.routes]
    app.add_middleware(FaultsAndStats)
    logging.getLogger("uvicorn.error").addFilter(_QuietDrops())
    return app


def serve(config: SandboxConfig, host: str = "127.0.0.1", port: int = 8900, db_path: str | None = None, log_level: str = "warning") -> None:
    """Serve the sandbox with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(create_app(config, db_path), host=host, port=port, log_level=log_level)
