"""Authentication, roles and cancellation through the ADBC Flight SQL driver, the way BI tools
connect: username/password (Flight SQL handshake) and bearer API tokens."""

import os
import subprocess
import threading
import time

import adbc_driver_flightsql.dbapi as flight_sql
import adbc_driver_manager
import pyarrow as pa
import pytest

from conftest import Server, Store, cohort_bin

ADMIN_PASSWORD = "correct horse battery"
READER_PASSWORD = "reader password 1"


def auth_cli(*args, stdin=None):
    result = subprocess.run([cohort_bin(), "auth", *args], input=stdin, capture_output=True, text=True, check=True)
    return result.stdout, result.stderr


def auth_config(directory):
    """A config file with an admin user `ada`, a reader user `rita` and a reader API token, all
    made with the `cohort auth` commands; returns its path and the token."""
    admin, _ = auth_cli("hash-password", "--user", "ada", "--role", "admin", stdin=ADMIN_PASSWORD + "\n")
    reader, _ = auth_cli("hash-password", "--user", "rita", stdin=READER_PASSWORD)
    token_entry, token_message = auth_cli("new-token", "--name", "dashboards", "--role", "reader")
    token = token_message.strip().rsplit(" ", 1)[-1]
    assert token.startswith("cohort_") and token not in token_entry
    config = directory / "cohort.toml"
    config.write_text("\n".join([admin, reader, token_entry]))
    return config, token


@pytest.fixture
def secured(tmp_path):
    """A demo store served with the users and token of `auth_config`."""
    config, token = auth_config(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("COHORT_")}
    store = Store(str(tmp_path / "store"), env)
    store.run("demo", "--users", "200", "--events", "4000")
    running = Server(store, "--config", str(config))
    yield running, token
    running.stop()


def connect(address, **db_kwargs):
    return flight_sql.connect(address, db_kwargs=db_kwargs, autocommit=True)


def count_events(conn):
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM events")
        return cur.fetchone()[0]


def test_password_and_token_logins_and_roles(secured):
    server, token = secured
    with connect(server.address, username="ada", password=ADMIN_PASSWORD) as admin:
        before = count_events(admin)
        assert before == 4000
        with admin.cursor() as cur:
            cur.execute("CREATE TAG active AS SELECT DISTINCT user_id FROM events")
            table = pa.table(
                {
                    "user_id": pa.array([9001], pa.int64()),
                    "event": ["signup"],
                    "ts": pa.array([1_767_225_600_000_000], pa.timestamp("us", tz="UTC")),
                }
            )
            assert cur.adbc_ingest("events", table, mode="append") == 1

    with connect(server.address, username="rita", password=READER_PASSWORD) as reader:
        assert count_events(reader) == before + 1
        with reader.cursor() as cur:
            cur.execute("SELECT count(*) FROM audience('active')")
            assert cur.fetchone()[0] > 0
            for statement in [
                "INSERT INTO events (user_id, event, ts) VALUES (1, 'x', TIMESTAMP '2026-01-01 00:00:00')",
                "DROP TAG active",
                "REFRESH TAGS",
            ]:
                with pytest.raises(adbc_driver_manager.Error, match="(?i)permission"):
                    cur.execute(statement)
            with pytest.raises(adbc_driver_manager.Error, match="(?i)permission"):
                cur.adbc_ingest("events", table, mode="append")
        assert count_events(reader) == before + 1

    with connect(server.address, **{"adbc.flight.sql.authorization_header": f"Bearer {token}"}) as dashboards:
        assert count_events(dashboards) == before + 1


@pytest.mark.parametrize(
    "credentials",
    [
        {},
        {"username": "ada", "password": "wrong password"},
        {"username": "nobody", "password": ADMIN_PASSWORD},
        {"adbc.flight.sql.authorization_header": "Bearer cohort_guessed"},
    ],
)
def test_bad_credentials_are_refused(secured, credentials):
    server, _ = secured
    with pytest.raises(adbc_driver_manager.Error, match="(?i)unauthenticated"):
        with connect(server.address, **credentials) as conn:
            count_events(conn)


def test_adbc_cancel_stops_a_running_query(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("COHORT_")}
    store = Store(str(tmp_path / "store"), env)
    # One slot and no timeout: only a stopped query lets the next one run.
    server = Server(store, "--max-concurrent-queries", "1", "--statement-timeout", "0")
    try:
        with connect(server.address) as conn:
            cur = conn.cursor()
            errors = []

            def run():
                try:
                    cur.execute("SELECT sum(value % 7) FROM range(100000000000)")
                    cur.fetchall()
                except adbc_driver_manager.Error as e:
                    errors.append(e)

            worker = threading.Thread(target=run)
            worker.start()
            time.sleep(1.0)
            started = time.time()
            cur.adbc_cancel()
            worker.join(timeout=30)
            assert not worker.is_alive(), "cancel did not stop the query"
            assert errors and "cancel" in str(errors[0]).lower(), errors
            with conn.cursor() as other:
                other.execute("SELECT 1")
                assert other.fetchone()[0] == 1
            assert time.time() - started < 15
    finally:
        server.stop()
