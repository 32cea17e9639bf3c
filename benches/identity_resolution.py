#!/usr/bin/env python3
"""Identity resolution at scale: REFRESH IDENTITY over 10 M identifier pairs, time and memory.

    python benches/identity_resolution.py [--people 4000000] [--pairs 10000000]

Generates login events (numpy, seeded): each person has a customer id and 1-4 browsers, logs in
on each (one pair per login: anonymous_id -> user_id), and 1% of the logins happen on another
person's browser (shared devices, which join persons). Loads them with `cohort ingest` into a
fresh local store, starts the release `cohort serve`, creates the rule over Flight SQL and times
`REFRESH IDENTITY` (the first refresh, then a second one over the same pairs), reading the
server's peak resident memory (VmHWM) before and after. The persons must equal the connected
components scipy computes over the same pairs, or the script fails.

Needs: cargo build --release -p cohort-server --bin cohort; pip install numpy scipy.
"""

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from journey_compare import release_cohort, serve  # the script's directory is on sys.path

RULE = "CREATE IDENTITY RULE login AS SELECT anonymous_id, user_id FROM events WHERE event = 'login'"


def generate(path, people, pairs, seed=20261207):
    rng = np.random.default_rng(seed)
    browsers = rng.integers(1, 5, size=people)
    scale = pairs / browsers.sum()
    browsers = np.maximum(1, np.round(browsers * scale)).astype(np.int64)
    owner = np.repeat(np.arange(people), browsers)[:pairs]
    browser = np.arange(len(owner))
    # 1% of logins on someone else's browser.
    shared = rng.random(len(owner)) < 0.01
    logged_in_as = owner.copy()
    logged_in_as[shared] = rng.integers(0, people, size=shared.sum())
    ts = 1_764_547_200_000_000 + rng.integers(0, 30 * 86_400_000_000, size=len(owner))
    table = pa.table(
        {
            "user_id": pc.binary_join_element_wise("u", pc.cast(pa.array(logged_in_as), pa.string()), ""),
            "event": pa.array(np.full(len(owner), "login")),
            "ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
            "anonymous_id": pc.binary_join_element_wise("a", pc.cast(pa.array(browser), pa.string()), ""),
        }
    )
    pq.write_table(table, path)
    return browser, logged_in_as


def reference_persons(browser, logged_in_as, people):
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    # Nodes: people 0..people, then browsers.
    left = people + browser
    right = logged_in_as
    n = people + len(browser)
    graph = coo_matrix((np.ones(len(left), dtype=np.int8), (left, right)), shape=(n, n))
    count, _ = connected_components(graph, directed=False)
    return count


def vm_hwm_mb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--people", type=int, default=4_000_000)
    parser.add_argument("--pairs", type=int, default=10_000_000)
    parser.add_argument("--dir", default="/tmp/cohort-identity-bench")
    parser.add_argument("--cohort", help="the cohort binary (default: the release build)")
    args = parser.parse_args()

    cohort = release_cohort(args.cohort)
    work = Path(args.dir)
    work.mkdir(parents=True, exist_ok=True)
    parquet = work / f"logins-{args.people}-{args.pairs}.parquet"
    browser, logged_in_as = generate(parquet, args.people, args.pairs)
    store = work / "store"
    shutil.rmtree(store, ignore_errors=True)
    started = time.perf_counter()
    subprocess.run([cohort, "ingest", "--data", str(store), "--table", "events", str(parquet)],
                   check=True, stdout=subprocess.DEVNULL)
    print(f"ingest of {len(browser):,} login events: {time.perf_counter() - started:.1f} s")

    server, conn = serve(cohort, str(store))
    try:
        with conn.cursor() as cur:
            cur.execute(RULE)
            cur.fetchall()
            before = vm_hwm_mb(server.pid)
            timings = []
            for _ in range(2):
                started = time.perf_counter()
                cur.execute("REFRESH IDENTITY")
                cur.fetchall()
                timings.append(time.perf_counter() - started)
            after = vm_hwm_mb(server.pid)
            cur.execute("SHOW IDENTITY")
            status = cur.fetch_arrow_table().to_pylist()[0]
            # Persons among the identifiers of the pairs (the store holds no others).
            cur.execute("SELECT count(DISTINCT person_key) AS persons FROM identities")
            persons = cur.fetchone()[0]
    finally:
        conn.close()
        server.terminate()
        server.wait()

    expected = reference_persons(browser, logged_in_as, args.people)
    # People who never logged in as themselves (all their logins shared) still appear as
    # nodes of scipy's graph without a pair; the store only knows identifiers in pairs.
    isolated = args.people - len(np.unique(logged_in_as))
    expected -= isolated
    print(f"pairs {status['pairs']:,}, identifiers {status['identifiers']:,}, persons {persons:,} "
          f"(scipy: {expected:,})")
    if persons != expected or status["persons"] != persons:
        sys.exit("the persons differ from the connected components")
    print(f"REFRESH IDENTITY: first {timings[0]:.1f} s, second {timings[1]:.1f} s "
          f"(the server reports {status['seconds']:.1f} s for the second: rule query, keys, resolution and commits)")
    print(f"server peak RSS: {before:.0f} MB before the refreshes, {after:.0f} MB after")


if __name__ == "__main__":
    main()
