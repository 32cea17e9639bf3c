"""A Python activation consumer: gRPC code generated from Cohort's own .proto with grpcio-tools,
pulling members and changes (Arrow IPC) from the real server, resuming from a stored cursor
after the server restarts."""

import importlib
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from conftest import Server

REPO = Path(__file__).resolve().parents[2]

ABANDONERS = (
    "SELECT user_id FROM events GROUP BY user_id "
    "HAVING bool_or(event = 'add_to_cart') AND NOT bool_or(event = 'purchase')"
)


@pytest.fixture(scope="module")
def activation(tmp_path_factory):
    """The generated modules (activation_pb2, activation_pb2_grpc)."""
    from grpc_tools import protoc

    out = tmp_path_factory.mktemp("generated")
    include = REPO / "proto" / "proto"
    status = protoc.main([
        "protoc", f"-I{include}", f"--python_out={out}", f"--grpc_python_out={out}",
        str(include / "cohort" / "v1" / "activation.proto"),
    ])
    assert status == 0, "protoc failed"
    sys.path.insert(0, str(out))
    try:
        return (importlib.import_module("cohort.v1.activation_pb2"),
                importlib.import_module("cohort.v1.activation_pb2_grpc"))
    finally:
        sys.path.remove(str(out))


def stub(activation, server):
    import grpc

    _, grpc_module = activation
    channel = grpc.insecure_channel(server.address.removeprefix("grpc://"))
    return grpc_module.ActivationServiceStub(channel)


def users(message):
    return pa.ipc.open_stream(message.arrow_ipc).read_all()


def execute(conn, sql):
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchall()


class Consumer:
    """What an activation tool does: apply changes, keep the last complete version as cursor."""

    def __init__(self):
        self.members = set()
        self.cursor = 0

    def sync(self, client, pb):
        for message in client.StreamChanges(pb.StreamChangesRequest(segment="abandoners", after_version=self.cursor)):
            for row in users(message).to_pylist():
                if row["change"] == "entered":
                    self.members.add(row["user_id"])
                else:
                    self.members.discard(row["user_id"])
            if message.version_complete:
                self.cursor = message.version


def test_python_consumer_syncs_and_resumes_after_restart(store, server, conn, activation):
    pb, _ = activation
    execute(conn, f"CREATE SEGMENT abandoners AS {ABANDONERS}")
    client = stub(activation, server)

    listed = {s.segment: s for s in client.ListSegments(pb.ListSegmentsRequest()).segments}
    assert listed["abandoners"].version == 1
    pulled = set()
    for message in client.StreamMembers(pb.StreamMembersRequest(segment="abandoners")):
        pulled |= set(users(message).column("user_id").to_pylist())
    expected = {row[0] for row in execute(conn, ABANDONERS)}
    assert pulled == expected and listed["abandoners"].members == len(expected)

    consumer = Consumer()
    consumer.sync(client, pb)
    assert (consumer.members, consumer.cursor) == (expected, 1)

    buyer = sorted(expected)[0]
    execute(conn, f"INSERT INTO events (user_id, event, ts) VALUES ({buyer}, 'purchase', '2026-11-20T10:00:00Z')")
    execute(conn, "REFRESH SEGMENT abandoners")
    conn.close()
    server.stop()

    # The consumer kept only its cursor and members; the server restarted meanwhile.
    restarted = Server(store)
    try:
        client = stub(activation, restarted)
        consumer.sync(client, pb)
        assert consumer.cursor == 2
        assert consumer.members == expected - {buyer}
        before = (set(consumer.members), consumer.cursor)
        consumer.sync(client, pb)
        assert (consumer.members, consumer.cursor) == before, "a second sync changes nothing"
    finally:
        restarted.stop()


@pytest.mark.parametrize("store", ["local"], indirect=True)
def test_reflection_answers_v1alpha_clients(server):
    """grpcio-reflection's client (and older grpcurl) ask for the v1alpha reflection service."""
    import grpc
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    with grpc.insecure_channel(server.address.removeprefix("grpc://")) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = set(database.get_services())
        assert {"cohort.v1.ActivationService", "cohort.v1.AdminService", "grpc.health.v1.Health"} <= services
        described = database.FindFileContainingSymbol("cohort.v1.ActivationService")
        assert described.package == "cohort.v1"


@pytest.mark.parametrize("store", ["local"], indirect=True)
def test_split_segments_stream_each_members_group(server, conn, activation):
    """Members and changes of a SPLIT segment carry split_group, equal to segment_members'."""
    pb, _ = activation
    execute(conn, f"CREATE SEGMENT test_arms SPLIT (a 50, b 50) SEED 'arms' AS {ABANDONERS}")
    client = stub(activation, server)
    streamed = {}
    for message in client.StreamMembers(pb.StreamMembersRequest(segment="test_arms")):
        table = users(message)
        assert table.column_names == ["user_id", "user_key", "split_group"]
        streamed.update(zip(table.column("user_id").to_pylist(), table.column("split_group").to_pylist()))
    expected = dict(execute(conn, "SELECT user_id, split_group FROM segment_members('test_arms')"))
    assert streamed == expected and set(expected.values()) == {"a", "b"}
    changed = {}
    for message in client.StreamChanges(pb.StreamChangesRequest(segment="test_arms", after_version=0)):
        for row in users(message).to_pylist():
            changed[row["user_id"]] = row["split_group"]
    assert changed == expected
