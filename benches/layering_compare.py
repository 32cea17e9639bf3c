#!/usr/bin/env python3
"""A range + tag audience: Cohort through its running server vs ClickHouse (chdb) and DuckDB on
the same users.

    python benches/layering_compare.py [--users 1000000] [--threads 2] [--repeat 3]

Writes one Parquet file of profiles (numpy, seeded: orders, ltv, last_seen, and two boolean
flags), loads it with `cohort ingest --table profiles` into a fresh local store and starts the
release `cohort serve`. Untimed set-up, in each engine its natural way:
  - Cohort: traits `lifetime_orders` (BIGINT), `ltv` (DOUBLE), `last_seen` (TIMESTAMP) and tags
    `vip`, `churned`, each with CREATE TRAIT / CREATE TAG;
  - chdb: a MergeTree table ORDER BY user_id, and one groupBitmapState per tag (ClickHouse's
    tag-bitmap pattern);
  - DuckDB: the profiles as a table.
Timed (first run, then best of `--repeat`; the ratio uses the best): the users of the 5-term
audience `vip & lifetime_orders >= 3 & ltv:[100,500) & last_seen >= "2026-10-01" - churned` —
Cohort `bitmap_cardinality(audience_bitmap(...))` over Flight SQL, chdb the tag bitmaps and'ed
with a groupBitmap of the range filter, DuckDB one filtered count. The script fails unless all
three count the same users.

Needs: cargo build --release -p cohort-server --bin cohort; pip install duckdb chdb numpy.
"""

import argparse
import datetime
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from journey_compare import best_of, release_cohort, serve  # the script's directory is on sys.path

EXPRESSION = 'vip & lifetime_orders >= 3 & ltv:[100,500) & last_seen >= "2026-10-01" - churned'
SINCE = "2026-10-01 00:00:00"
TRAITS = {
    "lifetime_orders": ("BIGINT", "orders"),
    "ltv": ("DOUBLE", "ltv"),
    "last_seen": ("TIMESTAMP", "last_seen"),
}
TAGS = {"vip": "vip", "churned": "churned"}


def generate(path, users, seed=20261204):
    rng = np.random.default_rng(seed)
    orders = rng.poisson(2.0, size=users)
    ltv = np.round(orders * rng.gamma(2.0, 40.0, size=users), 2)
    first = int(datetime.datetime(2026, 6, 1, tzinfo=datetime.timezone.utc).timestamp())
    last_seen = first + rng.integers(0, 180 * 86_400, size=users)
    table = pa.table(
        {
            "user_id": pa.array(np.arange(1, users + 1), pa.int64()),
            "orders": pa.array(orders, pa.int64()),
            "ltv": pa.array(ltv, pa.float64()),
            "last_seen": pa.array(last_seen * 1_000_000, pa.timestamp("us", tz="UTC")),
            "vip": pa.array(rng.random(users) < 0.3),
            "churned": pa.array(rng.random(users) < 0.2),
        }
    )
    pq.write_table(table, path, row_group_size=1_000_000)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", default="/tmp/cohort-layering-bench")
    parser.add_argument("--cohort", help="the cohort binary (default: the release build)")
    args = parser.parse_args()

    cohort = release_cohort(args.cohort)
    work = Path(args.dir)
    work.mkdir(parents=True, exist_ok=True)
    parquet = work / f"profiles-{args.users}.parquet"
    if not parquet.exists():
        generate(parquet, args.users)
    store = work / "store"
    shutil.rmtree(store, ignore_errors=True)
    subprocess.run([cohort, "ingest", "--data", store, "--table", "profiles", parquet], check=True, capture_output=True)

    import duckdb
    from chdb import session as chdb_session

    server, conn = serve(cohort, store)
    try:
        started = time.perf_counter()
        with conn.cursor() as cur:
            for name, (value_type, column) in TRAITS.items():
                cur.execute(f"CREATE TRAIT {name} TYPE {value_type} AS SELECT user_id, {column} FROM profiles")
                cur.fetchall()
            for name, column in TAGS.items():
                cur.execute(f"CREATE TAG {name} AS SELECT user_id FROM profiles WHERE {column}")
                cur.fetchall()
        setup_s = time.perf_counter() - started

        def cohort_run():
            with conn.cursor() as cur:
                cur.execute(f"SELECT bitmap_cardinality(audience_bitmap('{EXPRESSION}'))")
                return cur.fetchall()[0][0]

        chdb = chdb_session.Session(tempfile.mkdtemp(prefix="chdb-", dir=work))
        chdb.query("CREATE TABLE profiles (user_id UInt64, orders Int64, ltv Float64, last_seen DateTime64(6, 'UTC'), "
                   "vip Bool, churned Bool) ENGINE = MergeTree ORDER BY user_id")
        chdb.query(f"INSERT INTO profiles SELECT * FROM file('{parquet}', Parquet)")
        chdb.query("CREATE TABLE tag_bitmaps (tag String, users AggregateFunction(groupBitmap, UInt64)) "
                   "ENGINE = MergeTree ORDER BY tag")
        for name, column in TAGS.items():
            chdb.query(f"INSERT INTO tag_bitmaps SELECT '{name}', groupBitmapState(user_id) FROM profiles WHERE {column}")
        tag = lambda n: f"(SELECT groupBitmapMergeState(users) FROM tag_bitmaps WHERE tag = '{n}')"
        ranges = (
            "(SELECT groupBitmapState(user_id) FROM profiles WHERE orders >= 3 AND ltv >= 100 AND ltv < 500 "
            f"AND last_seen >= toDateTime64('{SINCE}', 6, 'UTC'))"
        )
        chdb_sql = (f"SELECT bitmapCardinality(bitmapAndnot(bitmapAnd({tag('vip')}, {ranges}), {tag('churned')})) "
                    f"SETTINGS max_threads = {args.threads}")

        def chdb_run():
            return int(str(chdb.query(chdb_sql, "CSV")).strip())

        duck = duckdb.connect()
        duck.execute(f"SET threads = {args.threads}")
        duck.execute(f"CREATE TABLE profiles AS SELECT * FROM read_parquet('{parquet}')")
        duck_sql = ("SELECT count(*) FROM profiles WHERE vip AND orders >= 3 AND ltv >= 100 AND ltv < 500 "
                    f"AND last_seen >= TIMESTAMPTZ '{SINCE}+00' AND NOT churned")

        def duckdb_run():
            return duck.execute(duck_sql).fetchone()[0]

        results = {}
        for engine, run in [("cohort", cohort_run), ("chdb", chdb_run), ("duckdb", duckdb_run)]:
            first_ms, _ = best_of(1, run)
            best_ms, users = best_of(args.repeat, run)
            results[engine] = (first_ms, best_ms, users)
        print(f"{args.users:,} users, '{EXPRESSION}', {args.threads} threads, best of {args.repeat}; "
              f"cohort: 3 traits + 2 tags created in {setup_s:.1f} s")
        print(f"{'engine':<8} {'first ms':>9} {'best ms':>9} {'users':>9} {'vs cohort':>10}")
        for engine, (first_ms, best_ms, users) in results.items():
            print(f"{engine:<8} {first_ms:>9.2f} {best_ms:>9.2f} {users:>9} {best_ms / results['cohort'][1]:>9.2f}x")
        answers = {engine: users for engine, (_, _, users) in results.items()}
        if len(set(answers.values())) != 1:
            sys.exit(f"engines disagree: {answers}")
        print("all engines agree")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
