"""A private, throw-away PostgreSQL cluster for the PostgreSQL suite (never the system cluster).

``initdb`` into a new temporary folder, ``pg_ctl start`` on a free port of
127.0.0.1 (``listen_addresses = '127.0.0.1'``, the unix socket inside that folder,
so nothing else on the machine is touched), and on :meth:`PostgresCluster.stop`
``pg_ctl stop`` and the folder removed. ``initdb`` and ``postgres`` refuse to run
as root: as root they run as the ``postgres`` system user (created by Debian's
``postgresql`` package) through ``runuser`` (or ``setpriv``), with the folder
chowned to it; as anyone else they run directly.

Connections use SCRAM with a random password that never appears in a URL: it is
handed over as ``PGPASSWORD`` (read by libpq, i.e. psycopg, and by asyncpg), the
way a worker machine would keep it out of block documents and logs.
"""

from __future__ import annotations

import glob
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from sqlalchemy import create_engine, text

USER = "appt_sync"
#: Database names this suite creates (checked, then quoted as identifiers anyway).
NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def _version_key(path: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", path)) or (0,)


def find_bindir() -> Path | None:
    """The folder of ``initdb`` / ``pg_ctl``: ``initdb`` on ``PATH``, else the newest ``/usr/lib/postgresql/*/bin``."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version_key)
    return Path(candidates[-1]).parent if candidates else None


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres() -> list[str]:
    """The command prefix that runs a PostgreSQL binary as a user it accepts."""
    if os.geteuid() != 0:
        return []
    if shutil.which("runuser"):
        return ["runuser", "-u", "postgres", "--"]
    if shutil.which("setpriv"):
        return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"]
    raise RuntimeError("running as root, and neither runuser nor setpriv is here to drop to the postgres user")


class PostgresCluster:
    """One private cluster: :meth:`start`, :meth:`url`, :meth:`create_database`, :meth:`stop`."""

    def __init__(self, bindir: Path | None = None) -> None:
        bindir = bindir or find_bindir()
        if bindir is None:
            raise RuntimeError("no PostgreSQL binaries (initdb) found: `make test-postgres` installs Debian's postgresql package")
        self.bindir = bindir
        self.password = secrets.token_urlsafe(24)
        self.folder: Path | None = None
        self.port: int | None = None
        self._prefix = _as_postgres()

    @property
    def data(self) -> Path:
        assert self.folder is not None
        return self.folder / "data"

    @property
    def log(self) -> Path:
        assert self.folder is not None
        return self.folder / "postgres.log"

    def _run(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C"}
        return subprocess.run([*self._prefix, *argv], env=env, cwd=self.folder, capture_output=True, text=True, timeout=timeout)

    def start(self) -> "PostgresCluster":
        """``initdb`` a new temporary folder and start the server on a free loopback port."""
        self.folder = Path(tempfile.mkdtemp(prefix="appt-sync-pg-"))  # mode 700
        try:
            if self._prefix:
                import pwd

                pw = pwd.getpwnam("postgres")
                os.chown(self.folder, pw.pw_uid, pw.pw_gid)
            pwfile = self.folder / "pwfile"
            pwfile.write_text(self.password + "\n")
            pwfile.chmod(0o600)
            if self._prefix:
                os.chown(pwfile, pw.pw_uid, pw.pw_gid)
            done = self._run(
                str(self.bindir / "initdb"), "-D", str(self.data), "-U", USER, f"--pwfile={pwfile}",
                "--auth=scram-sha-256", "--encoding=UTF8", "--no-locale", "--no-sync",
            )
            pwfile.unlink()
            if done.returncode != 0:
                raise RuntimeError(f"initdb failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
            for attempt in range(3):
                self.port = free_port()
                # a test cluster: durability traded for speed; reachable on 127.0.0.1 and its own socket only
                settings = {
                    "listen_addresses": "'127.0.0.1'", "port": str(self.port), "unix_socket_directories": f"'{self.folder}'",
                    "max_connections": "200", "fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
                }
                with (self.data / "postgresql.auto.conf").open("a") as conf:
                    conf.write("".join(f"{k} = {v}\n" for k, v in settings.items()))
                done = self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")
                if done.returncode == 0:
                    return self
                if attempt == 2:
                    raise RuntimeError(f"pg_ctl start failed: {done.stderr.strip()}\n{self.log_tail()}")
        except BaseException:
            self.stop()
            raise
        return self

    def log_tail(self, lines: int = 30) -> str:
        """The end of the server log (for failure messages)."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def url(self, database: str = "postgres", driver: str = "psycopg") -> str:
        """A SQLAlchemy URL (no password in it: see ``PGPASSWORD``)."""
        return f"postgresql+{driver}://{USER}@127.0.0.1:{self.port}/{database}"

    @property
    def env(self) -> dict[str, str]:
        """What a client process needs besides the URL."""
        return {"PGPASSWORD": self.password}

    def create_database(self, name: str) -> str:
        """Create database ``name`` (if missing); returns its psycopg URL.

        ``CREATE DATABASE`` takes no bound parameters: the name is checked against
        :data:`NAME` and quoted as an identifier by SQLAlchemy; the existence check is bound.
        """
        if not NAME.fullmatch(name):
            raise ValueError(f"not a database name this suite creates: {name!r}")
        engine = create_engine(self.url("postgres"), isolation_level="AUTOCOMMIT", connect_args={"password": self.password})
        try:
            with engine.connect() as conn:
                if conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}).first() is None:
                    conn.execute(text(f"CREATE DATABASE {engine.dialect.identifier_preparer.quote(name)}"))
        finally:
            engine.dispose()
        return self.url(name)

    def stop(self) -> None:
        """Stop the server (fast, then immediate, then its postmaster by PID) and remove the folder."""
        if self.folder is None:
            return
        try:
            if (self.data / "postmaster.pid").exists():
                for mode in ("fast", "immediate"):
                    done = self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop", timeout=60)
                    if done.returncode == 0:
                        break
                else:
                    self._kill_postmaster()
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    def _kill_postmaster(self) -> None:
        """SIGQUIT to the postmaster named in this cluster's own ``postmaster.pid`` (nothing else)."""
        try:
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
            if Path(f"/proc/{pid}/cwd").resolve() == self.data.resolve():
                os.kill(pid, signal.SIGQUIT)
                time.sleep(2)
        except (OSError, ValueError, IndexError):
            pass

    def __enter__(self) -> "PostgresCluster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
