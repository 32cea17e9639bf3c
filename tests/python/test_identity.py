"""Identity resolution end to end: generated visitors with anonymous devices, logins, shared
kiosks and e-mails are ingested with `cohort ingest`, identity is refreshed over Flight SQL,
and the persons must equal a union-find written here over the same pairs; a funnel
`GROUP BY person_key` must equal ClickHouse's (chdb) over the raw events once each identifier is
mapped to its person through that reference. With a LIMIT, no person may hold more login ids
than the limit, and every refused pair must join two different persons."""

import os
import random
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

# Without chdb this must fail, not skip.
import chdb

from conftest import Server, Store

PEOPLE = 3000
KIOSKS = 6
START = datetime(2026, 11, 2, tzinfo=timezone.utc)


def generate(seed):
    """Events and profiles of PEOPLE people. A person browses on 1-3 devices, most log in on
    some of them, some buy (as themselves or as a guest on a device); a few shared kiosks see
    logins of many people; profiles carry e-mails, sometimes shared by two accounts, sometimes
    empty or missing."""
    rng = random.Random(seed)
    events = []
    profiles = []

    def event(user, name, at, anonymous_id=None):
        events.append({"user_id": user, "event": name, "ts": at, "anonymous_id": anonymous_id})

    for person in range(PEOPLE):
        devices = [f"anon-{person}-{d}" for d in range(rng.randint(1, 3))]
        logged_in = rng.random() < 0.7
        user = f"user-{person}"
        at = START + timedelta(minutes=rng.randint(0, 60 * 24 * 5))
        for device in devices:
            event(device, "view", at)
            at += timedelta(minutes=rng.randint(1, 40))
            if logged_in and rng.random() < 0.8:
                event(user, "login", at, device)
                at += timedelta(minutes=rng.randint(1, 40))
            if rng.random() < 0.1:
                event(device, "purchase", at)  # a guest checkout
        if logged_in:
            if rng.random() < 0.5:
                event(user, "purchase", at + timedelta(minutes=rng.randint(0, 90)))
            if rng.random() < 0.1:
                kiosk = f"kiosk-{rng.randrange(KIOSKS)}"
                event(user, "login", at + timedelta(hours=2), kiosk)
            roll = rng.random()
            email = (
                f"p{person}@example.com" if roll < 0.6
                else f"family{person // 2}@example.com" if roll < 0.7
                else "" if roll < 0.8
                else None
            )
            profiles.append({"user_id": user, "email": email})
    for k in range(KIOSKS):
        event(f"kiosk-{k}", "view", START)
    events.sort(key=lambda e: e["ts"])
    return events, profiles


def login_pairs(events):
    return [(e["anonymous_id"], e["user_id"]) for e in events if e["event"] == "login" and e["anonymous_id"]]


def email_pairs(profiles):
    return [(p["user_id"], p["email"]) for p in profiles if p["email"]]


def components(identifiers, pairs):
    """Connected components by a plain union-find: identifier -> representative."""
    parent = {i: i for i in identifiers}

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        parent.setdefault(a, a)
        parent.setdefault(b, b)
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[ra] = rb
    return {i: find(i) for i in parent}


def rows(conn, sql):
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetch_arrow_table().to_pylist()


@pytest.fixture(scope="module")
def identity(tmp_path_factory):
    import adbc_driver_flightsql.dbapi as flight_sql

    directory = tmp_path_factory.mktemp("identity")
    events, profiles = generate(seed=20261207)
    events_file = directory / "events.parquet"
    pq.write_table(
        pa.table(
            {
                "user_id": [e["user_id"] for e in events],
                "event": [e["event"] for e in events],
                "ts": pa.array([e["ts"] for e in events], pa.timestamp("us", tz="UTC")),
                "anonymous_id": pa.array([e["anonymous_id"] for e in events], pa.string()),
            }
        ),
        events_file,
    )
    profiles_file = directory / "profiles.parquet"
    pq.write_table(pa.Table.from_pylist(profiles), profiles_file)
    store = Store(str(directory / "store"), {k: v for k, v in os.environ.items() if not k.startswith("COHORT_")})
    store.run("ingest", "--table", "events", str(events_file))
    store.run("ingest", "--table", "profiles", str(profiles_file))
    server = Server(store)
    conn = flight_sql.connect(server.address, autocommit=True)
    yield conn, events, profiles, str(events_file)
    conn.close()
    server.stop()


def persons_of(conn):
    return {r["user_id"]: r["person_key"] for r in rows(conn, "SELECT user_id, person_key FROM identities")}


def keys_of(conn):
    return {r["user_id"]: r["user_key"] for r in rows(conn, "SELECT user_id, user_key FROM identities")}


def partition(assignment):
    groups = {}
    for identifier, group in assignment.items():
        groups.setdefault(group, set()).add(identifier)
    return {frozenset(members) for members in groups.values()}


FUNNEL = "window_funnel(INTERVAL '2 hours', ts, event = 'view', event = 'login', event = 'purchase')"


