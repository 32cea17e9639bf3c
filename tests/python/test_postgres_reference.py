"""Cohort's PostgreSQL endpoint next to a real PostgreSQL 15 holding the same rows: psql's
describe commands and CSV output, SQLAlchemy's inspector and the PostgreSQL JDBC driver's
DatabaseMetaData must give the same answers for both. The reference server is started by the
test itself (initdb + pg_ctl on loopback, see reference_postgres.py)."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import adbc_driver_flightsql.dbapi as flight_sql
import psycopg
import pytest

from conftest import Server, Store
from reference_postgres import ReferencePostgres

JDBC_JAR = Path("/usr/share/java/postgresql.jar")
JAVA_SOURCE = Path(__file__).resolve().parents[1] / "java" / "JdbcClient.java"


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """(cohort server, reference PostgreSQL), the reference loaded with Cohort's demo rows."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COHORT_")}
    store = Store(str(tmp_path_factory.mktemp("reference") / "store"), env)
    store.run("demo", "--users", "200", "--events", "4000")
    cohort = Server(store)
    reference = ReferencePostgres()
    try:
        with flight_sql.connect(cohort.address, autocommit=True) as flight, psycopg.connect(
            host=reference.host, port=reference.port, user="postgres", dbname="cohort"
        ) as pg:
            for table in ["events", "profiles"]:
                with flight.cursor() as cur:
                    cur.execute(f"SELECT * FROM {table}")
                    columns = [d[0] for d in cur.description]
                    rows = cur.fetchall()
                with pg.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
        yield cohort, reference
    finally:
        reference.stop()
        cohort.stop()


