"""``appt-sync``: the project's command line (Typer).

Sub-commands:

* ``appt-sync sandbox [OPTIONS]``: serve the Zoho-compatible sandbox
  (``appt-sync sandbox --help`` lists its options).
* ``appt-sync demo``: the ``make demo`` story (see :mod:`deployments.demo`).
* ``appt-sync auth``: onboarding; exchange a self-client grant code for tokens
  and save them in a ``ZohoOAuth`` block (the client secret comes from
  ``ZOHO_CLIENT_SECRET`` or a hidden prompt, never from the command line).
* ``appt-sync token``: refresh a block's token if needed and say when it expires.
* ``appt-sync sync``: run the appointment sync once and print its summary.
* ``appt-sync webhooks status|subscribe``: the CRM notification channel (see
  :mod:`flows.notifications`).

Every command but ``sandbox`` talks to a Prefect server: ``PREFECT_API_URL`` when it
is set, else the one ``make up`` / ``make demo`` recorded in
``PREFECT_HOME/stack.json`` (``PREFECT_HOME`` defaulting to the checkout's
``.prefect/``), found by :func:`find_stack` before Prefect is imported. Run and
task logs go to the UI; the terminal shows Prefect's warnings only in ``demo``
and nothing of Prefect's in the other commands (below).

Errors (:mod:`deployments.cli_errors`): :func:`main` is the entry point; every
mistake is one line on stderr, exit 2 for a usage error and 1 for a failure
(``appt-sync sync``: also when a record failed). Run through :func:`main`,
Prefect's console is quieter still (``CRITICAL``, set before :func:`find_stack`),
so a failing flow's error logs do not add lines; ``--debug`` shows the logs and
the traceback.
"""

from __future__ import annotations

import os
import sys
from typing import Sequence

import typer

from .cli_errors import fail, friendly, remember_secret, set_debug

app = typer.Typer(help="Zoho Bookings <-> Zoho CRM appointment sync on Prefect 3.", no_args_is_help=True)


