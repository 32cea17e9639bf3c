"""Layering end to end over Flight SQL: typed traits, range audiences checked against DuckDB on
the same trait values, overlap against set arithmetic, split segments that keep every member's
group across refreshes, and holdouts."""

import math
import random
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pytest

from conftest import Server, Store

TRAITS = {
    "lifetime_orders": (
        "BIGINT",
        "SELECT user_id, count(*) FROM events WHERE event = 'purchase' GROUP BY user_id",
    ),
    "ltv": ("DOUBLE", "SELECT user_id, sum(revenue) FROM events WHERE event = 'purchase' GROUP BY user_id"),
    "last_seen": ("TIMESTAMP", "SELECT user_id, max(ts) FROM events GROUP BY user_id"),
    "plan": ("TEXT", "SELECT user_id, plan FROM profiles"),
    "mobile": ("BOOLEAN", "SELECT user_id, bool_or(device <> 'web') FROM events GROUP BY user_id"),
    "age": ("BIGINT", "SELECT user_id, CASE WHEN age % 7 = 0 THEN NULL ELSE age END FROM profiles"),
}
TAGS = {
    "vip": "SELECT user_id FROM profiles WHERE array_has(tags, 'vip')",
    "newsletter": "SELECT user_id FROM profiles WHERE array_has(tags, 'newsletter')",
}


def rows(conn, sql):
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetch_arrow_table()


def scalar(conn, sql):
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchone()[0]


def keys(conn, expression):
    return set(rows(conn, f"SELECT user_key FROM audience('{expression}')").column("user_key").to_pylist())


@pytest.fixture
def local_store(tmp_path):
    import os

    return Store(str(tmp_path / "store"), {k: v for k, v in os.environ.items() if not k.startswith("COHORT_")})


@pytest.fixture
def layered(local_store):
    """A demo store with every trait and tag above, and an ADBC connection to it."""
    import adbc_driver_flightsql.dbapi as flight_sql

    local_store.run("demo", "--users", "1500", "--events", "30000")
    server = Server(local_store)
    conn = flight_sql.connect(server.address, autocommit=True)
    for name, (value_type, query) in TRAITS.items():
        scalar(conn, f"CREATE TRAIT {name} TYPE {value_type} AS {query}")
    for name, query in TAGS.items():
        scalar(conn, f"CREATE TAG {name} AS {query}")
    yield conn
    conn.close()
    server.stop()


class Generator:
    """Random audience expressions, each with the DuckDB predicate that selects the same users
    from one row per user (`u`: the traits view's values and a boolean column per tag)."""

    def __init__(self, rng, values):
        self.rng = rng
        self.values = values

    def raw(self, name):
        value = self.rng.choice([v for v in self.values[name] if v is not None])
        if name == "ltv":
            value = round(value + self.rng.choice([-0.5, 0, 0.25]), 2)
        if name in ("lifetime_orders", "age") and self.rng.random() < 0.2:
            value = value + 0.5  # a fractional bound on a BIGINT
        if name == "last_seen":
            value = value.astimezone(timezone.utc).replace(microsecond=0)
        return value

    @staticmethod
    def render(name, value):
        """The literal in Cohort's expression and in DuckDB's SQL."""
        if name == "last_seen":
            text = value.strftime("%Y-%m-%d %H:%M:%S")
            return f'"{text}"', f"TIMESTAMPTZ '{text}+00'"
        if name == "plan":
            return value, f"'{value}'"
        return str(value), str(value)

    def literal(self, name):
        return self.render(name, self.raw(name))

    def term(self):
        kind = self.rng.choice(["compare", "compare", "interval", "tag", "bool", "text"])
        if kind == "tag":
            name = self.rng.choice(list(TAGS))
            return name, f"{name}"
        if kind == "bool":
            if self.rng.random() < 0.5:
                return "mobile", "coalesce(mobile, false)"
            value = self.rng.choice(["true", "false"])
            return f"mobile = {value}", f"coalesce(mobile = {value}, false)"
        if kind == "text":
            value = self.rng.choice(["free", "pro", "team", "enterprise"])
            op = self.rng.choice(["=", "!=", ":"])
            if op == ":":
                return f"plan:{value}", f"coalesce(plan = '{value}', false)"
            sql_op = "<>" if op == "!=" else op
            return f"plan {op} {value}", f"coalesce(plan {sql_op} '{value}', false)"
        name = self.rng.choice(["lifetime_orders", "ltv", "last_seen", "age", "plan"])
        if kind == "compare":
            op = self.rng.choice([">=", ">", "<", "<=", "=", "!="])
            text, sql = self.literal(name)
            sql_op = "<>" if op == "!=" else op
            return f"{name} {op} {text}", f"coalesce({name} {sql_op} {sql}, false)"
        low, high = sorted([self.raw(name), self.raw(name)])
        (low_text, low_sql), (high_text, high_sql) = self.render(name, low), self.render(name, high)
        opener, closer = self.rng.choice("[("), self.rng.choice("])")
        conditions = []
        if self.rng.random() < 0.15:
            low_text = ""
        else:
            conditions.append(f"{name} {'>=' if opener == '[' else '>'} {low_sql}")
        if self.rng.random() < 0.15:
            high_text = ""
        else:
            conditions.append(f"{name} {'<=' if closer == ']' else '<'} {high_sql}")
        conditions.append(f"{name} IS NOT NULL")
        return f"{name}:{opener}{low_text},{high_text}{closer}", f"coalesce({' AND '.join(conditions)}, false)"

    def expression(self, terms):
        text, sql = self.term()
        for _ in range(terms - 1):
            other_text, other_sql = self.term()
            op = self.rng.choice(["&", "|", "-", "^"])
            sql = {
                "&": f"({sql} AND {other_sql})",
                "|": f"({sql} OR {other_sql})",
                "-": f"({sql} AND NOT {other_sql})",
                "^": f"({sql} <> {other_sql})",
            }[op]
            text = f"({text} {op} {other_text})"
        return text, sql


