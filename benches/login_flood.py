#!/usr/bin/env python3
"""Failed-login flood: while N clients send wrong passwords (Flight handshakes with Basic
credentials, as drivers log in) in a loop, one client holding an API token runs `SELECT 1`
through ADBC, and its latency is reported. Bounded: it runs for --duration seconds against a
server it starts on loopback, then stops.

Fails (exit status 1) if the token client gets any error, if the flood gets anything but
UNAUTHENTICATED or RESOURCE_EXHAUSTED, or if the server stops answering.

    .venv/bin/python benches/login_flood.py                       # 48 clients, 10 s
    COHORT_BIN=target/release/cohort .venv/bin/python benches/login_flood.py
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import adbc_driver_flightsql.dbapi as flight_sql
import pyarrow.flight as flight

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load_test import Server, cohort_bin  # noqa: E402


def hashes(binary):
    """An admin password hash and a reader token, made by the binary itself."""
    password = subprocess.run(
        [binary, "auth", "hash-password", "--user", "ada", "--role", "admin"],
        input="correct horse battery", capture_output=True, text=True, check=True,
    )
    token = subprocess.run(
        [binary, "auth", "new-token", "--name", "dashboards", "--role", "reader"],
        capture_output=True, text=True, check=True,
    )
    secret = next(
        word for line in token.stderr.splitlines() for word in line.split()
        if word.startswith("cohort_")
    )
    return password.stdout + token.stdout, secret


def flood(address, until, counts, lock):
    client = flight.FlightClient(address)
    seen = Counter()
    while time.time() < until:
        try:
            client.authenticate_basic_token("mallory", "wrong")
            seen["accepted"] += 1
        except flight.FlightUnauthenticatedError:
            seen["UNAUTHENTICATED"] += 1
        except Exception as error:  # pyarrow maps RESOURCE_EXHAUSTED to ArrowInvalid
            text = str(error)
            seen["RESOURCE_EXHAUSTED" if "resource exhausted" in text.lower()
                 else f"other: {text[:80]}"] += 1
    with lock:
        counts.update(seen)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=48)
    parser.add_argument("--duration", type=float, default=10.0)
    args = parser.parse_args()

    binary = cohort_bin()
    with tempfile.TemporaryDirectory() as data:
        config_text, token = hashes(binary)
        config = Path(data) / "cohort.toml"
        config.write_text(config_text)
        server = Server(binary, str(Path(data) / "store"), "4GiB", ["--config", str(config)])
        try:
            address = server.address
            conn = flight_sql.connect(
                address, db_kwargs={"adbc.flight.sql.authorization_header": f"Bearer {token}"},
                autocommit=True,
            )
            baseline = []
            for _ in range(20):
                started = time.perf_counter()
                with conn.cursor() as cur:
                    cur.execute("SELECT 1")
                    cur.fetch_arrow_table()
                baseline.append(time.perf_counter() - started)
            until = time.time() + args.duration
            counts, lock = Counter(), threading.Lock()
            threads = [threading.Thread(target=flood, args=(address, until, counts, lock))
                       for _ in range(args.clients)]
            for thread in threads:
                thread.start()
            latencies = []
            while time.time() < until:
                started = time.perf_counter()
                with conn.cursor() as cur:
                    cur.execute("SELECT 1")
                    cur.fetch_arrow_table()
                latencies.append(time.perf_counter() - started)
            for thread in threads:
                thread.join()
            conn.close()
        finally:
            server.stop()

    def p(values, q):
        return sorted(values)[min(len(values) - 1, int(len(values) * q))] * 1000

    print(f"{args.clients} clients sending wrong passwords for {args.duration:.0f} s; "
          f"one token client running SELECT 1")
    print(f"  before the flood: p50 {p(baseline, 0.5):.1f} ms, p95 {p(baseline, 0.95):.1f} ms")
    print(f"  during the flood: {len(latencies)} queries, p50 {p(latencies, 0.5):.1f} ms, "
          f"p95 {p(latencies, 0.95):.1f} ms, max {max(latencies) * 1000:.1f} ms "
          f"(mean {statistics.mean(latencies) * 1000:.1f} ms)")
    print(f"  flood answers: {dict(counts)}")
    unexpected = {k: v for k, v in counts.items()
                  if k not in ("UNAUTHENTICATED", "RESOURCE_EXHAUSTED")}
    if unexpected:
        sys.exit(f"unexpected answers to the flood: {unexpected}")


if __name__ == "__main__":
    main()
