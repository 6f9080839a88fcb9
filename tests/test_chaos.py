"""Chaos: a mixed workload on a real daemon while a driver kills and freezes its processes.

A daemon with two worker OS processes runs calcfunctions called inline, nested WorkChains, a
fan-out of 100 children and loops of inline calls (``tests/workchains/chaos_chains.py``), while
the driver, between random pauses, SIGKILLs a random worker, SIGSTOPs one (and SIGCONTs it later,
often after its lease expired and another worker took its processes over) or, at least once,
SIGKILLs the supervisor and starts the daemon again.  Submissions go on between the events.

At the end every invariant is checked from the database alone: every WorkChain FINISHED with the
outputs its inputs imply, nothing left CREATED/RUNNING/WAITING, no duplicate finished call, links
and checkpoints consistent, no task left leased.  A summary line gives the figures.

The CI size runs in ``.ci/run`` with the rest of the suite; ``pytest -m long`` runs the long
variant (also run by ``python -m benchmarks --only CHAOS``).  ``MINIENGINE_CHAOS_RANDOM=N``
replays the driver's choices of a run (its summary line prints N).
"""

from __future__ import annotations

import os
import random
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from miniengine import Float, Int, load_node, submit
from tests.services import sql
from tests.workchains.chaos_chains import (
    FanOut,
    InlineChain,
    Leaf,
    Nested,
    expected_calls,
    expected_outputs,
    process_count,
)
from tests.workchains.daemon_chains import (
    DaemonGuard,
    alive,
    command_line,
    kill_quietly,
    parent_of,
    wait_until,
)

pytestmark = [
    pytest.mark.backends,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc"),
]

ACTIVE = ("created", "running", "waiting")
CHAINS = {"Leaf": Leaf, "InlineChain": InlineChain, "Nested": Nested, "FanOut": FanOut}

#: short leases, so that a worker SIGSTOPped for longer is reaped and overtaken (and fenced);
#: not shorter, so that a loaded machine alone does not make workers miss their heartbeats
LEASE_TIMEOUT = "2"


@dataclass(frozen=True)
class ChaosSize:
    """The workload and how hard the driver shakes it."""

    fan_outs: int
    nested: int
    inline_chains: int
    leaves: int
    events: int
    nap: float
    finish_timeout: float
    #: how many times the supervisor is SIGKILLed and the daemon started again
    restarts: int = 1
    fan_out_width: int = 100
    nested_depth: int = 3
    inline_steps: int = 3


CI = ChaosSize(
    fan_outs=1, nested=15, inline_chains=20, leaves=30, events=32, nap=0.1, finish_timeout=120
)
LONG = ChaosSize(
    fan_outs=4,
    nested=60,
    inline_chains=100,
    leaves=200,
    events=150,
    nap=0.1,
    finish_timeout=600,
    restarts=3,
)


@dataclass
class Tally:
    """What the driver did."""

    worker_kills: int = 0
    worker_stops: int = 0
    stopped_then_reaped: int = 0
    supervisor_kills: int = 0
    #: events that found processes in flight (created, running or waiting)
    in_flight: int = 0
    #: seconds from the last event until every process had terminated
    drain_s: float = 0.0
    submitted: list[int] = field(default_factory=list)

    @property
    def events(self) -> int:
        return self.worker_kills + self.worker_stops + self.supervisor_kills

    @property
    def kills(self) -> int:
        return self.worker_kills + self.supervisor_kills + self.stopped_then_reaped


def workload(size: ChaosSize, rng: random.Random) -> list[tuple[str, dict[str, int]]]:
    """The top-level WorkChains to submit, shuffled; their inputs as plain ints."""
    jobs: list[tuple[str, dict[str, int]]] = []
    jobs += [("FanOut", {"x": 1000 * i, "n": size.fan_out_width}) for i in range(size.fan_outs)]
    jobs += [("Nested", {"depth": size.nested_depth, "x": i}) for i in range(size.nested)]
    jobs += [("InlineChain", {"x": i, "n": size.inline_steps}) for i in range(size.inline_chains)]
    jobs += [("Leaf", {"x": i}) for i in range(size.leaves)]
    rng.shuffle(jobs)
    return jobs


# the driver ------------------------------------------------------------------------------------


def live_workers(daemon: DaemonGuard, supervisor: int) -> list[int]:
    """Worker OS processes of ``supervisor`` alive now (reaped ones and reused pids excluded)."""
    return [
        pid
        for pid in daemon.worker_pids()
        if alive(pid) and parent_of(pid) == supervisor and "miniengine.daemon" in command_line(pid)
    ]


