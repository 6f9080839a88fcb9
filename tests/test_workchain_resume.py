"""Checkpoints and resume (issue 4): a WorkChain whose process is SIGKILLed between steps is
continued from the database by another process and re-runs at most the step that was cut off.

The crash tests start ``python -m tests.workchains.crash`` (a lease of 0.5 s), wait for the line
it prints from inside step k (so steps 1..k-1 have committed), SIGKILL it, and resume the process
here with :func:`miniengine.resume`, which waits for the dead owner's lease to expire.  Steps log
each run to a file, so the tests count re-executions exactly.
"""

import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import miniengine
from miniengine import (
    CheckpointError,
    Int,
    MiniengineError,
    ProcessState,
    Str,
    WorkChain,
    arun,
    arun_get_node,
    find_processes,
    load_node,
    run,
    run_get_node,
)
from miniengine.core import codec
from miniengine.core.links import LinkType
from tests.services import sql
from tests.workchains.crash import LEASE_VARIABLE, offset_file
from tests.workchains.resumable import BLOCK_AT, ITERATIONS, CountingWorkChain, ParentWorkChain

pytestmark = pytest.mark.backends

ROOT = Path(__file__).resolve().parent.parent
COUNTING = "tests.workchains.resumable:CountingWorkChain"
PARENT = "tests.workchains.resumable:ParentWorkChain"
CRASH = "tests.workchains.crash:InlineCallWorkChain"
NESTED_CRASH = "tests.workchains.crash:NestedInlineCallWorkChain"

#: How the replay of a cut-off step ends the unfinished call it had made (the recovery of
#: expired leases words it otherwise).
REPLAY_OWNER_LOST = (
    "owner lost: the step that called this process was cut off (its worker or script died) "
    "and is being replayed"
)

#: The steps of an uninterrupted CountingWorkChain, as its step log shows them.
COUNTING_STEPS = ["setup", *(f"add {i}" for i in range(ITERATIONS)), "finalize"]


