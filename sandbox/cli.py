"""Command line of the sandbox (shared by ``appt-sync sandbox`` and ``python -m sandbox``)."""

from __future__ import annotations

import argparse
import sys

from .config import SandboxConfig


def build_parser() -> argparse.ArgumentParser:
    """The ``sandbox`` options."""
    d = SandboxConfig()
    p = argparse.ArgumentParser(prog="appt-sync sandbox", description="Serve the Zoho-compatible sandbox.")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8900)
    p.add_argument("--appointments", type=int, default=d.appointments, help="appointments to seed")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the data generator")
    p.add_argument("--anchor-date", default="", help="YYYY-MM-DD the seed spreads appointments around (default: today)")
    p.add_argument("--db", default=None, help="SQLite file to keep data across restarts (default: memory only)")
    p.add_argument("--org-time-zone", default=d.org_time_zone)
    p.add_argument("--token-ttl", type=int, default=d.token_ttl, help="expires_in of access tokens, seconds")
    p.add_argument("--bulk-delay", type=float, default=d.bulk_delay, help="seconds a Bulk Read job takes")
    p.add_argument("--bulk-page-size", type=int, default=d.bulk_page_size, help="records per Bulk Read page")
    p.add_argument("--bookings-webhook-url", default="", help="where booking changes are POSTed")
    p.add_argument("--public-url", default="", help="base URL to return as api_domain")
    p.add_argument("--log-level", default="warning")
    return p


def main(argv: list[str] | None = None) -> None:
    """Parse ``argv`` and serve until interrupted."""
    args = build_parser().parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: binding to {args.host}; the sandbox has no authentication on /__sandbox/", file=sys.stderr)
    config = SandboxConfig(
        appointments=args.appointments,
        seed=args.seed,
        anchor_date=args.anchor_date,
        org_time_zone=args.org_time_zone,
        token_ttl=args.token_ttl,
        bulk_delay=args.bulk_delay,
        bulk_page_size=args.bulk_page_size,
        bookings_webhook_url=args.bookings_webhook_url,
        public_url=args.public_url,
    )
    from .app import serve

    print(f"Zoho sandbox on http://{args.host}:{args.port} ({args.appointments} appointments, seed {args.seed})", flush=True)
    serve(config, args.host, args.port, args.db, args.log_level)
