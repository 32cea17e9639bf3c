"""Differential tests: Cohort's behavioural functions against ClickHouse itself (chdb).

Random event sets with dense timestamp ties are ingested into Cohort through ADBC and written
as Parquet for chdb; every user's result must be identical, in every mode and several windows.
"""

import datetime
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import private_server

# A plain import: without chdb these tests must fail, not skip, or a broken install would
# pass CI with no differential check at all.
import chdb  # noqa: E402

USERS = 400
STEPS = ["a", "b", "c", "d"]
MODE_SETS = [
    [],
    ["strict_deduplication"],
    ["strict_order"],
    ["strict_increase"],
    ["strict_once"],
    ["strict_order", "allow_reentry"],
    ["strict_once", "strict_increase", "strict_deduplication"],
    ["strict_order", "strict_increase"],
]
WINDOWS = [1, 10, 60]
BASE = 1_767_225_600  # 2026-01-01T00:00:00Z


def events_table(users, times, names):
    """Events with `ts` for Cohort and the same instant as integer seconds `t` for ClickHouse."""
    return pa.table(
        {
            "user_id": pa.array(users, pa.int64()),
            "event": names,
            "ts": pa.array([t * 1_000_000 for t in times], pa.timestamp("us", tz="UTC")),
            "t": pa.array(times, pa.int64()),
        }
    )


def random_events(seed):
    rng = random.Random(seed)
    users, times, names = [], [], []
    for user in range(1, USERS + 1):
        span = rng.choice([5, 30, 120])
        for _ in range(rng.randint(1, 25)):
            users.append(user)
            times.append(BASE + rng.randint(0, span))
            names.append(rng.choice(STEPS + ["x"]))
    return events_table(users, times, names)


SEQUENCE_OFFSET = 100_000  # user ids of the tie-free data set


def tie_free_events(seed):
    """Distinct timestamps per user: ClickHouse orders sequence events with equal timestamps
    arbitrarily, so only tie-free histories have one right answer."""
    rng = random.Random(seed)
    users, times, names = [], [], []
    for user in range(SEQUENCE_OFFSET + 1, SEQUENCE_OFFSET + USERS + 1):
        for t in sorted(rng.sample(range(0, 400), rng.randint(1, 30))):
            users.append(user)
            times.append(BASE + t)
            names.append(rng.choice(STEPS + ["x"]))
    return events_table(users, times, names)


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    directory = tmp_path_factory.mktemp("differential")
    table = random_events(seed=20261123)
    parquet = directory / "events.parquet"
    pq.write_table(table, parquet)
    sequences = tie_free_events(seed=7)
    pq.write_table(sequences, directory / "sequences.parquet")
    with private_server(directory, [table, sequences]) as conn:
        yield conn, str(parquet)


def cohort_rows(conn, sql):
    with conn.cursor() as cur:
        cur.execute(sql)
        return {row[0]: row[1] for row in cur.fetchall()}


def clickhouse_rows(sql, convert=int):
    text = chdb.query(sql, "TSV").bytes().decode()
    rows = {}
    for line in text.splitlines():
        user, value = line.split("\t")
        rows[int(user)] = convert(value)
    return rows


def assert_agree(ours, theirs, what, users=USERS):
    """Every one of the `users` users has ClickHouse's answer in Cohort too."""
    assert len(theirs) == users
    mismatches = {u: (ours.get(u), theirs[u]) for u in theirs if ours.get(u) != theirs[u]}
    assert not mismatches, f"{what}: (cohort, clickhouse) {dict(list(mismatches.items())[:10])}"


def conditions(column="event"):
    return ", ".join(f"{column} = '{s}'" for s in STEPS)


@pytest.mark.parametrize("modes", MODE_SETS, ids=lambda m: "+".join(m) or "default")
def test_window_funnel_matches_clickhouse(loaded, modes):
    conn, parquet = loaded
    compared = 0
    for window in WINDOWS:
        mode_arg = f"'{', '.join(modes)}', " if modes else ""
        ours = cohort_rows(
            conn, f"SELECT user_id, window_funnel({window}, {mode_arg}ts, {conditions()}) FROM events GROUP BY user_id"
        )
        params = ", ".join([str(window)] + [f"'{m}'" for m in modes])
        theirs = clickhouse_rows(
            f"SELECT user_id, windowFunnel({params})(toUInt32(t), {conditions()}) "
            f"FROM file('{parquet}', Parquet) GROUP BY user_id"
        )
        assert_agree(ours, theirs, f"window {window}, modes {modes}")
        compared += len(theirs)
    assert compared == USERS * len(WINDOWS)


