"""All deployments in one process with ``prefect.serve`` (small setups; ``prefect.yaml`` is the
work-pool variant with the same deployments).

=========================  =======================================================
deployment                 what starts it, what it does
=========================  =======================================================
``refresh-token``          every 45 minutes: keep the ZohoOAuth token fresh
``sync-full``              nightly 02:00 (``SYNC_TIME_ZONE``, default UTC): Bulk Read
                           of CRM + the Bookings window, diff, apply
``sync-incremental``       every 5 minutes: CRM changes since the bookmark, bookings
                           waiting to be read; no Bookings window (webhooks bring
                           Bookings changes)
``sync-scan``              every 2 hours: the safety net, Bookings over yesterday to
                           tomorrow (``scan_*`` settings; at most ``scan_max_calls``
                           calls a run)
``sync-on-webhook``        event ``zoho.sync.requested`` (from the webhook receiver):
                           sync exactly the ids in the event (``crm_module``,
                           ``crm_ids``, ``deleted_crm_ids``, ``booking_ids``,
                           ``booking_states`` of its payload)
``bulk-read-callback``     event ``zoho.bulk_read.callback``: record the finished
                           Bulk Read job, so its waiting ``bulk-read`` run goes on
=========================  =======================================================

and ``renew-notification-channel`` (daily): subscribe the CRM notification channel
again before its one-week ``channel_expiry`` (:mod:`flows.notifications`).

Run: ``python -m deployments.serve`` with ``PREFECT_API_URL`` set; ``SYNC_CONFIG_BLOCK``
and ``ZOHO_OAUTH_BLOCK`` name the organisation's blocks (``NOTIFICATION_CHANNEL_BLOCK``
its ``NotificationChannel``, default ``crm-channel``).
"""

from __future__ import annotations

import os
from datetime import timedelta

from prefect import serve
from prefect.events import DeploymentEventTrigger
from prefect.schedules import Cron, Interval

from flows.bulk_read import bulk_read_callback
from flows.notifications import renew_notification_channel
from flows.refresh_token import refresh_token
from flows.sync_appointments import sync_appointments, sync_records


#: Hours between safety-net scans (``sync-scan``); with the default 48-hour window and 100 bookings
#: a page, 12 scans a day cost 12-48 Bookings calls (see README, "The daily API budget").
SCAN_EVERY_HOURS = 2


def build(config_block: str, oauth_block: str, time_zone: str = "UTC", channel_block: str = "crm-channel") -> list:
    """The deployments of one organisation (``config_block`` / ``oauth_block`` / ``channel_block``)."""
    tags = [f"org:{config_block}"]
    return [
        refresh_token.to_deployment(
            name="refresh-token", schedules=[Interval(timedelta(minutes=45), slug="every-45-minutes")],
            parameters={"block_name": oauth_block}, tags=tags,
        ),
        sync_appointments.to_deployment(
            name="sync-full", schedules=[Cron("0 2 * * *", timezone=time_zone, slug="nightly")],
            parameters={"config_block": config_block, "mode": "full"}, tags=[*tags, "direction:both", "mode:full"],
        ),
        sync_appointments.to_deployment(
            name="sync-incremental", schedules=[Interval(timedelta(minutes=5), slug="every-5-minutes")],
            parameters={"config_block": config_block, "mode": "incremental"}, tags=[*tags, "direction:both", "mode:incremental"],
        ),
        sync_appointments.to_deployment(
            name="sync-scan", schedules=[Interval(timedelta(hours=SCAN_EVERY_HOURS), slug=f"every-{SCAN_EVERY_HOURS}-hours")],
            parameters={"config_block": config_block, "mode": "scan"}, tags=[*tags, "direction:both", "mode:scan"],
        ),
        sync_records.to_deployment(  # the sync flow with flow-run retries: a webhook's ids are not lost
            name="sync-on-webhook",
            triggers=[
                DeploymentEventTrigger(
                    expect={"zoho.sync.requested"},
                    match={"prefect.resource.id": f"zoho.sync.{config_block}"},
                    parameters={
                        "config_block": "{{ event.payload.config_block }}",
                        "crm_module": "{{ event.payload.crm_module }}",
                        "crm_ids": "{{ event.payload.crm_ids }}",
                        "deleted_crm_ids": "{{ event.payload.deleted_crm_ids }}",
                        "booking_ids": "{{ event.payload.booking_ids }}",
                        "booking_states": "{{ event.payload.booking_states }}",
                    },
                )
            ],
            tags=[*tags, "direction:both", "mode:records"],
        ),
        bulk_read_callback.to_deployment(
            name="bulk-read-callback",
            triggers=[
                DeploymentEventTrigger(
                    expect={"zoho.bulk_read.callback"},
                    match={"prefect.resource.id": "zoho.bulk_read.*", "zoho.organisation": config_block},
                    parameters={
                        "config_block": "{{ event.payload.config_block }}",
                        "job_id": "{{ event.payload.job_id }}",
                        "state": "{{ event.payload.state }}",
                        "result": "{{ event.payload.result }}",
                    },
                )
            ],
            tags=tags,
        ),
        renew_notification_channel.to_deployment(
            name="renew-notification-channel", schedules=[Interval(timedelta(days=1), slug="daily")],
            parameters={"channel_block": channel_block}, tags=tags,
        ),
    ]


def main() -> None:  # pragma: no cover - long-running
    """Serve every deployment until interrupted."""
    serve(
        *build(
            os.environ.get("SYNC_CONFIG_BLOCK", "sync-sandbox"), os.environ.get("ZOHO_OAUTH_BLOCK", "zoho-sandbox"), os.environ.get("SYNC_TIME_ZONE", "UTC"),
            channel_block=os.environ.get("NOTIFICATION_CHANNEL_BLOCK", "crm-channel"),
        )
    )


if __name__ == "__main__":  # pragma: no cover
    main()