def steps(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def db_row(db: Path | str, statement: str, *args):
    rows = sql.query(db, statement, *args)
    return rows[0] if rows else None


def start_and_kill(
    db: Path, class_path: str, x: int, log: Path, block_at: int, extra_path: Path | None = None
) -> int:
    """Run ``class_path`` in a subprocess until it blocks in the step that writes line
    ``block_at`` of ``log``, SIGKILL it there, and return the pk it printed."""
    python_path = [str(ROOT), str(extra_path) if extra_path else "", os.environ.get("PYTHONPATH")]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, python_path)),
        BLOCK_AT: str(block_at),
        "MINIENGINE_DB": str(db),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.workchains.crash", class_path, str(db), str(x), str(log)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = _read_line(process, timeout=30)
        assert line.startswith("READY "), f"unexpected output {line!r}"
        os.kill(process.pid, signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
        process.stderr.close()
    return int(line.split()[1])


def _read_line(process: subprocess.Popen, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.1)
        if ready:
            line = process.stdout.readline()
            if line:
                return line.strip()
        if process.poll() is not None:
            break
    process.kill()
    raise AssertionError(f"the subprocess printed no READY line; stderr:\n{process.stderr.read()}")


async def uninterrupted(cls, x: int, tmp_path: Path) -> dict:
    result = await arun(cls, x=Int(x), log=Str(str(tmp_path / "uninterrupted.log")))
    return {name: value.value for name, value in result.items()}


# checkpoints in one process -------------------------------------------------------------------


class PeeksAtItsCheckpoint(WorkChain):
    """Reads its own checkpoint row from the database while it runs."""

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input("db", valid_type=Str)
        spec.output("seen", valid_type=Str)
        spec.outline(cls.first, cls.second, cls.third)

    def _row(self):
        return db_row(
            self.inputs.db.value,
            "SELECT seq, data FROM checkpoints WHERE node_pk = ?",
            self.node.pk,
        )

    def first(self):
        before = self._row()  # no step has committed yet: no row, or the initial one
        self.ctx.before = None if before is None else before[0]
        self.ctx.total = 1

    def second(self):
        seq, blob = self._row()
        state = codec.decode(blob)
        self.ctx.after_first = [seq, state["x"]["total"], state["p"]]

    def third(self):
        seq, _ = self._row()
        self.out("seen", Str(f"{self.ctx.before} {self.ctx.after_first} {seq}"))


def test_checkpoint_is_written_after_each_step_and_deleted_at_termination(miniengine_db):
    result, node = run_get_node(PeeksAtItsCheckpoint, db=Str(str(miniengine_db)))
    path = f"{PeeksAtItsCheckpoint.__module__}:PeeksAtItsCheckpoint"
    assert result["seen"].value.split(" ", 1)[0] in ("None", "0")
    assert result["seen"].value.endswith(f" [1, 1, '{path}'] 2")
    assert node.is_finished_ok
    assert db_row(miniengine_db, "SELECT count(*) FROM checkpoints")[0] == 0


class Unencodable(WorkChain):
    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input("nested", valid_type=Int, default=lambda: Int(0))
        spec.outline(cls.store_bad, cls.never)

    def store_bad(self):
        self.report("store_bad ran")
        if self.inputs.nested.value:
            self.ctx.stuff = {"fine": [1, 2], "bad": [3, threading.Lock()]}
        else:
            self.ctx.lock = threading.Lock()

    def never(self):
        self.report("never ran")


@pytest.mark.parametrize(("nested", "key"), [(0, "ctx.lock"), (1, "ctx.stuff")])
def test_context_value_that_cannot_be_checkpointed_fails_at_the_step_naming_key_and_type(
    nested, key
):
    with pytest.raises(CheckpointError) as info:
        run(Unencodable, nested=Int(nested))
    message = str(info.value)
    assert key in message and "lock" in message
    assert isinstance(info.value, ValueError)
    (node,) = find_processes(process_label="Unencodable")
    assert node.process_state is ProcessState.EXCEPTED
    assert key in node.exception
    logs = [log.message for log in node.logs]
    assert any("store_bad ran" in message for message in logs)
    assert not any("never ran" in message for message in logs)


# crash and resume ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("block_at", "cut_off"),
    [(2, "add 0"), (3, "add 1"), (4, "add 2"), (5, "finalize")],
    # killed after an odd as well as an even number of committed steps
    ids=["after-1-step", "after-2-steps", "after-3-steps", "in-the-last-def-step"],
)
async def test_killed_workchain_resumes_and_reruns_only_the_cut_off_step(
    miniengine_db, tmp_path, block_at, cut_off
):
    log = tmp_path / "steps.log"
    pk = start_and_kill(miniengine_db, COUNTING, 7, log, block_at)
    assert steps(log) == COUNTING_STEPS[:block_at]
    node = load_node(pk)
    assert node.process_state is ProcessState.RUNNING
    seq, _ = db_row(miniengine_db, "SELECT seq, data FROM checkpoints WHERE node_pk = ?", pk)
    assert seq == block_at - 1  # the steps before the one cut off have committed

    outputs, resumed = await miniengine.resume(pk, timeout=30)

    assert resumed.pk == pk and resumed.is_finished_ok
    assert {name: value.value for name, value in outputs.items()} == await uninterrupted(
        CountingWorkChain, 7, tmp_path
    )
    assert outputs["result"].value == 7 + 111
    assert outputs["last"].value == ITERATIONS - 1 and outputs["iterations"].value == ITERATIONS
    expected = [*COUNTING_STEPS[:block_at], cut_off, *COUNTING_STEPS[block_at:]]
    assert steps(log) == expected
    assert db_row(miniengine_db, "SELECT count(*) FROM checkpoints WHERE node_pk = ?", pk) == (0,)
    node = load_node(pk)
    assert node.outputs.result.value == 118
    labels = node.base.links.get_outgoing(link_type=LinkType.RETURN).all_link_labels()
    assert sorted(labels) == ["iterations", "last", "result"]  # no duplicated outputs


def _calls(node) -> list[tuple[str, ProcessState, int | None]]:
    """The calls ``node`` made, oldest first: (label, state, pk of the first input)."""
    return [
        (child.process_label, child.process_state, child.inputs.x.pk)
        for child in sorted(node.called, key=lambda child: child.pk)
    ]


