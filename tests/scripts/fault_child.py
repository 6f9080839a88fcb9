"""Fault injection into the transactions of miniengine, for the ``test_fault_injection*`` tests.

Every write of miniengine is one callable run by ``Store._transaction`` between ``BEGIN
IMMEDIATE`` and ``COMMIT`` on the store's writer connection.  :class:`Injector` wraps that method
(in the test's process, never in the package) and, for the chosen transaction -- named by the
function that is its body and its occurrence -- hands the body a connection whose N-th statement
raises an ``OperationalError`` (``raise``), whose ``COMMIT`` fails (``commit``) or whose N-th
statement (N = statements + 1: the ``COMMIT``) SIGKILLs this OS process (``kill``).  Just before
the transaction it takes a snapshot of every table a transition writes, and just after a failure
another one, so the test can check that the transaction rolled back whole.

The scenarios (:data:`SCENARIOS`) drive whole transitions through the public API (``run``,
``submit`` with a real :class:`~miniengine.daemon.Worker`, a worker stopping with processes it
runs, ``kill``, ``pause`` and ``play``, the recovery of expired leases) and, after a failed
attempt, :func:`complete` recovers and reruns them to completion and returns a signature of the
result, which must equal the signature of an uninjected run.

``python -m tests.scripts.fault_child`` runs jobs read from stdin (JSON lines), each in a child
forked for it; a job's last injection is a ``kill``, which writes the snapshot taken before its
transaction to the job's snapshot file and then SIGKILLs the child.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from miniengine.storage.store import close_all_stores

#: The tables that process transitions write; a failed transaction must leave them as they were.
TABLES = (
    "nodes",
    "links",
    "logs",
    "checkpoints",
    "tasks",
    "waits",
    "awaited",
    "call_memo",
    "events",
    "sqlite_sequence",
)

#: Columns that a heartbeat of another connection may change at any time.
VOLATILE = frozenset({"lease_expires"})

#: Transactions that run on timers, not as part of a transition: never targeted or counted.
BACKGROUND = frozenset(
    {
        "_renew_leases",
        "register_worker_tx",
        "prune_tx",
        "_add_watcher",
        "_renew_watcher",
        "_remove_watcher",
        "recover_expired_tx",
        "release_owner_tx",
    }
)

#: The lease of the workers of these scenarios: short, so that a SIGKILLed one is taken over soon.
LEASE = 1.0

#: The gate the processes of the ``kill`` and ``recover`` scenarios wait at.
GATE = "fault-gate"

#: The scenarios, each a transition or a whole life of processes.
SCENARIOS = ("function", "workchain", "daemon", "kill", "recover", "pause", "shutdown")


class InjectedFault(sqlite3.OperationalError):
    """The error an injection raises (an OperationalError, as a failing disk would give)."""


Snapshot = dict[str, list[list[Any]]]


def snapshot(path: str | os.PathLike[str]) -> Snapshot:
    """Every row of :data:`TABLES` (without :data:`VOLATILE` columns), in one read transaction."""
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("BEGIN")
        result: Snapshot = {}
        for table in TABLES:
            cursor = connection.execute(f"SELECT * FROM {table}")
            names = [column[0] for column in cursor.description]
            keep = [index for index, name in enumerate(names) if name not in VOLATILE]
            rows = [[_plain(row[index]) for index in keep] for row in cursor]
            result[table] = sorted(rows, key=repr)
        connection.execute("ROLLBACK")
        return result
    finally:
        connection.close()


def _plain(value: Any) -> Any:
    return value.hex() if isinstance(value, bytes) else value


def integrity(path: str | os.PathLike[str]) -> str:
    connection = sqlite3.connect(path)
    try:
        return str(connection.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        connection.close()


# injections --------------------------------------------------------------------------------------


@dataclass
class Injection:
    """A fault in the ``occurrence``-th transaction whose body is named ``target`` (counted from
    when the previous injection fired): ``mode`` is ``raise`` or ``kill`` at statement ``at``
    (``kill`` at statements + 1 is at the ``COMMIT``), ``interrupt`` (a Ctrl-C) at statement
    ``at``, or ``commit``."""

    target: str
    mode: str
    at: int = 0
    occurrence: int = 1
    snapshot_file: str | None = None  # kill: where the snapshot before the transaction goes
    seen: int = 0
    fired: bool = False
    before: Snapshot | None = None
    after: Snapshot | None = None
    error: BaseException | None = None

    def to_json(self) -> list[Any]:
        return [self.target, self.mode, self.at, self.occurrence]

    @classmethod
    def from_json(cls, item: list[Any]) -> Injection:
        target, mode, at, occurrence = item
        return cls(target, mode, at, occurrence)


class FaultyConnection:
    """The writer connection as a transaction body sees it, with one fault planted."""

    def __init__(self, connection: sqlite3.Connection, injection: Injection | None) -> None:
        self._connection = connection
        self._injection = injection
        self.statements = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)

    def execute(self, sql: str, *args: Any) -> Any:
        if sql in ("BEGIN IMMEDIATE", "ROLLBACK"):
            return self._connection.execute(sql, *args)
        if sql == "COMMIT":
            self._at_commit()
            return self._connection.execute(sql, *args)
        self._statement()
        return self._connection.execute(sql, *args)

    def executemany(self, sql: str, *args: Any) -> Any:
        self._statement()
        return self._connection.executemany(sql, *args)

    def _statement(self) -> None:
        self.statements += 1
        injection = self._injection
        if injection is None or injection.mode == "commit" or injection.at != self.statements:
            return
        if injection.mode == "kill":
            _die(injection)
        if injection.mode == "interrupt":
            raise KeyboardInterrupt  # Ctrl-C in the middle of the transaction
        raise InjectedFault(f"disk I/O error (injected at statement {self.statements})")

    def _at_commit(self) -> None:
        injection = self._injection
        if injection is None:
            return
        if injection.mode == "commit":
            raise InjectedFault("disk I/O error (injected at COMMIT)")
        if injection.mode == "kill" and injection.at == self.statements + 1:
            _die(injection)


def _die(injection: Injection) -> None:
    assert injection.snapshot_file is not None and injection.before is not None
    Path(injection.snapshot_file).write_text(json.dumps(injection.before))
    os.kill(os.getpid(), signal.SIGKILL)


@dataclass
class Injector:
    """Plants ``injections`` one after the other; with none, records every transaction."""

    injections: list[Injection] = field(default_factory=list)
    #: bodies of transactions left alone and not recorded
    ignore: frozenset[str] = BACKGROUND
    #: (body name, statements) of every transaction that is not :data:`BACKGROUND`
    transactions: list[tuple[str, int]] = field(default_factory=list)

    def pending(self) -> Injection | None:
        return next((item for item in self.injections if not item.fired), None)

    @contextmanager
    def installed(self) -> Iterator[Injector]:
        from miniengine.storage import group_commit
        from miniengine.storage.store import Store

        # Each write in a transaction of its own, named by its body, as the injections expect:
        # writes queued by several threads would otherwise commit together as one group (whose
        # failures tests/test_store_group_commit.py covers).
        max_group, group_commit.MAX_GROUP = group_commit.MAX_GROUP, 1
        original = Store._transaction
        injector = self

        def transaction(
            store: Store, fn: Callable[..., Any], args: tuple[Any, ...], *, retry: bool
        ) -> Any:
            name = getattr(fn, "__name__", repr(fn))
            if name in injector.ignore:
                return original(store, fn, args, retry=retry)
            injection = injector.pending()
            if injection is not None and injection.target == name:
                injection.seen += 1
                if injection.seen != injection.occurrence:
                    injection = None
            else:
                injection = None
            real = store._writer
            faulty = FaultyConnection(real, injection)
            if injection is not None:
                injection.fired = True
                injection.before = snapshot(store.path)
            store._writer = faulty  # type: ignore[assignment]
            try:
                return original(store, fn, args, retry=retry)
            except BaseException as exc:
                if injection is not None:
                    injection.error = exc
                    injection.after = snapshot(store.path)
                raise
            finally:
                store._writer = real
                injector.transactions.append((name, faulty.statements))

        Store._transaction = transaction  # type: ignore[method-assign]
        try:
            yield self
        finally:
            Store._transaction = original  # type: ignore[method-assign]
            group_commit.MAX_GROUP = max_group


# scenarios ---------------------------------------------------------------------------------------


def _use(db: Path) -> None:
    """Make ``db`` the default database of the launches that follow."""
    os.environ["MINIENGINE_DB"] = str(db)


def _recover(db: Path, later: float = 3600.0) -> None:
    """What a daemon's recovery does once the leases of a dead script or worker expired."""
    from miniengine.storage import broker_rows
    from miniengine.storage.store import shared_store

    shared_store(db).write_sync(broker_rows.recover_expired_tx, time.time() + later)


