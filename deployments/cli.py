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
"""

from __future__ import annotations

import typer

app = typer.Typer(help="Zoho Bookings <-> Zoho CRM appointment sync on Prefect 3.", no_args_is_help=True)


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []},
    help="Serve the Zoho-compatible sandbox (options: appt-sync sandbox --help).",
)
def sandbox(ctx: typer.Context) -> None:
    """Serve the sandbox; every option is passed to ``sandbox.cli``."""
    from sandbox.cli import main

    main(list(ctx.args))


@app.command()
def demo(
    appointments: int = typer.Option(2000, help="appointments the demo sandbox seeds"),
    port: int = typer.Option(0, help="unused; the sandbox takes a free port"),
) -> None:
    """Full sync, edits on both sides, incremental sync, agreement check, against a local sandbox."""
    from .demo import run

    raise typer.Exit(run(appointments=appointments, port=port))


@app.command()
def auth(
    block: str = typer.Option("zoho-sandbox", help="name of the ZohoOAuth block document to save"),
    client_id: str = typer.Option("", help="OAuth client id (self client in the Zoho API console)"),
    data_centre: str = typer.Option("US", help="US, EU, IN, AU, JP, CA, SA, CN, or CUSTOM with --base-url"),
    base_url: str = typer.Option("", help="base URL for data centre CUSTOM"),
    redirect_uri: str = typer.Option("", help="redirect URI, if the client has one"),
    zoho_user: str = typer.Option("", help="the Zoho user or organisation the grant belongs to"),
    sandbox: str = typer.Option("", help="onboard against a running sandbox at this URL (gets a grant code from it)"),
) -> None:
    """Exchange a grant code for a refresh token and save the ZohoOAuth block.

    For real Zoho: create a self client, generate a grant code with the scopes in
    README, then run this; the grant code and client secret are prompted for
    (or read from ZOHO_GRANT_CODE / ZOHO_CLIENT_SECRET).
    """
    import asyncio
    import os

    from pydantic import SecretStr

    from .onboarding import onboard, sandbox_grant

    if sandbox:
        client_id, secret, code, scopes = sandbox_grant(sandbox)
        data_centre, base_url = "CUSTOM", sandbox
    else:
        if not client_id:
            raise typer.BadParameter("give --client-id (or --sandbox URL)")
        secret = os.environ.get("ZOHO_CLIENT_SECRET") or typer.prompt("Client secret", hide_input=True)
        code = os.environ.get("ZOHO_GRANT_CODE") or typer.prompt("Grant code", hide_input=True)
        scopes = []
    from zoho.errors import ZohoError

    try:
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
    except (ZohoError, ValueError) as exc:
        typer.secho(f"appt-sync auth: {exc}", err=True, fg="red")
        raise typer.Exit(1) from None
    typer.echo(f"Saved ZohoOAuth block '{block}' (data centre {saved.data_centre.value}, api_domain {saved.api_domain}); token expires at {saved.expires_at.isoformat()}")


@app.command()
def token(
    block: str = typer.Option("zoho-sandbox", help="ZohoOAuth block document"),
    min_remaining_minutes: int = typer.Option(20, help="refresh when fewer minutes than this remain"),
) -> None:
    """Run the refresh-token flow once and print when the token expires."""
    import asyncio

    from flows.refresh_token import refresh_token

    from zoho.errors import ZohoError

    try:
        report = asyncio.run(refresh_token(block_name=block, min_remaining_minutes=min_remaining_minutes))
    except ZohoError as exc:
        typer.secho(f"appt-sync token: {exc}", err=True, fg="red")
        raise typer.Exit(1) from None
    typer.echo(f"{block}: expires at {report['expires_at']} ({report['minutes_left']} minutes left; refreshed: {report['refreshed']})")


@app.command()
def sync(
    mode: str = typer.Option("incremental", help="full or incremental"),
    dry_run: bool = typer.Option(False, "--dry-run", help="plan and report; write nothing to Zoho"),
    config: str = typer.Option("sync-sandbox", help="AppointmentSyncConfig block name"),
    booking_id: list[str] = typer.Option([], help="sync only this booking (repeatable)"),
) -> None:
    """Run sync-appointments once (needs PREFECT_API_URL or starts a temporary server)."""
    import asyncio

    from flows.sync_appointments import sync_appointments
    from zoho.errors import ZohoError

    if mode not in ("full", "incremental"):
        raise typer.BadParameter("--mode is full or incremental")
    try:
        summary = asyncio.run(sync_appointments(config_block=config, mode=mode, dry_run=dry_run, booking_ids=booking_id or None))  # type: ignore[arg-type]
    except (ZohoError, ValueError) as exc:
        typer.secho(f"appt-sync sync: {exc}", err=True, fg="red")
        raise typer.Exit(1) from None
    typer.echo(summary.markdown())
    for row in summary.failures[:20]:
        typer.echo(f"failed {row['booking_id']} {row['target']} {row['kind']}: {row['code']} {row['message']}")
    for row in summary.conflict_list[:20]:
        typer.echo(f"conflict {row['booking_id']}: {row['reason']}")
    raise typer.Exit(1 if summary.failed else 0)


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
def webhooks_status(channel_block: str = typer.Option("crm-channel", help="NotificationChannel block document")) -> None:
    """List Zoho's active notification channels; exit 1 if the block's channel is missing or due for renewal."""
    import asyncio

    from flows.notifications import channel_status
    from zoho.errors import ZohoError

    try:
        status = asyncio.run(channel_status(channel_block))
    except (ZohoError, ValueError) as exc:
        typer.secho(f"appt-sync webhooks status: {exc}", err=True, fg="red")
        raise typer.Exit(1) from None
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
    from zoho.errors import ZohoError

    try:
        block, replaced = asyncio.run(
            configure_channel(channel_block, oauth_block=oauth_block, notify_url=notify_url, channel_id=channel_id or None, events=event or None)
        )
        report = asyncio.run(renew_notification_channel(channel_block=channel_block))
    except (ZohoError, ValueError) as exc:
        typer.secho(f"appt-sync webhooks subscribe: {exc}", err=True, fg="red")
        raise typer.Exit(1) from None
    verb = "Subscribed" if report["renewed"] else "Already subscribed:"
    typer.echo(
        f"{verb} channel {report['channel_id']} ({', '.join(report['events'])}) -> {report['notify_url']}; "
        f"expires {report['channel_expiry']} ({report['hours_left']} hours left). Block '{channel_block}' saved."
    )
    if replaced is not None:
        typer.echo(f"Channel {replaced} (the block's previous id) stays subscribed at Zoho until it expires.")
    typer.echo(_token_hint(channel_block))


if __name__ == "__main__":  # pragma: no cover
    app()
