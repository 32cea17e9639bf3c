"""Tags end to end over Flight SQL (ADBC): created on demo data through both statement paths,
refreshed, queried as audiences, and still there after the server restarts — on a local store and
on S3. Audience sizes are checked against the same selection written as plain SQL."""

import random

import pytest

from conftest import Server, set_logic_sql

TAGS = {
    "buyer": "SELECT DISTINCT user_id FROM events WHERE event = 'purchase'",
    "vip": "SELECT user_id FROM profiles WHERE array_has(tags, 'vip')",
    "mobile": "SELECT DISTINCT user_id FROM events WHERE device IN ('ios', 'android')",
    "plan": "SELECT user_id, plan FROM profiles",
}

# Each audience expression with the same selection as plain SQL set logic.
AUDIENCES = {
    "buyer & vip": f"({TAGS['buyer']}) INTERSECT ({TAGS['vip']})",
    "(buyer | vip) - mobile": f"(({TAGS['buyer']}) UNION ({TAGS['vip']})) EXCEPT ({TAGS['mobile']})",
    "plan:pro ^ buyer": (
        f"((SELECT user_id FROM profiles WHERE plan = 'pro') EXCEPT ({TAGS['buyer']})) UNION "
        f"(({TAGS['buyer']}) EXCEPT (SELECT user_id FROM profiles WHERE plan = 'pro'))"
    ),
    "plan - plan:free": "SELECT user_id FROM profiles WHERE plan IS NOT NULL AND plan <> 'free'",
}


def scalar(conn, sql):
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchone()[0]


def execute_update(conn, sql):
    with conn.cursor() as cur:
        cur.adbc_statement.set_sql_query(sql)
        return cur.adbc_statement.execute_update()


def connect(server):
    import adbc_driver_flightsql.dbapi as flight_sql

    return flight_sql.connect(server.address, autocommit=True)


def audience_sizes(conn):
    return {expr: scalar(conn, f"SELECT count(*) FROM audience('{expr}')") for expr in AUDIENCES}


def test_tags_are_created_refreshed_and_survive_restart(store, server, conn):
    # DDL is accepted on the update path (executeUpdate) and on the query path (execute).
    names = list(TAGS)
    for name in names[:2]:
        tagged = scalar(conn, f"SELECT count(DISTINCT user_id) FROM ({TAGS[name]})")
        assert execute_update(conn, f"CREATE TAG {name} AS {TAGS[name]}") == tagged
    for name in names[2:]:
        with conn.cursor() as cur:
            cur.execute(f"CREATE TAG {name} AS {TAGS[name]}")
            assert cur.fetchone()[0] >= 1

    with conn.cursor() as cur:
        cur.execute("SHOW TAGS")
        shown = cur.fetch_arrow_table().to_pylist()
    assert [row["name"] for row in shown] == sorted(TAGS)
    by_name = {row["name"]: row for row in shown}
    assert by_name["plan"]["kind"] == "valued"
    assert by_name["plan"]["values"] == scalar(conn, "SELECT count(DISTINCT plan) FROM profiles")
    assert by_name["buyer"]["values"] is None, "a boolean tag has no values"
    assert by_name["buyer"]["users"] == scalar(conn, f"SELECT count(*) FROM ({TAGS['buyer']})")

    sizes = audience_sizes(conn)
    for expr, plain in AUDIENCES.items():
        assert sizes[expr] == scalar(conn, f"SELECT count(*) FROM ({plain})"), expr
    assert scalar(conn, "SELECT count(*) FROM events WHERE has_tag(user_key, 'vip')") == scalar(
        conn, f"SELECT count(*) FROM events WHERE user_id IN ({TAGS['vip']})"
    )

    # New purchases appear after a refresh, not before.
    newcomer = 10_000_000
    execute_update(
        conn,
        f"INSERT INTO events (user_id, event, ts) VALUES ({newcomer}, 'purchase', '2026-11-20T10:00:00Z')",
    )
    assert scalar(conn, f"SELECT count(*) FROM audience('buyer') WHERE user_id = {newcomer}") == 0
    # Like CREATE/REFRESH SEGMENT, the count is the users the tag now has.
    assert execute_update(conn, "REFRESH TAG buyer") == scalar(conn, f"SELECT count(*) FROM ({TAGS['buyer']})")
    assert scalar(conn, f"SELECT count(*) FROM audience('buyer') WHERE user_id = {newcomer}") == 1
    sizes = audience_sizes(conn)

    conn.close()
    server.stop()
    restarted = Server(store)
    try:
        again = connect(restarted)
        try:
            assert audience_sizes(again) == sizes
            assert scalar(again, "SELECT count(DISTINCT tag) FROM tags") == len(TAGS)
        finally:
            again.close()
        # The CLI runs the same statements against the server.
        address = restarted.address.removeprefix("grpc://")
        result = store.run("sql", "--connect", f"grpc://{address}", "--format", "csv", "REFRESH TAGS")
        assert result.stdout.splitlines()[0] == "rows_affected"
        result = store.run(
            "sql", "--connect", f"grpc://{address}", "--format", "csv",
            "SELECT count(*) AS n FROM audience('buyer & vip')",
        )
        assert result.stdout.splitlines() == ["n", str(sizes["buyer & vip"])]
    finally:
        restarted.stop()