def test_range_audiences_equal_duckdb_over_the_same_trait_values(layered):
    import duckdb

    conn = layered
    traits = rows(conn, "SELECT * FROM traits")
    everyone = rows(conn, "SELECT user_key FROM user_keys")
    tag_columns = {
        name: pa.array(sorted(keys(conn, name)), pa.int64()) for name in TAGS
    }
    db = duckdb.connect()
    db.execute("SET TimeZone = 'UTC'")
    db.register("traits_view", traits)
    db.register("everyone", everyone)
    select_tags = []
    for name, members in tag_columns.items():
        db.register(f"tag_{name}", pa.table({"user_key": members}))
        select_tags.append(f"user_key IN (SELECT user_key FROM tag_{name}) AS {name}")
    db.execute(
        "CREATE TABLE u AS SELECT e.user_key, t.* EXCLUDE (user_id, user_key), "
        f"{', '.join(select_tags)} FROM everyone e LEFT JOIN traits_view t USING (user_key)"
    )
    assert db.execute("SELECT count(*) FROM u").fetchone()[0] == everyone.num_rows
    values = {
        name: [r[0] for r in db.execute(f"SELECT DISTINCT {name} FROM u").fetchall()]
        for name in TRAITS
    }
    generator = Generator(random.Random(20261204), values)
    compared = 0
    nonempty = 0
    for i in range(220):
        text, predicate = generator.expression(1 + i % 5)
        expected = db.execute(f"SELECT count(*) FROM u WHERE {predicate}").fetchone()[0]
        got = scalar(conn, f"SELECT count(*) FROM audience('{text}')")
        assert got == expected, f"{text}\n  duckdb: {predicate}"
        compared += 1
        nonempty += expected > 0
    assert compared >= 200
    assert nonempty >= 100, "the expressions should mostly select someone"


def test_overlap_equals_set_arithmetic(layered):
    conn = layered
    expressions = ["vip", "lifetime_orders >= 2", "plan:pro | plan:enterprise", "ltv:[50,500) - newsletter"]
    sets = {e: keys(conn, e) for e in expressions}
    quoted = ", ".join(f"'{e}'" for e in expressions)
    overlap = rows(conn, f"SELECT * FROM audience_overlap({quoted})").to_pylist()
    assert len(overlap) == len(expressions) * (len(expressions) - 1) // 2
    pairs = [(a, b) for i, a in enumerate(expressions) for b in expressions[i + 1 :]]
    for row, (a, b) in zip(overlap, pairs):
        assert (row["a"], row["b"]) == (a, b)
        assert row["both"] == len(sets[a] & sets[b])
        assert row["a_only"] == len(sets[a] - sets[b])
        assert row["b_only"] == len(sets[b] - sets[a])
        union = len(sets[a] | sets[b])
        assert math.isclose(row["jaccard"], len(sets[a] & sets[b]) / union)