@pytest.mark.parametrize("conditions_count", [2, 3, 4, 5])
def test_retention_matches_clickhouse(loaded, conditions_count):
    conn, parquet = loaded
    names = (STEPS + ["x"])[:conditions_count]
    # Mix event and time conditions, as cohort retention queries do.
    conds = [f"event = '{n}'" for n in names[:-1]] + [f"t >= {BASE + 30}"]
    ours = cohort_rows(conn, f"SELECT user_id, retention({', '.join(conds)}) FROM events GROUP BY user_id")
    theirs = clickhouse_rows(
        f"SELECT user_id, retention({', '.join(conds)}) FROM file('{parquet}', Parquet) GROUP BY user_id",
        convert=lambda v: [int(x) for x in v.strip("[]").split(",")],
    )
    assert_agree(ours, theirs, f"retention({', '.join(conds)})")


def test_retention_totals_match_clickhouse(loaded):
    conn, parquet = loaded
    conds = ", ".join(f"event = '{s}'" for s in STEPS)
    with conn.cursor() as cur:
        cur.execute(
            f"SELECT sum_for_each(r) FROM (SELECT user_id, retention({conds}) AS r FROM events "
            f"WHERE user_id <= {USERS} GROUP BY user_id)"
        )
        ours = cur.fetchone()[0]
    theirs = chdb.query(
        f"SELECT sumForEach(r) FROM (SELECT user_id, retention({conds}) AS r FROM file('{parquet}', Parquet) GROUP BY user_id)",
        "TSV",
    ).bytes().decode().strip()
    assert ours == [int(x) for x in theirs.strip("[]").split(",")]


PATTERNS = [
    "(?1)(?2)",
    "(?1).*(?2)",
    "(?1).*(?2).*(?3)",
    "(?1).(?2)",
    "(?2)(?1)(?2)",
    "(?1)(?t<=10)(?2)",
    "(?1).*(?2)(?t<30).*(?3)",
    "(?1)(?t>20).*(?2)",
    "(?1)(?t>=5)(?2)(?t==3)(?3)",
    "(?1).*(?t<=60)(?4)",
]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_sequence_match_and_count_match_clickhouse(loaded, pattern):
    conn, parquet = loaded
    sequences = parquet.replace("events.parquet", "sequences.parquet")
    conds = conditions()
    where = f"user_id > {SEQUENCE_OFFSET}"
    for ours_fn, theirs_fn, convert in [
        ("sequence_match", "sequenceMatch", lambda v: bool(int(v))),
        ("sequence_count", "sequenceCount", int),
    ]:
        ours = cohort_rows(conn, f"SELECT user_id, {ours_fn}('{pattern}', ts, {conds}) FROM events WHERE {where} GROUP BY user_id")
        theirs = clickhouse_rows(
            f"SELECT user_id, {theirs_fn}('{pattern}')(toUInt32(t), {conds}) FROM file('{sequences}', Parquet) GROUP BY user_id",
            convert=convert,
        )
        assert_agree(ours, theirs, f"{ours_fn} '{pattern}'")


@pytest.mark.parametrize("period,origin", [(1, None), (7, None), (30, BASE + 13), (45, BASE - 1)])
def test_active_periods_match_clickhouse(loaded, period, origin):
    """Stickiness against ClickHouse's count of distinct bins (`uniqExactIf`), every user."""
    conn, parquet = loaded
    for active in ["event = 'a'", "event IN ('b', 'c')", "t >= 0"]:
        origin_arg = "" if origin is None else f", TIMESTAMP '{datetime_text(origin)}'"
        ours = cohort_rows(
            conn,
            f"SELECT user_id, active_periods({period}, ts, {active}{origin_arg}) FROM events "
            f"WHERE user_id <= {USERS} GROUP BY user_id",
        )
        theirs = clickhouse_rows(
            # floor, not intDiv (which truncates towards zero): times before the origin are
            # in the periods before it, as date_bin puts them.
            f"SELECT user_id, uniqExactIf(toInt64(floor((t - {origin or 0}) / {period})), {active}) "
            f"FROM file('{parquet}', Parquet) GROUP BY user_id"
        )
        assert_agree(ours, theirs, f"period {period}, origin {origin}, {active}")


