"""A throwaway PostgreSQL 15 server on loopback, with tables of the same shape as Cohort's demo
`events` and `profiles`, so that what clients see of Cohort's catalog can be compared with what
they see of a real PostgreSQL."""

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

# Cohort's tables as PostgreSQL would declare them: Int64 -> bigint, Utf8 -> text, Float64 ->
# double precision, Timestamp(us, UTC) -> timestamptz, Date32 -> date, List<Utf8> -> text[];
# NOT NULL where the Arrow field is not nullable (the event and profile tables accept any
# column being null; the identity map does not). The segment and tag views are Cohort's own,
# here with the same names and column types.
SCHEMA = """
CREATE TABLE events (
    user_id bigint,
    event text,
    ts timestamp with time zone,
    event_date date,
    user_key bigint,
    person_key bigint,
    session_id bigint,
    page text,
    device text,
    revenue double precision
);
CREATE TABLE profiles (
    user_id bigint,
    user_key bigint,
    person_key bigint,
    country text,
    plan text,
    age bigint,
    ltv double precision,
    signup_at timestamp with time zone,
    tags text[]
);
CREATE TABLE user_keys (
    user_id text NOT NULL,
    user_key bigint NOT NULL
);
CREATE VIEW segment_runs AS SELECT NULL::text AS segment, NULL::text AS run_id, NULL::text AS trigger,
    NULL::timestamptz AS scheduled_at, NULL::timestamptz AS started_at, NULL::timestamptz AS finished_at,
    NULL::text AS status, NULL::bigint AS version, NULL::bigint AS members, NULL::bigint AS entered,
    NULL::bigint AS exited, NULL::text AS error;
CREATE VIEW segment_versions AS SELECT NULL::text AS segment, NULL::bigint AS version, NULL::text AS run_id,
    NULL::timestamptz AS committed_at, NULL::bigint AS members, NULL::bigint AS entered, NULL::bigint AS exited;
CREATE VIEW segments AS SELECT NULL::text AS segment, NULL::text AS schedule, NULL::bigint AS version,
    NULL::bigint AS members, NULL::bigint AS entered, NULL::bigint AS exited,
    NULL::timestamptz AS refreshed_at, NULL::text AS query;
CREATE VIEW tags AS SELECT NULL::text AS tag, NULL::text AS value, NULL::bigint AS users,
    NULL::timestamptz AS refreshed_at;
CREATE VIEW traits AS SELECT NULL::bigint AS user_id, NULL::bigint AS user_key;
CREATE VIEW identities AS SELECT NULL::text AS user_id, NULL::bigint AS user_key, NULL::bigint AS person_key;
CREATE VIEW identity_merges AS SELECT NULL::bigint AS version, NULL::bigint AS person_key,
    NULL::bigint AS merged_person_key, NULL::text AS rule, NULL::timestamptz AS merged_at;
CREATE VIEW persons AS SELECT NULL::bigint AS person_key, NULL::bigint[] AS user_ids, NULL::text AS country,
    NULL::text AS plan, NULL::bigint AS age, NULL::double precision AS ltv,
    NULL::timestamptz AS signup_at, NULL::text[] AS tags;
CREATE VIEW identity_refusals AS SELECT NULL::bigint AS version, NULL::text AS rule, NULL::text AS limited_by,
    NULL::text AS user_id, NULL::text AS other_user_id, NULL::bigint AS user_key,
    NULL::bigint AS other_user_key, NULL::timestamptz AS refused_at;
"""


def _bin_dir() -> Path:
    for candidate in [Path("/usr/lib/postgresql/15/bin")]:
        if (candidate / "initdb").exists():
            return candidate
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    raise RuntimeError("PostgreSQL 15 server binaries not found: apt-get install postgresql-15")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ReferencePostgres:
    """initdb + pg_ctl in a temporary directory; stopped and removed by `stop()`."""

    def __init__(self):
        self.bin = _bin_dir()
        self.directory = Path(tempfile.mkdtemp(prefix="cohort-reference-pg-"))
        self.port = _free_port()
        self.host = "127.0.0.1"
        # PostgreSQL refuses to run as root; CI runs as root, so the server runs as `postgres`.
        self.run_as = None
        if os.geteuid() == 0:
            self.run_as = "postgres"
            account = pwd.getpwnam(self.run_as)
            os.chown(self.directory, account.pw_uid, account.pw_gid)
        data = self.directory / "data"
        self._server_command(
            "initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C"
        )
        self._server_command(
            "pg_ctl", "-D", str(data), "-l", str(self.directory / "log"), "-w", "-t", "60",
            "-o", f"-p {self.port} -c listen_addresses={self.host} -k {self.directory}",
            "start",
        )
        self.data = data
        self.psql("-d", "postgres", "-c", "CREATE DATABASE cohort")
        self.psql("-c", SCHEMA)

    def _server_command(self, program: str, *args: str):
        command = [str(self.bin / program), *args]
        if self.run_as:
            command = ["runuser", "-u", self.run_as, "--", *command]
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=120, cwd=self.directory)

    def psql(self, *args: str) -> str:
        result = subprocess.run(
            ["psql", "-h", self.host, "-p", str(self.port), "-U", "postgres", "-d", "cohort", "-X",
             "-v", "ON_ERROR_STOP=1", *args],
            capture_output=True, text=True, timeout=60,
        )
        if result.returncode != 0:
            raise AssertionError(f"psql {args} against PostgreSQL failed:\n{result.stderr}")
        return result.stdout

    def stop(self):
        try:
            self._server_command("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)
