"""One-line errors and honest exit codes for ``appt-sync`` (README "Command line").

Every mistake is answered with ONE line on stderr, ``appt-sync <command>: <what was
wrong>; <what to do>``, and an exit code: 0 done, 1 a failure (including a sync
in which a record failed), 2 a usage error (``appt-sync <command>: <message> (see
appt-sync <command> --help)``). No traceback, unless ``--debug`` (anywhere on the
command line) is given: then Prefect's console logs are shown and a failure
prints its traceback before the line.

:func:`friendly` wraps each command body (so ``app()`` and ``CliRunner`` get the
one line too); :func:`run` is the entry point (``deployments.cli:main``): click in
``standalone_mode=False``, so usage errors are formatted here instead of by rich.
:func:`describe` turns an exception into the line: the server a request could not
reach and why, the block names that exist when one is missing, never a secret
(Zoho errors carry no query strings; the values registered with
:func:`remember_secret` are masked; URLs lose their path, query and user info).
"""

from __future__ import annotations

import functools
import os
import re
import sys
import traceback
from typing import Any, Callable, NoReturn, Sequence, TypeVar

import typer
from typer._click.core import Context
from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError
from typer._click.globals import get_current_context

# Typer 0.29 carries its own copy of click (``typer._click``): its exceptions, not
# ``click``'s, are what a Typer app raises.

F = TypeVar("F", bound=Callable[..., Any])

#: Prefect's console handler level for commands run without ``--debug``: above
#: ERROR, so a failing flow's log lines (with their tracebacks) stay off the
#: terminal; they still reach the Prefect server (the UI) through its API log handler.
QUIET_CONSOLE_LEVEL = "CRITICAL"
#: The ``logging.yml`` override (``PREFECT_LOGGING_[PATH]_[KEY]``) that sets it; a value
#: in the caller's environment wins.
QUIET_CONSOLE_ENV = "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"
#: Commands whose output is left alone: the sandbox (no Prefect) and the demo (its story).
NOT_QUIETED = frozenset({"sandbox", "demo"})
#: Longest message printed (the rest is cut, marked with an ellipsis).
MAX_MESSAGE = 600

#: Block type slug -> (class name, how to make one).
BLOCK_TYPES: dict[str, tuple[str, str]] = {
    "zoho-oauth": ("ZohoOAuth", "create it with appt-sync auth --block {name}"),
    "appointment-sync-config": ("AppointmentSyncConfig", "make up / make demo save sync-sandbox"),
    "zoho-notification-channel": ("NotificationChannel", "appt-sync webhooks subscribe --channel-block {name} creates it"),
}

_MISSING_BLOCK = re.compile(r"Unable to find block document named (?P<name>.+?) for block type (?P<slug>[\w-]+)")
_NO_API = re.compile(r"Failed to reach API at (?P<url>\S+)")
_BLOCK_PATH = re.compile(r"/block_types/slug/(?P<slug>[\w-]+)/block_documents/name/(?P<name>[^/?]+)")


class _State:
    """Process-wide switches of one ``appt-sync`` run."""

    debug: bool = False
    secrets: list[str] = []


STATE = _State()


def set_debug(on: bool) -> None:
    """Turn ``--debug`` on or off (the app's callback calls it with the option's value)."""
    STATE.debug = bool(on)


def remember_secret(*values: str | None) -> None:
    """Values that must never appear in a message (a typed client secret, a grant code): masked as ``***``."""
    STATE.secrets.extend(v for v in values if v and len(v) >= 4)


class Failure(Exception):
    """A failure whose message is already the line to print (exit 1)."""


def fail(message: str) -> NoReturn:
    """Stop the command with ``message`` (one line, exit 1)."""
    raise Failure(message)


