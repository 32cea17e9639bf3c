#!/usr/bin/env python3
"""Journey functions: Cohort through its running server vs DuckDB's best plain SQL and, where
ClickHouse has the function, ClickHouse (chdb) on Parquet and on its own MergeTree table.

    python benches/journey_compare.py [--users 500000] [--events 10000000] [--threads 2]

Writes one Parquet file of random histories (numpy, seeded), loads it with `cohort ingest` into
a fresh local store, starts the release `cohort serve` on it and queries over Flight SQL (ADBC),
best of `--repeat` runs per engine. Every engine's answer is normalised and compared; the script
fails if any differs. Reports:

- stickiness: active_periods vs count(DISTINCT day) per user;
- lifecycle: lifecycle, 8 weekly periods, vs joins over active weeks;
- next_node: sequence_next_node after the first add_to_cart vs sequenceNextNode (chdb) and
  lead() over a window (DuckDB);
- paths: path_edges over event_path (from the first add_to_cart, deduplicated, 5 steps) vs
  window functions and a self-join;
- funnel: a 4-step one-hour window_funnel vs windowFunnel (chdb), and Cohort's own variants
  (breakdown by a property, an exclusion step, unordered, per-step windows), which no peer has
  as a function, timed against it.

Needs: cargo build --release -p cohort-server --bin cohort; pip install duckdb chdb numpy.
"""

import argparse
import warnings
import datetime
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
EVENTS = ["page_view", "login", "add_to_cart", "checkout", "purchase", "search"]
WEIGHTS = [0.40, 0.15, 0.15, 0.10, 0.08, 0.12]
START = datetime.datetime(2026, 9, 7, tzinfo=datetime.timezone.utc)  # a Monday
DAYS = 60
WEEKS = 8
DEVICES = ["android", "ios", "web"]
FUNNEL = ["page_view", "add_to_cart", "checkout", "purchase"]
FUNNEL_CONDITIONS = ", ".join(f"event = '{step}'" for step in FUNNEL)
# Funnel variants only Cohort has, timed against its plain funnel.
VARIANTS = {
    "breakdown": "SELECT f['level'], f['value'], count(*) FROM (SELECT window_funnel_breakdown(INTERVAL '1 hour', 'first_touch', "
    f"ts, device, {FUNNEL_CONDITIONS}) AS f FROM events GROUP BY user_id) GROUP BY 1, 2",
    "exclusion": f"SELECT level, count(*) FROM (SELECT window_funnel(INTERVAL '1 hour', 'exclude(5:1-4)', ts, {FUNNEL_CONDITIONS}, "
    "event = 'search') AS level FROM events GROUP BY user_id) GROUP BY level",
    "unordered": f"SELECT level, count(*) FROM (SELECT window_funnel(INTERVAL '1 hour', 'unordered', ts, {FUNNEL_CONDITIONS}) AS level "
    "FROM events GROUP BY user_id) GROUP BY level",
    "step windows": "SELECT level, count(*) FROM (SELECT window_funnel(make_array(INTERVAL '10 minutes', INTERVAL '20 minutes', "
    f"INTERVAL '30 minutes'), ts, {FUNNEL_CONDITIONS}) AS level FROM events GROUP BY user_id) GROUP BY level",
}


def generate(path, users, events, seed=20261204):
    """Histories over DAYS days from three weeks before START, second resolution (some ties)."""
    rng = np.random.default_rng(seed)
    user = rng.integers(1, users + 1, size=events)
    first = int(START.timestamp()) - 21 * 86_400
    ts = first + rng.integers(0, DAYS * 86_400, size=events)
    event = rng.choice(len(EVENTS), size=events, p=WEIGHTS)
    device = rng.choice(len(DEVICES), size=events)
    order = np.lexsort((ts, user))
    table = pa.table(
        {
            "user_id": pa.array(user[order], pa.int64()),
            "event": pa.DictionaryArray.from_arrays(pa.array(event[order], pa.int32()), pa.array(EVENTS)).cast(pa.string()),
            "ts": pa.array(ts[order] * 1_000_000, pa.timestamp("us", tz="UTC")),
            "device": pa.DictionaryArray.from_arrays(pa.array(device[order], pa.int32()), pa.array(DEVICES)).cast(pa.string()),
        }
    )
    pq.write_table(table, path, row_group_size=1_000_000)


