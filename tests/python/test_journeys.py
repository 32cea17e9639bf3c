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
CAMPAIGNS = ["ad", "mail", "seo", None]


def random_histories(seed):
    """Bursty activity around the report's start: some users only before it, some only after,
    many with gaps of several periods, every user with ties."""
    rng = random.Random(seed)
    campaigns_rng = random.Random(seed + 1)
    users, times, names, campaigns = [], [], [], []
    start = int(START.timestamp())
    for user in range(1, USERS + 1):
        first = rng.randint(-40, 60)
        for _ in range(rng.randint(1, 20)):
            day = first + rng.choice([0, 0, 1, 2, 7, 15, 30, 45, 75])
            second = rng.choice([0, 1, 3_600, DAY - 1])
            users.append(user)
            times.append(start + day * DAY + second)
            names.append(rng.choice(EVENTS))
            campaigns.append(campaigns_rng.choice(CAMPAIGNS))
    return pa.table(
        {
            "user_id": pa.array(users, pa.int64()),
            "event": names,
            "campaign": pa.array(campaigns, pa.string()),
            "ts": pa.array([t * 1_000_000 for t in times], pa.timestamp("us", tz="UTC")),
        }
    )


@pytest.fixture(scope="module")
def histories(tmp_path_factory):
    table = random_histories(seed=20261203)
    with private_server(tmp_path_factory.mktemp("journeys"), [table]) as conn:
        yield conn, table.to_pylist()


def rows_by_user(rows):
    """Each user's rows, in arrival order."""
    by_user = {}
    for row in rows:
        by_user.setdefault(row["user_id"], []).append(row)
    return by_user


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


def path_reference(rows, max_steps, starts, dedupe):
    """Each user's path: events by (time, name), from the first that `starts` it, repeats
    dropped when deduplicating, at most `max_steps`."""
    paths = {}
    for user, history in rows_by_user(rows).items():
        history.sort(key=lambda row: (row["ts"], row["event"].encode()))
        start = next((i for i, row in enumerate(history) if starts(row)), len(history))
        path = []
        for row in history[start:]:
            if dedupe and path and path[-1] == row["event"]:
                continue
            path.append(row["event"])
        paths[user] = path[:max_steps]
    return paths


@pytest.mark.parametrize(
    "max_steps,start,starts,dedupe",
    [
        (6, "", lambda row: True, False),
        (4, ", event = 'purchase'", lambda row: row["event"] == "purchase", True),
        (1000, ", ts >= TIMESTAMP '2026-10-01 00:00:00'", lambda row: row["ts"] >= START + datetime.timedelta(days=24), True),
    ],
    ids=["first six", "from a purchase, deduplicated", "from October, whole"],
)
def test_event_path_and_path_edges_match_their_definitions(histories, max_steps, start, starts, dedupe):
    conn, rows = histories
    option = ", 'dedupe'" if dedupe else ""
    path_sql = f"event_path(ts, event, {max_steps}{start}{option})"
    with conn.cursor() as cur:
        cur.execute(f"SELECT user_id, {path_sql} FROM events GROUP BY user_id")
        ours = dict(cur.fetchall())
        cur.execute(f"SELECT * FROM path_edges((SELECT {path_sql} FROM events GROUP BY user_id))")
        edges = {(step, source, target): users for step, source, target, users in cur.fetchall()}
    expected = path_reference(rows, max_steps, starts, dedupe)
    assert any(len(path) >= 3 for path in expected.values())
    assert not start or any(not path for path in expected.values()), "some users must never start a path"
    mismatches = {u: (ours.get(u), expected[u]) for u in expected if ours.get(u) != expected[u]}
    assert not mismatches, f"(cohort, reference) {dict(list(mismatches.items())[:5])}"
    expected_edges = {}
    for path in expected.values():
        for step, (source, target) in enumerate(zip(path, path[1:]), start=1):
            expected_edges[(step, source, target)] = expected_edges.get((step, source, target), 0) + 1
    assert edges == expected_edges


