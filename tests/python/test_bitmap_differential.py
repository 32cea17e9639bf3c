"""Differential tests of the bitmap functions: random tag data and random tag expressions, with
audiences computed three ways that must agree — Cohort's bitmap functions over Flight SQL,
ClickHouse's groupBitmap*/bitmapAnd... (chdb) on the same rows as Parquet, and plain SQL set logic
(INTERSECT / UNION / EXCEPT) in Cohort itself."""

import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import private_server, set_logic_sql

# A plain import: without chdb these tests must fail, not skip, or a broken install would
# pass CI with no differential check at all.
import chdb  # noqa: E402

TAGS = ["a", "b", "c", "d", "e"]
EXPRESSIONS = 60
OPS = {
    # name: (Cohort bitmap function, ClickHouse function)
    "and": ("bitmap_and", "bitmapAnd"),
    "or": ("bitmap_or", "bitmapOr"),
    "xor": ("bitmap_xor", "bitmapXor"),
    "andnot": ("bitmap_andnot", "bitmapAndnot"),
}


def random_tags(seed):
    """Each tag holds a random share of 3,000 users whose ids spread beyond 32 bits."""
    rng = random.Random(seed)
    ids = [rng.randrange(0, 1 << 40) for _ in range(3_000)] + list(range(50))
    users, tags = [], []
    for tag in TAGS:
        share = rng.choice([0.05, 0.3, 0.6])
        for user in ids:
            if rng.random() < share:
                users.append(user)
                tags.append(tag)
                if rng.random() < 0.1:  # duplicates must not matter
                    users.append(user)
                    tags.append(tag)
    return pa.table(
        {
            "user_id": pa.array(users, pa.int64()),
            "event": tags,
            "ts": pa.array([1_767_225_600_000_000] * len(users), pa.timestamp("us", tz="UTC")),
        }
    )


def random_expression(rng, depth=0):
    """A random tree: leaves are tags, nodes (op, left, right)."""
    if depth >= 3 or (depth > 0 and rng.random() < 0.35):
        return rng.choice(TAGS)
    return (rng.choice(list(OPS)), random_expression(rng, depth + 1), random_expression(rng, depth + 1))


def cohort_bitmap(e):
    if isinstance(e, str):
        return f"t.{e}"
    op, left, right = e
    return f"{OPS[op][0]}({cohort_bitmap(left)}, {cohort_bitmap(right)})"


def clickhouse_bitmap(e):
    if isinstance(e, str):
        return e
    op, left, right = e
    return f"{OPS[op][1]}({clickhouse_bitmap(left)}, {clickhouse_bitmap(right)})"


def plain_sql(e):
    if isinstance(e, str):
        return f"SELECT user_id FROM events WHERE event = '{e}'"
    op, left, right = e
    return set_logic_sql(op, plain_sql(left), plain_sql(right))


@pytest.fixture(scope="module")
def tagged(tmp_path_factory):
    directory = tmp_path_factory.mktemp("bitmaps")
    table = random_tags(seed=4)
    parquet = directory / "tags.parquet"
    pq.write_table(table, parquet)
    with private_server(directory, [table]) as conn:
        yield conn, str(parquet)


def fetch_one(conn, sql):
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchall()[0]


def test_random_tag_expressions_agree_with_clickhouse_and_set_logic(tagged):
    conn, parquet = tagged
    rng = random.Random(11)
    per_tag = ", ".join(f"bitmap_agg(user_id) FILTER (WHERE event = '{t}') AS {t}" for t in TAGS)
    clickhouse_tags = ", ".join(
        f"(SELECT groupBitmapState(toUInt64(assumeNotNull(user_id))) FROM file('{parquet}', Parquet) WHERE event = '{t}') AS {t}"
        for t in TAGS
    )
    checked = 0
    for _ in range(EXPRESSIONS):
        e = random_expression(rng)
        ours_ids, ours_count = fetch_one(
            conn,
            f"SELECT bitmap_to_array(b), bitmap_cardinality(b) FROM "
            f"(SELECT {cohort_bitmap(e)} AS b FROM (SELECT {per_tag} FROM events) AS t)",
        )
        text = chdb.query(
            f"WITH {clickhouse_tags} SELECT arrayJoin(bitmapToArray({clickhouse_bitmap(e)}))", "TSV"
        ).bytes().decode()
        theirs = sorted(int(line) for line in text.split())
        (plain_count,) = fetch_one(conn, f"SELECT count(*) FROM ({plain_sql(e)})")
        assert ours_ids == theirs, f"{e}: cohort {len(ours_ids)} ids, clickhouse {len(theirs)}"
        assert ours_count == len(theirs) == plain_count, e
        checked += 1
    assert checked == EXPRESSIONS


def test_intersect_count_and_aggregates_agree_with_set_logic(tagged):
    conn, _ = tagged
    (ours,) = fetch_one(
        conn,
        "SELECT intersect_count(b, event, 'a', 'b', 'c') FROM "
        "(SELECT event, bitmap_agg(user_id) AS b FROM events GROUP BY event, user_id % 7)",
    )
    (plain,) = fetch_one(
        conn,
        "SELECT count(*) FROM (SELECT user_id FROM events WHERE event = 'a' INTERSECT "
        "SELECT user_id FROM events WHERE event = 'b' INTERSECT SELECT user_id FROM events WHERE event = 'c')",
    )
    assert ours == plain
    union, intersect = fetch_one(
        conn,
        "SELECT bitmap_cardinality(bitmap_union(b)), bitmap_cardinality(bitmap_intersect(b)) FROM "
        "(SELECT event, bitmap_agg(user_id) AS b FROM events GROUP BY event)",
    )
    (everyone,) = fetch_one(conn, "SELECT count(DISTINCT user_id) FROM events")
    (in_all,) = fetch_one(
        conn,
        "SELECT count(*) FROM (SELECT user_id FROM events GROUP BY user_id HAVING count(DISTINCT event) = 5)",
    )
    assert (union, intersect) == (everyone, in_all)
