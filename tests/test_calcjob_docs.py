"""The guide "Running external codes" runs as written: its plugin module and its script are
taken from the page, and the script runs in run mode and against a real daemon."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.workchains.daemon_chains import ROOT, DaemonGuard, python_env

GUIDE = ROOT / "docs" / "guide" / "calcjobs.md"


def blocks() -> dict[str, str]:
    """The page's Python blocks that start with ``# <file name>``, by file name."""
    found: dict[str, str] = {}
    for block in re.findall(r"```python\n(.*?)```", GUIDE.read_text(), re.S):
        first = block.splitlines()[0]
        if first.startswith("# ") and first.endswith(".py"):
            found[first[2:]] = block
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses pidfds and ps")
def test_the_guides_example_runs_in_run_mode_and_on_the_daemon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = blocks()
    assert set(files) == {"arithmetic.py", "run_add.py"}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    db = tmp_path / "guide.sqlite"
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # the daemon imports arithmetic.py
    with DaemonGuard(db) as daemon:
        daemon.start("--workers", "1")
        env = {**python_env(db), "WITH_DAEMON": "1"}
        env["PYTHONPATH"] = f"{tmp_path}:{env['PYTHONPATH']}"
        completed = subprocess.run(
            [sys.executable, "run_add.py"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "aiida.out" in completed.stdout