# ------------------------------------------------------------- finding the stack
#: Commands that need no Prefect at all.
NO_PREFECT = frozenset({"sandbox"})
#: Commands that start (or reuse) their own Prefect server instead of looking one up.
OWN_SERVER = frozenset({"demo"})
#: Prefect's console handler shows warnings and errors only; run and task logs go to
#: the server (the UI) through Prefect's API log handler as before. An override of
#: ``logging.yml`` by environment (``PREFECT_LOGGING_[PATH]_[KEY]``); a value in
#: the caller's environment wins, and ``--debug`` leaves the console as it is.
QUIET_CONSOLE = {"PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "WARNING"}


class StackNotFound(RuntimeError):
    """No Prefect server to talk to; the message says which one was looked for and what to do."""


def find_stack(command: str | None, argv: Sequence[str] = ()) -> None:
    """Point Prefect at this checkout's stack; call it before Prefect is imported.

    ``command`` is the sub-command about to run (``sandbox``: nothing to do).
    Without ``PREFECT_API_URL`` in the environment (or in the settings of a Prefect
    already imported, as under ``prefect_test_harness``), ``PREFECT_HOME`` defaults
    to the checkout's ``.prefect/`` and ``PREFECT_API_URL`` is taken from
    ``PREFECT_HOME/stack.json``, which ``make up`` / ``make demo`` write; both are
    set in ``os.environ``. ``demo`` only gets the ``PREFECT_HOME`` default (it
    starts or reuses its own server). Prefect's console then shows warnings only
    (:data:`QUIET_CONSOLE`, not with ``--debug`` in ``argv``).

    Raises :class:`StackNotFound` when no server is recorded or the recorded one
    does not answer ``/health``: never a temporary server in ``~/.prefect``.
    """
    if command in NO_PREFECT or command is None:
        return
    if "prefect" in sys.modules:  # already configured in this process (tests): leave it alone
        from prefect.settings import PREFECT_API_URL

        if PREFECT_API_URL.value():
            return
    from . import processes, services  # neither imports Prefect

    if not os.environ.get("PREFECT_API_URL"):
        os.environ.setdefault("PREFECT_HOME", str(processes.ROOT / ".prefect"))
        if command not in OWN_SERVER:
            home = processes.prefect_home()
            recorded = (services.read_stack(home) or {}).get("api")
            what_to_do = "with `make up` or `make demo` in the checkout, or set PREFECT_API_URL"
            if not recorded:
                raise StackNotFound(f"no Prefect server recorded in {home / services.STACK_FILE}: start one {what_to_do}")
            if not processes.healthy(f"{recorded}/health"):
                raise StackNotFound(f"the Prefect server recorded in {home / services.STACK_FILE} ({recorded}) does not answer: start it {what_to_do}")
            os.environ["PREFECT_API_URL"] = recorded
    if "--debug" not in argv and "prefect" not in sys.modules:
        for name, value in QUIET_CONSOLE.items():
            os.environ.setdefault(name, value)


def flush_prefect() -> None:
    """Wait (30 s at most) until Prefect's events worker has sent the events still queued.

    Called when a command ends: events emitted near the end of a run (task-run
    states, the sync's own) are then sent before the interpreter exits, instead of
    at exit under an ``EventsWorker - Still processing items`` warning. This is
    Prefect's own flush (``EventsWorker.wait_until_empty``, as its process-pool
    task runner does), on the workers that exist only. Run logs need nothing: the
    API log handler flushes at exit by itself and its worker never warns.
    """
    worker_module = sys.modules.get("prefect.events.worker")
    if worker_module is None:
        return
    import threading

    events_worker = worker_module.EventsWorker
    with events_worker._instance_cache_lock:
        workers = [w for w in events_worker._instances.values() if isinstance(w, events_worker) and w._started and not w._stopped]
    for worker in workers:
        waiter = threading.Thread(target=worker.wait_until_empty, daemon=True)
        waiter.start()
        waiter.join(30)


@app.callback()
def _before(
    ctx: typer.Context,
    debug: bool = typer.Option(False, "--debug", help="show Prefect's console logs and a failure's traceback (may stand anywhere)"),
) -> None:
    """Runs before every command: :func:`find_stack`, then :func:`flush_prefect` when it ends."""
    set_debug(debug)  # see deployments.cli_errors: one-line errors unless --debug
    argv = sys.argv[1:]
    group = isinstance(ctx.command.get_command(ctx, ctx.invoked_subcommand or ""), typer.core.TyperGroup)
    if "--help" in argv or (group and argv[-1:] == [ctx.invoked_subcommand]):
        return  # help only (``appt-sync webhooks`` alone shows its help)
    try:
        find_stack(ctx.invoked_subcommand, argv)
    except StackNotFound as exc:
        typer.secho(f"appt-sync {ctx.invoked_subcommand}: {exc}", err=True, fg="red")
        raise typer.Exit(1) from None
    ctx.call_on_close(flush_prefect)


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []},
    help="Serve the Zoho-compatible sandbox (options: appt-sync sandbox --help).",
)
@friendly
def sandbox(ctx: typer.Context) -> None:
    """Serve the sandbox; every option is passed to ``sandbox.cli``."""
    from sandbox.cli import main

    main(list(ctx.args))


@app.command()
@friendly
def demo(
    appointments: int = typer.Option(2000, help="appointments the demo sandbox seeds"),
    port: int = typer.Option(0, help="the sandbox's port (default: SANDBOX_PORT or 8900); it keeps running afterwards"),
) -> None:
    """Full sync, edits on both sides, incremental sync, agreement check, against a local sandbox."""
    from .demo import run

    raise typer.Exit(run(appointments=appointments, port=port))