def _outputs(node: Any) -> dict[str, Any]:
    return {label: node.outputs[label].value for label in sorted(node.outputs)}


async def _worker_until_all_terminated(db: Path, also: Callable[[], Any] | None = None) -> None:
    from miniengine import await_node, find_processes
    from miniengine.daemon import Worker

    async with Worker(db=db, lease_timeout=LEASE, stop_timeout=1.0):
        if also is not None:
            also()
        while True:
            active = find_processes(state=["created", "running", "waiting"])
            if not active:
                return
            await await_node(active[-1], timeout=60)


def run_scenario(name: str, db: Path) -> Any:
    """Perform the transition(s) of scenario ``name`` once (it may raise)."""
    from miniengine import Int, asubmit, await_node, run
    from miniengine.control import kill
    from tests.scripts.fault_chains import StepsWorkChain, add_and_multiply

    _use(db)
    if name == "function":
        return run(add_and_multiply, Int(1), Int(2), Int(3))
    if name == "workchain":
        return run(StepsWorkChain, x=Int(1), y=Int(2))
    if name == "daemon":

        async def main() -> None:
            from miniengine.daemon import Worker

            async with Worker(db=db, lease_timeout=LEASE, stop_timeout=1.0):
                node = await asubmit(StepsWorkChain, x=Int(1), y=Int(2))
                await await_node(node, timeout=60)

        anyio.run(main)
        return None
    if name == "kill":
        return kill(_top(db), "stopped by the fault-injection test", db=db)
    if name == "pause":
        from miniengine.control import pause, play

        return pause(_top(db), db=db), play(_top(db), db=db)
    if name == "shutdown":
        anyio.run(_waiting_tree, db)
        return None
    if name == "recover":
        from miniengine.storage import broker_rows
        from miniengine.storage.store import shared_store

        return shared_store(db).write_sync(broker_rows.recover_expired_tx, time.time())
    raise ValueError(f"unknown scenario {name!r}")


