"""The README's examples, run: every fenced block marked `doctest` is executed in order against
one fresh demo store (and a server on it), and the output it shows is compared.

Conventions, so that the README reads naturally and every example stays true:

- ```` ```sh doctest ````: shell commands, run with bash in a scratch directory whose
  `./cohort-data` is the demo store, with `cohort` on PATH. A command may be followed directly (no
  blank line) by `# ` lines: the output it prints (stdout and stderr together). An output starting
  `error:` means the command must fail; otherwise it must succeed. `# ...` stands for any lines.
- ```` ```sql doctest ````: statements run in order by `cohort sql -f -` against the server; every
  one must succeed. A ```` ```text output ```` block right after it is what `cohort sql` prints.
- ```` ```python doctest ````: run by the Python of the test suite (ADBC and pyarrow installed);
  a following ```` ```text output ```` block is its standard output.
- `README_DOCTEST_SHOW=1 pytest -s tests/python/test_readme.py` prints what every block printed,
  to write or update its output block.
- The server's real addresses replace the documented defaults (127.0.0.1:50051, localhost:50051,
  127.0.0.1:5433) wherever they appear.
"""

import difflib
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import REPO, Server, Store, cohort_bin

README = REPO / "README.md"
FENCE = re.compile(r"^```(.*)$")


@dataclass
class Block:
    language: str
    flags: set
    line: int
    text: str
    output: "str | None" = None


def blocks(markdown: str) -> list:
    """The fenced blocks of `markdown`, each runnable one with the output block that follows it."""
    found, current, lines = [], None, []
    for number, line in enumerate(markdown.splitlines(), start=1):
        fence = FENCE.match(line)
        if current is None:
            if fence:
                words = fence.group(1).split()
                current = Block(words[0] if words else "", set(words[1:]), number + 1, "")
                lines = []
            elif line.strip() and found and found[-1].flags >= {"doctest"} and found[-1].output is None:
                # Prose between a runnable block and the next one: that next block is not its output.
                found[-1].flags.add("prose-after")
        elif fence and not fence.group(1).strip():
            current.text = "\n".join(lines) + "\n"
            previous = found[-1] if found else None
            if (
                "output" in current.flags
                and previous is not None
                and "doctest" in previous.flags
                and "prose-after" not in previous.flags
                and previous.output is None
            ):
                previous.output = current.text
            else:
                found.append(current)
            current = None
        else:
            lines.append(line)
    assert current is None, f"README.md: the block opened at line {current.line - 1} is never closed"
    return found


def runnable() -> list:
    return [b for b in blocks(README.read_text()) if "doctest" in b.flags]


def line_matches(expected: str, actual: str) -> bool:
    """Equal, or equal but for the stretches that `...` stands for within the line."""
    if "..." not in expected:
        return expected == actual
    pattern = ".*".join(re.escape(part) for part in expected.split("..."))
    return re.fullmatch(pattern, actual) is not None


def matches(expected: str, actual: str) -> bool:
    """`expected` line by line, with a line `...` standing for any number of lines and `...`
    within a line for any text."""
    expected_lines = [line.rstrip() for line in expected.strip("\n").splitlines()]
    actual_lines = [line.rstrip() for line in actual.strip("\n").splitlines()]

    def match(e: int, a: int) -> bool:
        if e == len(expected_lines):
            return a == len(actual_lines)
        if expected_lines[e] == "...":
            return any(match(e + 1, later) for later in range(a, len(actual_lines) + 1))
        return a < len(actual_lines) and line_matches(expected_lines[e], actual_lines[a]) and match(e + 1, a + 1)

    return match(0, 0)


@dataclass
class ShellStep:
    script: str
    line: int
    output: list = field(default_factory=list)


def shell_steps(block: Block) -> list:
    """Commands of a shell block, each with the `# ` output lines written directly under it.
    Consecutive command lines are one step; a blank line or output ends a step."""
    steps, pending, heredoc, in_output, start = [], [], None, False, block.line

    def flush():
        nonlocal pending
        if pending:
            steps.append(ShellStep("\n".join(pending), start))
            pending = []

    for offset, line in enumerate(block.text.splitlines()):
        if heredoc is not None:
            pending.append(line)
            if line.strip() == heredoc:
                heredoc = None
            continue
        if line.startswith("#"):
            if pending:
                flush()
                in_output = True
            if in_output:
                steps[-1].output.append(line[2:] if line.startswith("# ") else line[1:])
            continue
        in_output = False
        if not line.strip():
            flush()
            continue
        if not pending:
            start = block.line + offset
        pending.append(line)
        opened = re.search(r"<<-?\s*['\"]?(\w+)['\"]?", line)
        if opened:
            heredoc = opened.group(1)
    flush()
    return steps