def queries():
    start = f"{START:%Y-%m-%d %H:%M:%S}"
    return {
        "funnel": {
            "cohort": f"SELECT level, count(*) FROM (SELECT window_funnel(INTERVAL '1 hour', ts, {FUNNEL_CONDITIONS}) AS level "
            "FROM events GROUP BY user_id) GROUP BY level",
            "chdb": f"SELECT level, count() FROM (SELECT user_id, windowFunnel(3600)(toDateTime(ts), {FUNNEL_CONDITIONS}) AS level "
            "FROM {source} GROUP BY user_id) GROUP BY level",
        },
        "stickiness": {
            "cohort": "SELECT days, count(*) FROM (SELECT user_id, active_periods(INTERVAL '1 day', ts, event = 'purchase') AS days "
            "FROM events GROUP BY user_id) WHERE days > 0 GROUP BY days",
            "duckdb": "SELECT days, count(*) FROM (SELECT user_id, count(DISTINCT CASE WHEN event = 'purchase' THEN date_trunc('day', ts) END) AS days "
            "FROM src GROUP BY user_id) WHERE days > 0 GROUP BY days",
        },
        "lifecycle": {
            "cohort": "SELECT l['period'], l['status'], count(*) FROM (SELECT unnest(lifecycle(INTERVAL '7 days', "
            f"{WEEKS}, ts, event IN ('login', 'purchase'), TIMESTAMP '{start}')) AS l FROM events GROUP BY user_id) GROUP BY 1, 2",
            "duckdb": f"""
            WITH a AS (SELECT DISTINCT user_id, CAST(floor((epoch(ts) - epoch(TIMESTAMPTZ '{start}+00')) / 604800) AS BIGINT) AS k
                       FROM src WHERE event IN ('login', 'purchase')),
            f AS (SELECT user_id, min(k) AS first_k FROM a GROUP BY user_id),
            cand AS (SELECT user_id, k FROM a WHERE k BETWEEN 0 AND {WEEKS - 1}
                     UNION SELECT user_id, k + 1 FROM a WHERE k + 1 BETWEEN 0 AND {WEEKS - 1}),
            s AS (SELECT c.k, CASE WHEN n.user_id IS NOT NULL AND f.first_k = c.k THEN 'new'
                                   WHEN n.user_id IS NOT NULL AND b.user_id IS NOT NULL THEN 'returning'
                                   WHEN n.user_id IS NOT NULL THEN 'resurrecting'
                                   ELSE 'dormant' END AS status
                  FROM cand c JOIN f USING (user_id)
                  LEFT JOIN a n ON n.user_id = c.user_id AND n.k = c.k
                  LEFT JOIN a b ON b.user_id = c.user_id AND b.k = c.k - 1)
            SELECT k, status, count(*) FROM s GROUP BY ALL""",
        },
        "next_node": {
            "cohort": "SELECT next, count(*) FROM (SELECT user_id, sequence_next_node('forward', 'first_match', ts, event, true, "
            "event = 'add_to_cart') AS next FROM events GROUP BY user_id) WHERE next IS NOT NULL GROUP BY next",
            "duckdb": """
            WITH o AS (SELECT user_id, event, lead(event) OVER w AS next, row_number() OVER w AS rn
                       FROM src WINDOW w AS (PARTITION BY user_id ORDER BY ts, event)),
            firsts AS (SELECT user_id, min(rn) AS rn FROM o WHERE event = 'add_to_cart' GROUP BY user_id)
            SELECT next, count(*) FROM o JOIN firsts USING (user_id, rn) WHERE next IS NOT NULL GROUP BY next""",
            "chdb": "SELECT next, count() FROM (SELECT user_id, sequenceNextNode('forward', 'first_match')(toUInt32(toDateTime(ts)), "
            "event, 1, event = 'add_to_cart') AS next FROM {source} GROUP BY user_id) WHERE next IS NOT NULL GROUP BY next "
            "SETTINGS allow_experimental_funnel_functions = 1",
        },
        "paths": {
            "cohort": "SELECT * FROM path_edges((SELECT event_path(ts, event, 5, event = 'add_to_cart', 'dedupe') FROM events GROUP BY user_id))",
            "duckdb": """
            WITH o AS (SELECT user_id, event, row_number() OVER (PARTITION BY user_id ORDER BY ts, event) AS rn FROM src),
            s AS (SELECT user_id, min(rn) AS start FROM o WHERE event = 'add_to_cart' GROUP BY user_id),
            p AS (SELECT o.user_id, o.rn, o.event, lag(o.event) OVER (PARTITION BY o.user_id ORDER BY o.rn) AS prev
                  FROM o JOIN s ON o.user_id = s.user_id AND o.rn >= s.start),
            d AS (SELECT user_id, event, row_number() OVER (PARTITION BY user_id ORDER BY rn) AS step
                  FROM p WHERE prev IS NULL OR prev <> event),
            d5 AS (SELECT * FROM d WHERE step <= 5)
            SELECT d1.step, d1.event, d2.event, count(*) FROM d5 d1 JOIN d5 d2 ON d1.user_id = d2.user_id AND d2.step = d1.step + 1
            GROUP BY ALL""",
        },
    }


