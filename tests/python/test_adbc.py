"""End-to-end tests through the ADBC Flight SQL driver, on a local and an S3 store."""

import csv

import adbc_driver_manager
import pyarrow as pa
import pytest


def scalar(conn, sql, parameters=None):
    with conn.cursor() as cur:
        cur.execute(sql, parameters)
        return cur.fetchone()[0]


def test_get_objects_lists_tables_with_columns(conn):
    objects = conn.adbc_get_objects(depth="all").read_all().to_pylist()
    catalogs = {c["catalog_name"]: c for c in objects}
    assert "cohort" in catalogs
    schemas = {s["db_schema_name"]: s for s in catalogs["cohort"]["catalog_db_schemas"]}
    tables = {t["table_name"]: t for t in schemas["public"]["db_schema_tables"]}
    assert {"events", "profiles"} <= set(tables)
    event_columns = [c["column_name"] for c in tables["events"]["table_columns"]]
    assert event_columns[:3] == ["user_id", "event", "ts"]
    profile_columns = [c["column_name"] for c in tables["profiles"]["table_columns"]]
    assert {"user_id", "country", "plan", "age", "ltv", "tags"} <= set(profile_columns)
    schema = conn.adbc_get_table_schema("events", catalog_filter="cohort", db_schema_filter="public")
    assert schema.field("event").type == pa.string()


def test_bulk_ingest_appends_rows(conn):
    before = scalar(conn, "SELECT count(*) FROM events")
    table = pa.table(
        {
            "user_id": pa.array([900001, 900002, 900003], pa.int64()),
            "event": ["login", "purchase", "login"],
            "ts": pa.array(["2026-10-01T10:00:00Z", "2026-10-01T11:00:00Z", "2026-10-02T09:00:00Z"]).cast(
                pa.timestamp("us", tz="UTC")
            ),
            "coupon": ["A", None, "B"],
        }
    )
    with conn.cursor() as cur:
        written = cur.adbc_ingest("events", table, mode="append")
    conn.commit()
    assert written == 3
    assert scalar(conn, "SELECT count(*) FROM events") == before + 3
    # The new property column evolved the schema and is queryable at once.
    assert scalar(conn, "SELECT count(*) FROM events WHERE coupon IS NOT NULL") == 2


def test_bulk_ingest_create_mode_is_a_clear_error(conn):
    table = pa.table({"user_id": [1], "event": ["x"], "ts": ["2026-01-01T00:00:00Z"]})
    with conn.cursor() as cur:
        with pytest.raises(adbc_driver_manager.Error) as error:
            cur.adbc_ingest("events", table, mode="create")
    assert "append" in str(error.value)


def test_bulk_ingest_bad_rows_write_nothing(conn):
    before = scalar(conn, "SELECT count(*) FROM events")
    table = pa.table({"user_id": [1, 2], "event": ["login", "login"], "ts": ["2026-01-01T00:00:00Z", "not a time"]})
    with conn.cursor() as cur:
        with pytest.raises(adbc_driver_manager.Error) as error:
            cur.adbc_ingest("events", table, mode="append")
    assert "row 2" in str(error.value) and "ts" in str(error.value)
    assert scalar(conn, "SELECT count(*) FROM events") == before


def test_prepared_statement_with_bound_parameter(conn):
    expected = scalar(conn, "SELECT count(*) FROM events WHERE user_id = 17")
    assert expected > 0
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM events WHERE user_id = ?", parameters=(17,))
        assert cur.fetchone()[0] == expected
        # The same prepared statement re-executed with another value.
        cur.execute("SELECT count(*) FROM events WHERE user_id = ?", parameters=(18,))
        assert cur.fetchone()[0] == scalar(conn, "SELECT count(*) FROM events WHERE user_id = 18")
    with conn.cursor() as cur:
        cur.execute("SELECT event FROM events WHERE user_id = $1 AND event = $2 LIMIT 1", parameters=(17, "signup"))
        assert cur.fetchall() == [("signup",)]