async def test_resume_after_a_kill_inside_an_inline_call_excepts_it_and_reuses_the_finished_one(
    miniengine_db, tmp_path
):
    log = tmp_path / "steps.log"
    # compute calls double (finishes), then gated_add, inside which the script is SIGKILLed
    gated_pk = start_and_kill(miniengine_db, CRASH, 7, log, block_at=3)
    assert steps(log) == ["compute", "double 7", "gated_add 14 7"]
    parent = load_node(gated_pk).caller
    assert load_node(gated_pk).process_state is ProcessState.RUNNING

    outputs, parent = await miniengine.resume(parent.pk, timeout=30)

    assert parent.is_finished_ok and outputs["result"].value == 2 * 7 + 7
    # the replay ran the step again but not the finished call: one double, reused
    assert steps(log) == ["compute", "double 7", "gated_add 14 7", "compute", "gated_add 14 7",
                          "finalize"]  # fmt: skip
    (double, cut_off, again) = _calls(parent)
    assert double[:2] == ("double", ProcessState.FINISHED)
    assert cut_off == ("gated_add", ProcessState.EXCEPTED, double_output(parent))
    assert again == ("gated_add", ProcessState.FINISHED, double_output(parent))
    cut_off_node = load_node(gated_pk)
    # written by the replay of the step that called it, not by the recovery of expired leases
    assert cut_off_node.exception == REPLAY_OWNER_LOST
    assert [entry.message for entry in cut_off_node.logs if "owner lost" in entry.message] == [
        cut_off_node.exception
    ]
    assert _active(miniengine_db) == 0


async def test_a_replay_whose_calls_have_other_inputs_runs_them_fresh_and_ends_the_old_ones(
    miniengine_db, tmp_path
):
    log = tmp_path / "steps.log"
    gated_pk = start_and_kill(miniengine_db, CRASH, 7, log, block_at=3)
    parent = load_node(gated_pk).caller
    offset_file(Str(str(log))).write_text("100")  # the replayed step now computes other inputs

    outputs, parent = await miniengine.resume(parent.pk, timeout=30)

    assert parent.is_finished_ok and outputs["result"].value == 2 * 107 + 7
    assert steps(log) == ["compute", "double 7", "gated_add 14 7", "compute", "double 107",
                          "gated_add 214 7", "finalize"]  # fmt: skip
    states = [(label, state) for label, state, _ in _calls(parent)]
    assert states == [
        ("double", ProcessState.FINISHED),  # the old call, with x = 7: not reused
        ("gated_add", ProcessState.EXCEPTED),  # cut off; the replay did not make this call
        ("double", ProcessState.FINISHED),
        ("gated_add", ProcessState.FINISHED),
    ]
    assert load_node(gated_pk).exception == REPLAY_OWNER_LOST
    assert _active(miniengine_db) == 0


async def test_a_replay_that_no_longer_makes_a_call_ends_the_call_its_cut_off_attempt_made(
    miniengine_db, tmp_path
):
    log = tmp_path / "steps.log"
    gated_pk = start_and_kill(miniengine_db, CRASH, 7, log, block_at=3)
    parent = load_node(gated_pk).caller
    Path(f"{log}.direct").touch()  # the replayed step adds by itself: no gated_add this time

    outputs, parent = await miniengine.resume(parent.pk, timeout=30)

    assert parent.is_finished_ok and outputs["result"].value == 2 * 7 + 7
    assert steps(log) == ["compute", "double 7", "gated_add 14 7", "compute", "finalize"]
    assert [(label, state) for label, state, _ in _calls(parent)] == [
        ("double", ProcessState.FINISHED),  # reused
        ("gated_add", ProcessState.EXCEPTED),  # nobody else would ever end it
    ]
    assert load_node(gated_pk).exception == (
        "owner lost: the step that called this process was cut off (its worker or script died) "
        "and its replay did not make this call again"
    )
    assert _active(miniengine_db) == 0


async def test_resume_after_a_kill_two_calls_deep_excepts_the_cut_off_call_and_what_it_called(
    miniengine_db, tmp_path
):
    log = tmp_path / "steps.log"
    # compute calls the workfunction add_via_gate, which calls gated_add: killed in there
    gated_pk = start_and_kill(miniengine_db, NESTED_CRASH, 7, log, block_at=2)
    workfunction = load_node(gated_pk).caller
    parent = workfunction.caller
    assert workfunction.process_label == "add_via_gate"

    outputs, parent = await miniengine.resume(parent.pk, timeout=30)

    assert parent.is_finished_ok and outputs["result"].value == 14
    assert steps(log) == ["compute", "gated_add 7 7", "compute", "gated_add 7 7"]
    cut_off, inner = load_node(workfunction.pk), load_node(gated_pk)
    assert cut_off.process_state is ProcessState.EXCEPTED
    assert cut_off.exception == REPLAY_OWNER_LOST
    # nobody would ever end the inner call otherwise: its caller cannot be resumed
    assert inner.process_state is ProcessState.EXCEPTED
    assert inner.exception == (
        f"owner lost: it was called by process {cut_off.pk}, which a cut-off step had called"
    )
    assert _active(miniengine_db) == 0


