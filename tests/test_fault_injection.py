"""Fault injection at every commit point of the transitions of a process's life.

For each scenario -- a process function tree in run mode (create with inputs, terminate with
outputs), a WorkChain in run mode (create, memoised inline calls, step commits with checkpoint,
outputs, reports and a child), the same WorkChain submitted to a real in-process worker (submit's
node + checkpoint + task, claims, the eviction of the waiting parent with its outbox, the child's
termination that wakes it), the give-back of a task whose writes failed, a kill cascading
through a tree nobody holds, and the recovery of expired leases -- every transaction is found
by a counting run, and then, for every statement N of every one of them:

- the N-th statement raises (a disk error), and separately the ``COMMIT`` fails;
- (a script's run) Ctrl-C lands at statement N;
- the OS process running it is SIGKILLed just before statement N (or before its ``COMMIT``).

After each: the transaction left every table exactly as it was before it began, the file passes
``PRAGMA integrity_check``, and recovering then rerunning from the same database ends with the
same result as a run without faults, with no process left live and no task left leased.
The injection wraps ``Store._transaction`` in the test (see ``tests/scripts/fault_child.py``):
the package has no hook for it.
"""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from miniengine.storage.store import close_all_stores
from tests.scripts.fault_child import (
    Injection,
    Injector,
    complete,
    ignored,
    integrity,
    prepare,
    run_injected,
    run_scenario,
    snapshot,
)
from tests.workchains.daemon_chains import ROOT, python_env

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="uses fork and signals"
)

SCENARIOS = ("function", "workchain", "daemon", "kill", "recover")


def _template(tmp_path: Path, scenario: str) -> Path:
    """The database the scenario starts from, built once and copied for every injection."""
    db = tmp_path / "template" / "engine.sqlite"
    db.parent.mkdir()
    prepare(scenario, db)
    return db


def _copy(template: Path, folder: Path) -> Path:
    folder.mkdir()
    db = folder / "engine.sqlite"
    shutil.copyfile(template, db)
    return db


def _transactions(template: Path, folder: Path, scenario: str) -> list[tuple[str, int, int]]:
    """``(body name, occurrence, statements)`` of every transaction of an uninjected run."""
    db = _copy(template, folder)
    injector = Injector(ignore=ignored(scenario))
    with injector.installed():
        run_scenario(scenario, db)
    close_all_stores()
    seen: Counter[str] = Counter()
    found = []
    for name, statements in injector.transactions:
        seen[name] += 1
        found.append((name, seen[name], statements))
    assert found, f"the scenario {scenario} ran no transaction"
    return found


def _baseline(template: Path, folder: Path, scenario: str) -> dict[str, Any]:
    db = _copy(template, folder)
    run_scenario(scenario, db)
    signature = complete(scenario, db)
    close_all_stores()
    return signature


def _check_after(db: Path, scenario: str, baseline: dict[str, Any], what: str) -> None:
    """Integrity, then recovery and a rerun give the uninjected result, leaving nothing live."""
    assert integrity(db) == "ok", what
    signature = complete(scenario, db)
    close_all_stores()
    assert signature == baseline, what
    assert integrity(db) == "ok", what
    assert _live(db) == [], f"{what}: processes left live: {_live(db)}"
    assert _query(db, "SELECT pk FROM tasks WHERE status = 'leased'") == [], what


def _live(db: Path) -> list[tuple[Any, ...]]:
    return _query(
        db,
        "SELECT pk, process_label, process_state FROM nodes "
        "WHERE process_state IN ('created', 'running', 'waiting')",
    )


def _query(db: Path, sql: str) -> list[tuple[Any, ...]]:
    connection = sqlite3.connect(db)
    try:
        return connection.execute(sql).fetchall()
    finally:
        connection.close()


