"""BaseRestartWorkChain, process_handler and ProcessHandlerReport: AiiDA's restart machinery.

Run mode on a real database file for the rules (handlers, priorities, do_break, overrides, the
exit codes), a real daemon for one restart loop, and a SIGKILL of the daemon's worker in the
middle of a loop for the crash rule: the replayed step reuses its child, no iteration runs twice.
The process classes live in ``tests/workchains/restart_chains.py`` so that workers import them.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

import miniengine
import miniengine.engine
from miniengine import (
    Bool,
    Dict,
    ExitCode,
    Int,
    ProcessState,
    Str,
    arun_get_node,
    await_node,
    control,
    find_processes,
    load_node,
    run_get_node,
    submit,
)
from miniengine.core.links import LinkType
from miniengine.exceptions import InputValidationError, MiniengineError, StoreError
from miniengine.runtime.nodes import ProcessNode
from miniengine.runtime.restart import (
    BaseRestartWorkChain,
    InvalidProcessClassError,
    ProcessHandlerDefinitionError,
    ProcessHandlerReport,
    process_handler,
)
from tests.workchains.daemon_chains import DaemonGuard, wait_until
from tests.workchains.restart_chains import (
    Doubler,
    DoublerRestart,
    GatedDoublerRestart,
    GatedHalveRestart,
    HalveRestart,
    NoProcessClassRestart,
    ScriptedRestart,
    WaitingRestart,
)

pytestmark = pytest.mark.backends


def reports(node: ProcessNode) -> list[str]:
    """The REPORT messages of ``node`` without their ``[pk|Class|step]: `` prefix, and without
    the last line of a finished one's ``on_terminated`` hook ('remote folders will not be
    cleaned', AiiDA's; tests/test_calcjob.py checks it)."""
    messages = [
        entry.message.split("]: ", 1)[1] for entry in node.logs if entry.levelname == "REPORT"
    ]
    if messages and messages[-1] == "remote folders will not be cleaned":
        messages.pop()
    return messages


def iterations(node: ProcessNode) -> list[tuple[str, ProcessNode]]:
    """The children of a restart work chain as ``(call link label, node)``, oldest first."""
    links = node.base.links.get_outgoing(link_type=(LinkType.CALL_WORK, LinkType.CALL_CALC))
    return sorted(((t.link_label, t.node) for t in links.all()), key=lambda item: item[1].pk)


# the loop ----------------------------------------------------------------------------------


def test_a_failed_child_is_fixed_by_its_handler_and_the_last_outputs_are_attached():
    outputs, node = run_get_node(DoublerRestart, child={"x": Int(-1)})
    assert node.is_finished_ok
    assert outputs["result"] == 4 and node.outputs.result.value == 4
    (label1, first), (label2, second) = iterations(node)
    assert (label1, label2) == ("iteration_01", "iteration_02")
    assert first.exit_status == 300 and first.inputs.x.value == -1
    assert second.is_finished_ok and second.inputs.x.value == 2
    assert second.inputs.settings.get_dict() == {"retried_after": first.pk}  # wrapped in a Dict
    # the output is the last child's node, not a copy
    assert node.outputs.result.pk == second.outputs.result.pk
    assert reports(node) == [
        f"launching Doubler<{first.pk}> iteration #1",
        # the handler saw the failed node and the inputs it had been launched with
        f"handle_negative: Doubler<{first.pk}> failed with 300 (x is negative: -1) for x=-1",
        f"Doubler<{first.pk}> failed but a handler dealt with the problem, restarting",
        f"launching Doubler<{second.pk}> iteration #2",
        "work chain completed after 2 iterations",
    ]


def test_a_child_that_succeeds_at_once_runs_once():
    outputs, node = run_get_node(DoublerRestart, child={"x": Int(5)})
    assert outputs["result"] == 10
    assert [label for label, _ in iterations(node)] == ["iteration_01"]
    assert reports(node)[-1] == "work chain completed after 1 iterations"


def test_max_iterations_exceeded_ends_with_401_after_exactly_that_many_runs():
    _, node = run_get_node(DoublerRestart, child={"x": Int(-10)}, max_iterations=Int(3))
    assert node.exit_status == 401
    assert node.exit_message == "The maximum number of iterations was exceeded."
    children = [child for _, child in iterations(node)]
    assert [child.inputs.x.value for child in children] == [-10, -7, -4]
    assert all(child.exit_status == 300 for child in children)
    assert reports(node)[-1] == (
        f"reached the maximum number of iterations 3: last ran Doubler<{children[-1].pk}>"
    )
    assert "result" not in node.outputs


def test_the_default_max_iterations_is_five():
    assert DoublerRestart.spec().inputs.ports["max_iterations"].get_default() == 5
    _, node = run_get_node(DoublerRestart, child={"x": Int(-100)})
    assert node.exit_status == 401 and len(iterations(node)) == 5


def test_an_unhandled_failure_is_retried_once_then_ends_with_402():
    _, node = run_get_node(ScriptedRestart, child={"x": Int(-1)})
    assert node.exit_status == 402
    assert node.exit_message == "The process failed for an unknown reason, twice in a row."
    (_, first), (_, second) = iterations(node)
    assert first.exit_status == second.exit_status == 300
    messages = [m for m in reports(node) if not m.startswith("considered")]
    assert messages == [
        f"launching Doubler<{first.pk}> iteration #1",
        f"Doubler<{first.pk}> failed and error was not handled, restarting once more",
        f"launching Doubler<{second.pk}> iteration #2",
        f"Doubler<{second.pk}> failed and error was not handled for the second consecutive "
        "time, aborting",
    ]


def test_a_handled_failure_resets_the_unhandled_failure_flag():
    """unhandled, handled, unhandled, unhandled: the handled failure in between means the third
    is not a second consecutive one; only the fourth ends the work chain with 402."""
    _, node = run_get_node(
        ScriptedRestart,
        child={"x": Int(-1)},
        behaviour=Dict({"handle_mid": [None, "report"]}),
    )
    assert node.exit_status == 402
    children = [child for _, child in iterations(node)]
    assert len(children) == 4
    messages = [m for m in reports(node) if not m.startswith(("considered", "launching"))]
    assert messages == [
        f"Doubler<{children[0].pk}> failed and error was not handled, restarting once more",
        f"Doubler<{children[1].pk}> failed but a handler dealt with the problem, restarting",
        f"Doubler<{children[2].pk}> failed and error was not handled, restarting once more",
        f"Doubler<{children[3].pk}> failed and error was not handled for the second "
        "consecutive time, aborting",
    ]


def test_an_excepted_child_ends_the_work_chain_with_301():
    _, node = run_get_node(DoublerRestart, child={"x": Int(1), "explode": Bool(True)})
    assert node.exit_status == 301
    assert node.exit_message == "The sub process excepted."
    ((_, child),) = iterations(node)
    assert child.process_state is ProcessState.EXCEPTED
    assert "the child exploded" in (child.exception or "")


async def test_a_killed_child_ends_the_work_chain_with_302():
    task = asyncio.create_task(arun_get_node(WaitingRestart, gate=Str("never")))
    for _ in range(4000):
        waiting = find_processes(state="running", process_label="WaitingProcess")
        if waiting:
            break
        await asyncio.sleep(0.005)
    else:
        raise AssertionError("the child never started")
    (child,) = waiting
    await asyncio.to_thread(control.kill, child.pk, "enough", wait=True)
    _, node = await task
    assert node.exit_status == 302
    assert node.exit_message == "The sub process was killed."
    assert load_node(child.pk).process_state is ProcessState.KILLED
    assert len(iterations(node)) == 1


# handlers ------------------------------------------------------------------------------------


def considered(node: ProcessNode) -> list[str]:
    return [m.split()[1] for m in reports(node) if m.startswith("considered")]


def test_handlers_run_by_descending_priority_and_disabled_ones_are_skipped():
    _, node = run_get_node(
        ScriptedRestart,
        child={"x": Int(-1)},
        behaviour=Dict({"handle_low": "report"}),
        max_iterations=Int(1),
    )
    # handle_disabled (500, enabled=False) is skipped; handle_never is filtered by exit code
    assert considered(node) == ["handle_high", "handle_mid", "handle_low"]
    (_, child), *_ = iterations(node)
    assert f"Doubler<{child.pk}> failed but a handler dealt with the problem, restarting" in (
        reports(node)
    )
    assert node.exit_status == 401  # the handler dealt with it, but one iteration was allowed


def test_do_break_stops_the_lower_priority_handlers():
    _, node = run_get_node(
        ScriptedRestart,
        child={"x": Int(-1)},
        behaviour=Dict({"handle_high": "break", "handle_mid": "report"}),
        max_iterations=Int(1),
    )
    assert considered(node) == ["handle_high"]


def test_a_report_with_an_exit_code_aborts_with_it():
    _, node = run_get_node(
        ScriptedRestart,
        child={"x": Int(-1)},
        behaviour=Dict({"handle_mid": "abort", "handle_low": "report"}),
    )
    assert node.exit_status == 410 and node.exit_message == "A handler gave up."
    assert considered(node) == ["handle_high", "handle_mid"]  # abort reports do_break=True
    ((_, child),) = iterations(node)
    assert reports(node)[-1] == (
        f"Doubler<{child.pk}> failed but a handler detected an unrecoverable problem, aborting"
    )


def test_a_handler_triggered_by_a_successful_child_restarts_or_aborts():
    _, node = run_get_node(
        ScriptedRestart,
        child={"x": Int(1)},
        behaviour=Dict({"handle_high": "report"}),
        max_iterations=Int(2),
    )
    children = [child for _, child in iterations(node)]
    assert len(children) == 2 and all(child.is_finished_ok for child in children)
    assert (
        f"Doubler<{children[0].pk}> finished successfully but a handler was triggered, restarting"
        in reports(node)
    )
    assert node.exit_status == 401
    _, node = run_get_node(
        ScriptedRestart, child={"x": Int(1)}, behaviour=Dict({"handle_low": "abort"})
    )
    ((_, child),) = iterations(node)
    assert node.exit_status == 410
    assert reports(node)[-1] == (
        f"Doubler<{child.pk}> finished successfully but a handler detected an unrecoverable "
        "problem, aborting"
    )


def test_handler_overrides_enable_disable_and_reprioritise():
    _, node = run_get_node(
        ScriptedRestart,
        child={"x": Int(-1)},
        max_iterations=Int(1),
        handler_overrides=Dict(
            {
                "handle_disabled": {"enabled": True},
                "handle_high": {"enabled": False},
                "handle_low": {"priority": 1000},
            }
        ),
    )
    assert considered(node) == ["handle_low", "handle_disabled", "handle_mid"]
    # a plain dict is accepted too (the port's serializer), as in AiiDA
    _, node = run_get_node(
        ScriptedRestart,
        child={"x": Int(-1)},
        max_iterations=Int(1),
        handler_overrides={"handle_mid": {"enabled": False, "priority": 5}},
    )
    assert considered(node) == ["handle_high", "handle_low"]


def test_the_deprecated_boolean_override_still_works_with_a_warning():
    with pytest.warns(DeprecationWarning, match="deprecated"):
        _, node = run_get_node(
            ScriptedRestart,
            child={"x": Int(-1)},
            max_iterations=Int(1),
            handler_overrides={"handle_disabled": True},
        )
    assert considered(node)[0] == "handle_disabled"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"handle_nothing": {"enabled": True}}, "is not a process handler of"),
        ({"_answer": {"enabled": True}}, "is not a process handler of"),
        ({"handle_high": 3}, "is not a boolean or dictionary"),
        ({"handle_high": {"colour": "red"}}, "contain keys `colour` which is not supported"),
        ({"handle_high": {"enabled": "yes"}}, "should be a boolean"),
        ({"handle_high": {"priority": "high"}}, "should be an integer"),
    ],
)
def test_bad_handler_overrides_are_refused_before_anything_is_stored(overrides, message):
    with pytest.raises(InputValidationError, match=message) as raised:
        run_get_node(ScriptedRestart, child={"x": Int(1)}, handler_overrides=overrides)
    assert isinstance(raised.value, ValueError)
    assert "handler_overrides" in str(raised.value)
    with pytest.raises(InputValidationError, match=message):
        submit(ScriptedRestart, child={"x": Int(1)}, handler_overrides=overrides)
    assert find_processes() == []


def test_get_process_handlers_and_is_process_handler():
    names = [handler.__name__ for handler in ScriptedRestart.get_process_handlers()]
    assert names == ["handle_disabled", "handle_high", "handle_low", "handle_mid", "handle_never"]
    assert ScriptedRestart.is_process_handler("handle_high")
    assert ScriptedRestart.is_process_handler(ScriptedRestart.handle_low)
    assert not ScriptedRestart.is_process_handler("_answer")
    assert not ScriptedRestart.is_process_handler("no_such_method")
    assert DoublerRestart.get_process_handlers() == [DoublerRestart.handle_negative]
    assert GatedDoublerRestart.is_process_handler("handle_negative")  # inherited
    high = ScriptedRestart.handle_high
    assert (high.priority, high.enabled) == (300, True)  # type: ignore[attr-defined]
    assert ScriptedRestart.handle_disabled.enabled is False  # type: ignore[attr-defined]


def test_process_handler_refuses_bad_arguments_when_the_class_is_defined():
    def good(self, node):  # type: ignore[no-untyped-def]
        return None

    with pytest.raises(TypeError, match="should be \\(self, node\\)"):
        process_handler(lambda self: None)
    with pytest.raises(TypeError, match="`priority` keyword should be an integer"):
        process_handler(priority="high")(good)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="`exit_codes` keyword should be an instance of"):
        process_handler(exit_codes=[300])(good)  # type: ignore[list-item]
    with pytest.raises(TypeError, match="`enabled` keyword should be a boolean"):
        process_handler(enabled=1)(good)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="only be an instance method"):
        process_handler(300)  # type: ignore[call-overload]
    with pytest.raises(MiniengineError):
        process_handler(lambda self, node, extra: None)
    assert issubclass(ProcessHandlerDefinitionError, MiniengineError)


def test_a_handler_returning_something_else_excepts_the_work_chain():
    class Returns(DoublerRestart):
        @process_handler(priority=999)
        def handle_badly(self, node):  # type: ignore[no-untyped-def]
            return ExitCode(1)

    with pytest.raises(RuntimeError, match="handler `handle_badly` returned a value that is not"):
        run_get_node(Returns, child={"x": Int(-1)})
    (node,) = find_processes(process_label="Returns")
    assert node.process_state is ProcessState.EXCEPTED


def test_process_handler_report_defaults_as_in_aiida():
    report = ProcessHandlerReport()
    assert report.do_break is False and report.exit_code == ExitCode(0)
    assert ProcessHandlerReport(True, ExitCode(400)).exit_code.status == 400


# the class and its ports ---------------------------------------------------------------------


def test_the_spec_has_aiidas_inputs_and_exit_codes():
    spec = DoublerRestart.spec()
    ports = spec.inputs.ports
    assert ports["max_iterations"].get_default() == 5
    assert ports["clean_workdir"].get_default() == False  # noqa: E712  (a Bool)
    assert ports["handler_overrides"].required is False
    codes = {label: code.status for label, code in DoublerRestart.exit_codes.items()}
    assert codes["ERROR_SUB_PROCESS_EXCEPTED"] == 301
    assert codes["ERROR_SUB_PROCESS_KILLED"] == 302
    assert codes["ERROR_MAXIMUM_ITERATIONS_EXCEEDED"] == 401
    assert codes["ERROR_SECOND_CONSECUTIVE_UNHANDLED_FAILURE"] == 402
    assert BaseRestartWorkChain._considered_handlers_extra == "considered_handlers"


def test_clean_workdir_is_accepted():
    outputs, node = run_get_node(DoublerRestart, child={"x": Int(1)}, clean_workdir=Bool(True))
    assert outputs["result"] == 2 and node.inputs.clean_workdir.value is True


def test_a_missing_process_class_is_a_value_error():
    with pytest.raises(InvalidProcessClassError, match="no valid Process class") as raised:
        run_get_node(NoProcessClassRestart)
    assert isinstance(raised.value, ValueError)


def test_public_names():
    assert miniengine.BaseRestartWorkChain is BaseRestartWorkChain
    assert miniengine.engine.BaseRestartWorkChain is BaseRestartWorkChain
    assert miniengine.process_handler is miniengine.engine.process_handler is process_handler
    assert miniengine.ProcessHandlerReport is miniengine.engine.ProcessHandlerReport


# a process function as the process -----------------------------------------------------------


def test_a_calcfunction_is_restarted_inline_until_it_succeeds():
    outputs, node = run_get_node(HalveRestart, x=Int(7))
    assert outputs["result"] == 4 and node.is_finished_ok
    (label1, first), (label2, second) = iterations(node)
    assert (label1, label2) == ("iteration_01", "iteration_02")
    assert first.process_label == "halve" and first.exit_status == 300
    assert second.inputs.x.value == 8 and second.is_finished_ok
    assert reports(node)[0] == f"launching halve<{first.pk}> iteration #1"


def test_a_calcfunction_that_raises_ends_the_work_chain_with_301():
    _, node = run_get_node(HalveRestart, x=Int(-2))
    assert node.exit_status == 301
    ((label, child),) = iterations(node)
    assert label == "iteration_01" and child.process_state is ProcessState.EXCEPTED
    assert "cannot halve -2" in (child.exception or "")


def test_a_value_restored_from_a_checkpoint_is_stored_as_the_node_it_already_is():
    """A replayed step stores again the unstored values its cut-off attempt had stored (they
    are checkpointed with their uuid): the node is reused, not refused as a duplicate uuid."""
    from miniengine.core import codec

    value = Dict({"a": 1})
    restored = codec.decode(codec.encode(value))
    assert restored.uuid == value.uuid and restored.pk is None
    value.store()
    assert restored.store().pk == value.pk
    # another content under the same uuid is still refused
    other = codec.decode(codec.encode(Dict({"a": 1})))
    changed = codec.decode(codec.encode(other))
    changed["a"] = 2
    other.store()
    with pytest.raises(StoreError, match=r"UNIQUE|unique constraint"):  # sqlite, PostgreSQL
        changed.store()


# a real daemon -------------------------------------------------------------------------------


def started_pids(folder: Path) -> set[int]:
    """The workers that reached the gate (``started.<pid>`` files)."""
    return {int(path.name.rsplit(".", 1)[1]) for path in folder.glob("started.*")}


def _submit_to(db: Path | str, process: type, **inputs: object) -> int:
    from miniengine.storage.store import close_all_stores

    previous = os.environ.get("MINIENGINE_DB")
    os.environ["MINIENGINE_DB"] = str(db)
    try:
        node = submit(process, **inputs)  # type: ignore[arg-type]
    finally:
        close_all_stores()
        if previous is None:
            del os.environ["MINIENGINE_DB"]
        else:
            os.environ["MINIENGINE_DB"] = previous
    assert node.pk is not None
    return node.pk


def _await(db: Path, pk: int) -> ProcessNode:
    """Wait (at most a minute) until the process ``pk`` has terminated; its node."""
    node = await_node(load_node(pk, db=db), timeout=60)
    assert isinstance(node, ProcessNode)
    return node


def test_a_restart_loop_runs_on_the_daemon(tmp_path: Path, miniengine_db: Path | str):
    db = miniengine_db
    with DaemonGuard(db) as daemon:
        daemon.start("--workers", "2")
        pk = _submit_to(db, DoublerRestart, child={"x": Int(-4), "folder": Str(str(tmp_path))})
        node = _await(db, pk)
    assert node.is_finished_ok, node.exception
    assert node.outputs.result.value == 4  # -4 -> -1 -> 2
    children = [child for _, child in iterations(node)]
    assert [child.inputs.x.value for child in children] == [-4, -1, 2]
    assert (tmp_path / "steps").read_text().splitlines() == [
        "child x=-4",
        "child x=-1",
        "child x=2",
    ]
    assert reports(node)[-1] == "work chain completed after 3 iterations"


def test_a_worker_killed_mid_loop_resumes_without_running_an_iteration_twice(
    tmp_path: Path, miniengine_db: Path | str
):
    """The worker dies in ``run_process`` of the second iteration, after the child was created
    and before the step's commit; the next worker replays that step, which finds and reuses the
    child it had created, so the second child runs once and the loop ends after 2 iterations."""
    db = miniengine_db
    folder = str(tmp_path)
    with DaemonGuard(db) as daemon:
        daemon.start("--workers", "1", "--lease-timeout", "60")
        (first,) = daemon.worker_pids()
        pk = _submit_to(db, GatedDoublerRestart, child={"x": Int(-1), "folder": Str(folder)})
        wait_until(lambda: started_pids(tmp_path) == {first}, 60, "the second iteration")
        os.kill(first, signal.SIGKILL)
        (second,) = wait_until(
            lambda: started_pids(tmp_path) - {first}, 60, "the replayed step on a new worker"
        )
        (tmp_path / f"release.{second}").touch()
        node = _await(db, pk)
    assert node.is_finished_ok, node.exception
    assert node.outputs.result.value == 4
    labels = [label for label, _ in iterations(node)]
    assert labels == ["iteration_01", "iteration_02"]  # one child per iteration, no duplicate
    # each child ran once; the gated step ran twice (cut off, then replayed)
    assert (tmp_path / "steps").read_text().splitlines() == [
        "child x=-1",
        "gate",
        "gate",
        "child x=2",
    ]
    launches = [m for m in reports(node) if m.startswith("launching")]
    assert len(launches) == 2  # the cut-off step's report was never committed
    assert reports(node)[-1] == "work chain completed after 2 iterations"
    assert Doubler.exit_codes.ERROR_NEGATIVE.status == iterations(node)[0][1].exit_status


def test_a_worker_killed_in_an_inline_calcfunction_runs_that_iteration_afresh(
    tmp_path: Path, miniengine_db: Path | str
):
    """The worker dies inside the calcfunction of the second iteration.  The replayed
    ``run_process`` marks the cut-off call EXCEPTED ("owner lost") and calls it afresh; the
    iteration counter, the context and the outputs see the second iteration once."""
    db = miniengine_db
    with DaemonGuard(db) as daemon:
        daemon.start("--workers", "1", "--lease-timeout", "60")
        (first,) = daemon.worker_pids()
        pk = _submit_to(db, GatedHalveRestart, x=Int(7), folder=Str(str(tmp_path)))
        wait_until(lambda: started_pids(tmp_path) == {first}, 60, "the second iteration")
        os.kill(first, signal.SIGKILL)
        (second,) = wait_until(
            lambda: started_pids(tmp_path) - {first}, 60, "the replayed call on a new worker"
        )
        (tmp_path / f"release.{second}").touch()
        node = _await(db, pk)
    assert node.is_finished_ok, node.exception
    assert node.outputs.result.value == 4
    assert (tmp_path / "steps").read_text().splitlines() == ["halve x=7", "halve x=8", "halve x=8"]
    (_, odd), (_, cut_off), (_, fresh) = iterations(node)
    assert [label for label, _ in iterations(node)] == ["iteration_01"] + ["iteration_02"] * 2
    assert odd.exit_status == 300
    assert cut_off.process_state is ProcessState.EXCEPTED
    assert "owner lost" in (cut_off.exception or cut_off.process_status or "")
    assert fresh.is_finished_ok and node.outputs.result.pk == fresh.outputs.result.pk
    launches = [m for m in reports(node) if m.startswith("launching")]
    assert launches == [
        f"launching gated_halve<{odd.pk}> iteration #1",
        f"launching gated_halve<{fresh.pk}> iteration #2",
    ]
    assert reports(node)[-1] == "work chain completed after 2 iterations"