@app.command()
@friendly
def auth(
    block: str = typer.Option("zoho-sandbox", help="name of the ZohoOAuth block document to save"),
    client_id: str = typer.Option("", help="OAuth client id (self client in the Zoho API console)"),
    data_centre: str = typer.Option("US", help="US, EU, IN, AU, JP, CA, SA, CN, or CUSTOM with --base-url"),
    base_url: str = typer.Option("", help="base URL for data centre CUSTOM"),
    redirect_uri: str = typer.Option("", help="redirect URI, if the client has one"),
    zoho_user: str = typer.Option("", help="the Zoho user or organisation the grant belongs to"),
    sandbox: str = typer.Option("", help="onboard against a running sandbox at this URL (gets a grant code from it)"),
    config: str = typer.Option("", help="also create or update this AppointmentSyncConfig block (its oauth_block and Bookings time zone), e.g. sync-acme"),
    bookings_time_zone: str = typer.Option(
        "", help=(
            "with --config: the IANA time zone set in the Zoho Bookings workspace, "
            "e.g. Europe/Berlin; the sync reads the Bookings window and counts the daily call limit in it. "
            "Required for real Zoho; default with --sandbox: the sandbox's own (Asia/Kolkata unless started otherwise)"
        ),
    ),
) -> None:
    """Exchange a grant code for a refresh token and save the ZohoOAuth block.

    For real Zoho: create a self client, generate a grant code with the scopes in
    README, then run this; the grant code and client secret are prompted for
    (or read from ZOHO_GRANT_CODE / ZOHO_CLIENT_SECRET). With ``--config NAME
    --bookings-time-zone ZONE`` it also saves the organisation's
    AppointmentSyncConfig with that Bookings workspace time zone (Zoho documents no
    zone for fetchappointment's window; the block's UTC default is a placeholder).
    Both options are checked before the grant code is used.
    """
    import asyncio
    import os

    import httpx
    from pydantic import SecretStr

    from zoho.datacentres import DataCentre, valid_data_centres
    from zoho.errors import origin_of, transport_reason

    from .onboarding import check_time_zone, onboard, sandbox_grant, sandbox_time_zone, save_org_config

    if bookings_time_zone and not config:
        raise typer.BadParameter("the Bookings time zone is saved in an AppointmentSyncConfig block: give --config NAME too", param_hint="--bookings-time-zone")
    if config and not sandbox and not bookings_time_zone:
        raise typer.BadParameter(
            "give the Bookings workspace's IANA time zone with --config for real Zoho, e.g. --bookings-time-zone Europe/Berlin", param_hint="--bookings-time-zone"
        )
    if bookings_time_zone:
        try:
            bookings_time_zone = check_time_zone(bookings_time_zone)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--bookings-time-zone") from None
    if sandbox:
        if not sandbox.startswith(("http://", "https://")):
            raise typer.BadParameter(f"{sandbox!r} is not a URL; give the sandbox's base URL, e.g. http://127.0.0.1:8900", param_hint="--sandbox")
        try:
            client_id, secret, code, scopes = sandbox_grant(sandbox)
        except httpx.RequestError as exc:
            fail(f"cannot reach the sandbox at {origin_of(sandbox)}: {transport_reason(exc)}; start it (make up, or appt-sync sandbox --port N) or fix --sandbox")
        except httpx.HTTPStatusError as exc:
            fail(f"{origin_of(sandbox)} answered HTTP {exc.response.status_code} to {exc.request.url.path}: is --sandbox the sandbox's base URL?")
        remember_secret(secret, code)
        data_centre, base_url = "CUSTOM", sandbox
        if config and not bookings_time_zone:
            bookings_time_zone = sandbox_time_zone(sandbox)
    else:
        if not client_id:
            raise typer.BadParameter("give --client-id (or --sandbox URL)", param_hint="--client-id")
        try:
            dc = DataCentre(data_centre)
        except ValueError:
            raise typer.BadParameter(f"unknown data centre {data_centre!r}; use one of {valid_data_centres()}", param_hint="--data-centre") from None
        if dc is DataCentre.CUSTOM and not base_url:
            raise typer.BadParameter("data centre CUSTOM needs --base-url (e.g. the sandbox's http://127.0.0.1:8900)", param_hint="--base-url")
        secret = os.environ.get("ZOHO_CLIENT_SECRET") or typer.prompt("Client secret", hide_input=True)
        code = os.environ.get("ZOHO_GRANT_CODE") or typer.prompt("Grant code", hide_input=True)
        remember_secret(secret, code)
        scopes = []
    saved = asyncio.run(
        onboard(
            block,
            client_id=client_id,
            client_secret=SecretStr(secret),
            code=SecretStr(code),
            data_centre=data_centre,
            base_url=base_url or None,
            redirect_uri=redirect_uri or None,
            zoho_user=zoho_user or None,
            scopes=scopes,
        )
    )
    typer.echo(f"Saved ZohoOAuth block '{block}' (data centre {saved.data_centre.value}, api_domain {saved.api_domain}); token expires at {saved.expires_at.isoformat()}")
    if config:
        created = asyncio.run(save_org_config(config, block, bookings_time_zone))
        typer.echo(f"{'Created' if created else 'Updated'} AppointmentSyncConfig block '{config}' (oauth_block {block}, Bookings time zone {bookings_time_zone})")
    elif not sandbox:
        typer.echo("No AppointmentSyncConfig saved (no --config): when you make one, set its bookings_time_zone to the Bookings workspace's zone (UTC is a placeholder).")


