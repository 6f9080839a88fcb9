"""Helpers the daemon, durability and scaling workloads share: a daemon for the length of a
``with`` block, waiting for many processes without polling every node, W1 and W6 rounds, and
filling a database with old provenance by bulk SQL.

Everything that imports miniengine does it inside a function, so that listing the workloads
stays cheap.
"""

from __future__ import annotations

import contextlib
import os
import select
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.backends import db_location, probe
from benchmarks.registry import WrongResult, check
from benchmarks.timing import latency_stats, timed

TERMINAL = ("finished", "excepted", "killed")
ACTIVE = ("created", "running", "waiting")

#: The folder whose ``sitecustomize`` makes every Store of a daemon default to another
#: ``synchronous`` mode (the daemon has no option for it; see ``durability``).
SYNC_SHIM = Path(__file__).resolve().parent / "_sync_shim"


def db_path() -> Path:
    """The database file of this repetition, for the workloads measured on sqlite only (the
    runner gives each repetition its own temporary file)."""
    location = db_location()
    if not isinstance(location, Path):
        from benchmarks.registry import Skipped

        raise Skipped("this workload runs on sqlite only")
    return location


# the daemon ----------------------------------------------------------------------------------


@dataclass
class RunningDaemon:
    db: Path | str
    pid: int
    start_s: float  # start_daemon until it returned (its workers are ready)
    workers: list[int] = field(default_factory=list)

    def worker_pids(self) -> list[int]:
        from miniengine.daemon.files import DaemonFiles

        state = DaemonFiles(self.db).read() or {}
        return [int(pid) for pid in state.get("workers", []) or []]  # type: ignore[attr-defined]


@contextlib.contextmanager
def daemon(
    db: Path | str, workers: int = 1, *, synchronous: str | None = None, **options: Any
) -> Iterator[RunningDaemon]:
    """A daemon of ``workers`` worker processes for ``db``, stopped when the block ends.

    ``synchronous`` (``"FULL"``) makes the daemon's stores use that mode through
    :data:`SYNC_SHIM` on its ``PYTHONPATH``, since the daemon itself has no option for it; the
    same shim profiles the daemon's processes under ``--profile``.
    """
    from benchmarks.profiling import ENV_VAR as PROFILE_VAR
    from miniengine.daemon.__main__ import start_daemon, stop_daemon

    saved = {key: os.environ.get(key) for key in ("PYTHONPATH", "MINIENGINE_BENCH_SYNCHRONOUS")}
    if synchronous is not None:
        os.environ["MINIENGINE_BENCH_SYNCHRONOUS"] = synchronous
    if synchronous is not None or os.environ.get(PROFILE_VAR):
        path = [str(SYNC_SHIM), saved["PYTHONPATH"]]
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in path if p)
    try:
        start = time.perf_counter()
        pid = start_daemon(db, workers=workers, **options)
        running = RunningDaemon(db, pid, time.perf_counter() - start)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    running.workers = running.worker_pids()
    try:
        yield running
    finally:
        stop_daemon(db, timeout=30)


