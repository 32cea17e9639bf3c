#!/usr/bin/env python3
"""`SELECT *` of the events table through psycopg 3 (binary results, no COPY): Cohort's
PostgreSQL endpoint vs a PostgreSQL 15 server holding the same rows.

    .venv/bin/python benches/pg_fetch.py [--events 10000000] [--release]

The events are generated once as Parquet (seeded), loaded into a fresh Cohort store with
`cohort ingest` and into a throwaway PostgreSQL 15 (initdb + pg_ctl, tests/python/
reference_postgres.py) with COPY; each server is then queried in turn, best of 3. Both must
return the same row count and the same sums of user_id and session_id, or the script fails.
Needs PostgreSQL 15 (/usr/lib/postgresql/15/bin) and the cohort binary (debug, or
`cargo build --release --bin cohort` with --release).
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
COLUMNS = "user_id, event, ts, session_id, page, device, revenue"


def generate(path: Path, events: int, users: int, seed: int = 7):
    rng = np.random.default_rng(seed)
    names = np.array(["page_view", "add_to_cart", "checkout", "purchase", "signup", "login"])
    pages = np.array(["/", "/pricing", "/product", "/cart", "/checkout", "/docs"])
    devices = np.array(["ios", "android", "web"])
    start = np.datetime64("2026-09-01T00:00:00", "us")
    table = pa.table({
        "user_id": pa.array(rng.integers(1, users + 1, events), pa.int64()),
        "event": pa.array(names[rng.integers(0, len(names), events)]),
        "ts": pa.array(start + rng.integers(0, 30 * 86_400_000_000, events).astype("timedelta64[us]"),
                       pa.timestamp("us", tz="UTC")),
        "session_id": pa.array(rng.integers(1, events // 4 + 2, events), pa.int64()),
        "page": pa.array(pages[rng.integers(0, len(pages), events)]),
        "device": pa.array(devices[rng.integers(0, len(devices), events)]),
        "revenue": pa.array(np.where(rng.random(events) < 0.05, rng.random(events) * 100, np.nan)),
    })
    table = table.set_column(6, "revenue", pa.compute.if_else(pa.compute.is_nan(table["revenue"]), None,
                                                              table["revenue"]))
    pq.write_table(table, path)
    return table


def fetch_all(connect: dict) -> tuple[float, tuple[int, int, int]]:
    """Seconds to receive and decode every row, and (rows, sum user_id, sum session_id)."""
    with psycopg.connect(**connect, autocommit=True) as conn:
        started = time.perf_counter()
        cursor = conn.cursor(binary=True)
        cursor.execute(f"SELECT {COLUMNS} FROM events")
        rows = users = sessions = 0
        while batch := cursor.fetchmany(100_000):
            rows += len(batch)
            users += sum(row[0] for row in batch)
            sessions += sum(row[3] for row in batch)
        return time.perf_counter() - started, (rows, users, sessions)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--release", action="store_true", help="use target/release/cohort")
    args = parser.parse_args()

    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    os.environ.setdefault("COHORT_BIN", str(target / ("release" if args.release else "debug") / "cohort"))
    import sys
    sys.path.insert(0, str(REPO / "tests" / "python"))
    from conftest import Server, Store
    from reference_postgres import ReferencePostgres

    work = Path(tempfile.mkdtemp(prefix="cohort-pg-fetch-"))
    parquet = work / "events.parquet"
    table = generate(parquet, args.events, args.users)
    env = {k: v for k, v in os.environ.items() if not k.startswith("COHORT_")}
    store = Store(str(work / "store"), env)
    loaded = time.perf_counter()
    store.run("ingest", "--table", "events", str(parquet))
    print(f"cohort ingest: {args.events:,} events in {time.perf_counter() - loaded:.1f} s")

    reference = ReferencePostgres()
    cohort = Server(store)
    try:
        csv = reference.directory / "events.csv"
        pacsv.write_csv(table, csv)
        os.chmod(csv, 0o644)
        reference.psql("-c", f"COPY events ({COLUMNS}) FROM '{csv}' WITH (FORMAT csv, HEADER true)")
        reference.psql("-c", "VACUUM ANALYZE events")
        host, port = cohort.pg_address.rsplit(":", 1)
        servers = {
            "cohort": {"host": host, "port": int(port), "user": "cohort", "dbname": "cohort"},
            "postgresql": {"host": reference.host, "port": reference.port, "user": "postgres", "dbname": "cohort"},
        }
        best, answers = {}, {}
        for name, connect in servers.items():
            times = []
            for _ in range(args.runs):
                seconds, answer = fetch_all(connect)
                times.append(seconds)
                answers[name] = answer
            best[name] = min(times)
        if answers["cohort"] != answers["postgresql"] or answers["cohort"][0] != args.events:
            raise SystemExit(f"the servers disagree: {answers}")
        rows = args.events
        for name, seconds in best.items():
            print(f"{name:>10}: {seconds:6.2f} s  ({rows / seconds / 1e6:.2f} M rows/s)")
        print(f"cohort / postgresql: {best['cohort'] / best['postgresql']:.2f}x "
              f"({'release' if args.release else 'debug'} build, best of {args.runs})")
    finally:
        cohort.stop()
        reference.stop()


if __name__ == "__main__":
    main()
