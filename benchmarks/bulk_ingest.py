"""Load one full Bulk Read page (200,000 ``Appointments__s`` rows) from zip bytes into SQLite.

Usage::

    .venv/bin/python benchmarks/bulk_ingest.py [--rows 200000] [--seed 7] [--runs 3] [--paths ours,floor,...] [--keep DIR]

The parent process writes one zip as CRM Bulk Read gives it (``{job_id}.zip``
holding ``{job_id}.csv``; every ``Appointments__s`` field in the sandbox's
column order; lookups as ids; date-times ISO 8601 with the offsets of four time
zones; the reschedule and cancellation fields mostly empty; a few notes with
commas, quotes and line breaks). Then, each in a fresh subprocess so that the peak
RSS (``ru_maxrss``) belongs to one path only, it times:

* **ours**: :func:`sync.bulk_load.load_csv_zip` into a fresh SQLite state store
  (streamed CSV, validation, rejected rows, upsert that never goes back in
  ``Modified_Time``, one transaction);
* **floor**: the least any loader must do, as a yardstick for ours: a bare
  ``csv.reader`` over the same zip member and ``sqlite3.executemany`` of the seven
  mapped columns, as CRM wrote them, into the same table (created by the state
  store's ``make_engine``: primary key, ``booking_id`` index, WAL, ``synchronous=NORMAL``);
  no validation, no conversion, no upsert, no rejected rows;
* **pandas-as-is**: the obvious alternative on the same zip, ``pandas.read_csv`` of
  the zip member and ``DataFrame.to_sql`` into another fresh SQLite file, nothing else;
* **pandas-utc**: the same with the seven columns we keep and the three date-times
  turned to UTC (``pd.to_datetime(utc=True)``): the rows and instants ours stores
  (in pandas' own text form), without validation, rejected rows or the upsert;
* **pandas-text**: the seven columns with the date-times left as CRM wrote them
  (offsets, not UTC): less work than ours does, shown for completeness.

Each child checks the table holds ``--rows`` rows before reporting. Printed per
run: wall seconds, CPU seconds (steadier than wall time on a shared machine), rows
per second, peak RSS (and the RSS before the load started, i.e. the interpreter
and imports); then ours / floor and the ratio of each pandas variant to ours (best
runs). ``--paths`` picks the paths (default all). Targets
(issue 4): ours at most 5 s and 300 MB peak RSS in every run, and faster than
the obvious pandas path (``as-is``, best runs, when it ran); it exits 1 when one is
missed. Issue 12: ours within 1.5x the floor (best runs, wall and CPU) keeps the
loader's row conversion plainly written; the figure is printed, not a target.
Nothing here talks to the network.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
import zipfile
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

JOB_ID = "5545974000003000123"
#: ``Appointments__s`` columns as Bulk Read exports every field (sandbox/schema.py order).
HEADER = [
    "Id", "Appointment_Name", "Appointment_Start_Time", "Appointment_End_Time", "Duration", "Status",
    "Service_Name", "Appointment_For", "Owner", "Location", "Rescheduled_From", "Rescheduled_To",
    "Reschedule_Reason", "Reschedule_Note", "Reschedule_Count", "Cancellation_Reason", "Cancellation_Note",
    "Cancelled_Time", "Job_Sheet_Name", "Job_Sheet_Description__s", "Booking_Id", "Created_Time",
    "Created_By", "Modified_Time", "Modified_By",
]  # fmt: skip
ZONES = [ZoneInfo(z) for z in ("America/New_York", "Europe/London", "Australia/Sydney", "Asia/Kolkata")]
SERVICES = [("4500000000100", 30), ("4500000000101", 45), ("4500000000102", 60), ("4500000000103", 90)]
FIRST = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Ken", "Margaret", "Linus", "Frances", "Dennis"]
LAST = ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Thompson", "Hamilton", "Torvalds", "Allen", "Ritchie"]
#: The columns both paths load (what ``appointments_mapping()`` maps) and the table's names for them.
MAPPED = {
    "Id": "id", "Booking_Id": "booking_id", "Appointment_Start_Time": "start_time", "Appointment_End_Time": "end_time",
    "Duration": "duration", "Status": "status", "Modified_Time": "modified_time",
}  # fmt: skip
DATETIMES = ["Appointment_Start_Time", "Appointment_End_Time", "Modified_Time"]


# ------------------------------------------------------------------ the file
def iso(moment: datetime) -> str:
    """ISO 8601 with offset, no fractions, as CRM writes date-times."""
    return moment.replace(microsecond=0).isoformat()


def rows(count: int, seed: int):
    """``count`` realistic ``Appointments__s`` rows (lists of strings), ascending ids."""
    rng = random.Random(seed)
    anchor = datetime(2026, 11, 1, tzinfo=timezone.utc)
    created = anchor - timedelta(days=45)
    owners = [str(5545974000000393100 + i) for i in range(6)]
    user = "5545974000000393001"
    for n in range(1, count + 1):
        zone = ZONES[rng.randrange(len(ZONES))]
        service, minutes = SERVICES[rng.randrange(len(SERVICES))]
        day = anchor + timedelta(days=rng.randrange(61) - 30)
        local = datetime(day.year, day.month, day.day, 8, 0, tzinfo=zone) + timedelta(minutes=15 * rng.randrange(40))
        end = local + timedelta(minutes=minutes)
        customer = rng.randrange(count // 2 + 1)
        name = f"{FIRST[customer % 10]} {LAST[(customer // 10) % 10]}"
        roll = rng.random()
        status = "Completed" if roll < 0.5 else "Cancelled" if roll < 0.6 else "Overdue" if roll < 0.7 else "Scheduled"
        modified = created + timedelta(seconds=rng.randrange(40 * 86400))
        rescheduled = roll > 0.95
        note = 'Moved: "customer asked", call first,\nthen confirm' if rescheduled and n % 2 else ("Moved by team" if rescheduled else "")
        yield [
            str(5545974000000400000 + 2 * n),
            f"Consultation {minutes} min - {name}",
            iso(local),
            iso(end),
            str(minutes),
            status,
            service,
            str(5545974000000100000 + customer),
            owners[rng.randrange(len(owners))],
            "Business Address" if roll < 0.8 else "Customer Address",
            iso(local - timedelta(days=2)) if rescheduled else "",
            "",
            ("By Customer" if n % 2 else "By Team") if rescheduled else "",
            note,
            "1" if rescheduled else "0",
            "By Customer" if status == "Cancelled" else "",
            "Customer cancelled by phone" if status == "Cancelled" and n % 3 == 0 else "",
            iso(modified) if status == "Cancelled" else "",
            "Done" if status == "Completed" else "",
            "",
            f"#AN-{n:06d}",
            iso(created),
            user,
            iso(modified.astimezone(zone)),
            user,
        ]


def write_zip(path: Path, count: int, seed: int) -> None:
    """``{JOB_ID}.zip`` holding ``{JOB_ID}.csv`` (deflate), written in chunks."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
        with archive.open(f"{JOB_ID}.csv", "w", force_zip64=True) as raw:
            text = io.TextIOWrapper(raw, encoding="utf-8", newline="")
            writer = csv.writer(text, lineterminator="\n")
            writer.writerow(HEADER)
            writer.writerows(rows(count, seed))
            text.flush()
            text.detach()


