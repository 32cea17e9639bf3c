#!/usr/bin/env python3
"""Stored-tag audience: Cohort vs ClickHouse (chdb) vs DuckDB on the same users and tags.

    python benches/tag_compare.py [--users 1000000] [--tags 20] [--threads 2]

Writes 1 M profiles with 20 boolean tag columns (densities from 1% to 60%) as Parquet, then
materialises the tags in each engine, untimed:
  - Cohort: `CREATE TAG tN AS SELECT user_id FROM profiles WHERE tN` (roaring bitmaps in Delta);
  - chdb: one `groupBitmapState` per tag in a MergeTree table (ClickHouse's tag-bitmap pattern);
  - DuckDB: a (tag, user_id) membership table.
Timed, each engine in its own process, first run and best of 3 (the ratio uses the best): the users selected by the 5-tag expression
`t0 & (t1 | t2) - t3 ^ t4`, i.e. (t0 and (t1 or t2)) minus (t3 xor t4) —
Cohort `audience_bitmap(...)`, chdb `bitmapAndnot(bitmapAnd(...), bitmapXor(...))` over the stored
states, DuckDB INTERSECT/UNION/EXCEPT. All three must count the same users.
Needs: cargo build --release -p cohort-benches --bin tag_query; pip install chdb duckdb numpy.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


from peer_compare import REPO, measure, peak_rss_mb  # the script's directory is on sys.path
EXPRESSION = "t0 & (t1 | t2) - t3 ^ t4"



def write_profiles(path, users, tags):
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(7)
    densities = np.linspace(0.01, 0.6, tags)
    columns = {"user_id": pa.array(np.arange(users, dtype=np.int64))}
    for i, density in enumerate(rng.permutation(densities)):
        columns[f"t{i}"] = pa.array(rng.random(users) < density)
    pq.write_table(pa.table(columns), path)


def chdb_setup(session, parquet, tags):
    session.query(
        "CREATE TABLE tag_bitmaps (tag String, users AggregateFunction(groupBitmap, UInt64)) "
        "ENGINE = MergeTree ORDER BY tag"
    )
    for i in range(tags):
        session.query(
            f"INSERT INTO tag_bitmaps SELECT 't{i}', groupBitmapState(toUInt64(assumeNotNull(user_id))) "
            f"FROM file('{parquet}', Parquet) WHERE t{i}"
        )


def chdb_query():
    tag = lambda n: f"(SELECT groupBitmapMergeState(users) FROM tag_bitmaps WHERE tag = '{n}')"
    selected = (
        f"bitmapAndnot(bitmapAnd({tag('t0')}, bitmapOr({tag('t1')}, {tag('t2')})), "
        f"bitmapXor({tag('t3')}, {tag('t4')}))"
    )
    return f"SELECT bitmapCardinality({selected})"


def duckdb_query():
    tag = lambda n: f"SELECT user_id FROM tag_members WHERE tag = '{n}'"
    left = f"({tag('t0')}) INTERSECT (({tag('t1')}) UNION ({tag('t2')}))"
    xor = f"(({tag('t3')}) EXCEPT ({tag('t4')})) UNION (({tag('t4')}) EXCEPT ({tag('t3')}))"
    return f"SELECT count(*) FROM (({left}) EXCEPT ({xor}))"


def run_child(engine, parquet, tags, threads, repeat):
    """Runs inside a child process: sets one engine up, times the expression, prints JSON."""
    if engine == "chdb":
        import chdb.session

        session = chdb.session.Session()
        chdb_setup(session, parquet, tags)
        sql = chdb_query() + f" SETTINGS max_threads = {threads}"
        execute = lambda: int(session.query(sql, "CSV").bytes().decode().strip())
    else:
        import duckdb

        con = duckdb.connect()
        con.execute(f"SET threads = {threads}")
        unpivot = " UNION ALL ".join(
            f"SELECT 't{i}' AS tag, user_id FROM read_parquet('{parquet}') WHERE t{i}" for i in range(tags)
        )
        con.execute(f"CREATE TABLE tag_members AS {unpivot}")
        sql = duckdb_query()
        execute = lambda: con.execute(sql).fetchone()[0]
    times, users = [], None
    for _ in range(max(repeat, 1)):
        started = time.perf_counter()
        users = execute()
        times.append((time.perf_counter() - started) * 1000)
    print(json.dumps({"first_ms": round(times[0], 2), "best_ms": round(min(times), 2),
                      "peak_rss_mb": round(peak_rss_mb(), 1), "users": users}))



def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--tags", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", default="/tmp/cohort-tags")
    parser.add_argument("--child", nargs=2, metavar=("ENGINE", "PARQUET"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(*args.child, args.tags, args.threads, args.repeat)
        return

    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    tool = target / "release" / "tag_query"
    if not tool.exists():
        sys.exit(f"{tool} missing: cargo build --release -p cohort-benches --bin tag_query")
    directory = Path(args.dir) / f"{args.users}-{args.tags}"
    parquet = directory / "profiles.parquet"
    store = directory / "store"
    if not parquet.exists():
        directory.mkdir(parents=True, exist_ok=True)
        write_profiles(parquet, args.users, args.tags)
        shutil.rmtree(store, ignore_errors=True)
    if not store.exists():
        subprocess.run([tool, "prepare", "--profiles", parquet, "--store", store], check=True)

    print(f"{args.users:,} users, {args.tags} tags, '{EXPRESSION}', {args.threads} threads, best of {args.repeat}")
    print(f"{'engine':<8} {'first ms':>10} {'best ms':>10} {'peak MiB':>10} {'users':>10} {'vs chdb':>8}")
    results = {
        "cohort": measure([tool, "run", "--store", store, "--expr", EXPRESSION,
                           "--threads", str(args.threads), "--repeat", str(args.repeat)]),
    }
    for engine in ["chdb", "duckdb"]:
        results[engine] = measure([sys.executable, __file__, "--users", str(args.users), "--tags", str(args.tags),
                                   "--threads", str(args.threads), "--repeat", str(args.repeat),
                                   "--child", engine, str(parquet)])
    for engine, r in results.items():
        ratio = r["best_ms"] / results["chdb"]["best_ms"]
        print(f"{engine:<8} {r['first_ms']:>10.2f} {r['best_ms']:>10.2f} {r['peak_rss_mb']:>10.1f} "
              f"{r['users']:>10} {ratio:>7.2f}x")
    counts = {r["users"] for r in results.values()}
    if len(counts) != 1:
        sys.exit(f"engines disagree on the audience size: {results}")


if __name__ == "__main__":
    main()
