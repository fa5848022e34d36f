"""The CRM modules the sandbox serves and their fields.

One table drives ``GET /crm/{v}/settings/fields``, the Bulk Read columns, the
criteria comparators allowed per field type, and which fields an update may touch.
Data types and comparators follow Zoho's field metadata and Bulk Read criteria
documents (seed 001 and its "comparators per data type" table).
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
    *_audit_fields(),
]

#: Module API name -> fields. Module names are matched case-sensitively, as Zoho does.
MODULES: dict[str, list[Field]] = {"Appointments__s": APPOINTMENT_FIELDS, "Events": EVENT_FIELDS}
FIELD_INDEX: dict[str, dict[str, Field]] = {m: {f.api_name: f for f in fs} for m, fs in MODULES.items()}

#: Stable numeric ids for modules and fields in metadata answers.
MODULE_IDS = {"Appointments__s": "5545974000000301001", "Events": "5545974000000002131"}


def field_metadata(module: str) -> list[dict]:
    """The ``fields`` array of ``GET /crm/{v}/settings/fields?module=...``."""
    out = []
    for i, f in enumerate(MODULES[module]):
        entry = {
            "api_name": f.api_name,
            "field_label": f.label,
            "display_label": f.label,
            "data_type": f.data_type,
            "id": f"{MODULE_IDS[module][:-4]}{i + 1:04d}",
            "custom_field": f.custom,
            "read_only": f.read_only,
            "field_read_only": f.read_only,
            "visible": True,
            "json_type": {"boolean": "boolean", "integer": "integer", "lookup": "jsonobject", "ownerlookup": "jsonobject"}.get(
                f.data_type, "string"
            ),
        }
        if f.pick_list:
            entry["pick_list_values"] = [{"display_value": v, "actual_value": v} for v in f.pick_list]
        if f.data_type == "lookup":
            entry["lookup"] = {"module": {"api_name": "Contacts" if f.api_name in ("Appointment_For", "Who_Id") else "Services__s"}}
        out.append(entry)
    return out
