#!/usr/bin/env python3
"""Load test: N concurrent ADBC Flight SQL sessions run a mix of funnel, retention, audience,
metadata and ingest requests against a real `cohort serve` for a while, and report error
counts, p50/p99 latency per kind and the server's peak RSS against its memory limit.

Fails (exit status 1) on any error other than the server's intended limits, or if the server's
RSS goes past the memory limit plus a fixed overhead.

    .venv/bin/python benches/load_test.py                      # 50 sessions, 60 s
    .venv/bin/python benches/load_test.py --duration 8         # the short mode CI runs
"""

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import adbc_driver_flightsql.dbapi as flight_sql
import adbc_driver_manager
import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]

FUNNEL = (
    "SELECT level, count(*) AS users FROM (SELECT user_id, window_funnel(3600, ts, "
    "event = 'page_view', event = 'add_to_cart', event = 'checkout', event = 'purchase') AS level "
    "FROM events GROUP BY user_id) GROUP BY level ORDER BY level"
)
RETENTION = (
    "SELECT sum_for_each(r) AS retained FROM (SELECT user_id, retention("
    + ", ".join(f"CAST(ts AS DATE) = min_day + {d}" for d in range(8))
    + ") AS r FROM events CROSS JOIN (SELECT min(CAST(ts AS DATE)) AS min_day FROM events) GROUP BY user_id)"
)
AUDIENCE = "SELECT count(*) FROM audience('buyers - churn_risk')"
# Intended refusals: the server protecting itself, which a load test expects under overload.
INTENDED = ("RESOURCE_EXHAUSTED", "server busy")
MEMORY_OVERHEAD_MB = 512


def cohort_bin():
    if os.environ.get("COHORT_BIN"):
        return os.environ["COHORT_BIN"]
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    # The most recently built of the release and debug binaries: a stale one would test old code.
    built = [b for b in (target / "release" / "cohort", target / "debug" / "cohort") if b.exists()]
    if not built:
        sys.exit("cohort binary not found: cargo build --bin cohort (or set COHORT_BIN)")
    return str(max(built, key=lambda b: b.stat().st_mtime))


def rss_mb(pid):
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class Server:
    def __init__(self, binary, data, memory_limit, extra):
        env = {k: v for k, v in os.environ.items() if not k.startswith("COHORT_")}
        self.process = subprocess.Popen(
            [binary, "serve", "--data", data, "--listen", "127.0.0.1:0", "--pg-listen", "off", "--log", "warn",
             "--memory-limit", memory_limit, *extra],
            env=env, stdout=subprocess.PIPE, text=True,
        )
        deadline = time.time() + 300
        self.address = None
        while time.time() < deadline:
            line = self.process.stdout.readline()
            if not line:
                sys.exit(f"server exited early with {self.process.wait()}")
            if line.startswith("cohort listening on "):
                self.address = line.strip().removeprefix("cohort listening on ")
                break
        if not self.address:
            sys.exit("server did not report its address")

    def stop(self):
        self.process.terminate()
        return self.process.wait(timeout=60)


def run_query(conn, sql):
    with conn.cursor() as cur:
        cur.execute(sql)
        cur.fetch_arrow_table()


def metadata(conn):
    conn.adbc_get_objects(depth="columns").read_all()
    conn.adbc_get_table_schema("events")


def make_ingest(session):
    counter = [0]

    def ingest(conn):
        counter[0] += 1
        base = 10_000_000 + session * 1_000_000 + counter[0] * 10
        table = pa.table({
            "user_id": pa.array(range(base, base + 10), pa.int64()),
            "event": ["load_test"] * 10,
            "ts": pa.array([1_788_000_000_000_000] * 10, pa.timestamp("us", tz="UTC")),
        })
        with conn.cursor() as cur:
            cur.adbc_ingest("events", table, mode="append")
    return ingest