def test_tag_errors_are_clear_and_leave_nothing_behind(conn):
    import adbc_driver_manager

    cases = {
        "CREATE TAG broken AS SELECT event FROM events": "must return user_id",
        "SELECT * FROM audience('nobody')": "unknown tag 'nobody'",
        "SELECT * FROM audience('a & (b')": "tag expression",
        "DROP TAG nobody": "unknown tag 'nobody'",
    }
    for sql, message in cases.items():
        with pytest.raises(adbc_driver_manager.Error) as failure:
            execute_update(conn, sql)
        assert message in str(failure.value), sql
    assert scalar(conn, "SELECT count(*) FROM tags") == 0


@pytest.mark.parametrize("seed", [1, 2])
def test_random_expressions_over_stored_tags_match_set_logic(conn, seed):
    rng = random.Random(seed)
    names = ["t0", "t1", "t2", "t3", "t4"]
    for name in names:
        modulus, remainder = rng.randint(2, 7), rng.randint(0, 1)
        execute_update(
            conn,
            f"CREATE OR REPLACE TAG {name} AS SELECT user_id FROM profiles WHERE user_id % {modulus} = {remainder}",
        )
    with conn.cursor() as cur:
        cur.execute("SHOW TAGS")
        queries = {row["name"]: row["query"] for row in cur.fetch_arrow_table().to_pylist()}

    def tree(depth=0):
        if depth >= 3 or (depth and rng.random() < 0.4):
            return rng.choice(names)
        return (rng.choice("&|-^"), tree(depth + 1), tree(depth + 1))

    def text(e):
        return e if isinstance(e, str) else f"({text(e[1])} {e[0]} {text(e[2])})"

    def sql(e):
        if isinstance(e, str):
            return queries[e]
        op = {"&": "and", "|": "or", "-": "andnot", "^": "xor"}[e[0]]
        return set_logic_sql(op, sql(e[1]), sql(e[2]))

    for _ in range(15):
        e = tree()
        ours = scalar(conn, f"SELECT bitmap_cardinality(audience_bitmap('{text(e)}'))")
        assert ours == scalar(conn, f"SELECT count(*) FROM audience('{text(e)}')")
        assert ours == scalar(conn, f"SELECT count(*) FROM ({sql(e)})"), text(e)


def test_scheduled_tag_refreshes_itself(conn):
    import time

    execute_update(conn, f"CREATE TAG buyer SCHEDULE '*/2 * * * * *' AS {TAGS['buyer']}")
    newcomer = 20_000_000
    execute_update(
        conn,
        f"INSERT INTO events (user_id, event, ts) VALUES ({newcomer}, 'purchase', '2026-11-20T10:00:00Z')",
    )
    deadline = time.time() + 60
    while scalar(conn, f"SELECT count(*) FROM audience('buyer') WHERE user_id = {newcomer}") == 0:
        assert time.time() < deadline, "the scheduled refresh never picked up the new buyer"
        time.sleep(0.5)
    with conn.cursor() as cur:
        cur.execute("SHOW TAGS")
        assert cur.fetch_arrow_table().to_pylist()[0]["schedule"] == "*/2 * * * * *"