@app.command()
@friendly
def token(
    block: str = typer.Option("zoho-sandbox", help="ZohoOAuth block document"),
    min_remaining_minutes: int = typer.Option(20, help="refresh when fewer minutes than this remain"),
) -> None:
    """Run the refresh-token flow once and print when the token expires."""
    import asyncio

    from flows.refresh_token import refresh_token

    report = asyncio.run(refresh_token(block_name=block, min_remaining_minutes=min_remaining_minutes))
    typer.echo(f"{block}: expires at {report['expires_at']} ({report['minutes_left']} minutes left; refreshed: {report['refreshed']})")


@app.command()
@friendly
def sync(
    mode: str = typer.Option("incremental", help="incremental (CRM changes, bookings waiting to be read), scan (plus the Bookings safety-net window) or full"),
    dry_run: bool = typer.Option(False, "--dry-run", help="plan and report; write nothing to Zoho"),
    config: str = typer.Option("sync-sandbox", help="AppointmentSyncConfig block name"),
    booking_id: list[str] = typer.Option([], help="sync only this booking (repeatable)"),
    crm_id: list[str] = typer.Option([], help="sync only this CRM record of --module (repeatable), as its notification would"),
    module: str = typer.Option("", help="the CRM module of --crm-id: Appointments__s or Events (default: the configuration's crm_module)"),
) -> None:
    """Run sync-appointments once on the stack's Prefect server (see find_stack) and print its summary."""
    import asyncio

    if mode not in ("full", "incremental", "scan"):
        raise typer.BadParameter(f"{mode!r} is not a mode; use incremental, scan or full", param_hint="--mode")
    if module and module not in ("Appointments__s", "Events"):
        raise typer.BadParameter(f"{module!r} is not a CRM module the sync handles; use Appointments__s or Events (Meetings)", param_hint="--module")
    if module and not crm_id:
        raise typer.BadParameter("--module names the module of --crm-id: give --crm-id too", param_hint="--module")
    from flows.sync_appointments import sync_appointments

    records = {"crm_ids": crm_id, "crm_module": module or None, "booking_ids": booking_id} if crm_id else {"booking_ids": booking_id or None}
    summary = asyncio.run(sync_appointments(config_block=config, mode=mode, dry_run=dry_run, **records))  # type: ignore[arg-type]
    typer.echo(summary.markdown())
    from prefect.settings import PREFECT_UI_URL

    if PREFECT_UI_URL.value():
        typer.echo(f"Prefect UI: {PREFECT_UI_URL.value()}/runs/flow-run/{summary.run_id}")
    for row in summary.failures[:SHOWN_ROWS]:
        typer.echo(_failure_line(row))
    if len(summary.failures) > SHOWN_ROWS:
        typer.echo(f"... and {len(summary.failures) - SHOWN_ROWS} more failures (the run's sync-failures artifact lists them)")
    for row in summary.conflict_list[:SHOWN_ROWS]:
        typer.echo(f"conflict {row.get('booking_id', '?')} (CRM {row.get('crm_id') or '-'}): {row.get('why') or row.get('reason') or row.get('kind')}")
    if summary.failed:
        fail(f"{summary.failed} record{'s' if summary.failed != 1 else ''} failed (listed above; retried by the next run)")
    if getattr(summary, "error", None):
        fail(f"the run stopped part-way: {summary.error}")


#: Failure and conflict lines ``appt-sync sync`` prints (the artifacts have them all).
SHOWN_ROWS = 20


def _failure_line(row: dict) -> str:
    """``failed booking #AN-00014 / CRM 5545974000002254155 (reschedule, CRM): NOT_ALLOWED ...``."""
    what = row.get("change") or row.get("kind") or "-"
    side = row.get("written_to") or row.get("target")
    where = f"{what}, {side}" if side and side != "-" else what
    return f"failed booking {row.get('booking_id') or '?'} / CRM {row.get('crm_id') or '?'} ({where}): {row.get('code') or '-'} {row.get('message') or ''}".rstrip()


