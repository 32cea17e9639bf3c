"""The PostgreSQL wire endpoint with real PostgreSQL clients: psycopg 3 (simple and extended
protocol, server-side parameters, cancel), psql (its backslash commands read pg_catalog) and
SQLAlchemy's inspector, the way BI tools discover tables. Each result is checked against the
same query over Flight SQL (ADBC), so both endpoints give the same answers."""

import os
import subprocess
import threading
import time

import adbc_driver_flightsql.dbapi as flight_sql
import psycopg
import pytest
from psycopg import errors

from conftest import Server, Store
from test_security import ADMIN_PASSWORD, READER_PASSWORD, auth_config


@pytest.fixture
def demo_store(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("COHORT_")}
    store = Store(str(tmp_path / "store"), env)
    store.run("demo", "--users", "200", "--events", "4000")
    return store


@pytest.fixture
def pg(demo_store):
    running = Server(demo_store)
    yield running
    running.stop()


def dsn(server, user="cohort", password=None, database="cohort"):
    host, port = server.pg_address.rsplit(":", 1)
    return psycopg.conninfo.make_conninfo(
        host=host, port=port, dbname=database, user=user, password=password, connect_timeout=10
    )


def flight_rows(server, sql):
    with flight_sql.connect(server.address, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(sql)
        return [tuple(row) for row in cur.fetchall()]


SAME_ANSWERS = [
    "SELECT event, count(*) AS n FROM events GROUP BY event ORDER BY event",
    "SELECT user_id, country, plan, ltv FROM profiles ORDER BY user_id LIMIT 20",
    """SELECT level, count(*) AS users FROM (
         SELECT user_id, window_funnel(3600, ts, event = 'page_view', event = 'add_to_cart',
                                       event = 'purchase') AS level
         FROM events GROUP BY user_id) GROUP BY level ORDER BY level""",
    """SELECT r, count(*) FROM (
         SELECT user_id, retention(event = 'signup', event = 'login') AS r
         FROM events GROUP BY user_id) GROUP BY r ORDER BY 2, 1""",
]


def test_queries_answer_as_over_flight_sql(pg):
    with psycopg.connect(dsn(pg), autocommit=True) as conn:
        for sql in SAME_ANSWERS:
            # Extended protocol (psycopg's default) and simple protocol (a bare string query).
            extended = [tuple(row) for row in conn.execute(sql).fetchall()]
            simple = [tuple(row) for row in conn.cursor().execute(sql, prepare=False).fetchall()]
            expected = flight_rows(pg, sql)
            assert extended == expected, sql
            assert simple == expected, sql
        assert conn.execute("SELECT count(*) FROM events").fetchone() == (4000,)


def test_parameters_types_and_multi_row_insert(pg):
    with psycopg.connect(dsn(pg), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM events WHERE event = %s AND user_id > %s", ("page_view", 10)
        ).fetchone()
        expected = flight_rows(pg, "SELECT count(*) FROM events WHERE event = 'page_view' AND user_id > 10")
        assert row == expected[0]
        value = conn.execute(
            "SELECT 1::bigint AS i, 'x' AS t, 2.5::double precision AS f, true AS b, "
            "ARRAY['a', 'b'] AS tags, TIMESTAMP '2026-09-01 10:00:00' AS ts, NULL::int AS nothing"
        ).fetchone()
        assert value[:5] == (1, "x", 2.5, True, ["a", "b"])
        assert value[5].isoformat().startswith("2026-09-01T10:00:00")
        assert value[6] is None
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO events (user_id, event, ts) VALUES (%s, %s, TIMESTAMP '2026-10-01 00:00:00')",
                [(900001, "pg_insert"), (900002, "pg_insert")],
            )
        assert conn.execute("SELECT count(*) FROM events WHERE event = 'pg_insert'").fetchone() == (2,)
        assert flight_rows(pg, "SELECT count(*) FROM events WHERE event = 'pg_insert'") == [(2,)]


