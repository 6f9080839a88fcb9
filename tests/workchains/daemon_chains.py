"""WorkChains for the daemon tests (issue 5), importable by module path as a daemon worker needs.

- :class:`NestedWorkChain` is the seed's scenario 2, verbatim.
- :class:`AddWorkChain` is the W6/W7 workload: one step that calls the ``add`` calcfunction.
- :class:`GateWorkChain` signals from inside a step that it runs (a file ``started.<pid>``) and
  blocks there until the test creates ``release.<pid>``, so a test can SIGKILL or SIGSTOP the very
  worker that runs it and then let the new owner through.
- :class:`MemoWorkChain` calls ``add`` and then the gated calcfunction ``gated_add`` inline in one
  step, for the memoisation of calls made by a step that a crash cut off.
- :class:`FanOutWorkChain` submits many children in one step and waits for all of them.

``python -m tests.workchains.daemon_chains run-gate DB FOLDER`` runs a :class:`GateWorkChain` in
run mode (no daemon) with a short lease, for the test of a script that dies mid-step.

The end of the module holds the small process helpers the daemon test files share.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from queue import Empty, Queue
from typing import Any

from miniengine import Int, Str, ToContext, WorkChain, append_, calcfunction, submit
from miniengine.daemon.files import DaemonFiles, db_arguments
from miniengine.exceptions import LeaseLostError

ROOT = Path(__file__).resolve().parents[2]

#: How long a gated step waits for its release file before giving up (a test went wrong).
GATE_TIMEOUT = 60.0


# seed scenario 2, verbatim: the copy the demo submits (miniengine/demo_nested.py) ----------

from miniengine.demo_nested import NestedWorkChain  # noqa: E402, F401  (re-exported)

# small workloads ------------------------------------------------------------------------------


@calcfunction
def add(x: Int, y: Int) -> Int:
    return Int(x.value + y.value)


class AddWorkChain(WorkChain):
    """One step that calls ``add`` (the AiiDA W6 measurement's workload)."""

    @classmethod
    def define(cls, spec):  # type: ignore[no-untyped-def]
        super().define(spec)
        spec.input("x", valid_type=Int)
        spec.input("y", valid_type=Int)
        spec.output("result", valid_type=Int)
        spec.outline(cls.compute)

    def compute(self) -> None:
        self.out("result", add(self.inputs.x, self.inputs.y))


class LeafWorkChain(WorkChain):
    """The cheapest child: one step that returns its input."""

    @classmethod
    def define(cls, spec):  # type: ignore[no-untyped-def]
        super().define(spec)
        spec.input("x", valid_type=Int)
        spec.output("x", valid_type=Int)
        spec.outline(cls.echo)

    def echo(self) -> None:
        self.out("x", self.inputs.x)


class FanOutWorkChain(WorkChain):
    """Submits ``n`` :class:`LeafWorkChain` children in one step, then sums their outputs."""

    @classmethod
    def define(cls, spec):  # type: ignore[no-untyped-def]
        super().define(spec)
        spec.input("n", valid_type=Int)
        spec.output("total", valid_type=Int)
        spec.outline(cls.fan_out, cls.gather)

    def fan_out(self) -> None:
        for i in range(self.inputs.n.value):
            self.to_context(leaves=append_(self.submit(LeafWorkChain, x=Int(i))))

    def gather(self) -> None:
        self.out("total", Int(sum(leaf.outputs.x.value for leaf in self.ctx.leaves)))


# gated steps ---------------------------------------------------------------------------------


def record(folder: Path, line: str) -> None:
    """Append ``line`` to ``folder/steps``: the tests count how often each step ran."""
    with open(folder / "steps", "a", encoding="utf-8") as handle:
        handle.write(line + "\n")


def wait_for_file(path: Path, timeout: float = GATE_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {timeout} s")
        time.sleep(0.01)


def gate(folder: Path, name: str) -> int:
    """Say ``<name>started.<pid>`` and block until ``<name>release.<pid>`` exists."""
    pid = os.getpid()
    (folder / f"{name}started.{pid}").touch()
    wait_for_file(folder / f"{name}release.{pid}")
    return pid


class GateWorkChain(WorkChain):
    """``setup``, then ``wait_gate`` (blocks in the worker until released, then calls ``add``
    inline), then ``finalize`` (outputs the pid of the worker that passed the gate).

    A stale owner released after another worker took the process over finds its inline call
    refused with ``LeaseLostError``; it writes ``leaselost.<pid>`` and ends its step normally, so
    that the step's own commit is attempted (and refused) too.
    """

    @classmethod
    def define(cls, spec):  # type: ignore[no-untyped-def]
        super().define(spec)
        spec.input("folder", valid_type=Str)
        spec.output("pid", valid_type=Int)
        spec.output("sum", valid_type=Int)
        spec.outline(cls.setup, cls.wait_gate, cls.finalize)

    def setup(self) -> None:
        record(Path(self.inputs.folder.value), "setup")

    def wait_gate(self) -> None:
        folder = Path(self.inputs.folder.value)
        record(folder, f"gate {os.getpid()}")
        self.ctx.pid = gate(folder, "")
        try:
            self.ctx.sum = add(Int(1), Int(2))
        except LeaseLostError as exc:
            (folder / f"leaselost.{os.getpid()}").write_text(str(exc))
            self.ctx.sum = None
        self.report(f"passed the gate in {os.getpid()}")

    def finalize(self) -> None:
        record(Path(self.inputs.folder.value), "finalize")
        self.out("pid", Int(self.ctx.pid))
        if self.ctx.sum is not None:
            self.out("sum", self.ctx.sum)


@calcfunction
def gated_add(x: Int, y: Int, folder: Str) -> Int:
    gate(Path(folder.value), "add")
    return Int(x.value + y.value)


class MemoWorkChain(WorkChain):
    """One step calling ``add`` and then ``gated_add`` inline (the second blocks until released)."""

    @classmethod
    def define(cls, spec):  # type: ignore[no-untyped-def]
        super().define(spec)
        spec.input("folder", valid_type=Str)
        spec.output("result", valid_type=Int)
        spec.outline(cls.compute)

    def compute(self) -> None:
        folder = Path(self.inputs.folder.value)
        record(folder, f"compute {os.getpid()}")
        first = add(Int(1), Int(2))
        self.out("result", gated_add(first, Int(10), self.inputs.folder))


class GateParentWorkChain(WorkChain):
    """Submits a :class:`GateWorkChain` and waits for it (evicted to its checkpoint meanwhile)."""

    @classmethod
    def define(cls, spec):  # type: ignore[no-untyped-def]
        super().define(spec)
        spec.input("folder", valid_type=Str)
        spec.output("pid", valid_type=Int)
        spec.outline(cls.launch, cls.collect)

    def launch(self) -> ToContext:
        return ToContext(child=self.submit(GateWorkChain, folder=self.inputs.folder))

    def collect(self) -> None:
        self.out("pid", self.ctx.child.outputs.pid)


# misuse ----------------------------------------------------------------------------------------


class SubmitInStepWorkChain(WorkChain):
    """Calls the top-level ``submit()`` inside a step (it must use ``self.submit``)."""

    @classmethod
    def define(cls, spec):  # type: ignore[no-untyped-def]
        super().define(spec)
        spec.outline(cls.misuse)

    def misuse(self) -> None:
        submit(LeafWorkChain, x=Int(1))


class SubmitInAsyncStepWorkChain(WorkChain):
    """Calls the top-level ``submit()`` inside an ``async def`` step."""

    @classmethod
    def define(cls, spec):  # type: ignore[no-untyped-def]
        super().define(spec)
        spec.outline(cls.misuse)

    async def misuse(self) -> None:
        submit(LeafWorkChain, x=Int(1))


class SubmitThenRaiseWorkChain(WorkChain):
    """Submits a child and raises in the same step."""

    @classmethod
    def define(cls, spec):  # type: ignore[no-untyped-def]
        super().define(spec)
        spec.outline(cls.go)

    def go(self) -> None:
        self.submit(LeafWorkChain, x=Int(1))
        raise RuntimeError("raised right after submitting")


class RaisingWorkChain(WorkChain):
    """A step that raises."""

    @classmethod
    def define(cls, spec):  # type: ignore[no-untyped-def]
        super().define(spec)
        spec.outline(cls.fail)

    def fail(self) -> None:
        raise RuntimeError("this step always raises")


class ParentOfRaisingWorkChain(WorkChain):
    """Waits for a child that raises, then reports the child's state as its output."""

    @classmethod
    def define(cls, spec):  # type: ignore[no-untyped-def]
        super().define(spec)
        spec.output("child_state", valid_type=Str)
        spec.outline(cls.launch, cls.inspect)

    def launch(self) -> ToContext:
        return ToContext(child=self.submit(RaisingWorkChain))

    def inspect(self) -> None:
        self.out("child_state", Str(self.ctx.child.process_state.value))


class RunInStepWorkChain(WorkChain):
    """Runs a child WorkChain inline (``run``) inside a daemon step."""

    @classmethod
    def define(cls, spec):  # type: ignore[no-untyped-def]
        super().define(spec)
        spec.output("x", valid_type=Int)
        spec.outline(cls.go)

    def go(self) -> None:
        from miniengine import run

        self.out("x", run(LeafWorkChain, x=Int(9))["x"])


# run mode in a script ------------------------------------------------------------------------


def _run_gate(db: str, folder: str) -> None:
    """Run a GateWorkChain in run mode with a lease of 0.5 s (the test SIGKILLs this script)."""
    from miniengine.runtime.workchain.launch import launch
    from miniengine.storage.open import open_backend

    store = open_backend(db, lease_timeout=0.5)
    try:
        asyncio.run(launch(GateWorkChain, {"folder": Str(folder)}, db=store))
    finally:
        store.close()
    print("DONE", flush=True)


# helpers shared by the daemon test files -----------------------------------------------------


def python_env(db: Path | str | None = None) -> dict[str, str]:
    """The environment of a subprocess that imports ``miniengine`` and ``tests.workchains``."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    if db is not None:
        env["MINIENGINE_DB"] = str(db)
    return env


def wait_until(
    condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.01
) -> Any:
    """Poll ``condition`` until it returns something truthy (returned); fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def alive(pid: int) -> bool:
    """True while ``pid`` is a live process (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False


def kill_quietly(pid: int, sig: int = signal.SIGKILL) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def children_of(pid: int) -> list[tuple[int, str]]:
    """The live child processes of ``pid`` as ``(pid, command line)``, from ``ps --ppid``."""
    completed = subprocess.run(
        ["ps", "-ww", "--ppid", str(pid), "-o", "pid=,stat=,args="],
        capture_output=True,
        text=True,
        check=False,
    )
    found = []
    for line in completed.stdout.splitlines():
        child, state, args = line.strip().split(None, 2)
        if not state.startswith("Z"):
            found.append((int(child), args))
    return found


def command_line(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return cmdline.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def parent_of(pid: int) -> int | None:
    """The parent pid of ``pid`` (from ``/proc``), or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return int(stat.read().rsplit(")", 1)[-1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


class DaemonGuard:
    """Runs ``python -m miniengine.daemon`` commands for one database and, on exit, stops the
    daemon and SIGKILLs every supervisor or worker process it ever saw, so that no test leaves
    processes behind, whatever happened."""

    def __init__(self, db: Path | str) -> None:
        from tests.services.sql import is_postgres

        self.db: Path | str = db if is_postgres(db) else Path(db)
        self.seen: set[int] = set()

    def __enter__(self) -> DaemonGuard:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def cli(
        self, command: str, *args: str, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        completed = subprocess.run(
            [sys.executable, "-m", "miniengine.daemon", command, *db_arguments(self.db)[0], *args],
            env=python_env(self.db),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        self.track_all()
        return completed

    def start(self, *args: str) -> int:
        """``daemon start ARGS``; the supervisor's pid once it reported its workers ready."""
        completed = self.cli("start", *args)
        assert completed.returncode == 0, completed.stdout + completed.stderr
        state = self.state()
        assert state is not None and state["state"] == "ready", state
        return int(state["pid"])

    def state(self) -> dict[str, Any] | None:
        """The pid file's content, or None when there is none."""
        import json

        try:
            state: dict[str, Any] = json.loads(DaemonFiles(self.db).pid_file.read_text())
        except (OSError, ValueError):
            return None
        self.track(state.get("pid"), *state.get("workers", []))
        return state

    def workers(self) -> list[tuple[str, int]]:
        """``(worker id, pid)`` of the workers registered in the database, oldest first."""
        from tests.services import sql

        try:
            found = sql.query(self.db, "SELECT id, pid FROM workers ORDER BY started")
        except sql.errors(self.db):
            return []
        self.track(*(pid for _, pid in found))
        return [(str(worker), int(pid)) for worker, pid in found]

    def worker_pids(self) -> list[int]:
        return [pid for _, pid in self.workers()]

    def track(self, *pids: Any) -> None:
        self.seen.update(int(pid) for pid in pids if isinstance(pid, int))

    def track_all(self) -> None:
        self.state()
        self.workers()

    def close(self) -> None:
        from miniengine.daemon.__main__ import stop_daemon

        self.track_all()
        try:
            stop_daemon(self.db, timeout=15)
        except (OSError, ValueError):
            pass
        for pid in self.seen:
            if alive(pid) and "miniengine.daemon" in command_line(pid):  # not a reused pid
                kill_quietly(pid, signal.SIGCONT)
                kill_quietly(pid)


class LineReader:
    """Collects the lines a subprocess writes on a pipe, so a test can wait for one."""

    def __init__(self, stream: Any) -> None:
        self.lines: list[str] = []
        self._queue: Queue[str | None] = Queue()
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: Any) -> None:
        for line in stream:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, needle: str, timeout: float) -> str:
        """The first line (new or already seen) that contains ``needle``."""
        for line in self.lines:
            if needle in line:
                return line
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(deadline - time.monotonic(), 0.001))
            except Empty:
                raise AssertionError(
                    f"no line with {needle!r} within {timeout} s; got {self.lines}"
                ) from None
            if line is None:
                raise AssertionError(f"the stream ended without {needle!r}; got {self.lines}")
            self.lines.append(line)
            if needle in line:
                return line

    def text(self) -> str:
        while True:
            try:
                line = self._queue.get_nowait()
            except Empty:
                break
            if line is not None:
                self.lines.append(line)
        return "\n".join(self.lines)


if __name__ == "__main__":
    if sys.argv[1:2] == ["run-gate"]:
        # the classes of the importable module, not of ``__main__``
        from tests.workchains.daemon_chains import _run_gate as run_gate

        run_gate(*sys.argv[2:4])
    else:
        sys.exit(
            f"usage: python -m {__spec__.name if __spec__ else 'daemon_chains'} run-gate DB FOLDER"
        )
