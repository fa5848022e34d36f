"""Command line of the sandbox (shared by ``appt-sync sandbox`` and ``python -m sandbox``).

A mistake is answered with one line on stderr: a bad option exits 2
(``appt-sync sandbox: <what> (see appt-sync sandbox --help)``), a port that is taken
or cannot be bound exits 1, before the banner.
"""

from __future__ import annotations

import argparse
import errno
import socket
import sys
from typing import NoReturn

from .config import SandboxConfig
from .limits import BOOKINGS_PLANS, CRM_EDITIONS

PROG = "appt-sync sandbox"


class _Parser(argparse.ArgumentParser):
    """``argparse`` whose usage errors are one line on stderr, exit 2."""

    def error(self, message: str) -> NoReturn:
        """Print ``appt-sync sandbox: <message> (see appt-sync sandbox --help)`` and exit 2."""
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def port_problem(host: str, port: int) -> str | None:
    """Why the sandbox could not listen on ``host:port`` (one line), or None when it can.

    Binds a socket the way uvicorn does (``SO_REUSEADDR``, so a port in ``TIME_WAIT``
    is not reported) and closes it at once.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"cannot listen on {host}: unknown host ({exc.strerror}); give --host an address of this machine"
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return (f"port {port} on {host} is taken (another sandbox, or another program); "
                        f"choose another with --port N (make sandbox SANDBOX_PORT=N)")
            if exc.errno == errno.EACCES:
                return f"may not listen on port {port} (ports below 1024 need privileges); choose another with --port N (make sandbox SANDBOX_PORT=N)"
            return f"cannot listen on {host}:{port}: {exc.strerror or exc}"
    return None


def _fraction(text: str) -> float:
    """An argparse type: a number from 0 to 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (give a fraction from 0 to 1)") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not a fraction from 0 to 1")
    return value


def _seed(text: str) -> int:
    """An argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative")
    return value


def _hours(text: str) -> str:
    """An argparse type: working hours (``sandbox.bookings.parse_hours``), or empty."""
    if text:
        from .bookings import parse_hours

        try:
            parse_hours(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def build_parser() -> argparse.ArgumentParser:
    """The ``sandbox`` options."""
    d = SandboxConfig()
    p = _Parser(prog=PROG, description="Serve the Zoho-compatible sandbox.")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8900, help="TCP port (default 8900; `make sandbox` takes SANDBOX_PORT=)")
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
    p.add_argument("--limits-enforced", action="store_true", help="enforce Zoho's API limits (default: count only)")
    p.add_argument("--refuse-earlier-reschedules", action="store_true",
                   help="refuse moving an appointment earlier (DEPENDENT_FIELD_UNCHANGED), as seeds 002/004 read (default: accept)")
    p.add_argument("--bookings-plan", default=d.bookings_plan, choices=sorted(BOOKINGS_PLANS), help="Bookings plan: calls a day (default %(default)s)")
    p.add_argument("--crm-edition", default=d.crm_edition, choices=CRM_EDITIONS, help="CRM edition: credits and concurrency (default %(default)s)")
    p.add_argument("--crm-users", type=int, default=d.crm_users, help="CRM user licences (default %(default)s)")
    p.add_argument("--crm-credit-limit", type=int, default=d.crm_credit_limit, help="CRM credits per 24 hours (default 0: the edition's)")
    p.add_argument("--drop-bookings-webhooks", type=_fraction, default=d.drop_bookings_webhooks, metavar="FRACTION",
                   help="fault injection for benchmarks: fraction 0..1 of Bookings webhooks lost on the way (default %(default)s)")
    p.add_argument("--drop-crm-notifications", type=_fraction, default=d.drop_crm_notifications, metavar="FRACTION",
                   help="fault injection for benchmarks: fraction 0..1 of CRM notifications lost on the way (default %(default)s)")
    p.add_argument("--drop-seed", type=_seed, default=d.drop_seed, metavar="N",
                   help="seed of the drop draws, for reproducible runs (default: 0)")
    p.add_argument("--bookings-failure-shape", default=d.bookings_failure_shape, choices=("outer", "returnvalue"),
                   help="shape of a Bookings failure: outer status failure, or a failure inside returnvalue (Zoho shows both; default %(default)s)")
    p.add_argument("--working-hours", type=_hours, default=d.working_hours, metavar="SPEC",
                   help='staff working hours a reschedule must fit, e.g. "Mon-Fri 09:00-17:00" (default: any time)')
    p.add_argument("--refuse-overlaps", action="store_true", help="refuse a reschedule over another booking of the same staff member")
    p.add_argument("--log-level", default="warning")
    return p


def config_from_args(args: argparse.Namespace) -> SandboxConfig:
    """The sandbox settings the parsed options ask for."""
    return SandboxConfig(
        appointments=args.appointments,
        seed=args.seed,
        anchor_date=args.anchor_date,
        org_time_zone=args.org_time_zone,
        token_ttl=args.token_ttl,
        bulk_delay=args.bulk_delay,
        bulk_page_size=args.bulk_page_size,
        bookings_webhook_url=args.bookings_webhook_url,
        public_url=args.public_url,
        limits_enforced=args.limits_enforced,
        refuse_earlier_reschedules=args.refuse_earlier_reschedules,
        bookings_plan=args.bookings_plan,
        crm_edition=args.crm_edition,
        crm_users=args.crm_users,
        crm_credit_limit=args.crm_credit_limit,
        drop_bookings_webhooks=args.drop_bookings_webhooks,
        drop_crm_notifications=args.drop_crm_notifications,
        drop_seed=args.drop_seed,
        bookings_failure_shape=args.bookings_failure_shape,
        working_hours=args.working_hours,
        refuse_overlaps=args.refuse_overlaps,
    )


def main(argv: list[str] | None = None) -> None:
    """Parse ``argv`` and serve until interrupted."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 0 < args.port < 65536:
        parser.error(f"argument --port: {args.port} is not a TCP port (1-65535)")
    problem = port_problem(args.host, args.port)
    if problem:
        print(f"{PROG}: {problem}", file=sys.stderr)
        raise SystemExit(1)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: binding to {args.host}; the sandbox has no authentication on /__sandbox/", file=sys.stderr)
    config = config_from_args(args)
    from .app import serve

    print(f"Zoho sandbox on http://{args.host}:{args.port} ({args.appointments} appointments, seed {args.seed})", flush=True)
    serve(config, args.host, args.port, args.db, args.log_level)
