"""``appt-sync`` answers every mistake with one line on stderr and an honest exit code.

Each case runs the installed command line as a subprocess (``python -m deployments.cli``,
what ``.venv/bin/appt-sync`` runs) against the session's Prefect server
(``PREFECT_API_URL`` set, so the stack lookup is skipped) with its own
``PREFECT_HOME``: exit 2 for a usage error, 1 for a failure, stderr one non-empty
line naming what was wrong, no traceback (unless ``--debug``) and no secret.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from pydantic import SecretStr

from tests.conftest import ROOT, free_port

#: Secrets of the test's ZohoOAuth block: never in any output.
CLIENT_SECRET = "cli-errors-client-secret-7f3a9c"
REFRESH_TOKEN = "1000.cli-errors-refresh-token-52e1"
OAUTH_BLOCK = "cli-errors-oauth"
CONFIG_BLOCK = "cli-errors-sync"


@pytest.fixture(scope="module")
def cli(prefect_api: str, tmp_path_factory: pytest.TempPathFactory):
    """Run ``appt-sync *args``; returns ``(exit code, stdout, stderr, seconds)``."""
    home = tmp_path_factory.mktemp("cli-errors-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_LOGGING_")}
    env.update(PREFECT_API_URL=prefect_api, PREFECT_HOME=str(home), PYTHONUNBUFFERED="1", COLUMNS="120")

    def run(*args: str, **extra_env: str) -> tuple[int, str, str, float]:
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "deployments.cli", *args], cwd=ROOT, env={**env, **extra_env},
                              capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        return done.returncode, done.stdout, done.stderr, time.monotonic() - started

    return run


@pytest.fixture(scope="module")
def dead_url() -> str:
    """A loopback URL nothing listens on."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture(scope="module")
def blocks(prefect_api: str, dead_url: str, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A ZohoOAuth block (no token yet) and an AppointmentSyncConfig whose Zoho is ``dead_url``."""
    from blocks import ZohoOAuth
    from blocks.sync_config import AppointmentSyncConfig

    ZohoOAuth(client_id="1000.CLIERRORS", client_secret=SecretStr(CLIENT_SECRET), refresh_token=SecretStr(REFRESH_TOKEN),
              data_centre="CUSTOM", base_url=dead_url).save(OAUTH_BLOCK, overwrite=True)
    store = tmp_path_factory.mktemp("cli-errors-store") / "state.db"
    AppointmentSyncConfig(oauth_block=OAUTH_BLOCK, state_store_url=f"sqlite:///{store}").save(CONFIG_BLOCK, overwrite=True)
    return SimpleNamespace(oauth=OAUTH_BLOCK, config=CONFIG_BLOCK, dead=dead_url)


def one_error_line(stderr: str) -> str:
    """The only non-empty line of ``stderr`` (fails when there are more)."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{stderr[-3000:]}"
    return lines[0]


def assert_clean(code: int, out: str, err: str, expected_code: int, *needles: str) -> str:
    """Exit code, one stderr line holding every needle, no traceback, no secret; returns the line."""
    line = one_error_line(err)
    assert code == expected_code, f"exit {code}, expected {expected_code}: {line}"
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    for text in (out, err):
        assert "Traceback" not in text
        assert CLIENT_SECRET not in text and REFRESH_TOKEN not in text
    return line


# ------------------------------------------------------------------ usage: exit 2
@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["sync", "--mode", "bogus"], ["appt-sync sync:", "--mode", "'bogus'", "(see appt-sync sync --help)"]),
        (["sync", "--no-such-option"], ["appt-sync sync:", "No such option: --no-such-option", "--help"]),
        (["sync", "--crm-id", "1", "--module", "Deals"], ["appt-sync sync:", "--module", "'Deals'", "Appointments__s or Events"]),
        (["sync", "--module", "Events"], ["appt-sync sync:", "--module", "give --crm-id too"]),
        (["syn"], ["appt-sync:", "No such command 'syn'", "(see appt-sync --help)"]),
        (["webhooks", "subscribe"], ["appt-sync webhooks subscribe:", "Missing option '--notify-url'"]),
        (["auth", "--client-id", "1000.X", "--data-centre", "XX"], ["appt-sync auth:", "--data-centre", "'XX'", "US, EU, IN, AU, JP, CA, SA, CN, or CUSTOM"]),
        (["sandbox", "--port", "x"], ["appt-sync sandbox:", "--port", "invalid int value", "(see appt-sync sandbox --help)"]),
    ],
    ids=["bad-value", "unknown-option", "bad-module", "module-without-ids", "unknown-command", "missing-option", "bad-data-centre", "sandbox-bad-option"],
)
def test_usage_errors_are_one_line_exit_2(cli, args, needles):
    assert_clean(*cli(*args)[:3], 2, *needles)


# -------------------------------------------------------------- failures: exit 1
def test_missing_block_lists_the_blocks_of_its_type(cli, blocks):
    typo = blocks.oauth[:-1]  # one character short: its intended name is listed first, however many blocks exist
    code, out, err, _ = cli("token", "--block", typo)
    line = assert_clean(code, out, err, 1, "appt-sync token:", f"no ZohoOAuth block named '{typo}'", f"(blocks of that type: {blocks.oauth}", "appt-sync auth")
    assert "Unable to find block document" not in line


def test_auth_against_a_sandbox_that_is_down(cli, dead_url):
    assert_clean(*cli("auth", "--sandbox", dead_url)[:3], 1, "appt-sync auth:", f"cannot reach the sandbox at {dead_url}", "connection refused", "make up")


