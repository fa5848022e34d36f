"""The PostgreSQL suite (``make test-postgres``; not part of ``make test``).

One private PostgreSQL cluster for the session (:mod:`pgcluster`): initdb into a
temporary folder, a free port on 127.0.0.1, stopped and removed at the end, also
when a test fails or the run is interrupted (SIGINT, SIGTERM).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for path in (str(HERE), str(ROOT)):
    if path not in sys.path:
        sys.path.insert(0, path)

from pgcluster import PostgresCluster  # noqa: E402


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # unwinds the fixtures: the cluster is stopped and removed


@pytest.fixture(scope="session")
def pg():
    """The session's private cluster; ``PGPASSWORD`` is set for this process and its children."""
    previous = signal.signal(signal.SIGTERM, _interrupt)
    cluster = PostgresCluster()
    old_password = os.environ.get("PGPASSWORD")
    try:
        cluster.start()
        os.environ["PGPASSWORD"] = cluster.password
        yield cluster
    finally:
        cluster.stop()
        if old_password is None:
            os.environ.pop("PGPASSWORD", None)
        else:
            os.environ["PGPASSWORD"] = old_password
        signal.signal(signal.SIGTERM, previous)
