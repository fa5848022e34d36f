"""The three-way diff over 1,000,000 links: our SQL diff + ``plan_link`` against a pandas merge.

Usage::

    .venv/bin/python benchmarks/diff.py [--links 1000000] [--changed 0.01] [--conflicts 0.001] [--runs 1] [--keep DIR]

Setup (not timed, in its own process): a fresh SQLite state store (``sync.store.open_store``, so the
real schema and indexes) filled with raw ``sqlite3`` ``executemany``:
``crm_appointments``, ``bookings`` and ``sync_base`` with ``--links`` linked
appointments in eight time zones, statuses spread over every CRM and Bookings
value (``Overdue``, ``ONGOING``, ``PENDING`` and cancelled/no-show pairs agree with
their base), plus a few CRM records without a booking and bookings without a CRM
record. ``--changed`` of the links changed on the CRM side and as many on the
Bookings side, ``--conflicts`` of the links on both (so 1.9 % of the links differ
from the base by default): reschedules, cancellations, completions and no-shows;
the links changed on both sides mostly disagree (conflicts), a few made the same
change (agreed echoes).

Then, each in a fresh subprocess so that the peak RSS (``ru_maxrss``) belongs to
one path only:

* **ours**: what the flow does: iterate :func:`sync.links.changed_links` (the
  diff in SQL, only changed rows become Python objects) and
  :func:`sync.engine.plan_link` each one;
* **pandas**: read the three tables into DataFrames, merge CRM with Bookings
  (inner) and the base (left), map the statuses to canonical, compare, keep the
  changed rows: the same changed set, without planning them.

Both report the changed booking ids' digest, and the parent checks they match.
Printed: seconds (wall and CPU), links changed, actions, conflicts, peak RSS, and
the pandas / ours ratio. Targets (issue 5): ours at most 10 s and 1 GB, and faster
than pandas. Nothing here talks to the network.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

UTC = timezone.utc
#: "now" of the plan: some appointments are past (completions allowed), some future.
NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
FIRST = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)
ZONES = ["America/New_York", "Europe/London", "Australia/Sydney", "Asia/Kolkata", "Pacific/Auckland", "America/Los_Angeles", "UTC", "Asia/Tokyo"]
#: Agreeing (CRM Status, Bookings status, base CRM canon, base Bookings canon) for unchanged links.
AGREEING = [
    ("Scheduled", "UPCOMING", "scheduled", "scheduled"),
    ("Overdue", "ONGOING", "scheduled", "scheduled"),
    ("Scheduled", "PENDING", "scheduled", "scheduled"),
    ("Cancelled", "CANCEL", "cancelled", "cancelled"),
    ("Cancelled", "NO_SHOW", "cancelled", "no_show"),
    ("Completed", "COMPLETED", "completed", "completed"),
    ("Scheduled", "UPCOMING", "scheduled", "scheduled"),
    ("Scheduled", "UPCOMING", "scheduled", "scheduled"),
]


def iso(moment: datetime) -> str:
    """As ``sync.store.UTCDateTime`` stores it in SQLite."""
    return moment.isoformat()


def booking_id(i: int) -> str:
    return f"41{i:011d}"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- setup ---------------------------------------------------------------------------------

def build(path: Path, links: int, changed: float, conflicts: float) -> dict[str, int]:
    """Fill a fresh store at ``path``; return what was made."""
    from sync.store import open_store

    open_store(f"sqlite:///{path}").dispose()  # the real schema and indexes
    crm_every = round(1 / changed)  # CRM-side changes: i % crm_every == 0
    both_every = round(1 / conflicts)  # both sides: i % both_every == 0 (a subset of the CRM-side ones)
    starts = [iso(FIRST + timedelta(minutes=30 * k)) for k in range(4 * 24 * 90)]
    moved = [iso(FIRST + timedelta(minutes=30 * k + 90)) for k in range(4 * 24 * 90)]
    moved2 = [iso(FIRST + timedelta(minutes=30 * k + 1440)) for k in range(4 * 24 * 90)]
    ends = [iso(FIRST + timedelta(minutes=30 * k + 30)) for k in range(4 * 24 * 90)]
    modified = iso(FIRST - timedelta(days=30))
    crm_modified, bk_changed = iso(NOW - timedelta(hours=2)), iso(NOW - timedelta(hours=1))
    agreed_at = iso(FIRST - timedelta(days=20))
    crm_rows, bk_rows, base_rows = [], [], []
    counts: Counter[str] = Counter()
    for i in range(links):
        bid, cid = booking_id(i), f"55{i:011d}"
        slot = i % len(starts)
        start, end, tz = starts[slot], ends[slot], ZONES[i % len(ZONES)]
        crm_status, bk_status, base_crm, base_bk = AGREEING[i % len(AGREEING)]
        crm = [cid, bid, start, end, 30, crm_status, modified]
        bk = [bid, start, end, bk_status, tz, "staff-1", "svc-1", agreed_at, agreed_at]
        crm_side = i % crm_every == 0
        bk_side = i % crm_every == crm_every // 2 and i % both_every != crm_every // 2 or i % both_every == 0
        if crm_side or bk_side:  # changes start from a scheduled, agreed link
            crm[5], bk[3], base_crm, base_bk = "Scheduled", "UPCOMING", "scheduled", "scheduled"
            counts["crm side"] += crm_side
            counts["bookings side"] += bk_side
        if crm_side:
            kind = (i // crm_every) % 4
            if kind in (0, 1):
                crm[2] = moved[slot]
            elif kind == 2:
                crm[5] = "Cancelled"
            else:
                crm[5] = "Completed"
            crm[6] = crm_modified
        if bk_side:
            kind = (i // both_every) % 5 if crm_side else (i // crm_every) % 4
            if crm_side and kind == 4:  # the same change as CRM: agreed on both sides
                bk[1], bk[3] = crm[2], {"Cancelled": "CANCEL", "Completed": "COMPLETED"}.get(crm[5], "UPCOMING")
            elif kind in (0, 1):
                bk[1] = moved2[slot]
            elif kind == 2:
                bk[3] = "CANCEL"
            else:
                bk[3] = "NO_SHOW" if i % 2 else "COMPLETED"
            bk[7] = bk_changed
        crm_rows.append(crm)
        bk_rows.append(bk)
        base_rows.append([bid, cid, start, base_crm, start, base_bk, tz, agreed_at])
    for j in range(links // 1000):  # unlinked on either side: never part of the diff
        crm_rows.append([f"56{j:011d}", None, starts[j], ends[j], 30, "Scheduled", modified])
        bk_rows.append([f"42{j:011d}", starts[j], ends[j], "UPCOMING", "UTC", None, None, agreed_at, agreed_at])
    con = sqlite3.connect(path)
    con.execute("PRAGMA synchronous=OFF")
    with con:
        con.executemany(
            "INSERT INTO crm_appointments (id, booking_id, start_time, end_time, duration, status, modified_time) VALUES (?,?,?,?,?,?,?)", crm_rows)
        con.executemany(
            "INSERT INTO bookings (booking_id, start_time, end_time, status, time_zone, staff_id, service_id, changed_at, fetched_at)"
            " VALUES (?,?,?,?,?,?,?,?,?)", bk_rows)
        con.executemany(
            "INSERT INTO sync_base (booking_id, crm_id, crm_start, crm_status, bookings_start, bookings_status, time_zone, agreed_at)"
            " VALUES (?,?,?,?,?,?,?,?)", base_rows)
    con.execute("ANALYZE")
    con.close()
    counts["links"] = links
    counts["both sides"] = sum(1 for i in range(0, links, both_every))
    return dict(counts)


# --- the two paths, each in its own process ----------------------------------------------------

def digest(ids) -> str:
    h = hashlib.sha256()
    for bid in ids:
        h.update(bid.encode() + b"\n")
    return h.hexdigest()[:16]


def run_ours(path: Path) -> dict:
    from sync.engine import Policy, plan_link
    from sync.links import changed_links
    from sync.store import make_engine

    engine = make_engine(f"sqlite:///{path}")
    rss_before = peak_rss_mb()
    wall, cpu = time.perf_counter(), time.process_time()
    actions, conflicts, agreed, changed = Counter(), Counter(), 0, []
    for link in changed_links(engine):
        changed.append(link.booking_id)
        acts, confs, ok = plan_link(link, Policy.LATEST_WINS, NOW)
        for a in acts:
            actions[f"{a.target.value}:{a.kind.value}"] += 1
        for c in confs:
            conflicts[c.kind] += 1
        agreed += ok
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"seconds": wall, "cpu": cpu, "changed": len(changed), "digest": digest(changed), "actions": dict(actions),
            "conflicts": dict(conflicts), "agreed": agreed, "rss": peak_rss_mb(), "rss_before": rss_before}


def run_pandas(path: Path) -> dict:
    import pandas as pd

    rss_before = peak_rss_mb()
    wall, cpu = time.perf_counter(), time.process_time()
    from sync.engine import BOOKINGS_TO_CANON, CRM_TO_CANON

    con = sqlite3.connect(path)
    crm = pd.read_sql_query("SELECT id AS crm_id, booking_id, start_time AS crm_start, status AS crm_status FROM crm_appointments", con)
    bk = pd.read_sql_query("SELECT booking_id, start_time AS bk_start, status AS bk_status FROM bookings", con)
    base = pd.read_sql_query("SELECT booking_id, crm_start AS base_crm_start, crm_status AS base_crm_status,"
                             " bookings_start AS base_bk_start, bookings_status AS base_bk_status FROM sync_base", con)
    con.close()
    df = crm.merge(bk, on="booking_id", how="inner").merge(base, on="booking_id", how="left")
    crm_canon = df["crm_status"].map({k: v.value for k, v in CRM_TO_CANON.items()}).fillna(df["crm_status"])
    bk_canon = df["bk_status"].map({k: v.value for k, v in BOOKINGS_TO_CANON.items()}).fillna(df["bk_status"])

    def differs(a, b):  # IS DISTINCT FROM
        return (a != b) & ~(a.isna() & b.isna())

    mask = (df["base_crm_status"].isna() | differs(df["crm_start"], df["base_crm_start"]) | differs(crm_canon, df["base_crm_status"])
            | differs(df["bk_start"], df["base_bk_start"]) | differs(bk_canon, df["base_bk_status"]))
    changed = df.loc[mask, "booking_id"].sort_values()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"seconds": wall, "cpu": cpu, "changed": len(changed), "digest": digest(changed), "rss": peak_rss_mb(), "rss_before": rss_before}


def child(which: str, path: Path, *extra: str) -> dict:
    """Run one path in a fresh interpreter. The parent stays small: Linux carries a
    process's peak RSS over ``fork`` and ``exec`` into the child's ``ru_maxrss``."""
    out = subprocess.run([sys.executable, __file__, "--child", which, "--db", str(path), *extra], check=True, capture_output=True, text=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--links", type=int, default=1_000_000)
    parser.add_argument("--changed", type=float, default=0.01, help="share of links changed on each side")
    parser.add_argument("--conflicts", type=float, default=0.001, help="share of links changed on both sides")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--keep", type=Path, help="build the store in this folder and keep it")
    parser.add_argument("--child", choices=["build", "ours", "pandas"], help=argparse.SUPPRESS)
    parser.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "build":
        print(json.dumps(build(args.db, args.links, args.changed, args.conflicts)))
        return
    if args.child:
        print(json.dumps((run_ours if args.child == "ours" else run_pandas)(args.db)))
        return

    folder = args.keep or Path(tempfile.mkdtemp(prefix="diff-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "state.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    t = time.perf_counter()
    made = child("build", path, f"--links={args.links}", f"--changed={args.changed}", f"--conflicts={args.conflicts}")
    print(f"three-way diff: {args.links:,} links, {os.cpu_count()} CPUs, store {path.stat().st_size / 1e6:.0f} MB")
    print(f"setup (not timed)                    {time.perf_counter() - t:.1f} s; changed on the CRM side {made.get('crm side', 0):,},"
          f" on the Bookings side {made.get('bookings side', 0):,}, on both {made['both sides']:,}")
    best: dict[str, dict] = {}
    for run in range(1, args.runs + 1):
        for which in ("ours", "pandas"):
            r = child(which, path)
            label = f"{which} [run {run}]"
            print(f"{label:<36} {r['seconds']:6.2f} s (CPU {r['cpu']:.2f} s), changed {r['changed']:,},"
                  f" peak RSS {r['rss']:.0f} MB ({r['rss_before']:.0f} MB before)")
            if which == "ours":
                print(f"{'':<36} actions {sum(r['actions'].values()):,} {r['actions']}")
                print(f"{'':<36} conflicts {sum(r['conflicts'].values()):,} {r['conflicts']}, agreed {r['agreed']:,}")
            if which not in best or r["seconds"] < best[which]["seconds"]:
                best[which] = r
    ours, pandas = best["ours"], best["pandas"]
    same = ours["digest"] == pandas["digest"] and ours["changed"] == pandas["changed"]
    print(f"same changed set                     {'yes' if same else 'NO'} ({ours['changed']:,} links, digest {ours['digest']})")
    print(f"pandas / ours (best runs)            {pandas['seconds'] / ours['seconds']:.1f}x time, {pandas['rss'] / ours['rss']:.1f}x peak RSS")
    ok = ours["seconds"] <= 10 and ours["rss"] <= 1024 and ours["seconds"] < pandas["seconds"] and same
    print(f"targets (<= 10 s, <= 1 GB, faster than pandas, same set): {'met' if ok else 'MISSED'}")
    if not args.keep:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        folder.rmdir()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
