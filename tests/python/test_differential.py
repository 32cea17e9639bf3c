"""Differential tests: Cohort's behavioural functions against ClickHouse itself (chdb).

Random event sets with dense timestamp ties are ingested into Cohort through ADBC and written
as Parquet for chdb; every user's result must be identical, in every mode and several windows.
"""

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
        assert len(theirs) == USERS
        mismatches = {u: (ours.get(u), theirs[u]) for u in theirs if ours.get(u) != theirs[u]}
        assert not mismatches, f"window {window}, modes {modes}: (cohort, clickhouse) {dict(list(mismatches.items())[:10])}"
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
    assert len(theirs) == USERS
    mismatches = {u: (ours.get(u), theirs[u]) for u in theirs if ours.get(u) != theirs[u]}
    assert not mismatches, dict(list(mismatches.items())[:10])


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
        assert len(theirs) == USERS
        mismatches = {u: (ours.get(u), theirs[u]) for u in theirs if ours.get(u) != theirs[u]}
        assert not mismatches, f"{ours_fn} '{pattern}': (cohort, clickhouse) {dict(list(mismatches.items())[:10])}"
