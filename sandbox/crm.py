"""CRM records and field metadata routes (``{version}`` is ``v2``, ``v2.1`` or ``v3`` .. ``v8``).

* ``GET /crm/{version}/{module}`` and ``GET /crm/{version}/{module}/{id}`` for
  ``Appointments__s`` and ``Events``: ``fields`` (required for lists from v3 on, as
  Zoho requires; an unknown field is ``INVALID_DATA``), ``page``/``per_page`` (200 a
  page, 2,000 records reachable, then ``DISCRETE_PAGINATION_LIMIT_EXCEEDED``),
  ``page_token`` beyond that (:mod:`sandbox.page_tokens`), ``sort_by``/``sort_order``,
  ``ids``, and the ``If-Modified-Since`` header (304 when nothing changed). An empty
  answer is HTTP 204. ``Status`` is shown as CRM derives it (:mod:`sandbox.crm_status`):
  a scheduled appointment whose start has passed is ``Overdue``; when the org does
  not "ask the user to mark the appointment as completed" (config
  ``ask_to_mark_completed=False``) one whose end has passed is ``Completed``.
* ``PUT /crm/{version}/{module}`` (``{"data": [...]}``, at most 100 records, else
  ``LIMIT_EXCEEDED``; per-record results in order, 207 for mixed outcomes) and
  ``PUT /crm/{version}/{module}/{id}``. The ``Appointments__s`` rules and error codes
  are those of "Update Appointments" (seeds 002 and 004, see
  :func:`sandbox.crm_records.update_appointment`); values that do not fit their field
  (text, pick list, boolean, date-time, duration) are ``INVALID_DATA``, never a 500.
  ``Modified_Time`` and ``Modified_By`` move on every write, and watching channels
  are notified (:mod:`sandbox.watch`). ``Events`` also take ``Booking_Status``, a
  custom pick list (``Scheduled``, ``Cancelled``, ``Completed``, ``No Show``) that
  an organisation adds to carry the booking's status; the sandbox assumes and seeds
  it (:mod:`sandbox.schema`, :mod:`sandbox.seed`).
* ``DELETE /crm/{version}/Events?ids=1,2,3`` and ``DELETE /crm/{version}/Events/{id}``
  (Zoho's "Delete Records" / "Delete Record", crm-oas v8.0 ``record.json``; scope
  ``ZohoCRM.modules.Events.DELETE``, or ``.ALL``): HTTP 200 with per-record results
  in order, ``{"code": "SUCCESS", "details": {"id"}, "message": "record deleted",
  "status": "success"}`` or, for an id with no record, ``INVALID_DATA`` "the related
  id given seems to be invalid" (``details {id}``). No ``ids`` is
  ``REQUIRED_PARAM_MISSING``, more than 100 ``LIMIT_EXCEEDED`` (400, nothing
  deleted); ``wf_trigger`` is accepted and ignored. A deleted record is gone from
  lists, ``GET`` by id, Bulk Read and the dump, and channels watching ``Events.all``
  or ``Events.delete`` are notified with ``operation: "delete"``
  (:func:`sandbox.crm_records.delete_records`). ``DELETE`` on ``Appointments__s``
  is not served. Other methods on a module (``POST``, ``PATCH``, and ``DELETE``
  where not served) are ``INVALID_REQUEST_METHOD``; a body that is not JSON is
  ``INVALID_DATA``.
* ``GET /crm/{version}/settings/fields?module=...`` (scope ``ZohoCRM.settings.fields.READ``)
  for the modules with records and for the modules their lookups point to
  (``Contacts``, ``Services__s``, ``Users``: metadata only, see
  :data:`sandbox.schema.METADATA_ONLY`); ``type`` (``all``/``used``/``unused``) is
  accepted, every field being ``used``. ``GET /crm/{version}/settings/modules``
  (``{"modules": [...]}``, crm-oas v8.0 ``getModules``; ``status`` filter, a value
  outside ``visible``, ``user_hidden``, ``system_hidden``, ``scheduled_for_deletion``
  is ``INVALID_DATA`` naming its ``index``) and ``GET .../settings/modules/{api_name}``
  (one module; unknown: ``INVALID_MODULE``), scope ``ZohoCRM.settings.modules.READ``.

The notification channels ``/crm/{version}/actions/watch`` are in :mod:`sandbox.watch`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from . import clock
from .auth import require_crm
from .crm_records import apply_updates, delete_records
from .crm_request import check_module, check_version, json_body
from .crm_status import auto_completes, view
from .errors import CrmError
from .page_tokens import SORT_FIELDS, decode_token, encode_token
from .schema import DESCRIBED, FIELD_INDEX, MODULE_STATUSES, field_metadata, module_metadata
from .seed import API_USER
from .state import SandboxState

router = APIRouter()

MAX_UPDATE = 100
MAX_DELETE = 100
#: Modules whose records ``DELETE`` removes; on the others it is ``INVALID_REQUEST_METHOD``.
DELETABLE = ("Events",)
MAX_PER_PAGE = 200
MAX_PAGE_RECORDS = 2000

@router.get("/crm/{version}/settings/fields")
async def fields_metadata(version: str, request: Request) -> JSONResponse:
    """Field metadata of ``module``."""
    check_version(version)
    require_crm(request, "ZohoCRM.settings.fields.READ")
    module = request.query_params.get("module")
    if not module:
        raise CrmError("REQUIRED_PARAM_MISSING", 400, details={"param_name": "module"})
    if module not in DESCRIBED:
        raise CrmError("INVALID_MODULE", 400, details={"param_name": "module"})
    kind = request.query_params.get("type", "all")
    if kind not in ("all", "used", "unused"):
        raise CrmError("INVALID_DATA", 400, "invalid type", {"param_name": "type", "supported_values": ["all", "used", "unused"]})
    if kind == "unused":
        return Response(status_code=204)
    return JSONResponse({"fields": field_metadata(module)})

@router.get("/crm/{version}/settings/modules")
async def modules_metadata(version: str, request: Request) -> Response:
    """The modules of the org (crm-oas v8.0 ``getModules``); 204 when the ``status`` filter leaves none."""
    check_version(version)
    require_crm(request, "ZohoCRM.settings.modules.READ")
    wanted = request.query_params.get("status")
    statuses = wanted.split(",") if wanted is not None else list(MODULE_STATUSES)
    for i, value in enumerate(statuses):
        if value not in MODULE_STATUSES:
            raise CrmError(
                "INVALID_DATA", 400, "The status given is invalid.",
                {"index": i, "supported_values": list(MODULE_STATUSES), "param_name": "status"},
            )
    shown = [module_metadata(m) for m in DESCRIBED if module_metadata(m)["status"] in statuses]
    if not shown:
        return Response(status_code=204)
    return JSONResponse({"modules": shown})

@router.get("/crm/{version}/settings/modules/{module}")
async def module_by_name(version: str, module: str, request: Request) -> JSONResponse:
    """One module by API name (crm-oas v8.0 ``getModuleByApiName``)."""
    check_version(version)
    require_crm(request, "ZohoCRM.settings.modules.READ")
    if module not in DESCRIBED:
        raise CrmError("INVALID_MODULE", 400, details={"resource_path_index": 2})
    return JSONResponse({"modules": [module_metadata(module)]})

def _fields_param(request: Request, module: str) -> list[str]:
    """The ``fields`` query parameter as a list; an unknown field is ``INVALID_DATA``."""
    fields = [f.strip() for f in request.query_params.get("fields", "").split(",") if f.strip()]
    unknown = [f for f in fields if f not in FIELD_INDEX[module]]
    if unknown:
        raise CrmError("INVALID_DATA", 400, "invalid field", {"api_name": unknown[0]})
    return fields

def _int_param(request: Request, name: str, default: int) -> int:
    value = request.query_params.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise CrmError("INVALID_DATA", 400, f"invalid {name}", {"param_name": name}) from None

@router.get("/crm/{version}/{module}")
async def list_records(version: str, module: str, request: Request) -> Response:
    """List records of ``module``."""
    major = check_version(version)
    check_module(module)
    require_crm(request, f"ZohoCRM.modules.{module}.READ")
    state: SandboxState = request.app.state.sandbox
    q = request.query_params
    fields = _fields_param(request, module)
    if major >= 3 and not fields:
        raise CrmError("REQUIRED_PARAM_MISSING", 400, details={"param_name": "fields"})
    per_page = _int_param(request, "per_page", MAX_PER_PAGE)
    page = _int_param(request, "page", 1)
    if not 1 <= per_page <= MAX_PER_PAGE or page < 1:
        raise CrmError("INVALID_DATA", 400, "invalid page or per_page", {"param_name": "per_page" if page >= 1 else "page"})
    sort_by = q.get("sort_by", "id")
    sort_order = q.get("sort_order", "desc")
    if sort_by not in SORT_FIELDS or sort_order not in ("asc", "desc"):
        raise CrmError("INVALID_DATA", 400, "invalid sort_by or sort_order", {"param_name": "sort_by"})
    if q.get("page_token"):
        tok = decode_token(q["page_token"])
        offset, sort_by, sort_order = tok["o"], tok["s"], tok["d"]
    else:
        offset = (page - 1) * per_page
        if offset + per_page > MAX_PAGE_RECORDS:
            raise CrmError(
                "DISCRETE_PAGINATION_LIMIT_EXCEEDED", 400,
                "You cannot fetch more than 2000 records using page and per_page. Use page_token.",
                {"limit": MAX_PAGE_RECORDS},
            )
    records = list(state.module_store(module).values())
    ids = {i for i in q.get("ids", "").split(",") if i}
    if ids:
        records = [r for r in records if r["id"] in ids]
    since = request.headers.get("if-modified-since")
    if since:
        try:
            since_dt = clock.parse_iso(since)
        except ValueError:
            raise CrmError("INVALID_DATA", 400, "invalid If-Modified-Since", {"header": "If-Modified-Since"}) from None
        records = [r for r in records if clock.parse_iso(r["Modified_Time"]) > since_dt]
        if not records:
            return Response(status_code=304)
    key = (lambda r: int(r["id"])) if sort_by == "id" else (lambda r: clock.parse_iso(r[sort_by]))
    records.sort(key=key, reverse=sort_order == "desc")
    chunk = records[offset : offset + per_page]
    if not chunk:
        return Response(status_code=204)
    now = clock.now()
    more = offset + per_page < len(records)
    info = {
        "per_page": per_page,
        "count": len(chunk),
        "page": page if not q.get("page_token") else offset // per_page + 1,
        "sort_by": sort_by,
        "sort_order": sort_order,
        "more_records": more,
        "next_page_token": encode_token(offset + per_page, sort_by, sort_order) if more else None,
        "previous_page_token": None,
        "page_token_expiry": clock.to_crm(now + timedelta(days=1), state.config.org_time_zone) if more else None,
    }
    shown = [view(module, r, now, fields, auto_complete=auto_completes(state)) for r in chunk]
    return JSONResponse({"data": shown, "info": info})

@router.get("/crm/{version}/{module}/{record_id}")
async def get_record(version: str, module: str, record_id: str, request: Request) -> Response:
    """One record by id."""
    check_version(version)
    check_module(module)
    require_crm(request, f"ZohoCRM.modules.{module}.READ")
    state: SandboxState = request.app.state.sandbox
    fields = _fields_param(request, module)
    rec = state.module_store(module).get(record_id)
    if rec is None:
        raise CrmError("INVALID_DATA", 400, "the id given seems to be invalid", {"id": record_id})
    return JSONResponse({"data": [view(module, rec, clock.now(), fields, auto_complete=auto_completes(state))]})

def _actor(info: dict[str, Any]) -> dict[str, str]:
    return dict(API_USER)

@router.put("/crm/{version}/{module}")
async def update_records(version: str, module: str, request: Request) -> JSONResponse:
    """Update up to 100 records of ``module``."""
    check_version(version)
    check_module(module)
    info = require_crm(request, f"ZohoCRM.modules.{module}.UPDATE", write=True)
    state: SandboxState = request.app.state.sandbox
    body = await json_body(request)
    items = body.get("data") if isinstance(body, dict) else None
    if not isinstance(body, dict) or "data" not in body:
        raise CrmError("MANDATORY_NOT_FOUND", 400, details={"api_name": "data"})
    if not isinstance(items, list) or not items:
        raise CrmError("INVALID_DATA", 400, "data should be a non-empty array", {"api_name": "data"})
    if len(items) > MAX_UPDATE:
        raise CrmError("LIMIT_EXCEEDED", 400, "the number of records exceeds the limit", {"limit": MAX_UPDATE})
    results, status = apply_updates(state, request, module, items, _actor(info))
    return JSONResponse({"data": results}, status_code=status)

@router.put("/crm/{version}/{module}/{record_id}")
async def update_record(version: str, module: str, record_id: str, request: Request) -> JSONResponse:
    """Update one record named in the URL."""
    check_version(version)
    check_module(module)
    info = require_crm(request, f"ZohoCRM.modules.{module}.UPDATE", write=True)
    state: SandboxState = request.app.state.sandbox
    body = await json_body(request)
    items = body.get("data") if isinstance(body, dict) else None
    if not isinstance(items, list) or len(items) != 1 or not isinstance(items[0], dict):
        raise CrmError("MANDATORY_NOT_FOUND", 400, details={"api_name": "data"})
    results, status = apply_updates(state, request, module, [{**items[0], "id": record_id}], _actor(info))
    return JSONResponse({"data": results}, status_code=status)

def _delete(version: str, module: str, request: Request, ids: list[str]) -> JSONResponse:
    """Delete ``ids`` of ``module`` (at most :data:`MAX_DELETE`). ``DELETE`` on a module not in
    :data:`DELETABLE` is ``INVALID_REQUEST_METHOD``, answered before the token is checked, as
    the other methods the sandbox does not serve are."""
    check_version(version)
    check_module(module)
    if module not in DELETABLE:
        raise CrmError("INVALID_REQUEST_METHOD", 400)
    require_crm(request, f"ZohoCRM.modules.{module}.DELETE", write=True)
    if not ids:
        raise CrmError("REQUIRED_PARAM_MISSING", 400, details={"param_name": "ids"})
    if len(ids) > MAX_DELETE:
        raise CrmError("LIMIT_EXCEEDED", 400, "the number of records exceeds the limit", {"limit": MAX_DELETE})
    results = delete_records(request.app.state.sandbox, request, module, ids)
    return JSONResponse({"data": results})

@router.delete("/crm/{version}/{module}")
async def delete_records_route(version: str, module: str, request: Request) -> JSONResponse:
    """Delete the records in ``ids`` (comma-separated, at most 100)."""
    ids = [i.strip() for i in request.query_params.get("ids", "").split(",") if i.strip()]
    return _delete(version, module, request, ids)

@router.delete("/crm/{version}/{module}/{record_id}")
async def delete_record_route(version: str, module: str, record_id: str, request: Request) -> JSONResponse:
    """Delete the one record named in the URL."""
    return _delete(version, module, request, [record_id])

@router.api_route("/crm/{version}/{module}", methods=["POST", "PATCH"])
@router.api_route("/crm/{version}/{module}/{record_id}", methods=["POST", "PATCH"])
async def wrong_method(version: str, module: str, request: Request, record_id: str | None = None) -> JSONResponse:
    """Methods the sandbox does not serve on records: ``INVALID_REQUEST_METHOD``."""
    check_version(version)
    check_module(module)
    raise CrmError("INVALID_REQUEST_METHOD", 400)
