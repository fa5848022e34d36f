"""``appt-sync``: the project's command line (Typer).

Sub-commands:

* ``appt-sync sandbox [OPTIONS]``: serve the Zoho-compatible sandbox
  (``appt-sync sandbox --help`` lists its options).
* ``appt-sync demo``: start a sandbox and walk through what the pipeline does
  against it.
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
    port: int = typer.Option(0, help="sandbox port (0: a free one)"),
) -> None:
    """Start a sandbox on 127.0.0.1 and run the pipeline's steps against it, printing each."""
    from .demo import run

    raise typer.Exit(run(appointments=appointments, port=port))


if __name__ == "__main__":  # pragma: no cover
    app()
