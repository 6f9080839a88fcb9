"""Several hosts, one PostgreSQL database: a host dies whole, another freezes past its leases.

Each "host" is a daemon of its own (``miniengine daemon start`` with the same URL), as if on its
own machine: its own home and working directory, its own ``$MINIENGINE_HOST``, so that its pid,
lock and log files live in its own ``~/.miniengine/daemons/<host>/<db>-<hash>/``.  While they
run the mixed workload of the chaos suite (``tests/workchains/chaos_chains.py``: WorkChains
that submit children and call calcfunctions inline), the driver

- SIGKILLs one host whole (its supervisor and its workers at once: nobody releases its leases,
  so the other hosts take its processes over once the leases run out), and starts it again
  later (a machine that reboots);
- freezes another host whole (SIGSTOP of its supervisor and workers) past its lease timeout,
  as a machine whose clock jumped or that was cut off the network; once the other hosts have
  taken its processes over it is thawed, workers first: everything it still tries to write for
  those processes is refused (it is fenced, and says so in its log), and the work is finished
  once, by someone else.

The checks of the chaos suite then read the database: every WorkChain finished with the outputs
its inputs imply, no process lost or orphaned, no finished call duplicated, links, checkpoints
and tasks consistent.  ``daemon status`` on a host lists the workers of every host by host and
says where its files are, without the password of the URL.

The CI size runs with the suite when PostgreSQL is installed; ``pytest -m long`` runs more
hosts, more work and more rounds.  ``MINIENGINE_CHAOS_RANDOM=N`` replays a run's choices.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from miniengine.daemon.files import daemon_folder
from tests.test_chaos import (
    ACTIVE,
    ChaosSize,
    Findings,
    check_calls,
    check_links_and_checkpoints,
    check_processes,
    check_tasks,
    submit_batch,
    workload,
)
from tests.workchains.chaos_chains import process_count
from tests.workchains.daemon_chains import (
    alive,
    command_line,
    kill_quietly,
    python_env,
    wait_until,
)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")

#: short leases, so that the hosts take a dead or frozen host's work over within seconds
LEASE_TIMEOUT = 2.0


@dataclass(frozen=True)
class MultiHostSize:
    hosts: int
    workers: int
    work: ChaosSize
    #: rounds of (kill one host, freeze another), each followed by a batch of submissions
    rounds: int
    finish_timeout: float


CI = MultiHostSize(
    hosts=3,
    workers=1,
    work=ChaosSize(
        fan_outs=1,
        nested=4,
        inline_chains=6,
        leaves=10,
        events=0,
        nap=0.1,
        finish_timeout=180,
        fan_out_width=20,
        nested_depth=2,
    ),
    rounds=1,
    finish_timeout=180,
)
LONG = MultiHostSize(
    hosts=4,
    workers=2,
    work=ChaosSize(
        fan_outs=2,
        nested=20,
        inline_chains=40,
        leaves=80,
        events=0,
        nap=0.1,
        finish_timeout=600,
        fan_out_width=100,
    ),
    rounds=4,
    finish_timeout=600,
)


# the hosts -------------------------------------------------------------------------------------


@dataclass
class Host:
    """One simulated machine: a home and working directory, a host name, a daemon."""

    name: str
    home: Path
    url: str
    seen: set[int] = field(default_factory=set)

    def env(self) -> dict[str, str]:
        env = python_env()
        env.update(HOME=str(self.home), MINIENGINE_HOST=self.name, MINIENGINE_DB=self.url)
        return env

    @property
    def folder(self) -> Path:
        return daemon_folder(self.url, self.name, self.home / ".miniengine" / "daemons")

    def cli(
        self, command: str, *args: str, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        completed = subprocess.run(
            [sys.executable, "-m", "miniengine.daemon", command, *args],
            env=self.env(),
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        self.state()
        return completed

    def start(self, workers: int) -> int:
        completed = self.cli(
            "start", "--workers", str(workers), "--lease-timeout", str(LEASE_TIMEOUT)
        )
        assert completed.returncode == 0, completed.stdout + completed.stderr
        state = self.state()
        assert state is not None and state["state"] == "ready", state
        return int(state["pid"])

    def state(self) -> dict[str, Any] | None:
        try:
            state: dict[str, Any] = json.loads((self.folder / "daemon.pid").read_text())
        except (OSError, ValueError):
            return None
        self.seen.update(int(pid) for pid in [state.get("pid"), *state.get("workers", [])] if pid)
        return state

    def processes(self) -> list[int]:
        """The live supervisor and workers of this host (pid reuse excluded)."""
        self.state()
        return [pid for pid in self.seen if alive(pid) and "miniengine.daemon" in command_line(pid)]

    def workers(self) -> list[int]:
        return [pid for pid in self.processes() if "worker_process" in command_line(pid)]

    def signal(self, sig: int, pids: list[int] | None = None) -> None:
        for pid in self.processes() if pids is None else pids:
            kill_quietly(pid, sig)

    def log(self) -> str:
        try:
            return (self.folder / "daemon.log").read_text(errors="replace")
        except OSError:
            return ""

    def close(self) -> None:
        for pid in self.processes():
            kill_quietly(pid, signal.SIGCONT)
        if self.state() is not None:
            self.cli("stop", timeout=60)
        for pid in self.processes():
            kill_quietly(pid)


# the database ----------------------------------------------------------------------------------


class Portable:
    """A psycopg connection that takes the chaos suite's sqlite-style ``?`` parameters."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection

    def execute(self, sql: str, args: tuple[Any, ...] = ()) -> Any:
        return self.connection.execute(sql.replace("?", "%s"), args)


