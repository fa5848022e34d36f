"""The CRM modules the sandbox serves and their fields.

One table drives ``GET /crm/{v}/settings/fields``, the Bulk Read columns, the
criteria comparators allowed per field type, and which fields an update may touch.
Data types and comparators follow Zoho's field metadata and Bulk Read criteria
documents (seed 001 and its "comparators per data type" table).

Custom fields (``custom_field: true``) are the organisation's own, not Zoho's:
``Booking_Id`` on both modules links a record to its booking, and
``Booking_Status`` on ``Events`` (a pick list of :data:`MEETING_STATUSES`) carries
the booking's status, since Meetings have no status field of their own. Which
custom fields an organisation adds is its choice; the sandbox assumes these two
and seeds them (:mod:`sandbox.seed`).
"""

from __future__ import annotations

from dataclasses import dataclass

#: Comparators Bulk Read accepts, per field data type.
COMPARATORS: dict[str, frozenset[str]] = {
    "text": frozenset({"equal", "not_equal", "in", "not_in", "starts_with", "ends_with", "contains", "not_contains"}),
    "textarea": frozenset({"equal", "not_equal", "starts_with", "ends_with", "contains", "not_contains"}),
    "email": frozenset({"equal", "not_equal", "in", "not_in", "starts_with", "ends_with", "contains", "not_contains"}),
    "picklist": frozenset({"equal", "not_equal", "in", "not_in"}),
    "lookup": frozenset({"equal", "not_equal", "in", "not_in"}),
    "ownerlookup": frozenset({"equal", "not_equal", "in", "not_in"}),
    "bigint": frozenset({"equal", "not_equal", "in", "not_in", "greater_than", "greater_equal", "less_than", "less_equal", "between", "not_between"}),
    "integer": frozenset({"equal", "not_equal", "in", "not_in", "greater_than", "greater_equal", "less_than", "less_equal", "between", "not_between"}),
    "datetime": frozenset({"equal", "not_equal", "in", "not_in", "greater_than", "greater_equal", "less_than", "less_equal", "between", "not_between"}),
    "boolean": frozenset({"equal"}),
}


@dataclass(frozen=True)
class Field:
    """One field of a module: API name, data type, label, and whether the API may write it."""

    api_name: str
    data_type: str
    label: str
    read_only: bool = False
    custom: bool = False
    pick_list: tuple[str, ...] = ()


def _audit_fields() -> list[Field]:
    return [
        Field("Created_Time", "datetime", "Created Time", read_only=True),
        Field("Created_By", "ownerlookup", "Created By", read_only=True),
        Field("Modified_Time", "datetime", "Modified Time", read_only=True),
        Field("Modified_By", "ownerlookup", "Modified By", read_only=True),
    ]


APPOINTMENT_STATUSES = ("Scheduled", "Overdue", "Completed", "Cancelled")
#: Values of the ``Booking_Status`` pick list on ``Events`` (a custom field: the sandbox's assumption).
MEETING_STATUSES = ("Scheduled", "Cancelled", "Completed", "No Show")
BY_WHOM = ("By Customer", "By Team")

APPOINTMENT_FIELDS: list[Field] = [
    Field("id", "bigint", "Record Id", read_only=True),
    Field("Appointment_Name", "text", "Appointment Name"),
    Field("Appointment_Start_Time", "datetime", "Appointment Start Time"),
    Field("Appointment_End_Time", "datetime", "Appointment End Time", read_only=True),
    Field("Duration", "integer", "Duration (mins)"),
    Field("Status", "picklist", "Status", pick_list=APPOINTMENT_STATUSES),
    Field("Service_Name", "lookup", "Service Name"),
    Field("Appointment_For", "lookup", "Appointment For"),
    Field("Owner", "ownerlookup", "Appointment Owner"),
    Field("Location", "picklist", "Location", pick_list=("Business Address", "Customer Address")),
    Field("Rescheduled_From", "datetime", "Rescheduled From"),
    Field("Rescheduled_To", "datetime", "Rescheduled To", read_only=True),
    Field("Reschedule_Reason", "picklist", "Reschedule Reason", pick_list=BY_WHOM),
    Field("Reschedule_Note", "textarea", "Reschedule Note"),
    Field("Reschedule_Count", "integer", "Reschedule Count", read_only=True),
    Field("Cancellation_Reason", "picklist", "Cancellation Reason", pick_list=BY_WHOM),
    Field("Cancellation_Note", "textarea", "Cancellation Note"),
    Field("Cancelled_Time", "datetime", "Cancelled Time", read_only=True),
    Field("Job_Sheet_Name", "text", "Job Sheet Name"),
    Field("Job_Sheet_Description__s", "textarea", "Job Sheet Description"),
    Field("Booking_Id", "text", "Booking Id", custom=True),
    *_audit_fields(),
]