def rss_mib(pid: int) -> float | None:
    """Resident memory of a live process (``VmRSS`` of ``/proc/<pid>/status``), in MiB."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


# waiting for many processes --------------------------------------------------------------------


class Watcher:
    """Counts terminated processes among ``pks`` on a read-only connection of its own.

    It queries only after another connection committed, as ``await_node`` does, but for many
    nodes at once.  On sqlite it looks at ``PRAGMA data_version`` (microseconds) every
    ``interval``; on PostgreSQL it LISTENs on the channel every engine commit notifies, and
    waits on the socket for at most ``interval``.  It counts at most once per
    :attr:`min_gap` (10 ms): a busy daemon commits hundreds of times a second, and a count
    over thousands of pks after each commit took half a core on a 2-core machine, from the
    workers being measured.  The end is then seen at most 10 ms late.
    """

    #: the shortest time between two counts
    min_gap = 0.01

    def __init__(self, db: Path | str, pks: Sequence[int | None]) -> None:
        check(None not in pks, "a submitted process has no pk")
        self.postgres = isinstance(db, str)
        if self.postgres:
            import psycopg

            from miniengine.storage.postgres.connection import COMMIT_CHANNEL

            self.connection: Any = psycopg.connect(str(db), autocommit=True)
            self.connection.execute(f"LISTEN {COMMIT_CHANNEL}")
        else:
            self.connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True, isolation_level=None)
        self.pks = list(dict.fromkeys(pk for pk in pks if pk is not None))
        # The pks go into a temporary table of the watcher's session once: a count that passed
        # thousands of them each time cost 4 ms on PostgreSQL (1.7 ms of it the client's, to
        # send the array), a tenth of a core taken from the workers being measured.
        if self.postgres:
            self.connection.execute("CREATE TEMP TABLE watched (pk bigint PRIMARY KEY)")
            with self.connection.cursor().copy("COPY watched (pk) FROM STDIN") as copy:
                for pk in self.pks:
                    copy.write_row((pk,))
            self.connection.execute("ANALYZE watched")
            marks = "%s, " * (len(TERMINAL) - 1) + "%s"
        else:
            self.connection.execute("CREATE TEMP TABLE watched (pk INTEGER PRIMARY KEY)")
            rows = [(pk,) for pk in self.pks]
            self.connection.executemany("INSERT INTO watched VALUES (?)", rows)
            marks = ",".join("?" * len(TERMINAL))
        self._query = (
            f"SELECT count(*) FROM watched JOIN nodes USING (pk) WHERE process_state IN ({marks})"
        )
        self._params: tuple[Any, ...] = tuple(TERMINAL)
        self._version = -1
        self._changed = True  # something committed since the last count
        self._counted_at = -1.0
        self.done = 0

    def close(self) -> None:
        self.connection.close()

    def poll(self, wait: float = 0.0) -> int:
        """The count of terminated processes, queried again only if something committed since
        the last query (on PostgreSQL, waiting up to ``wait`` seconds for a commit)."""
        if self.postgres:
            # every notification queued so far is covered by the count that follows
            if any([True for _ in self.connection.notifies(timeout=0)]):
                self._changed = True
            # On the socket, not by ``notifies(timeout=wait)``: psycopg polls the socket in a
            # loop until that timeout, which took 40% of a core here, from the workers being
            # measured.  A notification that came with the reply to a query is buffered
            # already, with the socket quiet: the look above finds it.
            elif (
                not self._changed
                and wait
                and select.select([self.connection.fileno()], [], [], wait)[0]
            ):
                self._changed = any([True for _ in self.connection.notifies(timeout=0)])
        else:
            version = self.connection.execute("PRAGMA data_version").fetchone()[0]
            if version != self._version:
                self._version = version
                self._changed = True
        now = time.perf_counter()
        if self._changed and wait and now - self._counted_at < self.min_gap:
            time.sleep(self.min_gap - (now - self._counted_at))
            now = time.perf_counter()
        if self._changed and now - self._counted_at >= self.min_gap:
            self._changed = False
            self._counted_at = now
            self.done = self.connection.execute(self._query, self._params).fetchone()[0]
        return self.done

    def wait(
        self,
        timeout: float,
        *,
        interval: float = 0.002,
        on_poll: Callable[[int], None] | None = None,
    ) -> float:
        """Wait until every process has terminated; the ``perf_counter`` time it was seen."""
        deadline = time.perf_counter() + timeout
        wait = 0.0
        while True:
            done = self.poll(wait)
            now = time.perf_counter()
            if on_poll is not None:
                on_poll(done)
            if done >= len(self.pks):
                return now
            if now > deadline:
                raise WrongResult(
                    f"only {done} of {len(self.pks)} processes terminated within {timeout:.0f} s"
                )
            if self.postgres:
                wait = interval  # the next poll waits on the socket instead of sleeping
            else:
                time.sleep(interval)


def process_states(db: Path | str) -> dict[str, int]:
    """How many process nodes of the database are in each state."""
    with probe(db) as connection:
        rows = connection.all(
            "SELECT process_state, count(*) FROM nodes WHERE process_state IS NOT NULL "
            "GROUP BY process_state"
        )
    return {state: int(count) for state, count in rows}


# W1 and W6 rounds ------------------------------------------------------------------------------


def w1_round(n: int) -> dict[str, Any]:
    """``n`` calls of the ``add`` calcfunction in run mode, each checked; latency stats."""
    from benchmarks.procs import add
    from miniengine import Int

    def call(i: int) -> None:
        result = add(Int(i), Int(1))
        if not (isinstance(result, Int) and result.is_stored and result == i + 1):
            raise WrongResult(f"add({i}, 1) returned {result!r}, not a stored Int({i + 1})")

    return latency_stats(timed(call, n))


def submit_small(n: int, offset: int = 0) -> tuple[list[Any], float]:
    """Submit ``n`` SmallWorkChains (x = offset + i, y = 1); their nodes and the seconds taken."""
    from benchmarks.workchains import SmallWorkChain
    from miniengine import Int, submit

    start = time.perf_counter()
    nodes = [submit(SmallWorkChain, x=Int(offset + i), y=Int(1)) for i in range(n)]
    return nodes, time.perf_counter() - start


def check_small(nodes: Sequence[Any], offset: int = 0) -> None:
    """Every SmallWorkChain finished OK with ``sum`` = x + 1."""
    bad = [
        (i, node.pk, node.process_state, node.exit_status)
        for i, node in enumerate(nodes)
        if not (node.is_finished_ok and node.outputs.sum == offset + i + 1)
    ]
    check(not bad, f"{len(bad)} of {len(nodes)} workchains did not finish OK: {bad[:5]}")


def w6_round(db: Path | str, n: int, *, offset: int = 0, timeout: float = 300) -> dict[str, Any]:
    """W6 against a running daemon: submit ``n`` SmallWorkChains and wait for all of them.

    The clock runs from the first submit to the moment every one is seen terminated.
    """
    start = time.perf_counter()
    nodes, submit_s = submit_small(n, offset)
    watcher = Watcher(db, [node.pk for node in nodes])
    try:
        end = watcher.wait(timeout)
    finally:
        watcher.close()
    wall = end - start
    check_small(nodes, offset)
    return {"n": n, "wall_s": wall, "per_s": n / wall, "submit_s": submit_s}


def loop_round(db: Path | str, n: int, steps: int, timeout: float = 600) -> dict[str, Any]:
    """Submit ``n`` LoopWorkChains of ``steps`` iterations (one ``add`` each) to a running
    daemon and wait for all of them: many commits, the load that used to grow the WAL."""
    from benchmarks.workchains import LoopWorkChain
    from miniengine import Int, submit

    start = time.perf_counter()
    nodes = [submit(LoopWorkChain, n=Int(steps)) for _ in range(n)]
    watcher = Watcher(db, [node.pk for node in nodes])
    try:
        end = watcher.wait(timeout)
    finally:
        watcher.close()
    expected = steps * (steps - 1) // 2
    bad = [
        node.pk for node in nodes if not (node.is_finished_ok and node.outputs.result == expected)
    ]
    check(not bad, f"{len(bad)} of {n} LoopWorkChains did not finish with {expected}: {bad[:5]}")
    wall = end - start
    return {"n": n, "steps": steps, "wall_s": wall, "per_s": n / wall}


class WalSampler:
    """The largest size the database's ``-wal`` file reaches while the ``with`` block runs,
    sampled every few milliseconds by a thread (a checkpoint can shrink it between samples, so
    this is a lower bound of the true peak, close at this rate)."""

    def __init__(self, db: Path, interval: float = 0.005) -> None:
        import threading

        self.wal = db.with_name(db.name + "-wal")
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="wal-sampler", daemon=True)

    def _sample(self) -> None:
        while True:
            try:
                self.peak = max(self.peak, self.wal.stat().st_size)
            except OSError:
                pass
            if self._stop.wait(self.interval):
                return

    @property
    def peak_mib(self) -> float:
        return self.peak / 2**20

    def __enter__(self) -> WalSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()


def drain(db: Path | str, nodes: Sequence[Any], timeout: float = 300) -> float:
    """Wait (with a daemon running) until ``nodes`` terminated; the seconds it took."""
    start = time.perf_counter()
    watcher = Watcher(db, [node.pk for node in nodes])
    try:
        end = watcher.wait(timeout, interval=0.005)
    finally:
        watcher.close()
    return end - start


# filling a database with old provenance --------------------------------------------------------

#: Nodes per unit of pre-filled provenance: a submitted SmallWorkChain with its two Int inputs,
#: the ``add`` it called and the Int it returned.
NODES_PER_UNIT = 5
_UUID_PREFIX = 0x0190 << 112  # time-ordered like uuid7, and older than anything made now
SPREAD_SECONDS = 30 * 86400.0


def node_count(db: Path) -> int:
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(connection.execute("SELECT count(*) FROM nodes").fetchone()[0])
    finally:
        connection.close()


def prefill(db: Path, nodes: int, batch_units: int = 20_000) -> float:
    """Add about ``nodes`` nodes of finished provenance to ``db`` by bulk SQL; the seconds taken.

    Each unit is what a finished W6 SmallWorkChain leaves behind (5 nodes, 7 links, a done task,
    a call memo, and the ``events`` rows the engine's triggers add), with ctimes spread over the
    last 30 days.  The schema must exist (open a ``Store`` first).  The rows are written on a
    connection of our own at ``synchronous=OFF`` and the WAL is checkpointed afterwards: this is
    set-up, not measurement.
    """
    from miniengine.storage.rows import pack_attributes

    start = time.perf_counter()
    connection = sqlite3.connect(db, isolation_level=None, timeout=30)
    try:
        connection.execute("PRAGMA synchronous = OFF")
        connection.execute("PRAGMA cache_size = -262144")  # 256 MiB: bulk index inserts
        first_pk = int(connection.execute("SELECT coalesce(max(pk), 0) FROM nodes").fetchone()[0])
        units = max(1, nodes // NODES_PER_UNIT)
        now = time.time()
        wc_type, wc_label = "benchmarks.workchains.SmallWorkChain", "SmallWorkChain"
        add_type = "benchmarks.procs.add"
        for offset in range(0, units, batch_units):
            node_rows, link_rows, task_rows, memo_rows = [], [], [], []
            for unit in range(offset, min(units, offset + batch_units)):
                base = first_pk + NODES_PER_UNIT * unit + 1
                x, y, wc, calc, result = range(base, base + NODES_PER_UNIT)
                t = now - SPREAD_SECONDS * (1 - unit / units) - 60
                node_rows += [
                    _data_row(x, t, pack_attributes(unit)),
                    _data_row(y, t, pack_attributes(1)),
                    _process_row(wc, "process.workchain", wc_type, wc_label, t, submitted=1),
                    _process_row(calc, "process.calcfunction", add_type, "add", t + 0.001),
                    _data_row(result, t + 0.002, pack_attributes(unit + 1)),
                ]
                link_rows += [
                    (x, wc, "input_work", "x"),
                    (y, wc, "input_work", "y"),
                    (x, calc, "input_calc", "x"),
                    (y, calc, "input_calc", "y"),
                    (wc, calc, "call_calc", "CALL"),
                    (calc, result, "create", "result"),
                    (wc, result, "return", "sum"),
                ]
                task_rows.append((wc, f"start:{wc}", t))
                memo_rows.append((wc, 1, 0, add_type, f"{unit:032x}", calc))
            connection.execute("BEGIN IMMEDIATE")
            connection.executemany(
                "INSERT INTO nodes (pk, uuid, node_type, process_type, process_label, "
                "process_state, exit_status, attributes, lease_epoch, ctime, mtime, submitted) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                node_rows,
            )
            connection.executemany(
                "INSERT INTO links (in_pk, out_pk, link_type, label) VALUES (?, ?, ?, ?)",
                link_rows,
            )
            connection.executemany(
                "INSERT INTO tasks (process_pk, dedup_key, status, ctime) VALUES (?, ?, 'done', ?)",
                task_rows,
            )
            connection.executemany(
                "INSERT INTO call_memo (parent_pk, seq, call_index, process_type, fingerprint, "
                "child_pk) VALUES (?, ?, ?, ?, ?, ?)",
                memo_rows,
            )
            connection.execute("COMMIT")
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        connection.close()
    return time.perf_counter() - start


def _uuid(pk: int) -> str:
    h = f"{_UUID_PREFIX | pk:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _data_row(pk: int, t: float, attributes: bytes) -> tuple[Any, ...]:
    return (pk, _uuid(pk), "core.int", None, None, None, None, attributes, 0, t, t, 0)


def _process_row(
    pk: int, node_type: str, process_type: str, label: str, t: float, submitted: int = 0
) -> tuple[Any, ...]:
    return (pk, _uuid(pk), node_type, process_type, label, "finished", 0, None, 1, t, t, submitted)
