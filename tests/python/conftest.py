"""Fixtures for end-to-end tests: the real `cohort` binary, on a local store and on S3 (moto)."""

import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def cohort_bin() -> str:
    path = os.environ.get("COHORT_BIN")
    if path:
        return path
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    binary = target / "debug" / "cohort"
    if not binary.exists():
        pytest.fail(f"{binary} not found: run `cargo build -p cohort-server` or set COHORT_BIN")
    return str(binary)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Store:
    """A store location plus the environment a cohort process needs to reach it."""

    def __init__(self, url: str, env: dict):
        self.url = url
        self.env = env

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [cohort_bin(), *args, "--data", self.url],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"cohort {' '.join(args)} failed:\n{result.stderr}")
        return result


@pytest.fixture(scope="session")
def moto_endpoint():
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            time.sleep(0.2)
    else:
        process.kill()
        pytest.fail("moto server did not start")
    yield endpoint
    process.terminate()
    process.wait(timeout=30)


def moto_environment(endpoint: str) -> dict:
    """What a cohort process needs to use the moto server at `endpoint` as S3."""
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ALLOW_HTTP": "true",
    }


def create_bucket(endpoint: str, bucket: str):
    import boto3

    boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    ).create_bucket(Bucket=bucket)


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("COHORT_")}
    if request.param == "local":
        return Store(str(tmp_path / "store"), env)
    endpoint = request.getfixturevalue("moto_endpoint")
    bucket = f"cohort-{uuid.uuid4().hex[:12]}"
    create_bucket(endpoint, bucket)
    env.update(moto_environment(endpoint))
    return Store(f"s3://{bucket}/store", env)


class Server:
    def __init__(self, store: Store, *extra: str):
        self.process = subprocess.Popen(
            [cohort_bin(), "serve", "--data", store.url, "--listen", "127.0.0.1:0",
             *([] if "--pg-listen" in extra else ["--pg-listen", "127.0.0.1:0"]), "--log", "warn", *extra],
            env=store.env,
            stdout=subprocess.PIPE,
            text=True,
        )
        deadline = time.time() + 120
        self.address = None
        # "host:port" of the PostgreSQL endpoint, None when started with --pg-listen off.
        self.pg_address = None
        expect_pg = "off" not in extra
        while time.time() < deadline:
            line = self.process.stdout.readline()
            if not line:
                raise AssertionError(f"server exited early with {self.process.wait()}")
            if line.startswith(("cohort listening on grpc://", "cohort listening on grpc+tls://")):
                self.address = line.strip().removeprefix("cohort listening on ")
            if line.startswith("cohort postgres listening on postgres://"):
                self.pg_address = line.strip().removeprefix("cohort postgres listening on postgres://").split("/")[0]
            if self.address and (self.pg_address or not expect_pg):
                break
        assert self.address, "server did not report its address"

    def stop(self) -> int:
        self.process.terminate()
        return self.process.wait(timeout=30)


@contextlib.contextmanager
def private_server(directory, events_tables):
    """A server on its own local store under `directory`, with each Arrow table of
    `events_tables` ingested into `events`; yields an ADBC connection to it."""
    import adbc_driver_flightsql.dbapi as flight_sql

    store = Store(str(directory / "store"), {k: v for k, v in os.environ.items() if not k.startswith("COHORT_")})
    running = Server(store)
    conn = flight_sql.connect(running.address, autocommit=True)
    try:
        with conn.cursor() as cur:
            for table in events_tables:
                cur.adbc_ingest("events", table, mode="append")
        yield conn
    finally:
        conn.close()
        running.stop()


@pytest.fixture
def server(store):
    store.run("demo", "--users", "200", "--events", "4000")
    running = Server(store)
    yield running
    running.stop()


@pytest.fixture
def conn(server):
    import adbc_driver_flightsql.dbapi as flight_sql

    connection = flight_sql.connect(server.address, autocommit=True)
    yield connection
    connection.close()


def set_logic_sql(op, left, right):
    """Two user_id queries combined by plain SQL set logic: op is and, or, andnot or xor."""
    if op == "and":
        return f"(({left}) INTERSECT ({right}))"
    if op == "or":
        return f"(({left}) UNION ({right}))"
    if op == "andnot":
        return f"(({left}) EXCEPT ({right}))"
    return f"((({left}) EXCEPT ({right})) UNION (({right}) EXCEPT ({left})))"
