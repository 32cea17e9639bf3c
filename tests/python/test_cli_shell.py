"""The interactive `cohort sql` shell, driven through a real pseudo-terminal as a user types:
multi-line statements, backslash commands, errors that do not end the session, Ctrl-C,
history, and the password prompt of `--user`."""

import fcntl
import os
import re
import select
import subprocess
import termios
import time

from conftest import Server, Store, cohort_bin
from test_security import ADMIN_PASSWORD, auth_config


# The line editor redraws with cursor movements; what matters is the text.
ANSI_CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _own_terminal():
    """In the child: a session of its own with the pseudo-terminal (its standard input) as the
    controlling terminal, which is what /dev/tty opens, as in a user's shell."""
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Terminal:
    """A `cohort` process whose standard input, output and error are one terminal."""

    def __init__(self, args, env):
        self.master, slave = os.openpty()
        self.process = subprocess.Popen(
            [cohort_bin(), *args], stdin=slave, stdout=slave, stderr=slave, env=env, preexec_fn=_own_terminal
        )
        os.close(slave)
        self.seen = ""

    def expect(self, text, timeout=60):
        """Reads the terminal until `text` appears; returns everything read up to it."""
        deadline = time.time() + timeout
        while text not in self.seen:
            remaining = deadline - time.time()
            if remaining <= 0 or self.process.poll() is not None and not self._readable(0):
                raise AssertionError(f"{text!r} never appeared; the terminal shows:\n{self.seen}")
            if self._readable(min(remaining, 0.5)):
                try:
                    self.seen += ANSI_CONTROL.sub("", os.read(self.master, 65536).decode(errors="replace"))
                except OSError:  # the process closed the terminal
                    pass
        before, _, after = self.seen.partition(text)
        self.seen = after
        return before

    def _readable(self, timeout):
        return bool(select.select([self.master], [], [], timeout)[0])

    def type(self, keys):
        os.write(self.master, keys.encode())

    def close(self):
        try:
            self.process.wait(timeout=30)
        finally:
            os.close(self.master)


def environment(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("COHORT_")}
    env["COHORT_HISTORY"] = str(tmp_path / "history")
    env["TERM"] = "xterm"
    return env


def test_shell_runs_multi_line_statements_and_survives_errors(tmp_path):
    events = tmp_path / "events.csv"
    events.write_text("user_id,event,ts\nu1,signup,2026-01-01T00:00:00Z\nu2,signup,2026-01-02T00:00:00Z\n")
    env = environment(tmp_path)
    Store(str(tmp_path / "store"), env).run("ingest", "--table", "events", str(events))

    shell = Terminal(["sql", "--data", str(tmp_path / "store")], env)
    shell.expect("cohort> ")
    # Enter without a ';' continues the statement on the next line.
    shell.type("SELECT count(*) AS signups\r")
    shell.type("FROM events WHERE event = 'signup';\r")
    shell.expect("| signups |")
    shell.expect("| 2       |")
    shell.expect("cohort> ")

    # A failed statement is reported and the session goes on.
    shell.type("SELECT * FROM no_such_table;\r")
    shell.expect("error: table 'cohort.public.no_such_table' not found")
    shell.expect("cohort> ")

    # Ctrl-C drops the line being typed.
    shell.type("SELECT 'dropped'")
    shell.expect("dropped'")
    shell.type("\x03")
    shell.expect("cohort> ")
    shell.type("\\timing\r")
    shell.expect("Timing is on.")
    shell.type("SELECT 40 + 2 AS answer; SELECT 'two;statements' AS second;\r")
    shown = shell.expect("| two;statements |")
    assert "| 42     |" in shown and "Time: " in shown and "| dropped" not in shown, shown
    shell.expect("Time: ")
    shell.expect("cohort> ")

    shell.type("\\format csv\r")
    shell.expect("cohort> ")
    shell.type("\\d events\r")
    shell.expect("table_catalog,table_schema,table_name,column_name")
    shell.expect("cohort,public,events,user_id,")

    shell.type("\\nonsense\r")
    shell.expect("unknown command \\nonsense: \\? lists the commands")
    shell.type("\\q\r")
    shell.close()
    assert shell.process.returncode == 0
    history = (tmp_path / "history").read_text()
    assert "SELECT 40 + 2 AS answer" in history, history


def test_ctrl_d_quits_and_user_without_password_is_asked_on_the_terminal(tmp_path):
    config, _ = auth_config(tmp_path)
    env = environment(tmp_path)
    store = Store(str(tmp_path / "store"), env)
    store.run("demo", "--users", "50", "--events", "500")
    server = Server(store, "--config", str(config))
    try:
        shell = Terminal(["sql", "--connect", server.address, "--user", "ada"], env)
        shell.expect("Password for ada: ")
        shell.type(ADMIN_PASSWORD + "\r")
        shell.expect("cohort> ")
        shell.type("SELECT count(*) AS n FROM events;\r")
        shell.expect("| 500 |")
        shell.expect("cohort> ")
        shell.type("\x04")
        shell.close()
        assert shell.process.returncode == 0

        wrong = Terminal(["sql", "--connect", server.address, "--user", "ada", "SELECT 1"], env)
        wrong.expect("Password for ada: ")
        wrong.type("not the password\r")
        wrong.expect("authentication failed: the server did not accept user 'ada' with that password")
        wrong.close()
        assert wrong.process.returncode == 1

        # Without a terminal there is no one to ask.
        result = subprocess.run(
            [cohort_bin(), "sql", "--connect", server.address, "--user", "ada", "SELECT 1"],
            env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
        )
        assert result.returncode == 1
        assert "--user needs a password: set COHORT_PASSWORD" in result.stderr, result.stderr
    finally:
        server.stop()