def _top(db: Path) -> int:
    connection = sqlite3.connect(db)
    try:
        row = connection.execute(
            "SELECT min(pk) FROM nodes WHERE node_type = 'process.workchain' "
            "AND pk NOT IN (SELECT out_pk FROM links WHERE link_type = 'call_work')"
        ).fetchone()
    finally:
        connection.close()
    assert row[0] is not None, "the scenario's database has no top-level process"
    return int(row[0])


def _states(db: Path) -> list[list[Any]]:
    connection = sqlite3.connect(db)
    try:
        return [
            list(row)
            for row in connection.execute(
                "SELECT process_label, process_state, exit_status FROM nodes "
                "WHERE process_state IS NOT NULL ORDER BY pk"
            )
        ]
    finally:
        connection.close()


def complete(name: str, db: Path) -> dict[str, Any]:
    """After an attempt (failed or not): recover, rerun to completion, return a signature."""
    from miniengine import Int, asubmit, await_node, load_node, run
    from miniengine.control import kill
    from miniengine.testing import open_gate
    from tests.scripts.fault_chains import StepsWorkChain, add_and_multiply

    _use(db)
    if name == "function":
        _recover(db)
        return {"result": run(add_and_multiply, Int(1), Int(2), Int(3)).value}
    if name == "workchain":
        _recover(db)
        outputs = run(StepsWorkChain, x=Int(1), y=Int(2))
        return {label: outputs[label].value for label in sorted(outputs)}
    if name == "daemon":
        signature: dict[str, Any] = {}

        async def main() -> None:
            await _worker_until_all_terminated(db)
            finished = [
                node
                for node in _top_nodes(db, "StepsWorkChain")
                if node.is_finished_ok  # retried to completion
            ]
            if finished:
                signature.update(_outputs(finished[0]))
                return
            from miniengine.daemon import Worker

            async with Worker(db=db, lease_timeout=LEASE, stop_timeout=1.0):
                node = await asubmit(StepsWorkChain, x=Int(1), y=Int(2))
                await await_node(node, timeout=60)
            signature.update(_outputs(node))

        anyio.run(main)
        return signature
    if name == "kill":
        kill(_top(db), "stopped by the fault-injection test", db=db)
        return {"states": _states(db)}
    if name == "shutdown":
        anyio.run(_worker_until_all_terminated, db, lambda: open_gate(GATE, db=db))
        tops = _top_nodes(db, "GatesWorkChain")
        if not (tops and tops[0].is_finished_ok):  # not retried but reported: run it again
            tops = [anyio.run(_gates_to_the_end, db)]
        return {"top": _outputs(tops[0])}
    if name in ("recover", "pause"):
        if name == "pause":
            from miniengine.control import play

            play(_top(db), db=db)
        _recover(db, later=0.0)
        top = _top(db)
        anyio.run(_worker_until_all_terminated, db, lambda: open_gate(GATE, db=db))
        return {"top": _outputs(load_node(top)), "states": _states(db)}
    raise ValueError(f"unknown scenario {name!r}")


