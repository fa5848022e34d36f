"""Benchmark: one CRM Bulk Read of every ``Appointments__s`` record of a big sandbox.

Starts ``python -m sandbox`` on a free 127.0.0.1 port, re-seeds it with
``--appointments`` records (timed: that is the seed figure), then times one Bulk
Read job of all fields from the create call to the downloaded zip bytes, checks
the zip (one CSV with a header and one row per record), and prints:

* seed seconds (``POST /__sandbox/reset``),
* create -> COMPLETED seconds (polling the status every ``--poll`` seconds),
* download seconds, and the total from create to zip bytes,
* the zip size in MB and the rows of its CSV,
* how long status calls took while the job was being built (the server's event
  loop must stay responsive while a worker thread writes the zip).

Run it with ``make bench`` or ``.venv/bin/python benchmarks/sandbox_bulk.py --help``.
Only loopback traffic; not part of the test suite.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_sandbox(port: int, seed: int, bulk_delay: float, log) -> subprocess.Popen:
    """``python -m sandbox`` with one appointment (the benchmark re-seeds it, timed)."""
    cmd = [
        sys.executable, "-m", "sandbox", "--host", "127.0.0.1", "--port", str(port),
        "--appointments", "1", "--seed", str(seed), "--bulk-delay", str(bulk_delay),
    ]  # fmt: skip
    return subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def wait_until_up(http: httpx.Client, proc: subprocess.Popen, limit: float = 60.0) -> None:
    """Poll the health route until it answers, or give up."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the sandbox exited with {proc.returncode}")
        try:
            if http.get("/__sandbox/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"the sandbox did not come up within {limit} s")


def access_token(http: httpx.Client) -> str:
    """Mint an access token with the sandbox's own self client."""
    creds = http.get("/__sandbox/credentials").json()
    body = http.post(
        "/oauth/v2/token",
        data={
            "grant_type": "refresh_token",
            "client_id": creds["client_id"],
            "client_secret": creds["client_secret"],
            "refresh_token": creds["refresh_token"],
        },
    ).json()
    return body["access_token"]


def csv_rows(zip_bytes: bytes, job_id: str) -> int:
    """Rows (header excluded) of ``{job_id}.csv``, the zip's only file."""
    with zipfile.ZipFile(io.BytesIO(zip_bytes)) as zf:
        if zf.namelist() != [f"{job_id}.csv"]:
            raise SystemExit(f"unexpected zip content: {zf.namelist()}")
        with zf.open(f"{job_id}.csv") as raw:
            reader = csv.reader(io.TextIOWrapper(raw, encoding="utf-8", newline=""))
            header = next(reader)
            if header[0] != "Id":
                raise SystemExit(f"unexpected header: {header[:3]}")
            return sum(1 for _ in reader)


def one_job(api: httpx.Client, poll: float) -> dict[str, float]:
    """Create a job of every ``Appointments__s`` field, wait, download; the figures."""
    t0 = time.perf_counter()
    r = api.post("/crm/bulk/v7/read", json={"query": {"module": {"api_name": "Appointments__s"}, "fields": [], "page": 1}})
    if r.status_code != 201:
        raise SystemExit(f"create answered {r.status_code}: {r.text}")
    job_id = r.json()["data"][0]["details"]["id"]
    latencies: list[float] = []
    while True:
        t = time.perf_counter()
        job = api.get(f"/crm/bulk/v7/read/{job_id}").json()["data"][0]
        latencies.append(time.perf_counter() - t)
        if job["state"] in ("COMPLETED", "FAILURE"):
            break
        time.sleep(poll)
    t1 = time.perf_counter()
    if job["state"] != "COMPLETED":
        raise SystemExit(f"the job failed: {job['result']}")
    r = api.get(job["result"]["download_url"])
    zip_bytes = r.content
    t2 = time.perf_counter()
    if r.status_code != 200:
        raise SystemExit(f"download answered {r.status_code}: {r.text}")
    rows = csv_rows(zip_bytes, job_id)
    if rows != job["result"]["count"]:
        raise SystemExit(f"the CSV holds {rows} rows, the job says {job['result']['count']}")
    return {
        "completed": t1 - t0,
        "download": t2 - t1,
        "total": t2 - t0,
        "zip_mb": len(zip_bytes) / 1e6,
        "rows": rows,
        "polls": len(latencies),
        "poll_max_ms": max(latencies) * 1000,
        "poll_median_ms": statistics.median(latencies) * 1000,
    }


def show(label: str, value: str) -> None:
    """One figure: the label padded, then the value."""
    print(f"{label:<44}{value}")


def main(argv: list[str] | None = None) -> None:
    """Parse the options, run the benchmark, print the figures."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--appointments", type=int, default=200_000, help="records to seed (default 200,000)")
    p.add_argument("--seed", type=int, default=42, help="seed of the data generator")
    p.add_argument("--bulk-delay", type=float, default=0.0, help="the sandbox's bulk_delay, seconds (default 0)")
    p.add_argument("--poll", type=float, default=0.05, help="seconds between status calls (default 0.05)")
    p.add_argument("--runs", type=int, default=1, help="bulk read jobs to time, one after the other (default 1)")
    args = p.parse_args(argv)

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile("w+") as log, httpx.Client(base_url=base, timeout=600) as http:
        proc = start_sandbox(port, args.seed, args.bulk_delay, log)
        try:
            wait_until_up(http, proc)
            t = time.perf_counter()
            r = http.post("/__sandbox/reset", json={"appointments": args.appointments, "seed": args.seed})
            seed_s = time.perf_counter() - t
            if r.status_code != 200 or r.json()["appointments"] != args.appointments:
                raise SystemExit(f"reset answered {r.status_code}: {r.text}")
            http.put("/__sandbox/config", json={"bulk_downloads_per_minute": 1000}).raise_for_status()
            headers = {"Authorization": f"Zoho-oauthtoken {access_token(http)}"}
            print(
                f"sandbox bulk read: {args.appointments:,} appointments, seed {args.seed}, "
                f"bulk_delay {args.bulk_delay:g} s, {os.cpu_count()} CPUs"
            )
            show("seed (POST /__sandbox/reset)", f"{seed_s:.2f} s")
            with httpx.Client(base_url=base, headers=headers, timeout=600) as api:
                for run in range(1, args.runs + 1):
                    f = one_job(api, args.poll)
                    tag = f" [run {run}]" if args.runs > 1 else ""
                    show(f"create -> COMPLETED{tag}", f"{f['completed']:.2f} s")
                    show(f"download{tag}", f"{f['download']:.2f} s")
                    show(f"total job, create -> zip bytes{tag}", f"{f['total']:.2f} s")
                    show(f"zip{tag}", f"{f['zip_mb']:.2f} MB")
                    show(f"rows{tag}", f"{f['rows']:,}")
                    show(
                        f"status calls while the job ran{tag}",
                        f"{f['polls']} (median {f['poll_median_ms']:.0f} ms, max {f['poll_max_ms']:.0f} ms)",
                    )
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


if __name__ == "__main__":
    main()
