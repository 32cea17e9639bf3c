"""The load script in its short mode: 50 concurrent ADBC sessions of mixed requests for a few
seconds against a real server, with zero errors and RSS under the memory limit."""

import os
import subprocess
import sys

from conftest import REPO, cohort_bin


def test_load_short_mode():
    result = subprocess.run(
        [sys.executable, str(REPO / "benches" / "load_test.py"),
         "--sessions", "50", "--duration", "8", "--users", "2000", "--events", "40000",
         "--memory-limit", "1GiB"],
        env={**os.environ, "COHORT_BIN": cohort_bin()},
        capture_output=True, text=True, timeout=600,
    )
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 errors" in result.stdout