EVENT_FIELDS: list[Field] = [
    Field("id", "bigint", "Record Id", read_only=True),
    Field("Event_Title", "text", "Title"),
    Field("Start_DateTime", "datetime", "From"),
    Field("End_DateTime", "datetime", "To"),
    Field("All_day", "boolean", "All day"),
    Field("Venue", "text", "Location"),
    Field("Description", "textarea", "Description"),
    Field("Who_Id", "lookup", "Contact Name"),
    Field("Owner", "ownerlookup", "Host"),
    Field("Booking_Id", "text", "Booking Id", custom=True),
    Field("Booking_Status", "picklist", "Booking Status", custom=True, pick_list=MEETING_STATUSES),
    *_audit_fields(),
]

#: Module API name -> fields. Module names are matched case-sensitively, as Zoho does.
MODULES: dict[str, list[Field]] = {"Appointments__s": APPOINTMENT_FIELDS, "Events": EVENT_FIELDS}
FIELD_INDEX: dict[str, dict[str, Field]] = {m: {f.api_name: f for f in fs} for m, fs in MODULES.items()}

#: Modules whose metadata (``settings/fields``, ``settings/modules``) the sandbox
#: serves but whose records it does not: the targets of the lookups above. A real
#: organisation answers ``settings/fields`` for them, and clients that resolve lookup
#: values (Zoho's official SDK does) read them: ``Service_Name`` -> ``Services__s``,
#: ``Appointment_For`` and ``Who_Id`` -> ``Contacts``, ``Owner`` (ownerlookup) ->
#: ``Users``. Their fields are a small, typical subset of Zoho's (the OAS
#: ``fields.json`` shapes; Zoho's real lists are longer and vary by organisation).
CONTACT_FIELDS: list[Field] = [
    Field("id", "bigint", "Record Id", read_only=True),
    Field("Owner", "ownerlookup", "Contact Owner"),
    Field("First_Name", "text", "First Name"),
    Field("Last_Name", "text", "Last Name"),
    Field("Full_Name", "text", "Contact Name", read_only=True),
    Field("Email", "email", "Email"),
    Field("Phone", "phone", "Phone"),
    Field("Mobile", "phone", "Mobile"),
    Field("Description", "textarea", "Description"),
    *_audit_fields(),
]
SERVICE_FIELDS: list[Field] = [
    Field("id", "bigint", "Record Id", read_only=True),
    Field("Owner", "ownerlookup", "Service Owner"),
    Field("Service_Name", "text", "Service Name"),
    Field("Duration", "integer", "Duration (mins)"),
    Field("Price", "currency", "Price"),
    Field("Location", "picklist", "Location", pick_list=("Business Address", "Customer Address")),
    Field("Status", "picklist", "Status", pick_list=("Active", "Inactive")),
    Field("Description", "textarea", "Description"),
    *_audit_fields(),
]
USER_FIELDS: list[Field] = [
    Field("id", "bigint", "User Id", read_only=True),
    Field("first_name", "text", "First Name"),
    Field("last_name", "text", "Last Name"),
    Field("full_name", "text", "Full Name", read_only=True),
    Field("email", "email", "Email"),
    Field("status", "picklist", "Status", read_only=True, pick_list=("active", "disabled", "deleted")),
    Field("time_zone", "text", "Time Zone"),
    Field("Created_Time", "datetime", "Created Time", read_only=True),
    Field("Modified_Time", "datetime", "Modified Time", read_only=True),
]
METADATA_ONLY: dict[str, list[Field]] = {"Contacts": CONTACT_FIELDS, "Services__s": SERVICE_FIELDS, "Users": USER_FIELDS}
#: Every module ``settings/fields`` and ``settings/modules`` describe, in the order listed.
DESCRIBED: dict[str, list[Field]] = {**MODULES, **METADATA_ONLY}
#: The module each lookup field points to (ownerlookups point to ``Users``).
LOOKUP_TARGETS: dict[tuple[str, str], str] = {
    ("Appointments__s", "Service_Name"): "Services__s",
    ("Appointments__s", "Appointment_For"): "Contacts",
    ("Events", "Who_Id"): "Contacts",
}

#: Stable numeric ids for modules and fields in metadata answers.
MODULE_IDS = {
    "Appointments__s": "5545974000000301001",
    "Events": "5545974000000002131",
    "Contacts": "5545974000000311001",
    "Services__s": "5545974000000321001",
    "Users": "5545974000000331001",
}
#: Per module: singular label, plural label, ``module_name``, ``generated_type``,
#: ``api_supported`` (the keys of ``GET /settings/modules``, crm-oas v8.0 ``modules``).
MODULE_LABELS: dict[str, tuple[str, str, str, str, bool]] = {
    "Appointments__s": ("Appointment", "Appointments", "Appointments", "default", True),
    "Events": ("Meeting", "Meetings", "Events", "default", True),
    "Contacts": ("Contact", "Contacts", "Contacts", "default", True),
    "Services__s": ("Service", "Services", "Services", "default", True),
    "Users": ("User", "Users", "Users", "default", True),
}
#: ``status`` values ``GET /settings/modules`` accepts (crm-oas v8.0 ``getModules``).
MODULE_STATUSES = ("visible", "user_hidden", "system_hidden", "scheduled_for_deletion")