def test_show_traits_and_time_travel(layered):
    conn = layered
    shown = {row["name"]: row for row in rows(conn, "SHOW TRAITS").to_pylist()}
    assert sorted(shown) == sorted(TRAITS)
    for name, (value_type, query) in TRAITS.items():
        assert shown[name]["type"] == value_type
        assert shown[name]["query"] == query
        assert shown[name]["users"] == scalar(conn, f"SELECT count(*) FROM trait('{name}')")
    assert shown["age"]["users"] < scalar(conn, "SELECT count(*) FROM profiles"), "NULL values are no value"
    before_refresh = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    rich = scalar(conn, "SELECT count(*) FROM audience('ltv >= 300')")
    # New purchases move users across the threshold once the trait is refreshed.
    with conn.cursor() as cur:
        cur.adbc_ingest(
            "events",
            pa.table(
                {
                    "user_id": pa.array(list(range(1, 201)), pa.int64()),
                    "event": ["purchase"] * 200,
                    "ts": pa.array([datetime(2026, 12, 1, tzinfo=timezone.utc)] * 200, pa.timestamp("us", "UTC")),
                    "revenue": [1000.0] * 200,
                }
            ),
            mode="append",
        )
    assert scalar(conn, "SELECT count(*) FROM audience('ltv >= 300')") == rich
    scalar(conn, "REFRESH TRAIT ltv")
    now_rich = scalar(conn, "SELECT count(*) FROM audience('ltv >= 300')")
    assert now_rich > rich
    assert scalar(conn, f"SELECT count(*) FROM audience('ltv >= 300', '{before_refresh}')") == rich
    assert scalar(
        conn, f"SELECT count(*) FROM trait('ltv', '{before_refresh}') WHERE value >= 300"
    ) == rich
    assert scalar(conn, "SELECT count(*) FROM trait('ltv') WHERE value >= 300") == now_rich

    scalar(conn, "CREATE HOLDOUT global PERCENT 10")
    (holdout,) = rows(conn, "SHOW HOLDOUTS").to_pylist()
    assert (holdout["name"], holdout["percent"], holdout["seed"]) == ("global", 10.0, "global")
    users = scalar(conn, "SELECT count(*) FROM user_keys")
    assert holdout["users"] == scalar(
        conn, "SELECT count(*) FROM user_keys WHERE split_bucket(user_key, 'global') < 1000"
    )
    assert abs(holdout["users"] / users - 0.10) < 0.03
    assert keys(conn, "vip - holdout:global") == keys(conn, "vip") - keys(conn, "holdout:global")


def chi_square(table):
    total = sum(map(sum, table))
    rows_sum = [sum(r) for r in table]
    cols_sum = [sum(c) for c in zip(*table)]
    return sum(
        (table[i][j] - rows_sum[i] * cols_sum[j] / total) ** 2 / (rows_sum[i] * cols_sum[j] / total)
        for i in range(len(table))
        for j in range(len(table[0]))
    )


def test_split_groups_are_stable_balanced_and_independent(local_store):
    import adbc_driver_flightsql.dbapi as flight_sql

    server = Server(local_store)
    conn = flight_sql.connect(server.address, autocommit=True)
    rng = random.Random(7)
    users = 110_000
    member = [rng.random() < 0.95 for _ in range(users)]

    def load_profiles():
        with conn.cursor() as cur:
            cur.adbc_ingest(
                "profiles",
                pa.table({"user_id": pa.array(range(users), pa.int64()), "member": member}),
                mode="append",
            )

    try:
        load_profiles()
        query = "SELECT user_id FROM profiles WHERE member"
        scalar(conn, f"CREATE SEGMENT launch SPLIT (treatment 45, control 45, holdout 10) AS {query}")
        scalar(conn, f"CREATE SEGMENT other SPLIT (treatment 45, control 45, holdout 10) SEED 'other' AS {query}")
        shown = {row["name"]: row for row in rows(conn, "SHOW SEGMENTS").to_pylist()}
        assert (shown["launch"]["split"], shown["launch"]["seed"]) == ("treatment 45, control 45, holdout 10", "launch")
        assert shown["other"]["seed"] == "other"
        groups = {}
        for refresh in range(5):
            if refresh:
                # 3,000 members leave and 3,000 others (some of them earlier members) join.
                inside = [i for i in range(users) if member[i]]
                outside = [i for i in range(users) if not member[i]]
                for i in rng.sample(inside, 3000) + rng.sample(outside, 3000):
                    member[i] = not member[i]
                load_profiles()
                scalar(conn, "REFRESH SEGMENT launch")
            version = rows(conn, "SELECT * FROM segment_members('launch')")
            assert version.num_rows == sum(member)
            for key, group in zip(version.column("user_key").to_pylist(), version.column("split_group").to_pylist()):
                assert groups.setdefault(key, group) == group, f"user_key {key} changed group"
        shares = rows(
            conn,
            "SELECT split_group, count(*) AS n FROM segment_members('launch') GROUP BY split_group",
        ).to_pylist()
        total = sum(r["n"] for r in shares)
        assert total >= 100_000
        weights = {"treatment": 0.45, "control": 0.45, "holdout": 0.10}
        for r in shares:
            assert abs(r["n"] / total - weights[r["split_group"]]) < 0.01, shares
        joint = rows(
            conn,
            "SELECT a.split_group AS a, b.split_group AS b, count(*) AS n FROM segment_members('launch') a "
            "JOIN segment_members('other') b USING (user_key) GROUP BY 1, 2",
        ).to_pylist()
        names = list(weights)
        table = [[0] * 3 for _ in names]
        for r in joint:
            table[names.index(r["a"])][names.index(r["b"])] = r["n"]
        # Independent splits: chi-square with 4 degrees of freedom below its 0.1% critical value.
        assert chi_square(table) < 18.47, table
    finally:
        conn.close()
        server.stop()