def double_output(parent) -> int:
    """The pk of the result of the last ``double`` that ``parent`` called."""
    doubles = [child for child in parent.called if child.process_label == "double"]
    return max(doubles, key=lambda child: child.pk).outputs.result.pk


def _active(db: Path) -> int:
    return db_row(db, "SELECT count(*) FROM nodes WHERE process_state IN "
                  "('created', 'running', 'waiting')")[0]  # fmt: skip


async def test_resume_of_a_finished_process_returns_its_outputs(tmp_path):
    _, node = await arun_get_node(CountingWorkChain, x=Int(1), log=Str(str(tmp_path / "a.log")))
    outputs, again = await miniengine.resume(node.pk)
    assert again.pk == node.pk
    assert outputs["result"].value == 112
    assert steps(tmp_path / "a.log") == COUNTING_STEPS


async def test_killed_parent_resumes_its_waiting_child_and_finishes(miniengine_db, tmp_path):
    log = tmp_path / "steps.log"
    # launch, then the child's setup and add 0: killed inside the child's 'add 0'.
    child_pk = start_and_kill(miniengine_db, PARENT, 5, log, block_at=3)  # the child prints
    assert steps(log) == ["launch", "setup", "add 0"]
    parent = load_node(child_pk).caller
    assert parent.process_label == "ParentWorkChain"
    (child,) = parent.called
    assert child.pk == child_pk and child.process_state is ProcessState.RUNNING
    assert parent.process_state is ProcessState.WAITING

    outputs, parent = await miniengine.resume(parent.pk, timeout=30)

    assert parent.is_finished_ok
    assert outputs["result"].value == (await uninterrupted(ParentWorkChain, 5, tmp_path))["result"]
    assert outputs["result"].value == 5 + 111 + 1
    assert steps(log) == ["launch", "setup", "add 0", *COUNTING_STEPS[1:], "inspect", "collect"]
    (child,) = parent.called  # the same child, not a second one
    assert child.is_finished_ok and child.outputs.result.value == 116
    assert len(find_processes(process_label="CountingWorkChain")) == 2  # one is uninterrupted's
    assert db_row(miniengine_db, "SELECT count(*) FROM checkpoints")[0] == 0


async def test_node_in_the_context_survives_the_checkpoint(miniengine_db, tmp_path):
    log = tmp_path / "steps.log"
    everything = ["launch", *COUNTING_STEPS, "inspect", "collect"]
    pk = start_and_kill(miniengine_db, PARENT, 5, log, block_at=len(everything))
    assert steps(log) == everything
    _, blob = db_row(miniengine_db, "SELECT seq, data FROM checkpoints WHERE node_pk = ?", pk)
    (child,) = load_node(pk).called
    assert codec.decode(blob)["x"]["child"] == codec.NodeRef(child.pk)

    outputs, parent = await miniengine.resume(pk, timeout=30)

    assert parent.is_finished_ok and outputs["result"].value == 117
    assert steps(log) == [*everything, "collect"]
    assert parent.called == [child]


async def test_workchain_killed_in_its_first_step_resumes_with_its_inputs(miniengine_db, tmp_path):
    log = tmp_path / "steps.log"
    pk = start_and_kill(miniengine_db, COUNTING, 7, log, 1)

    outputs, node = await miniengine.resume(pk, timeout=30)

    assert node.is_finished_ok and outputs["result"].value == 118
    assert steps(log) == ["setup", *COUNTING_STEPS]


GONE_MODULE = '''
from tests.workchains.crash import LEASE_VARIABLE, offset_file
from tests.workchains.resumable import CountingWorkChain


class VanishingWorkChain(CountingWorkChain):
    """Importable only while its folder is on the path."""
'''


async def test_checkpoint_whose_class_cannot_be_imported_excepts_on_resume(miniengine_db, tmp_path):
    extra = tmp_path / "gone"
    extra.mkdir()
    (extra / "vanishing_module.py").write_text(GONE_MODULE)
    log = tmp_path / "steps.log"
    pk = start_and_kill(
        miniengine_db, "vanishing_module:VanishingWorkChain", 3, log, 2, extra_path=extra
    )
    nodes_before = db_row(miniengine_db, "SELECT count(*) FROM nodes")[0]

    with pytest.raises(MiniengineError, match="vanishing_module"):
        await miniengine.resume(pk, timeout=30)

    node = load_node(pk)
    assert node.process_state is ProcessState.EXCEPTED
    assert "vanishing_module" in node.exception and "import" in node.exception
    assert any("vanishing_module" in log.message for log in node.logs)
    assert db_row(miniengine_db, "SELECT count(*) FROM nodes")[0] == nodes_before
    assert steps(log) == ["setup", "add 0"]  # no step ran again