def field_metadata(module: str) -> list[dict]:
    """The ``fields`` array of ``GET /crm/{v}/settings/fields?module=...`` for any module of :data:`DESCRIBED`.

    Each entry carries the keys clients read (crm-oas v8.0 ``fields.json``, and its
    ``getFields`` sample): ``api_name``, ``field_label``, ``display_label``,
    ``data_type``, ``json_type``, ``id``, ``custom_field``, ``read_only``,
    ``field_read_only``, ``visible``, ``system_mandatory``, ``length``,
    ``decimal_place``, ``pick_list_values`` (``[]`` when none), ``type`` (``used``)
    and the nested objects (``{}`` when they do not apply: ``lookup``,
    ``multiselectlookup``, ``multi_module_lookup``, ``auto_number``, ``formula``,
    ``currency``, ``unique``). A lookup's ``lookup`` names its module
    (``{"module": {"api_name", "id"}, "display_label", "api_name", "id", ...}``,
    see :data:`LOOKUP_TARGETS`); an ownerlookup's is ``{}`` as in Zoho's sample.
    """
    out = []
    for i, f in enumerate(DESCRIBED[module]):
        field_id = f"{MODULE_IDS[module][:-4]}{i + 1:04d}"
        entry = {
            "api_name": f.api_name,
            "field_label": f.label,
            "display_label": f.label,
            "data_type": f.data_type,
            "id": field_id,
            "custom_field": f.custom,
            "read_only": f.read_only,
            "field_read_only": f.read_only,
            "visible": True,
            "type": "used",
            "system_mandatory": f.api_name in MANDATORY.get(module, ()),
            "length": LENGTHS.get(f.data_type, 255),
            "decimal_place": 2 if f.data_type == "currency" else None,
            "json_type": {"boolean": "boolean", "integer": "integer", "currency": "double", "lookup": "jsonobject", "ownerlookup": "jsonobject"}.get(
                f.data_type, "string"
            ),
            "pick_list_values": [{"display_value": v, "actual_value": v} for v in f.pick_list],
            "lookup": {},
            "multiselectlookup": {},
            "multi_module_lookup": {},
            "auto_number": {},
            "formula": {},
            "currency": {},
            "unique": {},
        }
        target = LOOKUP_TARGETS.get((module, f.api_name))
        if f.data_type == "lookup" and target:
            entry["lookup"] = {
                "display_label": MODULE_LABELS[target][0],
                "api_name": f"{module}_{f.api_name}",
                "module": {"api_name": target, "id": MODULE_IDS[target]},
                "id": field_id,
                "query_details": {},
                "revalidate_filter_during_edit": False,
                "show_fields": [],
            }
        out.append(entry)
    return out


#: Fields a create must give, per module (``system_mandatory``).
MANDATORY: dict[str, tuple[str, ...]] = {
    "Appointments__s": ("Appointment_Name", "Appointment_Start_Time", "Service_Name", "Appointment_For", "Owner"),
    "Events": ("Event_Title", "Start_DateTime", "End_DateTime"),
    "Contacts": ("Last_Name",),
    "Services__s": ("Service_Name",),
    "Users": ("last_name", "email"),
}
#: ``length`` per data type (Zoho's usual figures; not documented per field).
LENGTHS = {"text": 255, "textarea": 32000, "email": 100, "phone": 30, "picklist": 120, "bigint": 19, "integer": 9, "currency": 16, "datetime": 120, "lookup": 120, "ownerlookup": 120, "boolean": 5}


def module_metadata(module: str) -> dict:
    """One entry of ``GET /crm/{v}/settings/modules`` (crm-oas v8.0 ``getModules`` keys) for a module of :data:`DESCRIBED`.

    The sandbox's own answers: every module is ``visible``, ``api_supported``,
    org-based, with the Administrator profile; only ``Appointments__s`` and
    ``Events`` have records (the others answer ``INVALID_MODULE`` on the records API).
    """
    singular, plural, name, generated, api_supported = MODULE_LABELS[module]
    has_records = module in MODULES
    return {
        "id": MODULE_IDS[module],
        "api_name": module,
        "module_name": name,
        "singular_label": singular,
        "plural_label": plural,
        "actual_singular_label": singular,
        "actual_plural_label": plural,
        "generated_type": generated,
        "api_supported": api_supported,
        "status": "visible",
        "visibility": 1,
        "sequence_number": list(DESCRIBED).index(module) + 1,
        "access_type": "org_based",
        "private_profile": None,
        "creatable": has_records,
        "editable": has_records,
        "deletable": has_records,
        "viewable": True,
        "convertable": False,
        "lookupable": module != "Users",
        "quick_create": has_records,
        "show_as_tab": module != "Users",
        "global_search_supported": module != "Users",
        "isBlueprintSupported": False,
        "feeds_required": False,
        "public_fields_configured": False,
        "recycle_bin_on_delete": has_records,
        "presence_sub_menu": False,
        "sub_menu_available": False,
        "has_more_profiles": False,
        "profile_count": 1,
        "profiles": [{"name": "Administrator", "id": "5545974000000026011"}],
        "business_card_field_limit": 5,
        "arguments": [],
        "web_link": None,
        "description": None,
        "modified_time": None,
        "modified_by": None,
        "parent_module": {},
    }