def breakdown_reference(rows, window, steps, attribution):
    """window_funnel's default-mode scan restated over each user's events in (time, campaign,
    step) order, NULL campaigns first: per step the newest chain that reached it, a full chain
    ending the scan; then the campaign of the attributed step of the chain that reached the
    level."""
    by_user = rows_by_user(rows)
    out = {}
    for user, events in by_user.items():
        events.sort(key=lambda r: (r["ts"], r["campaign"] is not None, r["campaign"] or "", r["event"]))
        matches = sorted(
            (row["ts"], steps.index(row["event"]), i) for i, row in enumerate(events) if row["event"] in steps
        )
        chains = [None] * len(steps)
        for ts, k, i in matches:
            if k == 0:
                chains[0] = [(ts, i)]
            elif chains[k - 1] is not None and ts <= chains[k - 1][0][0] + window:
                chains[k] = chains[k - 1] + [(ts, i)]
                if k + 1 == len(steps):
                    break
        reached = [k for k in range(len(steps)) if chains[k] is not None]
        level = reached[-1] + 1 if reached else 0
        value = None
        if level:
            chain = chains[level - 1]
            if attribution == "first_touch":
                value = events[chain[0][1]]["campaign"]
            elif attribution == "last_touch":
                value = events[chain[-1][1]]["campaign"]
            else:
                k = int(attribution[len("step("):-1])
                value = events[chain[k - 1][1]]["campaign"] if k <= level else None
        out[user] = {"level": level, "value": value}
    return out


@pytest.mark.parametrize("attribution", ["first_touch", "last_touch", "step(2)"])
def test_window_funnel_breakdown_matches_its_definition(histories, attribution):
    conn, rows = histories
    steps = ["page_view", "login", "purchase"]
    conditions = ", ".join(f"event = '{step}'" for step in steps)
    with conn.cursor() as cur:
        cur.execute(
            f"SELECT user_id, window_funnel_breakdown(INTERVAL '2 days', '{attribution}', ts, campaign, "
            f"{conditions}) FROM events GROUP BY user_id"
        )
        ours = dict(cur.fetchall())
        cur.execute(f"SELECT user_id, window_funnel(INTERVAL '2 days', ts, {conditions}) FROM events GROUP BY user_id")
        levels = dict(cur.fetchall())
    window = datetime.timedelta(days=2)
    expected = breakdown_reference(rows, window, steps, attribution)
    assert sum(1 for e in expected.values() if e["level"] == 3) >= 20
    assert {e["value"] for e in expected.values()} == set(CAMPAIGNS)
    assert all(ours[user]["level"] == level for user, level in levels.items())
    mismatches = {u: (ours.get(u), expected[u]) for u in expected if ours.get(u) != expected[u]}
    assert not mismatches, f"(cohort, reference) {dict(list(mismatches.items())[:5])}"


def excluded_funnel_reference(rows, window, steps, exclusion, between):
    """window_funnel's default-mode scan with one exclusion restated: per step the newest live
    chain; an exclusion event strictly after a live chain's step `a` event, before it reaches
    step `b`, breaks it (it keeps its level); at equal times steps come first."""
    a, b = between
    by_user = rows_by_user(rows)
    out = {}
    for user, events in by_user.items():
        matches = []
        for row in events:
            matches.extend((row["ts"], k + 1) for k, step in enumerate(steps) if row["event"] == step)
            if row["event"] == exclusion:
                matches.append((row["ts"], len(steps) + 1))
        matches.sort()
        live = [None] * len(steps)  # per step: the chain's step times
        best = 0
        for ts, cond in matches:
            if cond == len(steps) + 1:
                for state in range(a - 1, b - 1):
                    if live[state] is not None and live[state][a - 1] < ts:
                        live[state] = None
                continue
            k = cond - 1
            if k == 0:
                live[0] = [ts]
                best = max(best, 1)
            elif live[k - 1] is not None and ts <= live[k - 1][0] + window:
                live[k] = live[k - 1] + [ts]
                best = max(best, k + 1)
                if k + 1 == len(steps):
                    break
        out[user] = best
    return out