def restart_after_supervisor_kill(daemon: DaemonGuard, supervisor: int, workers: list[int]) -> int:
    """SIGKILL the supervisor, wait until its workers noticed and exited, start a new daemon."""
    kill_quietly(supervisor)
    wait_until(lambda: not alive(supervisor), 30, "the supervisor to die")
    wait_until(lambda: not any(alive(pid) for pid in workers), 60, "the orphaned workers to exit")
    return daemon.start("--workers", "2", "--lease-timeout", LEASE_TIMEOUT)


def drive(db: Path | str, size: ChaosSize, rng: random.Random, tally: Tally) -> None:
    """Submit the workload in batches between events until both are spent, then wait for the
    last process to terminate; the daemon is stopped on the way out whatever happens."""
    jobs = workload(size, rng)
    supervisor_events = set(rng.sample(range(size.events // 5, size.events - 1), size.restarts))
    with DaemonGuard(db) as daemon:
        supervisor = daemon.start("--workers", "2", "--lease-timeout", LEASE_TIMEOUT)
        first = len(jobs) // 4
        submit_batch(jobs[:first], size, tally)
        jobs = jobs[first:]
        for event in range(size.events):
            # the pace of events, and a batch submitted shortly before each one so that it
            # finds work in flight: the workload's rhythm, not a synchronisation
            time.sleep(rng.uniform(0.2, 1.0))
            batch = -(-len(jobs) // (size.events - event))
            submit_batch(jobs[:batch], size, tally)
            jobs = jobs[batch:]
            time.sleep(rng.uniform(0.0, 0.3))
            workers = wait_until(
                lambda current=supervisor: live_workers(daemon, current),
                60,
                "a live worker to signal",
            )
            if active_count(db):
                tally.in_flight += 1
            if event in supervisor_events:
                supervisor = restart_after_supervisor_kill(daemon, supervisor, workers)
                tally.supervisor_kills += 1
            elif rng.random() < 0.6:
                kill_quietly(rng.choice(workers))
                tally.worker_kills += 1
            else:
                victim = rng.choice(workers)
                kill_quietly(victim, signal.SIGSTOP)
                time.sleep(rng.uniform(0.1, 3.5))  # how long it stays frozen: the workload
                if not alive(victim):
                    tally.stopped_then_reaped += 1
                kill_quietly(victim, signal.SIGCONT)
                tally.worker_stops += 1
        last_event = time.monotonic()
        wait_until(
            lambda: active_count(db) == 0,
            size.finish_timeout,
            "every process to terminate",
            interval=0.1,
        )
        tally.drain_s = time.monotonic() - last_event
        assert daemon.cli("stop").returncode == 0


def submit_batch(jobs: list[tuple[str, dict[str, int]]], size: ChaosSize, tally: Tally) -> None:
    for label, inputs in jobs:
        values = {name: Int(value) for name, value in inputs.items()}
        tally.submitted.append(submit(CHAINS[label], **values, nap=Float(size.nap)).pk)


def active_count(db: Path | str) -> int:
    return sql.count(db, "SELECT COUNT(*) FROM nodes WHERE process_state IN (?, ?, ?)", *ACTIVE)


# the invariants --------------------------------------------------------------------------------


@dataclass
class Findings:
    processes: int = 0
    lost: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    inconsistent: list[str] = field(default_factory=list)
    cut_off: int = 0


def rows(connection: Any, statement: str, *args: Any) -> list[tuple[Any, ...]]:
    """The rows of ``statement`` (``?`` parameters) on a connection of either backend."""
    return connection.execute(statement, args).fetchall()


def check_database(db: Path | str, submitted: list[int]) -> Findings:
    """Every invariant, read from the database alone (a sqlite file is opened read-only)."""
    found = Findings()
    with sql.connect(db if sql.is_postgres(db) else f"file:{db}?mode=ro") as connection:
        check_processes(connection, found)
        check_calls(connection, found)
        check_links_and_checkpoints(connection, found)
        check_tasks(connection, found)
        top = {pk for (pk,) in rows(connection, "SELECT pk FROM nodes WHERE submitted = 1")}
    missing = set(submitted) - top
    found.lost += [f"submitted process {pk} is not in the database" for pk in sorted(missing)]
    return found


def check_processes(connection: Any, found: Findings) -> None:
    """Every process terminated; WorkChains FINISHED [0] with the outputs their inputs imply;
    only calcfunctions cut off with their caller's step are EXCEPTED, as "owner lost"."""
    processes = rows(
        connection,
        "SELECT pk, process_label, process_state, exit_status, exception FROM nodes"
        " WHERE process_state IS NOT NULL ORDER BY pk",
    )
    found.processes = len(processes)
    live_tasks = {
        pk
        for (pk,) in rows(
            connection, "SELECT process_pk FROM tasks WHERE status IN ('ready', 'leased')"
        )
    }
    for pk, label, state, exit_status, exception in processes:
        if state in ACTIVE:
            found.lost.append(f"{label} {pk} is {state}")
            if pk not in live_tasks:
                found.orphans.append(f"{label} {pk} is {state} without a live task")
            continue
        if label in CHAINS:
            if (state, exit_status) != ("finished", 0):
                found.lost.append(f"{label} {pk} ended {state} [{exit_status}]: {exception}")
                continue
            node = load_node(pk)
            inputs = {name: node.inputs[name].value for name in expected_inputs(label)}
            outputs = {name: value.value for name, value in node.outputs.items()}
            if outputs != expected_outputs(label, inputs):
                found.lost.append(f"{label} {pk} {inputs} gave {outputs}")
        elif state == "excepted" and str(exception).startswith("owner lost"):
            found.cut_off += 1
        elif (state, exit_status) != ("finished", 0):
            found.lost.append(f"{label} {pk} ended {state} [{exit_status}]: {exception}")


def expected_inputs(label: str) -> tuple[str, ...]:
    return {
        "Leaf": ("x",),
        "InlineChain": ("x", "n"),
        "Nested": ("depth", "x"),
        "FanOut": ("x", "n"),
    }[label]


def check_calls(connection: Any, found: Findings) -> None:
    """Per caller, no two finished children of one process type with the same inputs (no call of
    a step, inline or submitted, was done twice), and exactly the finished calls expected."""
    fingerprints: dict[int, Counter[tuple[Any, ...]]] = {}
    children = rows(
        connection,
        "SELECT l.in_pk, c.pk, c.process_label FROM links l JOIN nodes c ON c.pk = l.out_pk"
        " WHERE l.link_type IN ('call_calc', 'call_work') AND c.process_state = 'finished'",
    )
    for parent, child, label in children:
        inputs = tuple(
            rows(
                connection,
                "SELECT l.label, d.node_type, d.attributes FROM links l"
                " JOIN nodes d ON d.pk = l.in_pk"
                " WHERE l.out_pk = ? AND l.link_type IN ('input_calc', 'input_work')"
                " ORDER BY l.label",
                child,
            )
        )
        fingerprints.setdefault(parent, Counter())[(label, inputs)] += 1
    for parent, counts in fingerprints.items():
        for (label, inputs), count in counts.items():
            if count > 1:
                found.duplicates.append(f"{parent} has {count} finished {label}{inputs}")
    for pk, label in rows(
        connection,
        "SELECT pk, process_label FROM nodes WHERE process_state = 'finished'"
        " AND process_label IN ('Leaf', 'InlineChain', 'Nested', 'FanOut')",
    ):
        node = load_node(pk)
        inputs = {name: node.inputs[name].value for name in expected_inputs(label)}
        per_label: Counter[str] = Counter()
        for (child_label, _), n in fingerprints.get(pk, Counter()).items():
            per_label[child_label] += n
        if dict(per_label) != expected_calls(label, inputs):
            found.duplicates.append(f"{label} {pk} has finished calls {dict(per_label)}")


def check_links_and_checkpoints(connection: Any, found: Findings) -> None:
    """Links point at nodes that exist; a child has one caller; an output label is linked once;
    no checkpoint, wait or memo is left for a terminated process."""
    bad = found.inconsistent
    for pk, in_pk, out_pk, link_type in rows(
        connection,
        "SELECT l.pk, l.in_pk, l.out_pk, l.link_type FROM links l"
        " LEFT JOIN nodes a ON a.pk = l.in_pk LEFT JOIN nodes b ON b.pk = l.out_pk"
        " WHERE a.pk IS NULL OR b.pk IS NULL",
    ):
        bad.append(f"{link_type} link {pk} from {in_pk} to {out_pk} names a missing node")
    for child, callers in rows(
        connection,
        "SELECT out_pk, COUNT(*) FROM links WHERE link_type IN ('call_calc', 'call_work')"
        " GROUP BY out_pk HAVING COUNT(*) > 1",
    ):
        bad.append(f"process {child} has {callers} callers")
    for process, label, links in rows(
        connection,
        "SELECT in_pk, label, COUNT(*) FROM links WHERE link_type IN ('create', 'return')"
        " GROUP BY in_pk, label HAVING COUNT(*) > 1",
    ):
        bad.append(f"output {label!r} of {process} is linked {links} times")
    for pk, state in rows(
        connection,
        "SELECT n.pk, n.process_state FROM checkpoints c JOIN nodes n ON n.pk = c.node_pk"
        " WHERE n.process_state NOT IN (?, ?, ?)",
        *ACTIVE,
    ):
        bad.append(f"{state} process {pk} still has a checkpoint")
    for (pk,) in rows(
        connection,
        "SELECT c.node_pk FROM checkpoints c LEFT JOIN nodes n ON n.pk = c.node_pk"
        " WHERE n.pk IS NULL",
    ):
        bad.append(f"a checkpoint names the missing node {pk}")
    for parent, outstanding in rows(
        connection,
        "SELECT w.parent_pk, w.outstanding FROM waits w JOIN nodes n ON n.pk = w.parent_pk"
        " WHERE n.process_state NOT IN (?, ?, ?)",
        *ACTIVE,
    ):
        bad.append(f"terminated process {parent} still waits for {outstanding} children")
    for parent, child in rows(
        connection,
        "SELECT m.parent_pk, m.child_pk FROM call_memo m LEFT JOIN links l"
        " ON l.in_pk = m.parent_pk AND l.out_pk = m.child_pk"
        " AND l.link_type IN ('call_calc', 'call_work') WHERE l.pk IS NULL",
    ):
        bad.append(f"memoised call {child} of {parent} has no CALL link")


def check_tasks(connection: Any, found: Findings) -> None:
    """No task left leased, and no work queued for a process that has terminated."""
    for pk, process, status, worker in rows(
        connection,
        "SELECT t.pk, t.process_pk, t.status, t.worker FROM tasks t"
        " JOIN nodes n ON n.pk = t.process_pk"
        " WHERE t.status = 'leased' OR (t.status = 'ready' AND n.process_state NOT IN (?, ?, ?))",
        *ACTIVE,
    ):
        found.inconsistent.append(f"task {pk} of process {process} is {status} ({worker})")


# the tests -------------------------------------------------------------------------------------


@dataclass
class ChaosResult:
    tally: Tally
    found: Findings
    #: process nodes the workload makes when no call is cut off
    expected_processes: int
    elapsed_s: float
    summary: str


def run_chaos(db: Path | str, size: ChaosSize, rng_value: int) -> ChaosResult:
    """Drive one chaos run on ``db`` (``$MINIENGINE_DB``) and read its findings; no assertion
    (the benchmark suite reports the same figures)."""
    tally = Tally()
    started = time.monotonic()
    drive(db, size, random.Random(rng_value), tally)
    elapsed = time.monotonic() - started
    found = check_database(db, tally.submitted)
    expected = sum(
        process_count(label, inputs) for label, inputs in workload(size, random.Random(0))
    )
    summary = (
        f"chaos: {tally.events} events ({tally.worker_kills} worker SIGKILLs, "
        f"{tally.worker_stops} SIGSTOP/SIGCONT of which {tally.stopped_then_reaped} reaped, "
        f"{tally.supervisor_kills} supervisor SIGKILLs; {tally.in_flight} with work in flight); "
        f"kills survived {tally.kills}, "
        f"processes {found.processes} ({expected} without cut-offs, {found.cut_off} cut off), "
        f"lost {len(found.lost)}, orphans {len(found.orphans)}, "
        f"duplicates {len(found.duplicates)}, inconsistencies {len(found.inconsistent)}; "
        f"{elapsed:.1f} s ({tally.drain_s:.1f} s after the last event); "
        f"MINIENGINE_CHAOS_RANDOM={rng_value}"
    )
    return ChaosResult(tally, found, expected, elapsed, summary)


def assert_survived(result: ChaosResult, size: ChaosSize) -> None:
    tally, found, summary = result.tally, result.found, result.summary
    assert tally.events >= size.events and tally.supervisor_kills == size.restarts, summary
    assert tally.in_flight >= size.events // 2, f"the events mostly missed the work: {summary}"
    assert found.lost == [], summary
    assert found.orphans == [], summary
    assert found.duplicates == [], summary
    assert found.inconsistent == [], summary
    assert found.processes == result.expected_processes + found.cut_off, summary


@pytest.fixture
def chaos_random() -> int:
    """The driver's random choices: new each run unless ``$MINIENGINE_CHAOS_RANDOM`` is set."""
    value = os.environ.get("MINIENGINE_CHAOS_RANDOM")
    return int(value) if value else random.SystemRandom().randrange(10**9)


@pytest.mark.long_on(
    "postgresql",
    reason="a minute on a small machine; test_multihost runs the same checks on PostgreSQL",
)
def test_chaos_ci(miniengine_db: Path, chaos_random: int) -> None:
    result = run_chaos(miniengine_db, CI, chaos_random)
    print("\n" + result.summary)
    assert_survived(result, CI)


@pytest.mark.long
def test_chaos_long(miniengine_db: Path, chaos_random: int) -> None:
    result = run_chaos(miniengine_db, LONG, chaos_random)
    print("\n" + result.summary)
    assert_survived(result, LONG)