def _rewrite_checkpoint(db: Path, pk: int, change) -> None:
    _, blob = db_row(db, "SELECT seq, data FROM checkpoints WHERE node_pk = ?", pk)
    state = codec.decode(blob)
    change(state)
    sql.execute(db, "UPDATE checkpoints SET data = ? WHERE node_pk = ?", codec.encode(state), pk)


@pytest.mark.parametrize("cursor", [[7], [1, 5], [0, 0]], ids=["past-end", "in-loop", "too-deep"])
async def test_checkpoint_whose_cursor_no_longer_fits_the_outline_excepts_on_resume(
    miniengine_db, tmp_path, cursor
):
    log = tmp_path / "steps.log"
    pk = start_and_kill(miniengine_db, COUNTING, 3, log, 3)

    def move_cursor(state):
        assert state["c"] == [1, 0]  # at 'add' inside the while_
        state["c"] = cursor

    _rewrite_checkpoint(miniengine_db, pk, move_cursor)

    with pytest.raises(MiniengineError, match="cursor"):
        await miniengine.resume(pk, timeout=30)

    node = load_node(pk)
    assert node.process_state is ProcessState.EXCEPTED
    assert "cursor" in node.exception and "outline" in node.exception
    assert steps(log) == ["setup", "add 0", "add 1"]


RENAMED_MODULE = '''
from miniengine import Int, Str, WorkChain, while_
from tests.workchains.crash import LEASE_VARIABLE, offset_file
from tests.workchains.resumable import CountingWorkChain


class EditedWorkChain(CountingWorkChain):
    """Edited between the crash and the resume: the loop's step is {name}."""

    @classmethod
    def define(cls, spec):
        WorkChain.define(spec)
        spec.input("x", valid_type=Int)
        spec.input("log", valid_type=Str)
        spec.output("result", valid_type=Int)
        spec.output("iterations", valid_type=Int)
        spec.output("last", valid_type=Int)
        spec.outline(cls.setup, while_(cls.not_done)(cls.{name}), cls.finalize)

    async def renamed(self):
        self.report("renamed step ran")
        self.ctx.i += 1
'''


async def test_checkpoint_whose_step_was_renamed_excepts_on_resume(
    miniengine_db, tmp_path, monkeypatch
):
    extra = tmp_path / "edited"
    extra.mkdir()
    module = extra / "edited_module.py"
    module.write_text(RENAMED_MODULE.format(name="add"))
    log = tmp_path / "steps.log"
    pk = start_and_kill(miniengine_db, "edited_module:EditedWorkChain", 3, log, 3, extra)
    # The cursor points at 'add' in the while_; the new code has 'renamed' there.
    module.write_text(RENAMED_MODULE.format(name="renamed"))
    monkeypatch.syspath_prepend(str(extra))

    with pytest.raises(MiniengineError, match="renamed"):
        await miniengine.resume(pk, timeout=30)
    node = load_node(pk)
    assert node.process_state is ProcessState.EXCEPTED
    assert not any("renamed step ran" in log.message for log in node.logs)


async def test_resume_waits_for_a_live_owner_and_gives_up_at_the_timeout(miniengine_db, tmp_path):
    log = tmp_path / "steps.log"
    env_path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.workchains.crash",
            COUNTING,
            str(miniengine_db),
            "3",
            str(log),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": env_path, BLOCK_AT: "2", LEASE_VARIABLE: "1.0"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        pk = int(_read_line(process, timeout=30).split()[1])
        # The owner is alive and renews its 1 s lease every 0.25 s: resume, which would wait
        # past two expiry times, must not take it over.
        with pytest.raises(MiniengineError, match="owned"):
            await miniengine.resume(pk, timeout=2.5)
        assert load_node(pk).process_state is ProcessState.RUNNING
        assert steps(log) == ["setup", "add 0"]
    finally:
        process.kill()
        process.wait()
        process.stdout.close()
        process.stderr.close()
    outputs, node = await miniengine.resume(pk, timeout=30)
    assert node.is_finished_ok and outputs["result"].value == 3 + 111
