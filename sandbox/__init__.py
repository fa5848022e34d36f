"""A Zoho-compatible local server: the project's default target and the check on its client.

It serves, on one base URL (real Zoho has separate hosts for Accounts, CRM and
Bookings; point each of the client's base URLs at this one):

* Accounts: ``POST /oauth/v2/token`` and ``/oauth/v2/token/revoke``, with Zoho's
  token limits (:mod:`sandbox.auth`).
* CRM Bulk Read: ``/crm/bulk/{version}/read`` create, status and result, with
  criteria, paging, ICS for ``Events`` and callbacks (:mod:`sandbox.bulk`).
* CRM records ``Appointments__s`` and ``Events`` and field metadata
  (:mod:`sandbox.crm`; update rules in :mod:`sandbox.crm_records`), Zoho's Delete
  Records API for ``Events`` (``DELETE /crm/{version}/Events?ids=``), and
  notification channels ``/crm/{version}/actions/watch`` (:mod:`sandbox.watch`).
  Meetings (``Events``) carry ``Booking_Id`` and a ``Booking_Status`` pick list:
  custom fields an organisation adds, assumed and seeded by the sandbox.
* Zoho Bookings v1 under ``/bookings/v1/json/`` (:mod:`sandbox.bookings`).
* An admin API under ``/__sandbox/`` for credentials, resets, "UI" edits, fault
  injection, counters and dumps (:mod:`sandbox.admin`).
* A settable clock (:mod:`sandbox.clock`, ``/__sandbox/clock``) and Zoho's API
  limits, counted always and enforced with ``limits_enforced`` (:mod:`sandbox.limits`).

It is written from Zoho's documents (``shared/seeds`` and
``shared/zoho-api-notes.md``) and imports nothing of the project's own packages,
so a bug in the client cannot be mirrored here. Start it with
``appt-sync sandbox`` (or ``python -m sandbox``) or build the ASGI app with
:func:`sandbox.app.create_app`.
"""

from .config import SandboxConfig

__all__ = ["SandboxConfig", "create_app"]


def create_app(*args, **kwargs):
    """Build the sandbox ASGI app (see :func:`sandbox.app.create_app`)."""
    from .app import create_app as _create_app

    return _create_app(*args, **kwargs)
