"""Fault injection at every commit point of the transitions of a process's life.

For each scenario -- a process function tree in run mode (create with inputs, terminate with
outputs), a WorkChain in run mode (create, memoised inline calls, step commits with checkpoint,
outputs, reports and a child), the same WorkChain submitted to a real in-process worker (submit's
node + checkpoint + task, claims, the eviction of the waiting parent with its outbox, the child's
termination that wakes it), the give-back of a task whose writes failed, a kill cascading
through a tree nobody holds, the recovery of expired leases, pause and play of a waiting
process, and a worker that stops and hands its running processes back to the queue -- every
transaction is found by a counting run, and then, for every statement N of every one of them:

- the N-th statement raises (a disk error), and separately the ``COMMIT`` fails;
- (a script's run) Ctrl-C lands at statement N;
- (``test_fault_injection_sigkill.py``) the OS process running it is SIGKILLed just before
  statement N or its ``COMMIT``.

After each: the transaction left every table exactly as it was before it began, the file passes
``PRAGMA integrity_check``, and recovering then rerunning from the same database ends with the
same result as a run without faults, with no process left live and no task left leased.
The injection wraps ``Store._transaction`` in the test (see ``tests/scripts/fault_child.py``):
the package has no hook for it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.scripts.fault_child import (
    SCENARIOS,
    Injection,
    baseline_of,
    check_after,
    commit_points,
    copy_db,
    count_transactions,
    live_processes,
    query,
    run_injected,
    template_db,
)

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="uses fork and signals"
)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_a_failing_statement_or_commit_rolls_the_transition_back_whole(
    scenario: str, tmp_path: Path
) -> None:
    template = template_db(tmp_path, scenario)
    transactions = count_transactions(template, tmp_path / "count", scenario)
    baseline = baseline_of(template, tmp_path / "baseline", scenario)
    points = commit_points(transactions, "raise") + commit_points(transactions, "commit")
    for index, injection in enumerate(points):
        what = f"{scenario}: {injection.mode} in {injection.target} #{injection.occurrence} "
        what += f"at statement {injection.at}"
        db = copy_db(template, tmp_path / f"run{index}")
        raised = run_injected(db, scenario, [injection])
        assert injection.fired, f"{what}: the transaction was not reached"
        assert injection.error is not None, f"{what}: the transaction did not fail"
        assert injection.before == injection.after, f"{what}: not rolled back whole"
        if scenario not in ("daemon", "shutdown"):  # a worker retries or records it itself
            assert raised is not None, f"{what}: the caller was not told"
        if scenario in ("function", "workchain"):  # nobody else would ever end them
            assert live_processes(db) == [], f"{what}: left live: {live_processes(db)}"
        check_after(db, scenario, baseline, what)
    print(f"{scenario}: {len(transactions)} transactions, {len(points)} faults injected")


def test_ctrl_c_at_any_statement_of_a_script_run_rolls_back_and_kills_the_tree(
    tmp_path: Path,
) -> None:
    """A synchronous ``run()`` runs every transaction in the script's thread, where Ctrl-C
    lands: at whichever statement it lands, that transaction rolls back and every process of
    the tree ends KILLED (none stays RUNNING), and the script sees the KeyboardInterrupt."""
    template = template_db(tmp_path, "function")
    transactions = count_transactions(template, tmp_path / "count", "function")
    baseline = baseline_of(template, tmp_path / "baseline", "function")
    points = commit_points(transactions, "interrupt")
    for index, injection in enumerate(points):
        what = f"Ctrl-C in {injection.target} #{injection.occurrence} at {injection.at}"
        db = copy_db(template, tmp_path / f"run{index}")
        raised = run_injected(db, "function", [injection])
        assert isinstance(raised, KeyboardInterrupt), f"{what}: {raised!r}"
        assert injection.before == injection.after, f"{what}: not rolled back whole"
        assert live_processes(db) == [], f"{what}: left live: {live_processes(db)}"
        check_after(db, "function", baseline, what)
    print(f"function: {len(points)} Ctrl-C points")


def test_a_task_whose_writes_failed_is_given_back_even_when_the_give_back_fails(
    tmp_path: Path,
) -> None:
    """The first step's commit and then the EXCEPTED write of the process fail, so the worker
    hands the task back; that transaction fails at each of its statements in turn, and the
    worker tries again until the process finishes from its checkpoint."""
    template = template_db(tmp_path, "daemon")
    baseline = baseline_of(template, tmp_path / "baseline", "daemon")
    transactions = [("give_back_tx", 1, 2)]
    points = commit_points(transactions, "raise") + commit_points(transactions, "commit")
    for index, give_back in enumerate(points):
        what = f"give_back_tx: {give_back.mode} at statement {give_back.at}"
        injections = [
            Injection("step_commit_tx", "raise", 1),
            Injection("finish_process_tx", "raise", 1),
            give_back,
        ]
        db = copy_db(template, tmp_path / f"run{index}")
        run_injected(db, "daemon", injections)
        for injection in injections:
            assert injection.fired and injection.error is not None, what
            assert injection.before == injection.after, f"{what}: {injection.target}"
        check_after(db, "daemon", baseline, what)
        chains = query(db, "SELECT process_state FROM nodes WHERE process_label = 'StepsWorkChain'")
        assert chains == [("finished",)], f"{what}: the process was not retried to completion"
