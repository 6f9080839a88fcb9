"""``miniengine daemon ...``: the daemon's commands under the main command, from the same parser
as ``python -m miniengine.daemon``, with a ``restart`` that reports its stop and its start."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from miniengine.storage.paths import url_without_password
from tests.workchains.daemon_chains import ROOT, DaemonGuard, python_env


def miniengine(*args: str, db: Path | str | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "miniengine", *args]
    if db is not None:
        command += ["--db", str(db)]
    return subprocess.run(
        command,
        env=python_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _subcommands(help_text: str) -> list[str]:
    return re.findall(r"^    (\w+)\s", help_text, flags=re.MULTILINE)


def test_daemon_is_a_subcommand_with_the_same_commands_as_the_module() -> None:
    main_help = miniengine("--help")
    assert main_help.returncode == 0 and "daemon" in main_help.stdout
    under_main = miniengine("daemon", "--help").stdout
    module = subprocess.run(
        [sys.executable, "-m", "miniengine.daemon", "--help"],
        env=python_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    expected = ["start", "restart", "stop", "status", "logs", "incr", "decr"]
    assert _subcommands(under_main) == _subcommands(module) == expected
    start_help = miniengine("daemon", "start", "--help").stdout
    for option in ("--workers", "--slots", "--lease-timeout", "--stop-timeout", "--foreground"):
        assert option in start_help


@pytest.mark.backends
def test_daemon_start_status_restart_and_stop_under_the_main_command(
    miniengine_db: Path | str,
) -> None:
    db = miniengine_db
    shown = db if isinstance(db, Path) else url_without_password(db)  # as messages name it
    with DaemonGuard(db) as guard:
        restarted = miniengine("daemon", "restart", db=db)  # nothing to stop yet: says so
        guard.track_all()
        assert restarted.returncode == 0, restarted.stderr
        lines = restarted.stdout.splitlines()
        assert lines[0] == f"the daemon was not running ({shown})"
        assert lines[1].startswith("daemon started (pid ")
        first = guard.state()
        assert first is not None

        status = miniengine("daemon", "status", db=db)
        assert status.returncode == 0 and f"daemon pid {first['pid']}" in status.stdout

        restarted = miniengine("daemon", "restart", "--workers", "1", db=db)
        guard.track_all()
        assert restarted.returncode == 0, restarted.stderr
        assert restarted.stdout.splitlines() == [
            f"daemon stopped for {shown}",
            restarted.stdout.splitlines()[1],
        ]
        second = guard.state()
        assert second is not None and second["pid"] != first["pid"]
        assert restarted.stdout.splitlines()[1].startswith(f"daemon started (pid {second['pid']},")

        stopped = miniengine("daemon", "stop", db=db)
        assert stopped.returncode == 0 and stopped.stdout == f"daemon stopped for {shown}\n"
        assert guard.state() is None


def test_daemon_logs_escape_control_characters(tmp_path: Path) -> None:
    db = tmp_path / "engine.sqlite"
    log = tmp_path / "engine.sqlite.daemon.log"
    log.write_text("worker said \x1b]0;owned\x07\x1b[2J\nnext line\n")
    log.chmod(0o600)
    shown = miniengine("daemon", "logs", db=db)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == "worker said \\x1b]0;owned\\x07\\x1b[2J\nnext line\n"
