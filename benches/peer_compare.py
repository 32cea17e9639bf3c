#!/usr/bin/env python3
"""Cohort vs ClickHouse (chdb) vs DuckDB on the same Parquet file, same thread count.

    python benches/peer_compare.py [--users 500000] [--events 10000000] [--threads 2]

Generates the data set once (demo generator, sorted by user_id, ts) with the release
`peer_query` binary, then runs a 4-step one-hour funnel and an 8-day retention in each engine,
each in its own process, best of 3 runs, and prints times, peak memory and ratios to chdb.
Needs: cargo build --release -p cohort-benches --bin peer_query; pip install chdb duckdb.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STEPS = ["page_view", "add_to_cart", "checkout", "purchase"]
DAYS = [f"2026-09-0{d + 1}" for d in range(8)]


def chdb_sql(parquet, query):
    src = f"file('{parquet}', Parquet)"
    if query == "funnel":
        conds = ", ".join(f"event = '{s}'" for s in STEPS)
        return (f"SELECT level, count() FROM (SELECT user_id, windowFunnel(3600)(toDateTime(ts), {conds}) AS level "
                f"FROM {src} GROUP BY user_id) GROUP BY level ORDER BY level")
    conds = ", ".join(f"toDate(ts) = '{d}'" for d in DAYS)
    return f"SELECT sumForEach(r) FROM (SELECT user_id, retention({conds}) AS r FROM {src} GROUP BY user_id)"


def duckdb_sql(parquet, query):
    src = f"read_parquet('{parquet}')"
    if query == "funnel":
        # Window functions: for each step-1 event, the earliest next step within the hour, chained.
        # Greedy earliest-match per start, the closest plain-SQL form of windowFunnel's default mode.
        return f"""
        WITH e AS (SELECT user_id, ts, event FROM {src} WHERE event IN ({", ".join(f"'{s}'" for s in STEPS)})),
        s1 AS (SELECT user_id, ts AS t1 FROM e WHERE event = '{STEPS[0]}'),
        s2 AS (SELECT s1.user_id, s1.t1, min(e.ts) AS t2 FROM s1 LEFT JOIN e ON e.user_id = s1.user_id
               AND e.event = '{STEPS[1]}' AND e.ts >= s1.t1 AND e.ts <= s1.t1 + INTERVAL 1 HOUR GROUP BY ALL),
        s3 AS (SELECT s2.user_id, s2.t1, s2.t2, min(e.ts) AS t3 FROM s2 LEFT JOIN e ON e.user_id = s2.user_id
               AND e.event = '{STEPS[2]}' AND e.ts >= s2.t2 AND e.ts <= s2.t1 + INTERVAL 1 HOUR GROUP BY ALL),
        s4 AS (SELECT s3.user_id, s3.t1, s3.t2, s3.t3, min(e.ts) AS t4 FROM s3 LEFT JOIN e ON e.user_id = s3.user_id
               AND e.event = '{STEPS[3]}' AND e.ts >= s3.t3 AND e.ts <= s3.t1 + INTERVAL 1 HOUR GROUP BY ALL),
        levels AS (SELECT user_id, max(1 + (t2 IS NOT NULL)::INT + (t3 IS NOT NULL)::INT + (t4 IS NOT NULL)::INT) AS level
                   FROM s4 GROUP BY user_id)
        SELECT level, count(*) FROM levels GROUP BY level ORDER BY level"""
    flags = ", ".join(f"bool_or(CAST(ts AS DATE) = DATE '{d}') AS d{i}" for i, d in enumerate(DAYS))
    sums = ", ".join(["sum(d0::INT)"] + [f"sum((d0 AND d{i})::INT)" for i in range(1, 8)])
    return f"SELECT {sums} FROM (SELECT user_id, {flags} FROM {src} GROUP BY user_id)"


def peak_rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def run_child(engine, parquet, query, threads, repeat):
    """Runs inside a child process: times one engine and prints a JSON line."""
    if engine == "chdb":
        import chdb

        session = chdb.session.Session() if hasattr(chdb, "session") else None
        sql = chdb_sql(parquet, query) + f" SETTINGS max_threads = {threads}"
        execute = (lambda: session.query(sql, "CSV")) if session else (lambda: chdb.query(sql, "CSV"))
    else:
        import duckdb

        con = duckdb.connect()
        con.execute(f"SET threads = {threads}")
        sql = duckdb_sql(parquet, query)
        execute = lambda: con.execute(sql).fetchall()
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        execute()
        best = min(best, (time.perf_counter() - started) * 1000)
    print(json.dumps({"query": query, "best_ms": round(best, 1), "peak_rss_mb": round(peak_rss_mb(), 1)}))


def measure(command):
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=500_000)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", default="/tmp/cohort-bench")
    parser.add_argument("--child", nargs=3, metavar=("ENGINE", "PARQUET", "QUERY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(*args.child, args.threads, args.repeat)
        return

    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    tool = target / "release" / "peer_query"
    if not tool.exists():
        sys.exit(f"{tool} missing: cargo build --release -p cohort-benches --bin peer_query")
    parquet = Path(args.dir) / f"events-{args.users}-{args.events}.parquet"
    if not parquet.exists():
        subprocess.run([tool, "generate", "--users", str(args.users), "--events", str(args.events), "--out", parquet], check=True)

    print(f"{args.events:,} events, {args.users:,} users, {args.threads} threads, best of {args.repeat}")
    print(f"{'query':<10} {'engine':<8} {'time ms':>10} {'peak MiB':>10} {'vs chdb':>8}")
    for query in ["funnel", "retention"]:
        results = {
            "cohort": measure([tool, "run", "--data", parquet, "--query", query, "--threads", str(args.threads), "--repeat", str(args.repeat)]),
        }
        for engine in ["chdb", "duckdb"]:
            results[engine] = measure([sys.executable, __file__, "--threads", str(args.threads), "--repeat", str(args.repeat),
                                       "--child", engine, str(parquet), query])
        for engine, r in results.items():
            ratio = r["best_ms"] / results["chdb"]["best_ms"]
            print(f"{query:<10} {engine:<8} {r['best_ms']:>10.1f} {r['peak_rss_mb']:>10.1f} {ratio:>7.2f}x")


if __name__ == "__main__":
    main()