def _top_nodes(db: Path, label: str) -> list[Any]:
    from miniengine import find_processes

    return [node for node in reversed(find_processes(process_label=label)) if node.caller is None]


def prepare(name: str, db: Path) -> None:
    """Build the database the scenario starts from (most start from an empty one)."""
    from miniengine.storage.store import Store, close_all_stores

    _use(db)
    Store(db).close()
    if name in ("kill", "recover", "pause"):
        anyio.run(_waiting_tree, db)
    if name == "recover":
        _leave_expired_leases(db)
    close_all_stores()


async def _waiting_tree(db: Path) -> None:
    """A GatesWorkChain evicted while its two children wait at the gate, handed back to the
    queue by a worker that stopped (so nobody holds any of them)."""
    from miniengine import Str, asubmit
    from miniengine.daemon import Worker
    from tests.scripts.fault_chains import GatesWorkChain

    async with Worker(db=db, lease_timeout=LEASE, stop_timeout=0.2) as worker:
        top = await asubmit(GatesWorkChain, gate=Str(GATE))
        waiting = (
            "SELECT count(*) FROM nodes WHERE process_label = 'WaitingProcess' "
            "AND process_state = 'running'"
        )
        with anyio.fail_after(30):
            # (a fault may end the parent first: then there is nothing more to wait for)
            while (_count(db, waiting) < 2 or worker.busy < 2) and not top.is_terminated:
                await anyio.sleep(0.01)


async def _gates_to_the_end(db: Path) -> Any:
    """A GatesWorkChain run to its end by a worker, its gate open."""
    from miniengine import Str, asubmit, await_node
    from miniengine.daemon import Worker
    from miniengine.testing import open_gate
    from tests.scripts.fault_chains import GatesWorkChain

    open_gate(GATE, db=db)
    async with Worker(db=db, lease_timeout=LEASE, stop_timeout=1.0):
        node = await asubmit(GatesWorkChain, gate=Str(GATE))
        await await_node(node, timeout=60)
    return node


