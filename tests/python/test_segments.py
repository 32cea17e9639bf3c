"""Segments end to end over Flight SQL (ADBC) against the real server and its scheduler: a
segment on demo data refreshed on a schedule, data changed between runs, and members, entered and
exited checked against the same query run directly — on a local store and on S3."""

import time

ABANDONERS = (
    "SELECT user_id FROM events GROUP BY user_id "
    "HAVING bool_or(event = 'add_to_cart') AND NOT bool_or(event = 'purchase')"
)


def rows(conn, sql):
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchall()


def execute_update(conn, sql):
    with conn.cursor() as cur:
        cur.adbc_statement.set_sql_query(sql)
        return cur.adbc_statement.execute_update()


def ids(conn, sql):
    return {row[0] for row in rows(conn, sql)}


def latest_version(conn):
    return rows(conn, "SELECT max(version) FROM segment_versions WHERE segment = 'abandoners'")[0][0]


def wait_for(condition, what, timeout=90):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_scheduled_segment_tracks_changes(conn):
    execute_update(conn, f"CREATE SEGMENT abandoners SCHEDULE '*/2 * * * * *' AS {ABANDONERS}")
    before = ids(conn, ABANDONERS)
    assert len(before) > 3
    assert ids(conn, "SELECT user_id FROM segment_members('abandoners', 1)") == before

    # The scheduler runs it again without being asked.
    wait_for(
        lambda: rows(conn, "SELECT count(*) FROM segment_runs WHERE trigger = 'schedule' AND status = 'unchanged'")[0][0],
        "a scheduled run",
    )
    # Runs that find the same members commit no version.
    assert latest_version(conn) == 1
    settled = latest_version(conn)
    assert ids(conn, f"SELECT user_id FROM segment_members('abandoners', {settled})") == before

    # Two abandoners buy; a new user abandons a cart.
    buyers = sorted(before)[:2]
    newcomer = 90_000_001
    values = ", ".join(f"({u}, 'purchase', '2026-11-20T10:00:00Z')" for u in buyers)
    execute_update(
        conn,
        f"INSERT INTO events (user_id, event, ts) VALUES {values}, ({newcomer}, 'add_to_cart', '2026-11-20T10:00:00Z')",
    )
    after = ids(conn, ABANDONERS)
    assert after == (before - set(buyers)) | {newcomer}
    wait_for(
        lambda: ids(conn, "SELECT user_id FROM segment_members('abandoners')") == after,
        "a run that sees the new events",
    )

    # The changes since the version a consumer last saw are exactly the difference.
    changes = rows(
        conn,
        f"SELECT user_id, change, version FROM segment_changes('abandoners', {settled}) ORDER BY version",
    )
    net = {}
    for user, change, _ in changes:
        net[user] = change
    entered = {u for u, c in net.items() if c == "entered"}
    exited = {u for u, c in net.items() if c == "exited"}
    assert entered == after - before == {newcomer}
    assert exited == before - after == set(buyers)

    history = rows(
        conn,
        "SELECT version, members FROM segment_versions WHERE segment = 'abandoners' ORDER BY version",
    )
    # One change, one new version however many runs found it.
    assert [v for v, _ in history] == [1, 2]
    assert history[-1][1] == len(after)

    shown = {row[0]: row for row in rows(conn, "SELECT segment, schedule, version, members FROM segments")}
    assert shown["abandoners"][1] == "*/2 * * * * *"
    execute_update(conn, "ALTER SEGMENT abandoners DROP SCHEDULE")
    scheduled_runs = "SELECT count(*) FROM segment_runs WHERE trigger = 'schedule'"
    time.sleep(1)
    stopped_at = rows(conn, scheduled_runs)[0][0]
    time.sleep(4)
    assert rows(conn, scheduled_runs)[0][0] == stopped_at, "no scheduled runs after DROP SCHEDULE"
