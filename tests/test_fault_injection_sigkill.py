"""SIGKILL at every commit point of the transitions of a process's life.

The same scenarios and counting run as ``test_fault_injection.py``; here each commit point --
every statement of every transaction, and its ``COMMIT`` -- is reached in a child forked for it
by ``python -m tests.scripts.fault_child``, which SIGKILLs itself there.  The database must then
hold exactly what it held before that transaction began, pass ``PRAGMA integrity_check``, and
recovering and rerunning from it must give the result of a run without faults.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.scripts.fault_child import (
    SCENARIOS,
    baseline_of,
    check_after,
    commit_points,
    copy_db,
    count_transactions,
    snapshot,
    template_db,
)
from tests.workchains.daemon_chains import ROOT, python_env

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="uses fork and signals"
)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_a_sigkill_at_any_commit_point_leaves_the_database_as_before_the_transaction(
    scenario: str, tmp_path: Path
) -> None:
    template = template_db(tmp_path, scenario)
    transactions = count_transactions(template, tmp_path / "count", scenario)
    baseline = baseline_of(template, tmp_path / "baseline", scenario)
    points = commit_points(transactions, "kill")
    jobs = []
    for index, injection in enumerate(points):
        db = copy_db(template, tmp_path / f"run{index}")
        jobs.append(
            {
                "db": str(db),
                "scenario": scenario,
                "snapshot": str(db.parent / "before.json"),
                "injections": [injection.to_json()],
            }
        )
    server = subprocess.run(
        [sys.executable, "-m", "tests.scripts.fault_child"],
        input="".join(json.dumps(job) + "\n" for job in jobs),
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=python_env(),
        timeout=300,
    )
    assert server.returncode == 0, server.stderr
    endings = [json.loads(line) for line in server.stdout.splitlines()]
    assert len(endings) == len(jobs), server.stderr
    for injection, job, ending in zip(points, jobs, endings, strict=True):
        what = f"{scenario}: SIGKILL in {injection.target} #{injection.occurrence} "
        what += f"before statement {injection.at}"
        assert ending["signal"] == signal.SIGKILL, f"{what}: {ending} {server.stderr[-2000:]}"
        db = Path(job["db"])
        before = json.loads(Path(job["snapshot"]).read_text())
        assert snapshot(db) == before, f"{what}: not rolled back whole"
        check_after(db, scenario, baseline, what)
    print(f"{scenario}: {len(transactions)} transactions, {len(points)} SIGKILLs")