def _leave_expired_leases(db: Path) -> None:
    """What a SIGKILLed worker and a SIGKILLed script leave: the ready tasks leased by a worker
    that is gone, and a run-mode process whose script is gone, all with expired leases."""
    from miniengine import Int
    from miniengine.storage import checkpoint_rows, rows
    from miniengine.storage.store import Store

    store = Store(db)
    try:
        past = time.time() - 1
        store.write_sync(checkpoint_rows.claim_work_tx, "worker:gone", 10, past, time.time())
        new = rows.NewProcess(
            uuid=__import__("uuid").uuid4().hex,
            node_type="process.calcfunction",
            process_type="tests.scripts.fault_chains:add",
            process_label="add",
            process_state="running",
            label="",
            description="",
            inputs=[("x", Int(1)), ("y", Int(2))],
            input_link_type="input_calc",
            owner="script:gone",
            lease_expires=past,
        )
        store.write_sync(rows.begin_process_tx, new)
    finally:
        store.close()


def _count(db: Path, sql: str) -> int:
    connection = sqlite3.connect(db)
    try:
        return int(connection.execute(sql).fetchone()[0])
    finally:
        connection.close()


# the harness of the tests ------------------------------------------------------------------------


def template_db(tmp_path: Path, scenario: str) -> Path:
    """The database the scenario starts from, built once and copied for every injection."""
    db = tmp_path / "template" / "engine.sqlite"
    db.parent.mkdir()
    prepare(scenario, db)
    return db


def copy_db(template: Path, folder: Path) -> Path:
    folder.mkdir()
    db = folder / "engine.sqlite"
    shutil.copyfile(template, db)
    return db


def count_transactions(template: Path, folder: Path, scenario: str) -> list[tuple[str, int, int]]:
    """``(body name, occurrence, statements)`` of every transaction of an uninjected run."""
    db = copy_db(template, folder)
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


def baseline_of(template: Path, folder: Path, scenario: str) -> dict[str, Any]:
    db = copy_db(template, folder)
    run_scenario(scenario, db)
    signature = complete(scenario, db)
    close_all_stores()
    return signature


def check_after(db: Path, scenario: str, baseline: dict[str, Any], what: str) -> None:
    """Integrity, then recovery and a rerun give the uninjected result, leaving nothing live,
    no checkpoint of a terminated process and nothing for `process repair` to fix."""
    assert integrity(db) == "ok", what
    signature = complete(scenario, db)
    close_all_stores()
    assert signature == baseline, what
    assert integrity(db) == "ok", what
    assert live_processes(db) == [], f"{what}: processes left live: {live_processes(db)}"
    assert query(db, "SELECT pk FROM tasks WHERE status = 'leased'") == [], what
    leftovers = query(
        db,
        "SELECT c.node_pk FROM checkpoints c JOIN nodes n ON n.pk = c.node_pk "
        "WHERE n.process_state NOT IN ('created', 'running', 'waiting')",
    )
    assert leftovers == [], f"{what}: checkpoints of terminated processes: {leftovers}"
    from miniengine.storage.repair_rows import repair_tx
    from miniengine.storage.store import Store

    store = Store(db)
    try:
        findings = store.write_sync(repair_tx, True)  # a dry run: what repair would fix
    finally:
        store.close()
    assert findings == [], f"{what}: {findings}"


def live_processes(db: Path) -> list[tuple[Any, ...]]:
    return query(
        db,
        "SELECT pk, process_label, process_state FROM nodes "
        "WHERE process_state IN ('created', 'running', 'waiting')",
    )


def query(db: Path, sql: str) -> list[tuple[Any, ...]]:
    connection = sqlite3.connect(db)
    try:
        return connection.execute(sql).fetchall()
    finally:
        connection.close()