def _points(transactions: list[tuple[str, int, int]], mode: str) -> list[Injection]:
    """One injection per commit point: every statement (and the COMMIT, for a kill)."""
    points = []
    for name, occurrence, statements in transactions:
        if mode == "commit":
            points.append(Injection(name, "commit", 0, occurrence))
            continue
        last = statements + 1 if mode == "kill" else statements
        points.extend(Injection(name, mode, at, occurrence) for at in range(1, last + 1))
    return points


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_a_failing_statement_or_commit_rolls_the_transition_back_whole(
    scenario: str, tmp_path: Path
) -> None:
    template = _template(tmp_path, scenario)
    transactions = _transactions(template, tmp_path / "count", scenario)
    baseline = _baseline(template, tmp_path / "baseline", scenario)
    points = _points(transactions, "raise") + _points(transactions, "commit")
    for index, injection in enumerate(points):
        what = f"{scenario}: {injection.mode} in {injection.target} #{injection.occurrence} "
        what += f"at statement {injection.at}"
        db = _copy(template, tmp_path / f"run{index}")
        raised = run_injected(db, scenario, [injection])
        assert injection.fired, f"{what}: the transaction was not reached"
        assert injection.error is not None, f"{what}: the transaction did not fail"
        assert injection.before == injection.after, f"{what}: not rolled back whole"
        if scenario != "daemon":  # a worker retries or records the failure itself
            assert raised is not None, f"{what}: the caller was not told"
        if scenario in ("function", "workchain"):  # nobody else would ever end them
            assert _live(db) == [], f"{what}: left live: {_live(db)}"
        _check_after(db, scenario, baseline, what)
    print(f"{scenario}: {len(transactions)} transactions, {len(points)} faults injected")


def test_ctrl_c_at_any_statement_of_a_script_run_rolls_back_and_kills_the_tree(
    tmp_path: Path,
) -> None:
    """A synchronous ``run()`` runs every transaction in the script's thread, where Ctrl-C
    lands: at whichever statement it lands, that transaction rolls back and every process of
    the tree ends KILLED (none stays RUNNING), and the script sees the KeyboardInterrupt."""
    template = _template(tmp_path, "function")
    transactions = _transactions(template, tmp_path / "count", "function")
    baseline = _baseline(template, tmp_path / "baseline", "function")
    points = _points(transactions, "interrupt")
    for index, injection in enumerate(points):
        what = f"Ctrl-C in {injection.target} #{injection.occurrence} at {injection.at}"
        db = _copy(template, tmp_path / f"run{index}")
        raised = run_injected(db, "function", [injection])
        assert isinstance(raised, KeyboardInterrupt), f"{what}: {raised!r}"
        assert injection.before == injection.after, f"{what}: not rolled back whole"
        assert _live(db) == [], f"{what}: left live: {_live(db)}"
        _check_after(db, "function", baseline, what)
    print(f"function: {len(points)} Ctrl-C points")


def test_a_task_whose_writes_failed_is_given_back_even_when_the_give_back_fails(
    tmp_path: Path,
) -> None:
    """The first step's commit and then the EXCEPTED write of the process fail, so the worker
    hands the task back; that transaction fails at each of its statements in turn, and the
    worker tries again until the process finishes from its checkpoint."""
    template = _template(tmp_path, "daemon")
    baseline = _baseline(template, tmp_path / "baseline", "daemon")
    transactions = [("give_back_tx", 1, 2)]
    points = _points(transactions, "raise") + _points(transactions, "commit")
    for index, give_back in enumerate(points):
        what = f"give_back_tx: {give_back.mode} at statement {give_back.at}"
        injections = [
            Injection("step_commit_tx", "raise", 1),
            Injection("finish_process_tx", "raise", 1),
            give_back,
        ]
        db = _copy(template, tmp_path / f"run{index}")
        run_injected(db, "daemon", injections)
        for injection in injections:
            assert injection.fired and injection.error is not None, what
            assert injection.before == injection.after, f"{what}: {injection.target}"
        _check_after(db, "daemon", baseline, what)
        chains = _query(
            db, "SELECT process_state FROM nodes WHERE process_label = 'StepsWorkChain'"
        )
        assert chains == [("finished",)], f"{what}: the process was not retried to completion"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_a_sigkill_at_any_commit_point_leaves_the_database_as_before_the_transaction(
    scenario: str, tmp_path: Path
) -> None:
    template = _template(tmp_path, scenario)
    transactions = _transactions(template, tmp_path / "count", scenario)
    baseline = _baseline(template, tmp_path / "baseline", scenario)
    points = _points(transactions, "kill")
    jobs = []
    for index, injection in enumerate(points):
        db = _copy(template, tmp_path / f"run{index}")
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
        _check_after(db, scenario, baseline, what)
    print(f"{scenario}: {len(transactions)} transactions, {len(points)} SIGKILLs")