def datetime_text(seconds):
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


NEXT_NODE_USERS = 1200
NEXT_NODE_PAIRS = [
    ("forward", "head"),
    ("forward", "first_match"),
    ("forward", "last_match"),
    ("backward", "tail"),
    ("backward", "first_match"),
    ("backward", "last_match"),
]


def next_node_events(seed, ties, first_user):
    """Short histories over few events. With ties, many rows share a time: ClickHouse orders
    them by value, as Cohort does, and the conditions here depend on the value alone, so rows
    equal in both are interchangeable and the answer has one right value."""
    rng = random.Random(seed)
    users, times, names = [], [], []
    for user in range(first_user, first_user + NEXT_NODE_USERS):
        count = rng.randint(1, 10)
        offsets = sorted(rng.choices(range(4), k=count)) if ties else sorted(rng.sample(range(600), count))
        for t in offsets:
            users.append(user)
            times.append(BASE + t)
            names.append(rng.choice(["a", "b", "c", "x"]))
    rows = list(zip(users, times, names))
    rng.shuffle(rows)  # arrival order must not matter
    users, times, names = (list(column) for column in zip(*rows))
    return events_table(users, times, names)


NEXT_NODE_DATA = {"tie-free": (500_000, False), "ties": (600_000, True)}


@pytest.fixture(scope="module")
def next_node_loaded(tmp_path_factory):
    directory = tmp_path_factory.mktemp("next_node")
    tables = {}
    for name, (first_user, ties) in NEXT_NODE_DATA.items():
        tables[name] = next_node_events(seed=first_user, ties=ties, first_user=first_user)
        pq.write_table(tables[name], directory / f"{name}.parquet")
    with private_server(directory, list(tables.values())) as conn:
        yield conn, directory


@pytest.mark.parametrize("data", list(NEXT_NODE_DATA))
@pytest.mark.parametrize("direction,base", NEXT_NODE_PAIRS, ids=lambda v: v)
def test_sequence_next_node_matches_clickhouse(next_node_loaded, data, direction, base):
    """Every user of each data set, for chains of 0 to 3 steps and two base conditions."""
    conn, directory = next_node_loaded
    first_user, _ = NEXT_NODE_DATA[data]
    users = f"user_id >= {first_user} AND user_id < {first_user + NEXT_NODE_USERS}"
    chains = [[], ["event = 'a'"], ["event = 'a'", "event = 'b'"], ["event IN ('a', 'b')", "event = 'c'", "event != 'x'"]]
    compared = answered = 0
    for chain in chains:
        if not chain and base.endswith("match"):
            continue
        for base_condition in ["true", "event != 'c'"]:
            conditions = "".join(f", {c}" for c in [base_condition, *chain])
            ours = cohort_rows(
                conn,
                f"SELECT user_id, sequence_next_node('{direction}', '{base}', ts, event{conditions}) "
                f"FROM events WHERE {users} GROUP BY user_id",
            )
            theirs = clickhouse_rows(
                f"SELECT user_id, sequenceNextNode('{direction}', '{base}')(toUInt32(t), event{conditions}) "
                f"FROM file('{directory / data}.parquet', Parquet) GROUP BY user_id "
                "SETTINGS allow_experimental_funnel_functions = 1",
                convert=lambda v: None if v == "\\N" else v,
            )
            answers = sum(v is not None for v in theirs.values())
            assert answers > 0, f"no answer to compare: {direction} {base} {conditions}"
            answered += answers
            assert_agree(ours, theirs, f"{direction} {base} {conditions}", users=NEXT_NODE_USERS)
            compared += 1
    assert compared >= 6 and answered > NEXT_NODE_USERS // 2, (compared, answered)