def test_errors_carry_sqlstates_and_the_connection_stays_usable(pg):
    with psycopg.connect(dsn(pg), autocommit=True) as conn:
        with pytest.raises(errors.UndefinedTable):
            conn.execute("SELECT * FROM no_such_table")
        with pytest.raises(errors.UndefinedColumn):
            conn.execute("SELECT no_such_column FROM events")
        with pytest.raises(errors.SyntaxError):
            conn.execute("SELEC 1")
        with pytest.raises(errors.FeatureNotSupported):
            conn.execute("COPY events TO '/tmp/x.csv'")
        # Statements that would reach outside the store are refused as on Flight SQL.
        with pytest.raises(psycopg.Error):
            conn.execute("SELECT * FROM '/etc/passwd'")
        deep = "SELECT 1" + "::BIGINT" * 120_000
        with pytest.raises(errors.StatementTooComplex):
            conn.execute(deep)
        with pytest.raises(errors.StatementTooComplex):
            conn.cursor().execute(deep, prepare=False)
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_psycopg2_simple_protocol_as_superset_uses_it(pg):
    import psycopg2
    import psycopg2.errors

    host, port = pg.pg_address.rsplit(":", 1)
    conn = psycopg2.connect(host=host, port=port, dbname="cohort", user="cohort", connect_timeout=10)
    try:
        with conn.cursor() as cur:  # psycopg2 opens a transaction first, as Superset's engine does
            for sql in SAME_ANSWERS:
                cur.execute(sql)
                assert [tuple(row) for row in cur.fetchall()] == flight_rows(pg, sql), sql
            cur.execute("SELECT count(*) FROM events WHERE event = %s AND user_id < %s", ("purchase", 100))
            expected = flight_rows(pg, "SELECT count(*) FROM events WHERE event = 'purchase' AND user_id < 100")
            assert cur.fetchone() == expected[0]
            assert [d.name for d in cur.description] == ["count(*)"]
        conn.rollback()
        with conn.cursor() as cur, pytest.raises(psycopg2.errors.UndefinedTable):
            cur.execute("SELECT * FROM no_such_table")
        conn.rollback()
    finally:
        conn.close()


def test_another_database_is_refused(pg):
    with pytest.raises(psycopg.OperationalError, match='database "analytics" does not exist'):
        psycopg.connect(dsn(pg, database="analytics"))


def test_session_statements_drivers_send(pg):
    with psycopg.connect(dsn(pg)) as conn:  # not autocommit: psycopg opens a transaction
        conn.execute("SET application_name = 'superset'")
        assert conn.execute("SHOW application_name").fetchone() == ("superset",)
        assert conn.execute("SHOW transaction isolation level").fetchone() == ("read committed",)
        assert conn.execute("SELECT count(*) FROM profiles").fetchone() == (200,)
        conn.commit()
        assert conn.info.server_version >= 150000
        assert conn.execute("SELECT version()").fetchone()[0].startswith("PostgreSQL 15")
        with pytest.raises(errors.UndefinedObject):
            conn.execute("SHOW no_such_setting")
        conn.rollback()
    # Connection pools ping with empty or comment-only statements, on both protocols.
    with psycopg.connect(dsn(pg), autocommit=True) as conn:
        for ping in ["", ";", "-- ping", "/* ping */"]:
            assert conn.execute(ping).pgresult.status == psycopg.pq.ExecStatus.EMPTY_QUERY, ping
            cursor = conn.cursor().execute(ping, prepare=False)
            assert cursor.pgresult.status == psycopg.pq.ExecStatus.EMPTY_QUERY, ping