def test_persons_are_the_connected_components_and_the_funnel_follows_them(identity):
    conn, events, profiles, events_file = identity
    rows(conn, "CREATE IDENTITY RULE login AS SELECT anonymous_id, user_id FROM events WHERE event = 'login'")
    rows(conn, "CREATE IDENTITY RULE email AS SELECT user_id, email FROM profiles")
    rows(conn, "REFRESH IDENTITY")

    pairs = login_pairs(events) + email_pairs(profiles)
    identifiers = {e["user_id"] for e in events} | {p["user_id"] for p in profiles}
    reference = components(identifiers, pairs)
    ours = persons_of(conn)
    assert set(ours) == set(reference), "identities lists every identifier, and only those"
    assert partition(ours) == partition(reference)
    # A person's key is its smallest user key.
    keys = keys_of(conn)
    for members in partition(ours):
        person = {ours[m] for m in members}
        assert person == {min(keys[m] for m in members)}
    assert len(partition(ours)) < len(identifiers) * 0.6, "the data links many identifiers"

    # A funnel per person against ClickHouse's over the raw events mapped through the reference.
    mapping = pa.table(
        {"identifier": list(reference), "person": [str(r) for r in reference.values()]}
    )
    mapping_file = os.path.join(os.path.dirname(events_file), "mapping.parquet")
    pq.write_table(mapping, mapping_file)
    theirs_text = chdb.query(
        f"SELECT level, count() FROM (SELECT m.person AS person, windowFunnel(7200)(toDateTime(e.ts), "
        f"e.event = 'view', e.event = 'login', e.event = 'purchase') AS level "
        f"FROM file('{events_file}', Parquet) AS e JOIN file('{mapping_file}', Parquet) AS m "
        f"ON e.user_id = m.identifier GROUP BY person) GROUP BY level ORDER BY level",
        "TSV",
    ).bytes().decode()
    theirs = {int(a): int(b) for a, b in (line.split("\t") for line in theirs_text.splitlines())}
    ours_levels = {
        r["level"]: r["n"]
        for r in rows(
            conn,
            f"SELECT level, count(*) AS n FROM (SELECT person_key, {FUNNEL} AS level FROM events "
            f"GROUP BY person_key) GROUP BY level",
        )
    }
    assert ours_levels == theirs
    # Stitching matters: per identifier, far fewer reach the purchase after a login.
    per_identifier = rows(
        conn,
        f"SELECT count(*) AS n FROM (SELECT user_id, {FUNNEL} AS level FROM events GROUP BY user_id) WHERE level = 3",
    )[0]["n"]
    assert per_identifier < theirs.get(3, 0)

    # A segment by person holds every identifier of the reference persons that bought.
    rows(conn, "CREATE SEGMENT buyers BY PERSON AS SELECT user_id FROM events WHERE event = 'purchase'")
    buyers = {e["user_id"] for e in events if e["event"] == "purchase"}
    buying_persons = [group for group in partition(reference) if group & buyers]
    members = rows(conn, "SELECT user_id, person_key FROM segment_members('buyers')")
    assert sorted(m["user_id"] for m in members) == sorted(set().union(*buying_persons))
    assert all(m["person_key"] == ours[m["user_id"]] for m in members)
    assert rows(conn, "SELECT members, persons FROM segments WHERE segment = 'buyers'") == [
        {"members": len(members), "persons": len(buying_persons)}
    ]


def test_a_limit_keeps_shared_kiosks_from_fusing_people(identity):
    conn, events, profiles, _ = identity
    rows(
        conn,
        "CREATE OR REPLACE IDENTITY RULE login PRIORITY 1 LIMIT 1 AS "
        "SELECT anonymous_id, user_id FROM events WHERE event = 'login'",
    )
    rows(conn, "CREATE OR REPLACE IDENTITY RULE email PRIORITY 2 AS SELECT user_id, email FROM profiles")
    rows(conn, "REFRESH IDENTITY")
    ours = persons_of(conn)
    # The limit counts the identifiers the rule names in its second column: customers with a
    # login (a customer who never logged in is no login id, whatever links it).
    login_ids = {user for _, user in login_pairs(events)}
    for members in partition(ours):
        logins = sorted(members & login_ids)
        assert len(logins) <= 1, f"a person holds {logins}"
    refused = rows(conn, "SELECT rule, limited_by, user_id, other_user_id FROM identity_refusals "
                         "WHERE version = (SELECT max(version) FROM identity_refusals)")
    assert refused, "kiosks and shared family e-mails must be refused"
    for row in refused:
        assert ours[row["user_id"]] != ours[row["other_user_id"]]
    assert any(r["rule"] == "email" and r["limited_by"] == "login" for r in refused), (
        "a shared e-mail would give one person two login ids"
    )
    # Without the kiosks' logins and shared e-mails, the result is the plain components of
    # the pairs that were kept; each kept pair's two identifiers share a person.
    for a, b in login_pairs(events) + email_pairs(profiles):
        if not any({a, b} == {r["user_id"], r["other_user_id"]} for r in refused):
            assert ours[a] == ours[b], (a, b)
    status = rows(conn, "SHOW IDENTITY")[0]
    assert status["refused"] == len(refused)
    assert status["rules"] == 2
    assert status["persons"] == len(partition(ours))
