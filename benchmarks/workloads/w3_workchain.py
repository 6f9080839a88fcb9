"""W3: the 10-iteration WorkChain ``setup, while_(not_done)(do_step), finalize``, each iteration
calling the ``add`` calcfunction once, under ``run.get_node`` (``peers/aiida/workloads.py w3``).

It also reports the share of W3's wall time spent writing checkpoints: the step-commit
transactions (``BEGIN IMMEDIATE`` to ``COMMIT`` around ``checkpoint_rows.step_commit_tx``: the
state change, checkpoint row, outputs and logs of a step) plus encoding the checkpoint
(``_Executor.checkpoint``).  Both are wrapped by timers in this child only; the wrappers cost
about a microsecond per call, included in the timed run.
"""

from __future__ import annotations

import time
from typing import Any

from benchmarks.backends import db_location
from benchmarks.registry import Measurement, Metric, Params, Target, Workload, WrongResult, check
from benchmarks.timing import latency_stats, timed

WARMUP = 3
ITERATIONS = 10
EXPECTED = sum(range(ITERATIONS))  # 0 + 1 + ... + 9 = 45


class _Timers:
    """Time spent in the wrapped functions while ``enabled``."""

    def __init__(self) -> None:
        self.enabled = False
        self.seconds: dict[str, float] = {"tx": 0.0, "statements": 0.0, "encode": 0.0}
        self.calls: dict[str, int] = {"tx": 0, "statements": 0, "encode": 0}

    def add(self, key: str, seconds: float) -> None:
        if self.enabled:
            self.seconds[key] += seconds
            self.calls[key] += 1


def _instrument(postgres: bool) -> _Timers:
    """Wrap the step commit (statements and whole transaction) and the checkpoint encoder, on
    the backend of this repetition (before its store is opened, which binds the functions)."""
    from miniengine.runtime.workchain import executor

    if postgres:
        from miniengine.storage.postgres import checkpoint_rows
        from miniengine.storage.postgres.store import PostgresStore as Store
    else:
        from miniengine.storage import checkpoint_rows  # type: ignore[no-redef]
        from miniengine.storage.store import Store  # type: ignore[assignment]

    timers = _Timers()
    clock = time.perf_counter
    step_commit_tx = checkpoint_rows.step_commit_tx

    def timed_step_commit_tx(connection: Any, commit: Any) -> Any:
        start = clock()
        try:
            return step_commit_tx(connection, commit)
        finally:
            timers.add("statements", clock() - start)

    transaction = Store._transaction

    def timed_transaction(self: Any, fn: Any, args: Any, **options: Any) -> Any:
        if fn is not timed_step_commit_tx:
            return transaction(self, fn, args, **options)
        start = clock()
        try:
            return transaction(self, fn, args, **options)
        finally:
            timers.add("tx", clock() - start)

    encode = executor._Executor.checkpoint

    def timed_encode(self: Any) -> bytes:
        start = clock()
        try:
            return encode(self)
        finally:
            timers.add("encode", clock() - start)

    checkpoint_rows.step_commit_tx = timed_step_commit_tx
    Store._transaction = timed_transaction  # type: ignore[method-assign]
    executor._Executor.checkpoint = timed_encode  # type: ignore[method-assign]
    return timers


def measure(params: Params) -> Measurement:
    from benchmarks.workchains import LoopWorkChain
    from miniengine import Int, find_processes, run

    timers = _instrument(isinstance(db_location(), str))

    def call(i: int) -> None:
        result, node = run.get_node(LoopWorkChain, n=Int(ITERATIONS))
        if not (node.is_finished_ok and result["result"] == EXPECTED):
            raise WrongResult(
                f"LoopWorkChain returned {result!r} and ended "
                f"{node.process_state} [{node.exit_status}], not result={EXPECTED}"
            )

    first = timed(call, WARMUP)
    timers.enabled = True
    samples = timed(call, params["n"])
    timers.enabled = False
    stats = latency_stats(samples)
    wall = sum(samples)
    runs = WARMUP + params["n"]
    recorded = len(find_processes(process_label="LoopWorkChain"))
    check(recorded == runs, f"{runs} workchains recorded {recorded} process nodes")
    adds = len(find_processes(process_label="add"))
    check(adds == ITERATIONS * runs, f"{runs} workchains recorded {adds} add calls, not 10 each")
    commits = timers.calls["tx"]
    check(commits >= params["n"] * (ITERATIONS + 1), f"only {commits} step commits were timed")
    share = 100 * (timers.seconds["tx"] + timers.seconds["encode"]) / wall
    return Measurement(
        metrics={"wc_per_s": stats["per_s"], "checkpoint_share_pct": share},
        details={
            **stats,
            "first_call_ms": 1e3 * first[0],
            "step_commits_per_wc": commits / params["n"],
            "step_commit_tx_us": 1e6 * timers.seconds["tx"] / max(commits, 1),
            "step_commit_statements_us": 1e6 * timers.seconds["statements"] / max(commits, 1),
            "checkpoint_encode_us": 1e6 * timers.seconds["encode"] / max(timers.calls["encode"], 1),
            "tx_share_pct": 100 * timers.seconds["tx"] / wall,
            "encode_share_pct": 100 * timers.seconds["encode"] / wall,
        },
    )


WORKLOAD = Workload(
    id="W3",
    title="10-step WorkChain, run mode",
    metrics=(
        Metric(
            "wc_per_s",
            "W3 10-step WorkChain, run mode",
            "wc/s",
            Target(">=", 150),
            aiida="0.31/s",
            digits=1,
        ),
        Metric(
            "checkpoint_share_pct",
            "  W3 share in checkpoint writes (encode + step commit)",
            "%",
            aiida="13 ms per save",
            digits=1,
        ),
    ),
    measure=measure,
    params={"n": 200},
    quick_params={"n": 50},
    backends=("sqlite", "postgresql"),
)