def test_psql_describes_tables(pg):
    host, port = pg.pg_address.rsplit(":", 1)
    env = {**os.environ, "PGCONNECT_TIMEOUT": "10"}

    def psql(command):
        result = subprocess.run(
            ["psql", "-h", host, "-p", port, "-U", "cohort", "-d", "cohort", "-X", "-c", command],
            capture_output=True, text=True, timeout=60, env=env,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    tables = psql("\\dt")
    assert "events" in tables and "profiles" in tables
    described = psql("\\d events")
    assert 'Table "public.events"' in described
    for column in ["user_id", "event", "ts", "user_key"]:
        assert column in described
    assert "timestamp with time zone" in described
    assert "4000" in psql("SELECT count(*) FROM events")


def test_sqlalchemy_inspects_and_queries(pg):
    import sqlalchemy

    host, port = pg.pg_address.rsplit(":", 1)
    engine = sqlalchemy.create_engine(f"postgresql+psycopg://cohort@{host}:{port}/cohort")
    try:
        inspector = sqlalchemy.inspect(engine)
        assert {"events", "profiles"} <= set(inspector.get_table_names())
        columns = {c["name"] for c in inspector.get_columns("events")}
        assert {"user_id", "event", "ts"} <= columns
        with engine.connect() as conn:
            assert conn.execute(sqlalchemy.text("SELECT count(*) FROM profiles")).scalar() == 200
    finally:
        engine.dispose()


SLOW = "SELECT sum(value % 7) FROM range(200000000000)"


def test_cancel_stops_the_query_and_frees_its_slot(demo_store):
    server = Server(demo_store, "--max-concurrent-queries", "1", "--statement-timeout", "0")
    try:
        with psycopg.connect(dsn(server), autocommit=True) as conn:
            failure = {}

            def run():
                try:
                    conn.execute(SLOW)
                except psycopg.Error as e:
                    failure["error"] = e

            worker = threading.Thread(target=run)
            worker.start()
            time.sleep(2)
            started = time.time()
            conn.cancel()
            worker.join(timeout=30)
            assert not worker.is_alive(), "cancel did not stop the query"
            assert isinstance(failure.get("error"), errors.QueryCanceled), failure
            assert time.time() - started < 20
            # One slot: this answers only because the cancelled query let go of it.
            with psycopg.connect(dsn(server), autocommit=True) as other:
                assert other.execute("SELECT 1").fetchone() == (1,)
            assert conn.execute("SELECT 2").fetchone() == (2,)
    finally:
        server.stop()


def test_statement_timeout_applies(demo_store):
    server = Server(demo_store, "--statement-timeout", "2s")
    try:
        with psycopg.connect(dsn(server), autocommit=True) as conn:
            started = time.time()
            with pytest.raises(errors.QueryCanceled):
                conn.execute(SLOW)
            assert time.time() - started < 20
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        server.stop()


@pytest.fixture
def secured_pg(tmp_path, demo_store):
    config, token = auth_config(tmp_path)
    running = Server(demo_store, "--config", str(config))
    yield running, token
    running.stop()


def test_logins_and_roles_as_on_flight_sql(secured_pg):
    server, token = secured_pg
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(dsn(server, user="rita", password="wrong"))
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(dsn(server, user="nobody", password=READER_PASSWORD))
    with psycopg.connect(dsn(server, user="rita", password=READER_PASSWORD), autocommit=True) as reader:
        assert reader.execute("SELECT count(*) FROM events").fetchone() == (4000,)
        with pytest.raises(errors.InsufficientPrivilege):
            reader.execute("INSERT INTO events (user_id, event, ts) VALUES (1, 'x', now())")
        with pytest.raises(errors.InsufficientPrivilege):
            reader.execute("CREATE TAG sneaky AS SELECT user_id FROM profiles")
    # An API token as the password, whatever the user name.
    with psycopg.connect(dsn(server, user="any name", password=token), autocommit=True) as dashboards:
        assert dashboards.execute("SELECT count(*) FROM profiles").fetchone() == (200,)
    with psycopg.connect(dsn(server, user="ada", password=ADMIN_PASSWORD), autocommit=True) as admin:
        admin.execute("CREATE TAG big_spenders AS SELECT user_id FROM profiles WHERE ltv > 100")
        shown = admin.execute("SHOW TAGS").fetchall()
        assert any(row[0] == "big_spenders" for row in shown)


def write_certificates(directory):
    """A CA and a server certificate for 127.0.0.1 signed by it (PEM files)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cohort test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    paths = {name: directory / f"{name}.pem" for name in ("ca", "cert", "key")}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


def test_tls_carries_passwords_and_plain_connections_are_refused(tmp_path, demo_store):
    paths = write_certificates(tmp_path)
    config, _ = auth_config(tmp_path)
    server = Server(demo_store, "--config", str(config), "--tls-cert", str(paths["cert"]), "--tls-key", str(paths["key"]))
    try:
        host, port = server.pg_address.rsplit(":", 1)
        secure = psycopg.conninfo.make_conninfo(
            host=host, port=port, dbname="cohort", user="rita", password=READER_PASSWORD,
            sslmode="verify-full", sslrootcert=str(paths["ca"]), connect_timeout=10,
        )
        with psycopg.connect(secure, autocommit=True) as conn:
            assert conn.info.pgconn.ssl_in_use
            assert conn.execute("SELECT count(*) FROM events").fetchone() == (4000,)
        plain = psycopg.conninfo.make_conninfo(
            host=host, port=port, dbname="cohort", user="rita", password=READER_PASSWORD,
            sslmode="disable", connect_timeout=10,
        )
        with pytest.raises(psycopg.OperationalError, match="TLS only"):
            psycopg.connect(plain)
    finally:
        server.stop()
