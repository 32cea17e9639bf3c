"""A store on S3 that cannot be used says why in one line, with what to set, before any
statement runs: missing credentials, wrong credentials, a missing bucket, an endpoint that is
down."""

import os
import subprocess

import pytest

from conftest import cohort_bin, create_bucket, free_port, moto_environment


def run(url, env, tmp_path):
    # No profile files and no instance metadata to fall back on: only what `env` says.
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        **env,
    }
    result = subprocess.run(
        [cohort_bin(), "sql", "--data", url, "SELECT count(*) FROM events"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def bucket(moto_endpoint):
    name = "cohort-errors"
    create_bucket(moto_endpoint, name)
    return name


def test_missing_credentials_name_the_variables(moto_endpoint, bucket, tmp_path):
    line = run(
        f"s3://{bucket}/store",
        {"AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": moto_endpoint, "AWS_ALLOW_HTTP": "true"},
        tmp_path,
    )
    assert line == (
        f"error: invalid configuration: cannot use the store s3://{bucket}/store/: no AWS credentials "
        "found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), and AWS_REGION; for "
        "S3-compatible storage also AWS_ENDPOINT_URL (AWS_ALLOW_HTTP=true for http://)"
    )


def test_a_missing_bucket_is_named(moto_endpoint, tmp_path):
    line = run("s3://no-such-bucket/store", moto_environment(moto_endpoint), tmp_path)
    assert line == (
        "error: invalid configuration: cannot use the store s3://no-such-bucket/store/: bucket "
        "'no-such-bucket' does not exist (Cohort creates tables, not buckets)"
    )


def test_an_endpoint_that_is_down_is_named(bucket, tmp_path):
    endpoint = f"http://127.0.0.1:{free_port()}"
    line = run(f"s3://{bucket}/store", moto_environment(endpoint), tmp_path)
    assert line.startswith(f"error: invalid configuration: cannot use the store s3://{bucket}/store/: ")
    assert "Connection refused" in line and line.endswith(f"(AWS_ENDPOINT_URL={endpoint})"), line