def cohort_psql(server, *args):
    host, port = server.pg_address.rsplit(":", 1)
    result = subprocess.run(
        ["psql", "-h", host, "-p", port, "-U", "cohort", "-d", "cohort", "-X", "-v", "ON_ERROR_STOP=1", *args],
        capture_output=True, text=True, timeout=60, env={**os.environ, "PGCONNECT_TIMEOUT": "10"},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout + result.stderr


def reference_psql(reference, *args):
    return reference.psql(*args)


# What legitimately differs: who owns the objects (the reference's superuser is `postgres`,
# Cohort's catalog names its own owner). Everything else must match.
def normalise(text):
    lines, owner = [], None
    for line in text.splitlines():
        cells = line.split("|")
        names = [cell.strip() for cell in cells]
        if "Owner" in names:
            owner = (names.index("Owner"), len(cells))
        elif owner and len(cells) == owner[1]:
            cells[owner[0]] = " OWNER "
        lines.append("|".join(cells).rstrip())
    # Column widths follow the longest value, and the owner names differ in length.
    return [re.sub(r"-+", "-", re.sub(r" +", " ", line)) for line in lines]


@pytest.mark.parametrize("command", ["\\dt", "\\d events", "\\d+ profiles", "\\dn", "\\dv", "\\d profiles"])
def test_psql_describes_like_postgresql(both, command):
    cohort, reference = both
    ours = normalise(cohort_psql(cohort, "-c", command))
    theirs = normalise(reference.psql("-c", command) if command != "\\dv" else _reference_all(reference, command))
    assert ours == theirs, "\n".join(["cohort:", *ours, "postgresql:", *theirs])


def _reference_all(reference, command):
    """stdout and stderr of the reference's psql (\\dv says 'Did not find any relations.' on stderr)."""
    result = subprocess.run(
        ["psql", "-h", reference.host, "-p", str(reference.port), "-U", "postgres", "-d", "cohort", "-X", "-c", command],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout + result.stderr


CSV_QUERIES = [
    "SELECT event, count(*) AS n FROM events GROUP BY event ORDER BY event",
    "SELECT user_id, country, plan, age, ltv, signup_at, tags FROM profiles ORDER BY user_id LIMIT 25",
    "SELECT user_id, event, ts, session_id, page, device, revenue FROM events ORDER BY user_id, ts, event LIMIT 50",
    "SELECT date_trunc('day', ts) AS day, count(DISTINCT user_id) AS users FROM events GROUP BY 1 ORDER BY 1 LIMIT 10",
    "SELECT plan, round(avg(ltv)::numeric, 2) AS avg_ltv, max(age) AS oldest FROM profiles GROUP BY plan ORDER BY plan",
    "SELECT count(*) FILTER (WHERE revenue IS NULL) AS no_revenue, sum(revenue) > 0 AS earned FROM events",
    # IN over a subquery in a SELECT list, with its three-valued answers (match, no rows, a NULL)
    "SELECT plan, plan IN (SELECT plan FROM profiles WHERE country = 'DE') AS in_de,"
    " plan IN (SELECT plan FROM profiles WHERE false) AS in_none,"
    " plan NOT IN (SELECT CASE WHEN plan = 'free' THEN NULL ELSE plan END FROM profiles) AS not_in_with_null,"
    " CASE WHEN plan IN (SELECT 'pro') THEN 0 ELSE 1 END AS pro_first"
    " FROM (SELECT DISTINCT plan FROM profiles) AS plans ORDER BY pro_first, plan",
]


@pytest.mark.parametrize("sql", CSV_QUERIES)
def test_psql_csv_output_matches_postgresql(both, sql):
    cohort, reference = both
    ours = cohort_psql(cohort, "--csv", "-c", sql)
    theirs = reference.psql("--csv", "-c", sql)
    assert ours == theirs


def inspected(url):
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    try:
        inspector = sqlalchemy.inspect(engine)
        schemas = set(inspector.get_schema_names())
        return {
            "public schema": "public" in schemas,
            "tables": sorted(inspector.get_table_names()),
            "views": sorted(inspector.get_view_names()),
            "columns": {
                table: [(c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(table)]
                for table in ["events", "profiles"]
            },
            "primary keys": {table: inspector.get_pk_constraint(table)["constrained_columns"] for table in ["events", "profiles"]},
            "indexes": {table: inspector.get_indexes(table) for table in ["events", "profiles"]},
        }
    finally:
        engine.dispose()


def test_sqlalchemy_inspector_matches_postgresql(both):
    cohort, reference = both
    host, port = cohort.pg_address.rsplit(":", 1)
    ours = inspected(f"postgresql+psycopg://cohort@{host}:{port}/cohort")
    theirs = inspected(f"postgresql+psycopg://postgres@{reference.host}:{reference.port}/cohort")
    assert ours == theirs


def run_jdbc(tmp_path, url, user):
    java, javac = shutil.which("java"), shutil.which("javac")
    assert java and javac, "Java 17 (default-jdk-headless) is needed for the JDBC test"
    assert JDBC_JAR.exists(), "apt-get install libpostgresql-jdbc-java"
    classes = tmp_path / "classes"
    if not (classes / "JdbcClient.class").exists():
        subprocess.run([javac, "-d", str(classes), "-cp", str(JDBC_JAR), str(JAVA_SOURCE)], check=True, timeout=120)
    result = subprocess.run(
        [java, "-Duser.timezone=UTC", "-cp", f"{JDBC_JAR}:{classes}", "JdbcClient", url, user],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    facts = {}
    for line in result.stdout.splitlines():
        kind, value = line.split("\t", 1)
        facts.setdefault(kind, []).append(value)
    return facts


def test_jdbc_metadata_and_prepared_statements_match_postgresql(both, tmp_path):
    cohort, reference = both
    host, port = cohort.pg_address.rsplit(":", 1)
    ours = run_jdbc(tmp_path, f"jdbc:postgresql://{host}:{port}/cohort", "cohort")
    theirs = run_jdbc(tmp_path, f"jdbc:postgresql://{reference.host}:{reference.port}/cohort", "postgres")
    assert ours["product"] == ["PostgreSQL"]
    assert ours["major_version"] == ["15"]
    assert "public" in ours["schema"]
    # Cohort has no other user schemas; PostgreSQL's system schemas are what it lists beside public.
    assert set(ours["schema"]) <= set(theirs["schema"]) | {"public"}
    for kind in ["table", "column", "type_info", "prepared_count", "since_2026", "profile"]:
        assert ours[kind] == theirs[kind], kind
    counts = [int(value.split()[1]) for value in ours["prepared_count"]]
    assert counts[0] >= counts[1] >= counts[2] > 0
