"""Journey functions through the server against references written here in Python over the
raw events: random histories are ingested over ADBC, each user's answer is worked out from
the functions' definitions (PostHog's, where ClickHouse has no such function), and every
user must agree.
"""

import datetime
import random

import pyarrow as pa
import pytest

from conftest import private_server

USERS = 500
DAY = 86_400
START = datetime.datetime(2026, 9, 7, tzinfo=datetime.timezone.utc)  # a Monday
EVENTS = ["login", "page_view", "purchase"]


def random_histories(seed):
    """Bursty activity around the report's start: some users only before it, some only after,
    many with gaps of several periods, every user with ties."""
    rng = random.Random(seed)
    users, times, names = [], [], []
    start = int(START.timestamp())
    for user in range(1, USERS + 1):
        first = rng.randint(-40, 60)
        for _ in range(rng.randint(1, 20)):
            day = first + rng.choice([0, 0, 1, 2, 7, 15, 30, 45, 75])
            second = rng.choice([0, 1, 3_600, DAY - 1])
            users.append(user)
            times.append(start + day * DAY + second)
            names.append(rng.choice(EVENTS))
    return pa.table(
        {
            "user_id": pa.array(users, pa.int64()),
            "event": names,
            "ts": pa.array([t * 1_000_000 for t in times], pa.timestamp("us", tz="UTC")),
        }
    )


@pytest.fixture(scope="module")
def histories(tmp_path_factory):
    table = random_histories(seed=20261203)
    with private_server(tmp_path_factory.mktemp("journeys"), [table]) as conn:
        yield conn, table.to_pylist()


def lifecycle_reference(rows, period_days, periods, active):
    """Each user's (period start, status) list, decided period by period from the definitions."""
    period = datetime.timedelta(days=period_days)
    active_periods = {}
    for row in rows:
        bins = active_periods.setdefault(row["user_id"], set())
        if active(row):
            bins.add((row["ts"] - START) // period)
    out = {}
    for user, bins in active_periods.items():
        statuses = []
        for k in range(periods):
            now, before = k in bins, k - 1 in bins
            earlier = any(b < k - 1 for b in bins)
            if now and not before and not earlier:
                status = "new"
            elif now and before:
                status = "returning"
            elif now:
                status = "resurrecting"
            elif before:
                status = "dormant"
            else:
                continue
            statuses.append((START + k * period, status))
        out[user] = statuses
    return out


@pytest.mark.parametrize(
    "period_days,periods,condition,active",
    [
        (1, 45, "true", lambda row: True),
        (7, 8, "event = 'purchase'", lambda row: row["event"] == "purchase"),
        (30, 2, "event IN ('login', 'purchase')", lambda row: row["event"] in ("login", "purchase")),
    ],
    ids=["daily", "weekly purchases", "monthly logins or purchases"],
)
def test_lifecycle_matches_posthog_definitions(histories, period_days, periods, condition, active):
    conn, rows = histories
    with conn.cursor() as cur:
        cur.execute(
            f"SELECT user_id, lifecycle(INTERVAL '{period_days} days', {periods}, ts, {condition}, "
            f"TIMESTAMP '{START:%Y-%m-%d %H:%M:%S}') FROM events GROUP BY user_id"
        )
        ours = {
            user: [(entry["period"], entry["status"]) for entry in entries]
            for user, entries in cur.fetchall()
        }
    expected = lifecycle_reference(rows, period_days, periods, active)
    assert len(expected) == USERS
    statuses = {status for entries in expected.values() for _, status in entries}
    assert statuses == {"new", "returning", "resurrecting", "dormant"}, "the data must exercise every status"
    mismatches = {u: (ours.get(u), expected[u]) for u in expected if ours.get(u) != expected[u]}
    assert not mismatches, f"(cohort, reference) {dict(list(mismatches.items())[:5])}"