# ------------------------------------------------------------------- messages
def one_line(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text`` on one line (whitespace runs collapsed), secrets masked, at most ``limit`` characters."""
    text = " ".join(str(text).split())
    for secret in STATE.secrets:
        text = text.replace(secret, "***")
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def _origin(url: Any) -> str:
    from zoho.errors import origin_of

    return origin_of(url)


def _is_loopback(url: str) -> bool:
    from zoho.errors import is_loopback

    return is_loopback(url)


def _prefect_api() -> str | None:
    """The Prefect API URL this process uses (settings if Prefect is imported, else the environment)."""
    settings = sys.modules.get("prefect.settings")
    if settings is not None:
        try:
            return settings.PREFECT_API_URL.value() or None
        except Exception:  # noqa: BLE001 - only for a message
            pass
    return os.environ.get("PREFECT_API_URL") or None


def _is_prefect(url: Any) -> bool:
    api = _prefect_api()
    return bool(api) and _origin(url) == _origin(api)


def _product(path: str) -> str | None:
    """Which Zoho product a request path belongs to."""
    path = path.split(" ", 1)[-1]
    for prefix, name in (("/oauth", "Zoho Accounts"), ("/crm", "Zoho CRM"), ("/bookings", "Zoho Bookings")):
        if path.startswith(prefix):
            return name
    return None


def unreachable(url: str, reason: str, product: str | None = None) -> str:
    """``cannot reach <server> (<product>): <reason>; <what to do>``."""
    origin = _origin(url)
    if _is_prefect(url):
        return f"cannot reach the Prefect API at {_prefect_api()}: {reason}; start it with make up, or set PREFECT_API_URL"
    if _is_loopback(origin):
        hint = "is the sandbox running? (make up)"
    else:
        hint = "check the network, and the data centre of the ZohoOAuth block (appt-sync auth --data-centre)"
    return f"cannot reach {origin}" + (f" ({product})" if product else "") + f": {reason}; {hint}"


def missing_block(name: str, slug: str) -> str:
    """``no ZohoOAuth block named 'x' (blocks of that type: a, b); <how to make one>``.

    Lists the names (never the data: ``include_secrets=False``) of the documents of
    that block type in the Prefect API, those closest to ``name`` first (at most 20);
    without the list when it cannot be read.
    """
    label, make = BLOCK_TYPES.get(slug, (slug, ""))
    names: list[str] | None = None
    try:
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            docs = client.read_block_documents_by_type(slug, include_secrets=False)
        names = sorted(d.name for d in docs if d.name and not d.is_anonymous)
    except Exception as exc:  # noqa: BLE001 - the message is still useful without the list
        names = [] if type(exc).__name__ == "ObjectNotFound" else None  # no such block type yet: no blocks
    if names is None:
        known = ""
    elif names:
        import difflib

        close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)  # a typo's intended name first
        names = close + [n for n in names if n not in close]
        shown = ", ".join(names[:20]) + (f", ... ({len(names)} in all)" if len(names) > 20 else "")
        known = f" (blocks of that type: {shown}; give one of those)"
    else:
        known = f" (there are no {label} blocks yet)"
    return f"no {label} block named '{name}'{known}" + (f"; {make.format(name=name)}" if make else "")


def _validation(exc: Any) -> str:
    errors = exc.errors(include_url=False, include_input=False)
    first = errors[0] if errors else {"loc": (), "msg": str(exc)}
    where = ".".join(str(p) for p in first.get("loc", ())) or "value"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"invalid {exc.title}: {where}: {first.get('msg')}{more}"


def describe(exc: BaseException) -> str:
    """One line saying what went wrong and, where it can, what to do; never a secret."""
    import httpx

    from zoho.errors import AuthError, InvalidClientError, InvalidGrantError, TransportError, ZohoError, transport_reason

    if isinstance(exc, Failure):
        return one_line(str(exc))
    if isinstance(exc, TransportError) and exc.details.get("url"):
        return one_line(unreachable(exc.details["url"], exc.details.get("reason") or exc.code.lower(), _product(exc.endpoint)))
    if isinstance(exc, ZohoError):
        hint = ""
        if isinstance(exc, InvalidClientError):
            hint = "; check the client id and secret (appt-sync auth)"
        elif isinstance(exc, InvalidGrantError):
            hint = "; generate a new grant code and run appt-sync auth again"
        elif isinstance(exc, AuthError):
            hint = "; see README \"Connecting to Zoho\""
        return one_line(f"{exc}{hint}")
    if isinstance(exc, httpx.HTTPStatusError):
        request, response = exc.request, exc.response
        found = _BLOCK_PATH.search(request.url.path)
        if response.status_code == 404 and found:
            return one_line(missing_block(found["name"], found["slug"]))
        if _is_prefect(request.url):
            detail = ""
            try:
                detail = str(response.json().get("detail") or "")
            except Exception:  # noqa: BLE001 - not JSON
                pass
            return one_line(f"the Prefect API answered HTTP {response.status_code} to {request.method} {request.url.path}" + (f": {detail}" if detail else ""))
        return one_line(f"{request.method} {_origin(request.url)}{request.url.path} answered HTTP {response.status_code} {response.reason_phrase}")
    if isinstance(exc, httpx.RequestError):
        try:
            url = exc.request.url
        except RuntimeError:  # raised without a request
            return one_line(f"no answer: {transport_reason(exc)}")
        return one_line(unreachable(str(url), transport_reason(exc), _product(url.path)))
    found = _MISSING_BLOCK.search(str(exc)) if isinstance(exc, ValueError) else None
    if found:
        return one_line(missing_block(found["name"], found["slug"]))
    found = _NO_API.search(str(exc)) if isinstance(exc, RuntimeError) else None
    if found:  # Prefect's health check before a flow run
        reason = transport_reason(exc.__cause__) if exc.__cause__ is not None else "no answer"
        return one_line(f"cannot reach the Prefect API at {found['url'].rstrip('/')}: {reason}; start it with make up, or set PREFECT_API_URL")
    if type(exc).__name__ == "ObjectNotFound":  # prefect.exceptions.ObjectNotFound (its str() is often "None")
        http = getattr(exc, "http_exc", None)
        request = getattr(http, "request", None)
        found = _BLOCK_PATH.search(request.url.path) if request is not None else None
        if found:
            return one_line(missing_block(found["name"], found["slug"]))
        where = f": {request.method} {request.url.path}" if request is not None else ""
        return one_line(f"not found in the Prefect API{where}")
    if type(exc).__name__ == "ValidationError" and hasattr(exc, "errors") and hasattr(exc, "title"):
        return one_line(_validation(exc))
    text = str(exc).strip()
    if isinstance(exc, (ValueError, RuntimeError)) and text:
        return one_line(text)
    return one_line(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


def command_path(ctx: Context | None) -> str:
    """``appt-sync webhooks status``: the command's path, whatever the program was called."""
    names: list[str] = []
    while ctx is not None and ctx.parent is not None:
        names.append(ctx.info_name or "")
        ctx = ctx.parent
    return " ".join(["appt-sync", *reversed([n for n in names if n])])


def usage_line(exc: UsageError) -> str:
    """``appt-sync <command>: <message> (see appt-sync <command> --help)``."""
    path = command_path(exc.ctx)
    return f"{path}: {one_line(exc.format_message()).rstrip('.')} (see {path} --help)"


def error_line(ctx: Context | None, exc: BaseException) -> str:
    """``appt-sync <command>: <describe(exc)>``."""
    return f"{command_path(ctx)}: {describe(exc)}"


# -------------------------------------------------------------------- wrapping
def friendly(fn: F) -> F:
    """Wrap a command body: any exception becomes one line on stderr and exit 1.

    ``typer.Exit`` / ``Abort`` pass; a ``UsageError`` (``typer.BadParameter``)
    raised by the body passes with the command's context attached, so it is
    formatted as a usage error (exit 2). With ``--debug`` every exception is raised
    as it is (its traceback is printed).
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = get_current_context(silent=True)
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except UsageError as exc:
            if exc.ctx is None:
                exc.ctx = ctx
            raise
        except ClickException:
            raise
        except Exception as exc:
            if STATE.debug:
                exc.appt_sync_command = command_path(ctx)  # type: ignore[attr-defined]  # for run()'s last line
                raise
            typer.secho(error_line(ctx, exc), err=True, fg="red")
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def _split_debug(args: Sequence[str]) -> tuple[list[str], bool]:
    """``args`` without ``--debug`` (before any ``--``), and whether it was there."""
    args = list(args)
    end = args.index("--") if "--" in args else len(args)
    debug = "--debug" in args[:end]
    return [a for a in args[:end] if a != "--debug"] + args[end:], debug


def run(app: typer.Typer, argv: Sequence[str] | None = None) -> int:
    """Run ``app`` on ``argv`` (default ``sys.argv[1:]``); returns the exit code.

    ``--debug`` may stand anywhere before ``--``; it is handed to the app's
    callback as its first option. Without it, Prefect's console handler is set to
    :data:`QUIET_CONSOLE_LEVEL` (before Prefect is imported) for every command but
    those in :data:`NOT_QUIETED`.
    """
    from typer.main import get_command

    args, debug = _split_debug(sys.argv[1:] if argv is None else argv)
    set_debug(debug)
    name = next((a for a in args if not a.startswith("-")), None)
    if not debug and name not in NOT_QUIETED and "prefect" not in sys.modules:
        os.environ.setdefault(QUIET_CONSOLE_ENV, QUIET_CONSOLE_LEVEL)
    command = get_command(app)
    try:
        rv = command.main(args=(["--debug"] if debug else []) + args, prog_name="appt-sync", standalone_mode=False)
    except NoArgsIsHelpError as exc:  # ``appt-sync`` or ``appt-sync webhooks`` alone: its help
        text = exc.format_message()  # rich help was printed when the error was made; plain help is returned
        if text.strip():
            typer.echo(text)
        return exc.exit_code
    except UsageError as exc:
        typer.secho(usage_line(exc), err=True, fg="red")
        return exc.exit_code
    except typer.Abort:
        typer.secho("appt-sync: aborted", err=True, fg="red")
        return 1
    except ClickException as exc:
        typer.secho(f"appt-sync: {one_line(exc.format_message())}", err=True, fg="red")
        return exc.exit_code
    except Exception as exc:  # raised outside a command body (the callback) or with --debug
        if debug:
            traceback.print_exc()
        typer.secho(f"{getattr(exc, 'appt_sync_command', 'appt-sync')}: {describe(exc)}", err=True, fg="red")
        return 1
    return rv if isinstance(rv, int) else 0