def test_sync_with_zoho_down_fails_fast_and_names_the_host(cli, blocks):
    code, out, err, seconds = cli("sync", "--config", blocks.config, "--dry-run")
    assert_clean(code, out, err, 1, "appt-sync sync:", f"cannot reach {blocks.dead}", "connection refused", "is the sandbox running? (make up)")
    assert seconds < 20, f"a refused loopback connection took {seconds:.0f} s (retried?)"


def test_sandbox_on_a_busy_port_says_so_before_its_banner(cli):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, out, err, _ = cli("sandbox", "--port", str(port))
    assert_clean(code, out, err, 1, "appt-sync sandbox:", f"port {port}", "taken", "--port", "SANDBOX_PORT=")
    assert "Zoho sandbox on" not in out


def test_prefect_api_down(cli, dead_url):
    assert_clean(*cli("token", PREFECT_API_URL=f"{dead_url}/api")[:3], 1, "appt-sync token:", f"cannot reach the Prefect API at {dead_url}/api", "make up")


def test_debug_shows_the_traceback(cli, blocks):
    code, out, err, _ = cli("token", "--block", "zoho-nope", "--debug")
    assert code == 1
    assert "Traceback (most recent call last)" in err
    assert err.strip().splitlines()[-1].startswith("appt-sync token: no ZohoOAuth block named 'zoho-nope'")
    assert CLIENT_SECRET not in err + out and REFRESH_TOKEN not in err + out


# ------------------------------------------------- sync's exit code follows failed
def _summary(failures: list[dict]):
    from datetime import datetime, timezone

    from sync.report import SyncSummary

    summary = SyncSummary(run_id="r", mode="incremental", dry_run=False, started_at=datetime.now(timezone.utc))
    for entry in failures:
        summary.add_failure(entry)
    return summary


@pytest.mark.parametrize("failed", [0, 2])
def test_sync_exit_code_follows_failed_records(prefect_api, monkeypatch, failed):
    from typer.testing import CliRunner

    import flows.sync_appointments as flow_module
    from deployments.cli import app

    entries = [
        {"booking_id": "#AN-00014", "crm_id": "5545974000002254155", "target": "crm", "kind": "reschedule", "change": "reschedule",
         "written_to": "CRM", "code": "NOT_ALLOWED", "message": "cancelled appointments cannot be rescheduled"},
        {"booking_id": "#AN-00015", "crm_id": "5545974000002254160", "target": "-", "kind": "invalid", "change": "invalid record",
         "code": "INVALID_RECORD", "message": "no start time"},
    ][:failed]

    async def fake_sync(**_: object):
        return _summary(entries)

    monkeypatch.setattr(flow_module, "sync_appointments", fake_sync)
    result = CliRunner().invoke(app, ["sync"])
    assert result.exit_code == (1 if failed else 0), result.output
    if failed:
        assert "failed booking #AN-00014 / CRM 5545974000002254155 (reschedule, CRM): NOT_ALLOWED" in result.output
        assert "failed booking #AN-00015 / CRM 5545974000002254160 (invalid record): INVALID_RECORD no start time" in result.output
        assert "appt-sync sync: 2 records failed" in result.output


# ------------------------------------------------------------- messages, no process
def test_describe_never_shows_a_registered_secret_and_stays_one_line():
    from deployments.cli_errors import STATE, describe, remember_secret

    before = list(STATE.secrets)
    try:
        remember_secret("typed-client-secret-123")
        line = describe(ValueError("bad answer\nfor typed-client-secret-123\n  at line 2"))
    finally:
        STATE.secrets[:] = before
    assert line == "bad answer for *** at line 2"


def test_describe_http_errors_without_path_query_or_user_info():
    from deployments.cli_errors import describe

    request = httpx.Request("GET", "https://user:pw@www.zohoapis.eu/crm/v7/Appointments__s?code=SECRETCODE")
    refused = httpx.ConnectError("[Errno 111] Connection refused", request=request)
    line = describe(refused)
    assert line.startswith("cannot reach https://www.zohoapis.eu (Zoho CRM): ") and "data centre" in line
    assert "SECRETCODE" not in line and "pw" not in line
    status = httpx.HTTPStatusError("x", request=request, response=httpx.Response(503, request=request))
    assert describe(status) == "GET https://www.zohoapis.eu/crm/v7/Appointments__s answered HTTP 503 Service Unavailable"


def test_refused_loopback_connections_are_not_retried_but_remote_ones_are():
    from tasks.retry import refused_on_loopback
    from zoho.errors import is_transient, transport_error

    def refused(url: str):
        cause = ConnectionRefusedError(111, "Connection refused")
        exc = httpx.ConnectError("All connection attempts failed")
        exc.__cause__ = cause
        return transport_error(exc, "POST", f"{url}/oauth/v2/token")

    local, remote = refused("http://127.0.0.1:8900"), refused("https://accounts.zoho.eu")
    assert local.details == {"url": "http://127.0.0.1:8900", "reason": "connection refused"}
    assert refused_on_loopback(local) and refused_on_loopback(refused("http://localhost:8900"))
    assert not refused_on_loopback(remote) and is_transient(remote)
    timeout = transport_error(httpx.ReadTimeout("timed out"), "GET", "http://127.0.0.1:8900/crm/v7/x")
    assert not refused_on_loopback(timeout) and timeout.details["reason"] == "timed out"


def test_bad_data_centre_lists_the_valid_ones():
    from zoho.datacentres import DataCentre

    assert DataCentre("eu") is DataCentre.EU
    with pytest.raises(ValueError, match=r"unknown data centre 'XX': use one of US, EU, IN, AU, JP, CA, SA, CN, or CUSTOM"):
        DataCentre("XX")


def test_main_is_the_entry_point():
    text = (Path(ROOT) / "pyproject.toml").read_text()
    assert 'appt-sync = "deployments.cli:main"' in text