def test_bad_sql_is_an_error_and_the_server_keeps_serving(conn):
    with conn.cursor() as cur:
        with pytest.raises(adbc_driver_manager.Error) as error:
            cur.execute("SELECT FROM WHERE nonsense")
    assert "sql" in str(error.value).lower() or "expected" in str(error.value).lower()
    with conn.cursor() as cur:
        with pytest.raises(adbc_driver_manager.Error) as error:
            cur.execute("SELECT * FROM missing_table")
    assert "missing_table" in str(error.value)
    assert scalar(conn, "SELECT 40 + 2") == 42


def test_ddl_and_dml_on_query_and_update_paths(conn):
    before = scalar(conn, "SELECT count(*) FROM events")
    with conn.cursor() as cur:
        rows = cur.adbc_statement.set_sql_query(
            "INSERT INTO events (user_id, event, ts) VALUES (5, 'login', '2026-10-05T00:00:00Z')"
        ) or cur.adbc_statement.execute_update()
        assert rows == 1
        cur.execute("INSERT INTO events (user_id, event, ts) VALUES (6, 'login', '2026-10-05T00:00:00Z')")
        assert cur.fetchone()[0] == 1
    assert scalar(conn, "SELECT count(*) FROM events") == before + 2


def write_events_csv(path, rows, bad_row=None):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["user_id", "event", "ts"])
        for i in range(1, rows + 1):
            ts = "garbage" if i == bad_row else f"2026-10-{1 + i % 28:02d}T12:00:00Z"
            writer.writerow([i, "login", ts])


def test_failed_file_ingest_leaves_table_unchanged(store, server, conn, tmp_path):
    before = scalar(conn, "SELECT count(*) FROM events")
    good = tmp_path / "good.csv"
    bad = tmp_path / "bad.csv"
    write_events_csv(good, 500)
    write_events_csv(bad, 2000, bad_row=1000)
    result = store.run("ingest", "--table", "events", str(good), str(bad), check=False)
    assert result.returncode != 0
    assert "bad.csv" in result.stderr and "row 1000" in result.stderr and "'ts'" in result.stderr
    assert scalar(conn, "SELECT count(*) FROM events") == before
    result = store.run("ingest", "--table", "events", str(good))
    assert "500 rows written" in result.stdout
    assert scalar(conn, "SELECT count(*) FROM events") == before + 500


def test_profile_reingest_upserts(store, server, conn, tmp_path):
    users = scalar(conn, "SELECT count(*) FROM profiles")
    first = tmp_path / "p1.ndjson"
    first.write_text('{"user_id": 1, "plan": "enterprise", "nickname": "ada"}\n{"user_id": 100001, "plan": "free"}\n')
    store.run("ingest", "--table", "profiles", str(first))
    assert scalar(conn, "SELECT count(*) FROM profiles") == users + 1
    assert scalar(conn, "SELECT plan FROM profiles WHERE user_id = 1") == "enterprise"
    assert scalar(conn, "SELECT nickname FROM profiles WHERE user_id = 1") == "ada"
    # Columns not in the new file keep their values.
    assert scalar(conn, "SELECT country FROM profiles WHERE user_id = 1") is not None
    second = tmp_path / "p2.ndjson"
    second.write_text('{"user_id": 1, "plan": "pro"}\n{"user_id": 1, "plan": "free"}\n')
    store.run("ingest", "--table", "profiles", str(second))
    assert scalar(conn, "SELECT count(*) FROM profiles") == users + 1
    assert scalar(conn, "SELECT plan FROM profiles WHERE user_id = 1") == "free", "last row of a user wins"


def test_cli_sql_against_server(store, server):
    result = store.run("sql", "--connect", f"grpc://{server.address.removeprefix('grpc://')}", "--format", "csv",
                       "SELECT count(*) AS n FROM profiles")
    assert result.stdout.splitlines() == ["n", "200"]