# ------------------------------------------------------------------ children
def peak_rss_mb() -> float:
    """This process's peak resident set size, MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_ours(zip_path: str, db: str) -> dict:
    from sqlalchemy import func, select

    from sync.bulk_load import appointments_mapping, load_csv_zip
    from sync.store import BulkJob, CrmAppointment, open_store
    from sqlmodel import Session

    engine = open_store(f"sqlite:///{db}")
    with Session(engine) as s:
        s.add(BulkJob(id=JOB_ID, run_id="bench", page_index=1, module="Appointments__s"))
        s.commit()
    before = peak_rss_mb()
    started, cpu = time.perf_counter(), time.process_time()
    report = load_csv_zip(engine, zip_path, JOB_ID, appointments_mapping())
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    with engine.connect() as conn:
        stored = conn.execute(select(func.count()).select_from(CrmAppointment)).scalar_one()
    return {"seconds": seconds, "cpu": cpu, "rows": stored, "rejected": report.rejected, "rss_before_mb": before, "peak_rss_mb": peak_rss_mb()}


def child_pandas(zip_path: str, db: str, variant: str) -> dict:
    """``variant``: ``as-is`` (the whole file, untouched), ``utc`` (our columns, date-times
    to UTC: the same result as ours), ``text`` (our columns, date-times left as text)."""
    import sqlite3

    import pandas as pd

    before = peak_rss_mb()
    started, cpu = time.perf_counter(), time.process_time()
    with zipfile.ZipFile(zip_path) as archive, archive.open(f"{JOB_ID}.csv") as member:
        if variant == "as-is":
            frame = pd.read_csv(member, encoding="utf-8-sig")
        else:
            frame = pd.read_csv(member, usecols=list(MAPPED), dtype={"Id": str, "Booking_Id": str, "Status": str, "Duration": "Int64"}, encoding="utf-8-sig")
            if variant == "utc":
                for column in DATETIMES:
                    frame[column] = pd.to_datetime(frame[column], utc=True, format="ISO8601")
            frame = frame.rename(columns=MAPPED)
    with sqlite3.connect(db) as conn:
        frame.to_sql("crm_appointments", conn, if_exists="append", index=False)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    with sqlite3.connect(db) as conn:
        stored = conn.execute("SELECT count(*) FROM crm_appointments").fetchone()[0]
    return {"seconds": seconds, "cpu": cpu, "rows": stored, "rejected": 0, "rss_before_mb": before, "peak_rss_mb": peak_rss_mb()}


def child_floor(zip_path: str, db: str) -> dict:
    """Bare ``csv.reader`` + ``sqlite3.executemany`` of the mapped columns' text into the store's table."""
    import sqlite3
    from operator import itemgetter

    from sync.store import open_store

    open_store(f"sqlite:///{db}").dispose()  # the same table, indexes and journal mode as ours
    before = peak_rss_mb()
    started, cpu = time.perf_counter(), time.process_time()
    names = [*MAPPED.values(), "job_id", "loaded_at"]
    sql = f"INSERT INTO crm_appointments ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA synchronous=NORMAL")  # as the store's engine sets it
    with zipfile.ZipFile(zip_path) as archive, archive.open(f"{JOB_ID}.csv") as member:
        reader = csv.reader(io.TextIOWrapper(member, encoding="utf-8-sig", newline=""))
        header = next(reader)
        cells = itemgetter(*(header.index(column) for column in MAPPED))
        constants = (JOB_ID, datetime.now(timezone.utc).isoformat())
        with conn:
            conn.executemany(sql, ((*cells(row), *constants) for row in reader))
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    stored = conn.execute("SELECT count(*) FROM crm_appointments").fetchone()[0]
    conn.close()
    return {"seconds": seconds, "cpu": cpu, "rows": stored, "rejected": 0, "rss_before_mb": before, "peak_rss_mb": peak_rss_mb()}


#: The paths timed, in order: ours, the floor, then the pandas variants (see the module docstring).
PATHS = ["ours", "floor", "pandas-as-is", "pandas-utc", "pandas-text"]


def run_child(path_name: str, zip_path: Path, folder: Path, attempt: int) -> dict:
    db = folder / f"{path_name}-{attempt}.db"
    out = subprocess.run(
        [sys.executable, __file__, "--child", path_name, "--zip", str(zip_path), "--db", str(db)],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if out.returncode != 0:
        raise SystemExit(f"the {path_name} child failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--runs", type=int, default=3, help="times each path runs (fresh SQLite file each time)")
    parser.add_argument("--paths", default=",".join(PATHS), help=f"comma-separated paths to time (default all: {','.join(PATHS)}); ours always runs")
    parser.add_argument("--keep", type=Path, default=None, help="keep the zip and databases in this folder")
    parser.add_argument("--child", choices=PATHS, help=argparse.SUPPRESS)
    parser.add_argument("--zip", help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        if args.child == "ours":
            result = child_ours(args.zip, args.db)
        elif args.child == "floor":
            result = child_floor(args.zip, args.db)
        else:
            result = child_pandas(args.zip, args.db, args.child.removeprefix("pandas-"))
        print(json.dumps(result))
        return

    chosen = ["ours", *(p for p in PATHS[1:] if p in args.paths.split(","))]
    unknown = set(args.paths.split(",")) - set(PATHS)
    if unknown:
        parser.error(f"unknown paths {sorted(unknown)}; choose from {PATHS}")
    with tempfile.TemporaryDirectory(prefix="bulk-ingest-") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        zip_path = folder / f"{JOB_ID}.zip"
        started = time.perf_counter()
        write_zip(zip_path, args.rows, args.seed)
        with zipfile.ZipFile(zip_path) as archive:
            csv_size = archive.getinfo(f"{JOB_ID}.csv").file_size
        print(f"zip: {args.rows:,} rows, {len(HEADER)} columns, {zip_path.stat().st_size / 1e6:.1f} MB ({csv_size / 1e6:.1f} MB of CSV), built in {time.perf_counter() - started:.1f} s")
        results: dict[str, list[dict]] = {name: [] for name in chosen}
        for attempt in range(args.runs):  # interleaved, so a busy spell of the machine hits every path
            for name in results:
                result = run_child(name, zip_path, folder, attempt)
                if result["rows"] != args.rows:
                    raise SystemExit(f"{name} stored {result['rows']} rows, expected {args.rows}")
                results[name].append(result)
        print(f"{'path':<13} {'wall s':>7} {'CPU s':>7} {'rows/s':>9} {'peak RSS MB':>12} {'RSS before load MB':>19}")
        for name, runs in results.items():
            for r in runs:
                print(f"{name:<13} {r['seconds']:>7.2f} {r['cpu']:>7.2f} {args.rows / r['seconds']:>9,.0f} {r['peak_rss_mb']:>12.0f} {r['rss_before_mb']:>19.0f}")
        best = {name: (min(r["seconds"] for r in runs), min(r["cpu"] for r in runs)) for name, runs in results.items()}
        if "floor" in best:
            wall, cpu = best["ours"][0] / best["floor"][0], best["ours"][1] / best["floor"][1]
            print(f"ours / floor, best of {args.runs}: wall {wall:.2f}x, CPU {cpu:.2f}x (the price of validation, UTC conversion and the upsert)")
        for name in chosen:
            if name.startswith("pandas-"):
                wall, cpu = best[name][0] / best["ours"][0], best[name][1] / best["ours"][1]
                print(f"{name} / ours, best of {args.runs}: wall {wall:.2f}x, CPU {cpu:.2f}x (above 1: ours is faster)")
        ours = results["ours"]
        worst_s = max(r["seconds"] for r in ours)
        worst_rss = max(r["peak_rss_mb"] for r in ours)
        faster = "pandas-as-is" not in best or best["ours"][0] < best["pandas-as-is"][0]
        met = worst_s <= 5 and worst_rss <= 300 and faster
        print(f"targets (ours <= 5 s wall and <= 300 MB peak RSS in every run, faster than pandas-as-is): {'met' if met else 'MISSED'}")
        if not met:
            sys.exit(1)


if __name__ == "__main__":
    main()
