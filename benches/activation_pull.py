#!/usr/bin/env python3
"""Activation pull benchmark: a segment of N members (default 1,000,000) on a real
`cohort serve`, pulled by a Python consumer three ways:

  stream_members   ActivationService.StreamMembers (grpcio, Arrow IPC decoded by pyarrow)
  flight_doget     the same version through the segment's Flight ticket (pyarrow.flight)
  stream_changes   ActivationService.StreamChanges from cursor 0 (every member 'entered')

and, on the messages StreamMembers delivered, what the client-side decode would cost if the
members travelled as the compact protobuf alternative (benches/proto/member_rows.proto) rather
than Arrow IPC. Prints the best of --repeat runs, rows per second and the server's peak RSS.

    cargo build --release --bin cohort
    .venv/bin/python benches/activation_pull.py --members 1000000
"""

import argparse
import importlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import adbc_driver_flightsql.dbapi as flight_sql
import grpc
import pyarrow as pa
import pyarrow.flight as flight

from load_test import Server, cohort_bin, rss_mb

REPO = Path(__file__).resolve().parents[1]


def generate(out):
    """activation_pb2(_grpc) from Cohort's .proto, and the benchmark's protobuf alternative."""
    from grpc_tools import protoc

    out.mkdir(parents=True, exist_ok=True)

    for include, name, grpc_out in (
        (REPO / "proto" / "proto", "cohort/v1/activation.proto", True),
        (REPO / "benches" / "proto", "member_rows.proto", False),
    ):
        args = ["protoc", f"-I{include}", f"--python_out={out}"]
        if grpc_out:
            args.append(f"--grpc_python_out={out}")
        if protoc.main([*args, str(include / name)]) != 0:
            sys.exit(f"protoc failed on {name}")
    sys.path.insert(0, str(out))
    return (importlib.import_module("cohort.v1.activation_pb2"),
            importlib.import_module("cohort.v1.activation_pb2_grpc"),
            importlib.import_module("member_rows_pb2"))


def best_of(repeat, run):
    """(seconds, result) of the fastest of `repeat` runs."""
    best = None
    for _ in range(repeat):
        started = time.perf_counter()
        result = run()
        elapsed = time.perf_counter() - started
        if best is None or elapsed < best[0]:
            best = (elapsed, result)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    scratch = tempfile.TemporaryDirectory(prefix="cohort-activation-")
    pb2, pb2_grpc, rows_pb2 = generate(Path(scratch.name) / "generated")
    server = Server(cohort_bin(), os.path.join(scratch.name, "store"), "4GiB", [])
    try:
        with flight_sql.connect(server.address, autocommit=True) as conn, conn.cursor() as cur:
            cur.execute(
                "INSERT INTO events (user_id, event, ts) SELECT value, 'signup', "
                f"TIMESTAMP '2026-11-20T10:00:00Z' FROM generate_series(1, {args.members})"
            )
            cur.execute("CREATE SEGMENT everyone AS SELECT DISTINCT user_id FROM events")
        channel = grpc.insecure_channel(server.address.removeprefix("grpc://"),
                                        options=[("grpc.max_receive_message_length", 64 << 20)])
        service = pb2_grpc.ActivationServiceStub(channel)
        listed = service.ListSegments(pb2.ListSegmentsRequest()).segments[0]
        assert listed.members == args.members, f"segment has {listed.members} members"

        peak = [rss_mb(server.process.pid)]
        sampling = threading.Event()

        def sample():
            while not sampling.is_set():
                peak[0] = max(peak[0], rss_mb(server.process.pid))
                time.sleep(0.05)

        threading.Thread(target=sample, daemon=True).start()

        def stream_members():
            messages = list(service.StreamMembers(pb2.StreamMembersRequest(segment="everyone")))
            table = pa.Table.from_batches(
                [b for m in messages for b in pa.ipc.open_stream(m.arrow_ipc)])
            return messages, table

        def flight_doget():
            client = flight.FlightClient(server.address.replace("grpc://", "grpc+tcp://"))
            return client.do_get(flight.Ticket(listed.flight_ticket)).read_all()

        def stream_changes():
            messages = service.StreamChanges(pb2.StreamChangesRequest(segment="everyone", after_version=0))
            return pa.Table.from_batches(
                [b for m in messages for b in pa.ipc.open_stream(m.arrow_ipc)])

        rows = []
        members_s, (messages, members) = best_of(args.repeat, stream_members)
        rows.append(("stream_members", members_s, members.num_rows))
        seconds, table = best_of(args.repeat, flight_doget)
        rows.append(("flight_doget", seconds, table.num_rows))
        seconds, table = best_of(args.repeat, stream_changes)
        rows.append(("stream_changes", seconds, table.num_rows))
        sampling.set()
        for name, _, count in rows:
            assert count == args.members, f"{name} returned {count} users"

        # Client-side decode only, on identical users: the Arrow IPC payloads the server sent,
        # against the same users encoded as MemberRows (user ids and keys as Python values, what
        # a protobuf consumer ends up with).
        payloads = [m.arrow_ipc for m in messages]
        alternative = []
        for batch in (b for m in messages for b in pa.ipc.open_stream(m.arrow_ipc)):
            message = rows_pb2.MemberRows(segment="everyone", version=listed.version,
                                          user_key=batch.column(1).to_pylist())
            if pa.types.is_integer(batch.column(0).type):
                message.user_id_number.extend(batch.column(0).to_pylist())
            else:
                message.user_id_text.extend(batch.column(0).to_pylist())
            alternative.append(message.SerializeToString())

        def decode_arrow():
            return sum(b.num_rows for p in payloads for b in pa.ipc.open_stream(p))

        def decode_arrow_to_python():
            ids = []
            for p in payloads:
                for b in pa.ipc.open_stream(p):
                    ids.extend(b.column(0).to_pylist())
            return len(ids)

        def decode_protobuf():
            ids = []
            for bytes_ in alternative:
                message = rows_pb2.MemberRows.FromString(bytes_)
                ids.extend(message.user_id_number or message.user_id_text)
            return len(ids)

        decodes = [
            ("arrow_ipc -> arrow", *best_of(args.repeat, decode_arrow), sum(map(len, payloads))),
            ("arrow_ipc -> python", *best_of(args.repeat, decode_arrow_to_python), sum(map(len, payloads))),
            ("protobuf -> python", *best_of(args.repeat, decode_protobuf), sum(map(len, alternative))),
        ]
    finally:
        server.stop()

    print(f"{args.members:,} members, best of {args.repeat}; server peak RSS {peak[0]:.0f} MiB")
    print(f"{'pull':<16}{'seconds':>10}{'users/s':>14}")
    for name, seconds, count in rows:
        print(f"{name:<16}{seconds:>10.3f}{count / seconds:>14,.0f}")
    print(f"\n{'client decode':<22}{'seconds':>10}{'wire MiB':>10}{'vs arrow':>10}")
    for name, seconds, count, size in decodes:
        assert count == args.members, f"{name} decoded {count} users"
        print(f"{name:<22}{seconds:>10.3f}{size / 2**20:>10.1f}{seconds / decodes[0][1]:>9.1f}x")


if __name__ == "__main__":
    main()