webhooks = typer.Typer(help="The Zoho CRM notification channel (see the renew-notification-channel flow).", no_args_is_help=True)
app.add_typer(webhooks, name="webhooks")


def _token_hint(channel_block: str) -> str:
    """How to give the receiver the channel token without printing it."""
    read = f"from blocks import NotificationChannel; print(NotificationChannel.load('{channel_block}').token.get_secret_value())"
    return (
        "The webhook receiver needs the channel token in APPT_SYNC_RECEIVER_CHANNEL_TOKEN; read it from the block with\n"
        f"  export APPT_SYNC_RECEIVER_CHANNEL_TOKEN=\"$(python -c \"{read}\")\""
    )


@webhooks.command("status")
@friendly
def webhooks_status(channel_block: str = typer.Option("crm-channel", help="NotificationChannel block document")) -> None:
    """List Zoho's active notification channels; exit 1 if the block's channel is missing or due for renewal."""
    import asyncio

    from flows.notifications import channel_status

    status = asyncio.run(channel_status(channel_block))
    if not status["channels"]:
        typer.echo("Zoho has no active notification channels.")
    for c in status["channels"]:
        mark = ""
        if c["is_block_channel"]:
            mark = f"  <- block '{channel_block}'" + ("" if c["matches_block"] else " (events or notify_url differ from the block)")
        typer.echo(
            f"channel {c['channel_id']}: events {', '.join(c['events'])} -> {c['notify_url']}; "
            f"expires {c['channel_expiry']} ({c['hours_left']} hours left){mark}"
        )
    if status["problem"]:
        typer.secho(
            f"Block '{channel_block}' (channel {status['channel_id']}): {status['problem']} "
            f"(renew window {status['renew_before_hours']:g} hours). Run: appt-sync webhooks subscribe, or the renew-notification-channel deployment.",
            err=True, fg="red",
        )
        raise typer.Exit(1)
    typer.echo(f"Block '{channel_block}' (channel {status['channel_id']}) is subscribed and outside its {status['renew_before_hours']:g}-hour renew window.")


@webhooks.command("subscribe")
@friendly
def webhooks_subscribe(
    notify_url: str = typer.Option(..., help="the receiver's public URL of /zoho/crm/notifications"),
    oauth_block: str = typer.Option(..., help="ZohoOAuth block document the watch calls use"),
    channel_block: str = typer.Option("crm-channel", help="NotificationChannel block document to create or update"),
    channel_id: int = typer.Option(0, help="channel id (default: the block's, or a random one for a new block)"),
    event: list[str] = typer.Option([], help="event to watch, e.g. Appointments__s.all, Events.all (repeatable; default: the block's, or Appointments__s.all)"),
) -> None:
    """Create or update the NotificationChannel block and run renew-notification-channel once."""
    import asyncio

    from blocks.notification_channel import configure_channel
    from flows.notifications import renew_notification_channel

    block, replaced = asyncio.run(
        configure_channel(channel_block, oauth_block=oauth_block, notify_url=notify_url, channel_id=channel_id or None, events=event or None)
    )
    report = asyncio.run(renew_notification_channel(channel_block=channel_block))
    verb = "Subscribed" if report["renewed"] else "Already subscribed:"
    typer.echo(
        f"{verb} channel {report['channel_id']} ({', '.join(report['events'])}) -> {report['notify_url']}; "
        f"expires {report['channel_expiry']} ({report['hours_left']} hours left). Block '{channel_block}' saved."
    )
    if replaced is not None:
        typer.echo(f"Channel {replaced} (the block's previous id) stays subscribed at Zoho until it expires.")
    typer.echo(_token_hint(channel_block))


def main(argv: list[str] | None = None) -> None:
    """The ``appt-sync`` entry point: :func:`deployments.cli_errors.run` on :data:`app`, then exit with its code.

    Exit codes: 0 done, 1 a failure (or a record that failed to sync), 2 a usage
    error; each error is one line on stderr (``--debug`` shows the traceback).
    """
    from .cli_errors import run

    sys.exit(run(app, argv))


if __name__ == "__main__":  # pragma: no cover
    main()