def commit_points(transactions: list[tuple[str, int, int]], mode: str) -> list[Injection]:
    """One injection per commit point: every statement (and the COMMIT, for a kill)."""
    points = []
    for name, occurrence, statements in transactions:
        if mode == "commit":
            points.append(Injection(name, "commit", 0, occurrence))
            continue
        last = statements + 1 if mode == "kill" else statements
        points.extend(Injection(name, mode, at, occurrence) for at in range(1, last + 1))
    return points


def ignored(scenario: str) -> frozenset[str]:
    """The transactions of ``scenario`` that are not part of its transition."""
    return BACKGROUND - {"recover_expired_tx"} if scenario == "recover" else BACKGROUND


def run_injected(db: Path, scenario: str, injections: list[Injection]) -> BaseException | None:
    """Run ``scenario`` with ``injections`` planted; return what it raised, if anything."""
    from miniengine.daemon import worker
    from miniengine.storage.store import close_all_stores

    delays = worker.RETRY_DELAY, worker.CLAIM_RETRY_DELAY
    # a task handed back, or a claim that failed, is tried again soon
    worker.RETRY_DELAY = worker.CLAIM_RETRY_DELAY = 0.05
    try:
        with Injector(injections, ignored(scenario)).installed():
            try:
                run_scenario(scenario, db)
            except (Exception, KeyboardInterrupt) as exc:
                return exc
            finally:
                close_all_stores()
        return None
    finally:
        worker.RETRY_DELAY, worker.CLAIM_RETRY_DELAY = delays


#: How many forked children run their jobs at once: a job mostly waits (a worker's stop timeout,
#: its polls), and each has a database of its own, so several overlap on a small machine.
CONCURRENT_JOBS = 4


def serve() -> None:
    """Run each job of stdin (one JSON object a line) in a forked child, which the injection
    SIGKILLs; print one JSON line per job, in the order of the jobs: how its child ended.

    Forking from this process, which has imported everything but opened nothing and started no
    thread, spares each job the interpreter's start.  Up to :data:`CONCURRENT_JOBS` children run
    at once (each on its own database, snapshot and gate).
    """
    import tests.scripts.fault_chains  # noqa: F401  (imported once, before the forks)
    from miniengine.daemon import Worker  # noqa: F401

    jobs = [json.loads(line) for line in sys.stdin]
    endings: dict[int, dict[str, int | None]] = {}
    running: dict[int, int] = {}  # pid -> index of its job
    printed = 0
    for index, job in enumerate(jobs):
        if len(running) >= CONCURRENT_JOBS:
            _reap(running, endings)
        running[_fork_job(job)] = index
        printed = _print_endings(endings, printed)
    while running:
        _reap(running, endings)
        printed = _print_endings(endings, printed)


def _fork_job(job: dict[str, Any]) -> int:
    """Start ``job`` in a forked child; its pid."""
    injections = [Injection.from_json(item) for item in job["injections"]]
    for injection in injections:
        injection.snapshot_file = job["snapshot"]
    pid = os.fork()
    if pid == 0:
        code = 3  # the scenario ended: the kill did not happen
        try:
            error = run_injected(Path(job["db"]), job["scenario"], injections)
            if error is not None:
                print(f"{type(error).__name__}: {error}", file=sys.stderr)
        finally:
            os._exit(code)
    return pid


def _reap(running: dict[int, int], endings: dict[int, dict[str, int | None]]) -> None:
    """Wait for one of the ``running`` children to end; record how it ended under its job."""
    pid, status = os.waitpid(-1, 0)
    signalled = os.WIFSIGNALED(status)
    endings[running.pop(pid)] = {
        "signal": os.WTERMSIG(status) if signalled else None,
        "code": None if signalled else os.WEXITSTATUS(status),
    }


def _print_endings(endings: dict[int, dict[str, int | None]], printed: int) -> int:
    """Print the endings known from job ``printed`` on, in order; the next job to print."""
    while printed in endings:
        print(json.dumps(endings.pop(printed)), flush=True)
        printed += 1
    return printed


if __name__ == "__main__":
    serve()