def normalised(rows):
    """Rows as sorted tuples of plain values: weeks as their index, numbers as int."""
    out = []
    for row in rows:
        values = []
        for value in row:
            if isinstance(value, datetime.datetime):
                value = int((value - START).total_seconds() // (7 * 86_400))
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                value = int(value)
            values.append(value)
        out.append(tuple(values))
    return sorted(out)


def best_of(repeat, run):
    best, answer = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        answer = run()
        best = min(best, time.perf_counter() - started)
    return best * 1000, answer


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def release_cohort(path=None):
    """The cohort binary to measure: `path`, or the release build."""
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    cohort = Path(path) if path else target / "release" / "cohort"
    if not cohort.exists():
        sys.exit(f"{cohort} missing: cargo build --release -p cohort-server --bin cohort")
    return cohort


def serve(cohort, store):
    """Starts `cohort serve` on `store`; returns the process and an ADBC connection to it."""
    warnings.filterwarnings("ignore", message="Cannot disable autocommit")
    import adbc_driver_flightsql.dbapi as flightsql

    port = free_port()
    server = subprocess.Popen([cohort, "serve", "--data", store, "--listen", f"127.0.0.1:{port}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            conn = flightsql.connect(f"grpc://127.0.0.1:{port}")
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
                cur.fetchall()
            return server, conn
        except Exception:
            time.sleep(0.2)
    server.terminate()
    sys.exit("cohort serve did not answer")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=500_000)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", default="/tmp/cohort-journey-bench")
    parser.add_argument("--cohort", help="the cohort binary (default: the release build)")
    args = parser.parse_args()

    cohort = release_cohort(args.cohort)
    work = Path(args.dir)
    work.mkdir(parents=True, exist_ok=True)
    parquet = work / f"journeys-{args.users}-{args.events}.parquet"
    if not parquet.exists():
        generate(parquet, args.users, args.events)
    store = work / "store"
    shutil.rmtree(store, ignore_errors=True)
    started = time.perf_counter()
    subprocess.run([cohort, "ingest", "--data", store, "--table", "events", parquet], check=True, capture_output=True)
    ingest_s = time.perf_counter() - started

    import duckdb
    from chdb import session as chdb_session

    server, conn = serve(cohort, store)
    try:
        duck = duckdb.connect()
        duck.execute(f"SET threads = {args.threads}")
        duck.execute("SET TimeZone = 'UTC'")
        duck.execute(f"CREATE VIEW src AS SELECT * FROM read_parquet('{parquet}')")
        chdb_dir = tempfile.mkdtemp(prefix="chdb-", dir=work)
        merge_tree = chdb_session.Session(chdb_dir)
        merge_tree.query("CREATE TABLE ev (user_id Int64, event LowCardinality(String), ts DateTime64(6, 'UTC')) "
                         "ENGINE = MergeTree ORDER BY (user_id, ts)")
        merge_tree.query(f"INSERT INTO ev SELECT user_id, event, ts FROM file('{parquet}', Parquet)")

        def cohort_run(sql):
            def run():
                with conn.cursor() as cur:
                    cur.execute(sql)
                    return cur.fetchall()
            return run

        def chdb_run(sql):
            settings = f" , max_threads = {args.threads}" if "SETTINGS" in sql else f" SETTINGS max_threads = {args.threads}"
            def run():
                # One embedded ClickHouse per process: the session reads the Parquet file too.
                text = merge_tree.query(sql + settings, "CSV")
                rows = []
                for line in str(text).strip().splitlines():
                    rows.append(tuple(int(v) if v.lstrip("-").isdigit() else v.strip('"') for v in line.split(",")))
                return rows
            return run

        print(f"{args.events:,} events, {args.users:,} users, {args.threads} threads, best of {args.repeat}; "
              f"cohort ingest {ingest_s:.1f} s")
        print(f"{'report':<11} {'engine':<14} {'time ms':>9} {'vs cohort':>10}")
        failures = []
        for report, sqls in queries().items():
            runs = {"cohort": cohort_run(sqls["cohort"])}
            if "duckdb" in sqls:
                runs["duckdb"] = lambda sql=sqls["duckdb"]: duck.execute(sql).fetchall()
            if "chdb" in sqls:
                runs["chdb parquet"] = chdb_run(sqls["chdb"].format(source=f"file('{parquet}', Parquet)"))
                runs["chdb mergetree"] = chdb_run(sqls["chdb"].format(source="ev"))
            results = {engine: best_of(args.repeat, run) for engine, run in runs.items()}
            reference = normalised(results["cohort"][1])
            for engine, (ms, answer) in results.items():
                same = normalised(answer) == reference
                if not same:
                    failures.append(f"{report}: {engine} differs from cohort: {normalised(answer)[:5]} vs {reference[:5]}")
                ratio = ms / results["cohort"][0]
                print(f"{report:<11} {engine:<14} {ms:>9.1f} {ratio:>9.2f}x{'' if same else '  DIFFERENT'}")
        funnel_ms = best_of(args.repeat, cohort_run(queries()["funnel"]["cohort"]))[0]
        for variant, sql in VARIANTS.items():
            ms = best_of(args.repeat, cohort_run(sql))[0]
            print(f"{variant:<11} {'cohort':<14} {ms:>9.1f} {ms / funnel_ms:>9.2f}x of cohort's plain funnel")
        if failures:
            sys.exit("\n".join(failures))
        print("all engines agree")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