def session_worker(address, session, stop_at, results, lock, seed):
    rng = random.Random(seed)
    kinds = [
        ("funnel", lambda c: run_query(c, FUNNEL), 3),
        ("retention", lambda c: run_query(c, RETENTION), 3),
        ("audience", lambda c: run_query(c, AUDIENCE), 4),
        ("metadata", metadata, 3),
        ("ingest", make_ingest(session), 1),
    ]
    weights = [w for _, _, w in kinds]
    conn = flight_sql.connect(address, autocommit=True)
    try:
        while time.time() < stop_at:
            name, action, _ = rng.choices(kinds, weights)[0]
            started = time.perf_counter()
            outcome = "ok"
            try:
                action(conn)
            except adbc_driver_manager.Error as e:
                outcome = "limited" if any(m in str(e) for m in INTENDED) else f"error: {e}"
            elapsed = time.perf_counter() - started
            with lock:
                results.append((name, outcome, elapsed))
    finally:
        conn.close()


def percentile(values, p):
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    parser.add_argument("--memory-limit", default="1GiB", help="the server's --memory-limit")
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--data", help="store to use (default: a fresh demo store)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    binary = cohort_bin()
    scratch = tempfile.TemporaryDirectory(prefix="cohort-load-")
    data = args.data or os.path.join(scratch.name, "store")
    if not args.data:
        subprocess.run([binary, "demo", "--data", data, "--users", str(args.users),
                        "--events", str(args.events)], check=True, capture_output=True)
    limit_mb = int(args.memory_limit.lower().removesuffix("gib")) * 1024 if args.memory_limit.lower().endswith("gib") \
        else int(args.memory_limit.lower().removesuffix("mib"))
    server = Server(binary, data, args.memory_limit, [])
    try:
        with flight_sql.connect(server.address, autocommit=True) as admin, admin.cursor() as cur:
            cur.execute("CREATE OR REPLACE TAG buyers AS SELECT DISTINCT user_id FROM events WHERE event = 'purchase'")
            cur.execute("CREATE OR REPLACE TAG churn_risk AS SELECT user_id FROM events GROUP BY user_id "
                        "HAVING max(ts) < (SELECT max(ts) FROM events) - INTERVAL '14 days'")

        results, lock = [], threading.Lock()
        peak = [rss_mb(server.process.pid)]
        stop_at = time.time() + args.duration
        sampling = threading.Event()

        def sample():
            while not sampling.is_set():
                peak[0] = max(peak[0], rss_mb(server.process.pid))
                time.sleep(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        workers = [
            threading.Thread(target=session_worker,
                             args=(server.address, i, stop_at, results, lock, args.seed * 1000 + i))
            for i in range(args.sessions)
        ]
        started = time.time()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        wall = time.time() - started
        sampling.set()
        sampler.join()
        alive = server.process.poll() is None
    finally:
        code = server.stop()

    errors = [r for r in results if r[1].startswith("error")]
    limited = [r for r in results if r[1] == "limited"]
    print(f"{args.sessions} sessions for {wall:.1f} s: {len(results)} requests, "
          f"{len(results) / wall:.1f}/s, {len(errors)} errors, {len(limited)} refused by limits")
    print(f"{'kind':<10} {'count':>7} {'p50 ms':>9} {'p99 ms':>9}")
    for kind in ["funnel", "retention", "audience", "metadata", "ingest", "all"]:
        times = [r[2] * 1000 for r in results if r[1] == "ok" and (kind == "all" or r[0] == kind)]
        print(f"{kind:<10} {len(times):>7} {percentile(times, 50):>9.1f} {percentile(times, 99):>9.1f}")
    print(f"server peak RSS {peak[0]:.0f} MiB (memory limit {limit_mb} MiB + {MEMORY_OVERHEAD_MB} MiB overhead allowed)")
    for name, outcome, _ in errors[:10]:
        print(f"  {name}: {outcome}")

    failed = False
    if errors:
        print("FAIL: requests failed")
        failed = True
    if not alive or code not in (0, None):
        print(f"FAIL: server died or stopped badly (exit {code})")
        failed = True
    if peak[0] > limit_mb + MEMORY_OVERHEAD_MB:
        print("FAIL: server RSS went past the memory limit plus overhead")
        failed = True
    if not any(r[1] == "ok" for r in results):
        print("FAIL: nothing succeeded")
        failed = True
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