@pytest.mark.parametrize(
    "steps,between",
    [
        (["page_view", "purchase"], (1, 2)),
        (["page_view", "purchase", "page_view"], (1, 3)),
        (["page_view", "purchase", "page_view"], (2, 3)),
    ],
)
def test_funnel_exclusions_match_their_definition(histories, steps, between):
    conn, rows = histories
    conditions = ", ".join(f"event = '{step}'" for step in steps)
    mode = f"exclude({len(steps) + 1}:{between[0]}-{between[1]})"
    with conn.cursor() as cur:
        cur.execute(
            f"SELECT user_id, window_funnel(INTERVAL '3 days', '{mode}', ts, {conditions}, event = 'login') "
            "FROM events GROUP BY user_id"
        )
        ours = dict(cur.fetchall())
        cur.execute(f"SELECT user_id, window_funnel(INTERVAL '3 days', ts, {conditions}) FROM events GROUP BY user_id")
        without = dict(cur.fetchall())
    expected = excluded_funnel_reference(rows, datetime.timedelta(days=3), steps, "login", between)
    assert sum(1 for u in expected if expected[u] < without[u]) >= 3, "the exclusion must break some chains"
    mismatches = {u: (ours.get(u), expected[u]) for u in expected if ours.get(u) != expected[u]}
    assert not mismatches, f"(cohort, reference) {dict(list(mismatches.items())[:5])}"


def unordered_funnel_reference(rows, window, steps):
    """The most distinct steps any user met within `window` (inclusive) of one of their step
    events, in any order."""
    by_user = rows_by_user(rows)
    out = {}
    for user, events in by_user.items():
        best = 0
        for start in events:
            if start["event"] not in steps:
                continue
            met = {
                e["event"]
                for e in events
                if e["event"] in steps and start["ts"] <= e["ts"] <= start["ts"] + window
            }
            best = max(best, len(met))
        out[user] = best
    return out


@pytest.mark.parametrize("days", [1, 7])
def test_unordered_funnel_matches_its_definition(histories, days):
    conn, rows = histories
    steps = ["purchase", "login", "page_view"]
    conditions = ", ".join(f"event = '{step}'" for step in steps)
    with conn.cursor() as cur:
        cur.execute(
            f"SELECT user_id, window_funnel(INTERVAL '{days} days', 'unordered', ts, {conditions}) "
            "FROM events GROUP BY user_id"
        )
        ours = dict(cur.fetchall())
        cur.execute(f"SELECT user_id, window_funnel(INTERVAL '{days} days', ts, {conditions}) FROM events GROUP BY user_id")
        ordered = dict(cur.fetchall())
    expected = unordered_funnel_reference(rows, datetime.timedelta(days=days), steps)
    assert sum(1 for u in expected if expected[u] > ordered[u]) >= 10, "order must matter for some users"
    mismatches = {u: (ours.get(u), expected[u]) for u in expected if ours.get(u) != expected[u]}
    assert not mismatches, f"(cohort, reference) {dict(list(mismatches.items())[:5])}"


def step_windows_reference(rows, windows, steps):
    """window_funnel's scan with one window per transition: per step the newest chain, step k + 1
    at most windows[k - 1] after that chain's step k; a full chain ends the scan."""
    by_user = rows_by_user(rows)
    out = {}
    for user, events in by_user.items():
        matches = sorted(
            (row["ts"], k + 1) for row in events for k, step in enumerate(steps) if row["event"] == step
        )
        latest = [None] * len(steps)  # per step: the newest chain's time at that step
        for ts, cond in matches:
            k = cond - 1
            if k == 0:
                latest[0] = ts
            elif latest[k - 1] is not None and ts <= latest[k - 1] + windows[k - 1]:
                latest[k] = ts
                if k + 1 == len(steps):
                    break
        reached = [k for k in range(len(steps)) if latest[k] is not None]
        out[user] = reached[-1] + 1 if reached else 0
    return out


def test_per_step_windows_match_their_definition(histories):
    conn, rows = histories
    steps = ["page_view", "login", "purchase"]
    conditions = ", ".join(f"event = '{step}'" for step in steps)
    with conn.cursor() as cur:
        cur.execute(
            "SELECT user_id, window_funnel(make_array(INTERVAL '2 days', INTERVAL '8 days'), ts, "
            f"{conditions}) FROM events GROUP BY user_id"
        )
        ours = dict(cur.fetchall())
        cur.execute(f"SELECT user_id, window_funnel(INTERVAL '10 days', ts, {conditions}) FROM events GROUP BY user_id")
        total = dict(cur.fetchall())
    day = datetime.timedelta(days=1)
    expected = step_windows_reference(rows, [2 * day, 8 * day], steps)
    assert sum(1 for u in expected if expected[u] != total[u]) >= 10, "per-step windows must matter for some users"
    mismatches = {u: (ours.get(u), expected[u]) for u in expected if ours.get(u) != expected[u]}
    assert not mismatches, f"(cohort, reference) {dict(list(mismatches.items())[:5])}"