def query(url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        return connection.execute(sql, args).fetchall()


def active_count(url: str) -> int:
    return int(
        query(url, "SELECT count(*) FROM nodes WHERE process_state = ANY(%s)", list(ACTIVE))[0][0]
    )


def held_by(url: str, host: str) -> list[int]:
    """The live processes whose lease a worker of ``host`` holds now."""
    return [
        pk
        for (pk,) in query(
            url,
            "SELECT pk FROM nodes WHERE owner LIKE %s AND lease_expires > %s "
            "AND process_state = ANY(%s)",
            f"worker:{host}:%",
            time.time(),
            list(ACTIVE),
        )
    ]


def owners(url: str, pks: list[int]) -> dict[int, str | None]:
    return {
        int(pk): owner
        for pk, owner, state in query(
            url, "SELECT pk, owner, process_state FROM nodes WHERE pk = ANY(%s)", pks
        )
    }


def check_database(url: str, submitted: list[int]) -> Findings:
    import psycopg

    found = Findings()
    with psycopg.connect(url, autocommit=True) as raw:
        connection: Any = Portable(raw)
        check_processes(connection, found)
        check_calls(connection, found)
        check_links_and_checkpoints(connection, found)
        check_tasks(connection, found)
        top = {pk for (pk,) in raw.execute("SELECT pk FROM nodes WHERE submitted = 1")}
    found.lost += [
        f"submitted process {pk} is not in the database" for pk in submitted if pk not in top
    ]
    return found


# the driver ------------------------------------------------------------------------------------


@dataclass
class Tally:
    host_kills: int = 0
    #: processes the killed host held when it died
    killed_holding: int = 0
    freezes: int = 0
    #: processes the frozen host held that others took over while it was frozen
    taken_over: int = 0
    #: "lost its lease" lines in the frozen hosts' logs: their refused writes
    fenced: int = 0
    restarts: int = 0
    submitted: list[int] = field(default_factory=list)
    drain_s: float = 0.0


@dataclass
class Feeder:
    """Submits the workload a few WorkChains at a time, whenever a step of the driver waits
    for a host to hold work and none is running: the events land on work in flight."""

    jobs: list[tuple[str, dict[str, int]]]
    size: ChaosSize
    tally: Tally
    chunk: int
    last: float = 0.0

    def feed(self, count: int | None = None) -> None:
        count = self.chunk if count is None else count
        submit_batch(self.jobs[:count], self.size, self.tally)
        del self.jobs[:count]
        self.last = time.monotonic()

    def wait_for_holding(self, url: str, host: Host, timeout: float) -> list[int]:
        """The processes a worker of ``host`` holds, once it holds some."""

        def holding() -> list[int]:
            held = held_by(url, host.name)
            if not held and self.jobs and time.monotonic() - self.last > 1.0:
                self.feed()  # a batch every second until the host runs some of it
            return held

        return wait_until(holding, timeout, f"{host.name} to hold work", 0.02)


def freeze_and_thaw(url: str, frozen: Host, feeder: Feeder, rng: random.Random) -> int:
    """SIGSTOP every process of ``frozen`` while its workers hold processes, wait until the
    other hosts took those over, SIGCONT it (its workers first); how many were taken over."""
    while True:
        feeder.wait_for_holding(url, frozen, 60)
        processes, workers = frozen.processes(), frozen.workers()
        frozen.signal(signal.SIGSTOP, processes)
        held = held_by(url, frozen.name)  # now frozen: runs in its workers' memory
        if held:
            break
        frozen.signal(signal.SIGCONT, processes)  # it had just finished them: again
    try:
        wait_until(
            lambda: all(
                owner is None or not owner.startswith(f"worker:{frozen.name}:")
                for owner in owners(url, held).values()
            ),
            60,
            f"the other hosts to take over the processes of frozen {frozen.name}",
            0.05,
        )
        time.sleep(rng.uniform(0.0, 1.0))
    finally:
        # workers first, so they meet the refusal before their supervisor's watchdog (which
        # sees their stale heartbeats) may kill them
        frozen.signal(signal.SIGCONT, workers)
        time.sleep(1.5)
        frozen.signal(signal.SIGCONT, processes)
    return len(held)


def drive(
    url: str, hosts: list[Host], size: MultiHostSize, rng: random.Random, tally: Tally
) -> None:
    jobs = workload(size.work, rng)
    feeder = Feeder(jobs, size.work, tally, chunk=max(len(jobs) // (size.rounds * 6), 4))
    for host in hosts:
        host.start(size.workers)
    feeder.feed()
    for _ in range(size.rounds):
        victim, frozen = rng.sample(hosts, 2)
        # a host dies whole while it runs work: nobody releases its leases
        tally.killed_holding += len(feeder.wait_for_holding(url, victim, 60))
        victim.signal(signal.SIGKILL)
        wait_until(lambda v=victim: not v.processes(), 30, f"{victim.name} to die")
        tally.host_kills += 1
        feeder.feed()
        # the dead host reboots: a new daemon beside its stale files
        victim.start(size.workers)
        tally.restarts += 1
        # another freezes past its leases while it runs work, and comes back after the others
        # took its processes over
        tally.taken_over += freeze_and_thaw(url, frozen, feeder, rng)
        tally.freezes += 1
    feeder.feed(len(jobs))
    started = time.monotonic()
    wait_until(lambda: active_count(url) == 0, size.finish_timeout, "all work to end", 0.1)
    tally.drain_s = time.monotonic() - started
    for host in hosts:
        tally.fenced += host.log().count("lost its lease")


# the tests -------------------------------------------------------------------------------------


@pytest.fixture
def chaos_random() -> int:
    value = os.environ.get("MINIENGINE_CHAOS_RANDOM")
    return int(value) if value else random.SystemRandom().randrange(10**9)


def run_hosts(
    postgres_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    size: MultiHostSize,
    seed: int,
) -> None:
    monkeypatch.setenv("MINIENGINE_DB", postgres_url)
    hosts = []
    for index in range(size.hosts):
        home = tmp_path / f"host-{index}"
        home.mkdir(mode=0o700)
        hosts.append(Host(f"host-{index}", home, postgres_url))
    tally = Tally()
    started = time.monotonic()
    try:
        drive(postgres_url, hosts, size, random.Random(seed), tally)
        status = hosts[-1].cli("status")
    finally:
        for host in hosts:
            host.close()
    found = check_database(postgres_url, tally.submitted)
    expected = sum(
        process_count(label, inputs) for label, inputs in workload(size.work, random.Random(0))
    )
    summary = (
        f"multi-host: {size.hosts} hosts x {size.workers} workers, {tally.host_kills} host "
        f"SIGKILLs (holding {tally.killed_holding} processes), {tally.freezes} freezes past the "
        f"lease ({tally.taken_over} processes taken over, {tally.fenced} refused runs logged), "
        f"{tally.restarts} reboots; processes {found.processes} ({expected} without cut-offs, "
        f"{found.cut_off} cut off), lost {len(found.lost)}, orphans {len(found.orphans)}, "
        f"duplicates {len(found.duplicates)}, inconsistencies {len(found.inconsistent)}; "
        f"{time.monotonic() - started:.1f} s ({tally.drain_s:.1f} s to drain); "
        f"MINIENGINE_CHAOS_RANDOM={seed}"
    )
    print("\n" + summary)
    assert found.lost == [], summary
    assert found.orphans == [], summary
    assert found.duplicates == [], summary
    assert found.inconsistent == [], summary
    assert found.processes == expected + found.cut_off, summary
    assert tally.killed_holding > 0 and tally.taken_over > 0, summary
    # the frozen hosts' runs of the processes taken over were refused when they came back
    assert tally.fenced > 0, summary
    # every host's workers, by host; where this host's files are; never the password
    password = postgres_url.split(":")[2].split("@")[0]
    assert status.returncode == 0, status.stdout + status.stderr
    assert f"daemon files in {hosts[-1].folder}" in status.stdout, status.stdout
    for host in hosts:
        assert host.name in status.stdout, status.stdout
    assert password not in status.stdout + status.stderr
    for host in hosts:
        assert password not in host.log()


def test_multihost_ci(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chaos_random: int
) -> None:
    run_hosts(postgres_url, tmp_path, monkeypatch, CI, chaos_random)


@pytest.mark.long
def test_multihost_long(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chaos_random: int
) -> None:
    run_hosts(postgres_url, tmp_path, monkeypatch, LONG, chaos_random)


def test_file_contents_of_a_postgresql_database_go_to_the_repository_folder_it_is_given(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No file beside the database to keep them next to: without a folder, storing file data
    is refused naming the variable to set; with one, the objects land there."""
    from miniengine import SinglefileData, load_node
    from miniengine.storage.repository import RepositoryError

    monkeypatch.setenv("MINIENGINE_DB", postgres_url)
    monkeypatch.delenv("MINIENGINE_REPOSITORY", raising=False)
    with pytest.raises(RepositoryError, match=r"\$MINIENGINE_REPOSITORY"):
        SinglefileData.from_string("abc", filename="s.txt").store()
    shared = tmp_path / "shared"
    monkeypatch.setenv("MINIENGINE_REPOSITORY", str(shared))
    node = SinglefileData.from_string("abc", filename="s.txt").store()
    assert load_node(node.pk).get_content() == "abc"
    assert [path for path in (shared / "objects").rglob("*") if path.is_file()]