@pytest.fixture(scope="module")
def tour(tmp_path_factory):
    """A scratch directory holding the demo store as ./cohort-data, with a server on it."""
    directory = tmp_path_factory.mktemp("readme")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COHORT_", "AWS_"))}
    # `cohort` as built, and `python3` with the test suite's packages (grpcio-tools, ADBC).
    env["PATH"] = os.pathsep.join([str(Path(cohort_bin()).parent), str(Path(sys.executable).parent), env["PATH"]])
    # Examples that use the repository's files (proto/) run as if from a checkout.
    (directory / "proto").symlink_to(REPO / "proto")
    env["COHORT_HISTORY"] = str(directory / "history")
    store = Store(str(directory / "cohort-data"), env)
    store.run("demo")
    server = Server(store)
    host, port = server.address.removeprefix("grpc://").rsplit(":", 1)
    addresses = {
        "127.0.0.1:50051": f"{host}:{port}",
        "localhost:50051": f"localhost:{port}",
        "127.0.0.1:5433": server.pg_address,
    }
    yield directory, env, addresses
    server.stop()


def substitute(text: str, addresses: dict) -> str:
    for documented, real in addresses.items():
        text = text.replace(documented, real)
    return text


def run_shell(step: ShellStep, directory, env, addresses):
    return subprocess.run(
        ["bash", "-o", "pipefail", "-c", substitute(step.script, addresses)],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def check_sh(block, directory, env, addresses):
    for step in shell_steps(block):
        result = run_shell(step, directory, env, addresses)
        shown = (result.stdout + result.stderr).strip("\n")
        where = f"README.md line {step.line}:\n{step.script}"
        show(block, shown)
        if step.output:
            expected = "\n".join(step.output)
            wants_error = expected.startswith("error:")
            assert (result.returncode != 0) == wants_error, f"{where}\nexit {result.returncode}:\n{shown}"
            assert_shows(expected, shown, where)
        else:
            assert result.returncode == 0, f"{where}\nfailed with exit {result.returncode}:\n{shown}"


def assert_shows(expected: str, actual: str, where: str):
    if not matches(expected, actual):
        diff = "\n".join(difflib.unified_diff(
            expected.strip("\n").splitlines(), actual.strip("\n").splitlines(), "README", "printed", lineterm=""
        ))
        pytest.fail(f"{where}: the output differs from what the README shows\n{diff}", pytrace=False)


def show(block, printed):
    if os.environ.get("README_DOCTEST_SHOW"):
        print(f"\n--- README.md line {block.line} ({block.language}) printed:\n{printed}")


def check_output(block, command, stdin, directory, env):
    """Runs `command` (fed `stdin`): it must succeed and print the block's output block, if any."""
    result = subprocess.run(
        command, input=stdin, cwd=directory, env=env, capture_output=True, text=True, timeout=300
    )
    where = f"README.md line {block.line}"
    show(block, result.stdout)
    assert result.returncode == 0, f"{where}: {result.stderr}"
    if block.output is not None:
        assert_shows(block.output, result.stdout, where)


def check_sql(block, directory, env, addresses):
    server = f"grpc://{addresses['127.0.0.1:50051']}"
    check_output(block, [cohort_bin(), "sql", "--connect", server, "-f", "-"], block.text, directory, env)


def check_python(block, directory, env, addresses):
    check_output(block, [sys.executable, "-c", substitute(block.text, addresses)], None, directory, env)


CHECKS = {"sh": check_sh, "sql": check_sql, "python": check_python}


def test_the_readme_marks_examples_runnable():
    found = runnable()
    languages = {b.language for b in found}
    assert {"sh", "sql", "python"} <= languages, languages
    for block in found:
        assert block.language in CHECKS, f"README.md line {block.line}: no runner for '{block.language}'"


def test_every_runnable_readme_example_works(tour):
    directory, env, addresses = tour
    missing = [tool for tool in ("psql",) if shutil.which(tool) is None]
    assert not missing, f"the README's examples use {missing}: install them (.ci/run does)"
    # In README order: later examples build on earlier ones (an ingested file, a created tag).
    for block in runnable():
        CHECKS[block.language](block, directory, env, addresses)


def test_the_harness_compares_output():
    assert matches("a\n...\nd", "a\nb\nc\nd")
    assert matches("a\n...", "a")
    assert not matches("a\nd", "a\nb\nd")
    assert matches("2 rows written (version ...)", "2 rows written (version 3)")
    assert not matches("2 rows written (version ...)", "2 rows written to events (version 3)")
    sample = Block("sh", {"doctest"}, 10, "cat > x <<'CSV'\n# not output\nCSV\ncohort x\n# out\n\n# note\ny\n")
    steps = shell_steps(sample)
    assert [(s.script, s.output, s.line) for s in steps] == [
        ("cat > x <<'CSV'\n# not output\nCSV\ncohort x", ["out"], 10),
        ("y", [], 17),
    ]
    text = "```sql doctest\nSELECT 1;\n```\n\n```text output\n1\n```\nprose\n```sql doctest\nSELECT 2;\n```\n"
    parsed = blocks(text)
    assert [(b.text, b.output) for b in parsed] == [("SELECT 1;\n", "1\n"), ("SELECT 2;\n", None)]
