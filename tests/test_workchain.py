"""Running WorkChains (issue 4): the seed's NestedWorkChain, the outline, the context, children,
outputs and errors, on a real sqlite database (a fresh file per test)."""

import asyncio
import itertools
import logging
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import anyio
import pytest

from miniengine import (
    EventLoopError,
    ExitCode,
    Int,
    MiniengineError,
    ProcessState,
    Str,
    ToContext,
    WorkChain,
    WorkChainNode,
    append_,
    assign_,
    calcfunction,
    find_processes,
    if_,
    return_,
    run,
    run_get_node,
    while_,
)
from miniengine.core.links import LinkType

#: every test runs on a sqlite file and on a PostgreSQL database
pytestmark = pytest.mark.usefixtures("backend_db")

# the seed, scenario 2, verbatim (imports changed only) ------------------------------------------


# fmt: off
class NestedWorkChain(WorkChain):
    """
    Nested workchain which creates a workflow where the nesting level is equal to its input.
    """

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input('inp', valid_type=Int)
        spec.outline(cls.do_submit, cls.finalize)
        spec.output('output', valid_type=Int, required=True)

    def do_submit(self):
        if self.should_submit():
            self.report('Submitting nested workchain.')
            return ToContext(workchain=append_(self.submit(NestedWorkChain, inp=self.inputs.inp - 1)))  # noqa: E501

    def should_submit(self):
        return int(self.inputs.inp) > 0

    def finalize(self):
        """Attach the outputs."""
        if self.should_submit():
            self.report('Getting sub-workchain output.')
            sub_workchain = self.ctx.workchain[0]
            self.out('output', Int(sub_workchain.outputs.output + 1).store())
        else:
            self.report('Bottom-level workchain reached.')
            self.out('output', Int(0).store())
# fmt: on


# ------------------------------------------------------------------------------------------------


def chain_of(node):
    """The nodes from ``node`` down through each node's single called child."""
    chain = [node]
    while chain[-1].called:
        (child,) = chain[-1].called
        chain.append(child)
    return chain


def db_count(path, sql, *args):
    with sqlite3.connect(path) as connection:
        return connection.execute(sql, args).fetchone()[0]


def test_seed_nested_workchain_returns_its_depth():
    assert run(NestedWorkChain, inp=Int(3))["output"] == 3


def test_seed_nested_workchain_provenance_and_reports():
    result, root = run_get_node(NestedWorkChain, inp=Int(3))
    assert root.is_finished_ok
    chain = chain_of(root)
    assert len(chain) == 4
    assert all(isinstance(node, WorkChainNode) and node.is_finished_ok for node in chain)
    assert [node.inputs.inp.value for node in chain] == [3, 2, 1, 0]
    assert [node.outputs.output.value for node in chain] == [3, 2, 1, 0]
    for parent, child in itertools.pairwise(chain):
        (link,) = parent.base.links.get_outgoing(link_type=LinkType.CALL_WORK).all()
        assert link.node == child
        assert child.caller == parent
    assert root.caller is None
    assert len(find_processes(process_label="NestedWorkChain")) == 4
    assert result["output"].pk == root.outputs.output.pk

    for node in chain[:-1]:
        messages = [log.message for log in node.logs]
        assert len(messages) == 2
        assert "Submitting nested workchain." in messages[0]
        assert "Getting sub-workchain output." in messages[1]
        assert all(str(node.pk) in message for message in messages)
        assert [log.levelname for log in node.logs] == ["REPORT", "REPORT"]
    (bottom,) = chain[-1].logs
    assert "Bottom-level workchain reached." in bottom.message


def test_seed_nested_workchain_output_links_are_return_links():
    _, root = run_get_node(NestedWorkChain, inp=Int(1))
    (link,) = root.base.links.get_outgoing(link_type=LinkType.RETURN).all()
    assert link.link_label == "output" and link.node.value == 1
    assert link.node.is_stored


def test_seed_nested_workchain_depth_200():
    result, root = run_get_node(NestedWorkChain, inp=Int(200))
    assert result["output"] == 200
    assert len(find_processes(process_label="NestedWorkChain")) == 201
    assert all(node.is_finished_ok for node in find_processes(process_label="NestedWorkChain"))
    assert root.called[0].inputs.inp.value == 199


async def test_seed_nested_workchain_under_arun():
    from miniengine import arun

    assert (await arun(NestedWorkChain, inp=Int(4)))["output"] == 4


# the outline at run time ------------------------------------------------------------------------


class Branching(WorkChain):
    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input("x", valid_type=Int)
        spec.output("trail", valid_type=Str)
        spec.outline(
            cls.setup,
            if_(cls.is_small)(cls.small).elif_(cls.is_medium)(cls.medium).else_(cls.large),
            while_(cls.counting)(cls.count),
            cls.finalize,
        )

    def setup(self):
        self.ctx.trail = ["setup"]
        self.ctx.n = 0

    def is_small(self):
        return self.inputs.x.value < 10

    def is_medium(self):
        return self.inputs.x.value < 100

    def small(self):
        self.ctx.trail.append("small")

    def medium(self):
        self.ctx.trail.append("medium")

    def large(self):
        self.ctx.trail.append("large")

    def counting(self):
        return self.ctx.n < self.inputs.x.value % 10

    def count(self):
        self.ctx.n += 1
        self.ctx.trail.append(f"count{self.ctx.n}")

    def finalize(self):
        self.out("trail", Str(" ".join(self.ctx.trail)))


@pytest.mark.parametrize(
    ("x", "trail"),
    [
        (0, "setup small"),
        (2, "setup small count1 count2"),
        (51, "setup medium count1"),
        (503, "setup large count1 count2 count3"),
    ],
)
def test_if_elif_else_and_while_at_run_time(x, trail):
    assert run(Branching, x=Int(x))["trail"].value == trail


class Stopping(WorkChain):
    """``mode`` picks what ``decide`` returns; ``after`` reports whether it ran."""

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input("mode", valid_type=Str)
        spec.exit_code(300, "ERROR_STOP", message="stopped on purpose")
        spec.outline(
            cls.decide,
            if_(cls.bare_return)(return_),
            if_(cls.return_code)(return_(402)),
            if_(cls.return_exit_code)(return_(ExitCode(403, "returned an exit code"))),
            cls.after,
        )

    def decide(self):
        mode = self.inputs.mode.value
        return {
            "exit_code": self.exit_codes.ERROR_STOP,
            "int": 401,
            "zero": 0,
            "none": None,
            "plain_exit_code": ExitCode(404, "plain"),
        }.get(mode)

    def bare_return(self):
        return self.inputs.mode.value == "return"

    def return_code(self):
        return self.inputs.mode.value == "return_int"

    def return_exit_code(self):
        return self.inputs.mode.value == "return_exit_code"

    def after(self):
        self.report("after ran")


@pytest.mark.parametrize(
    ("mode", "status", "message", "after_ran"),
    [
        ("exit_code", 300, "stopped on purpose", False),
        ("int", 401, None, False),
        ("plain_exit_code", 404, "plain", False),
        ("zero", 0, None, True),
        ("none", 0, None, True),
        ("return", 0, None, False),
        ("return_int", 402, None, False),
        ("return_exit_code", 403, "returned an exit code", False),
    ],
)
def test_what_a_step_returns_decides_whether_the_outline_goes_on(mode, status, message, after_ran):
    _, node = run_get_node(Stopping, mode=Str(mode))
    assert node.process_state is ProcessState.FINISHED
    assert node.exit_status == status
    assert node.exit_message == message
    assert node.is_finished_ok is (status == 0)
    assert any("after ran" in log.message for log in node.logs) is after_ran


class NonBoolPredicate(WorkChain):
    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.outline(if_(cls.truthy)(cls.go))

    def truthy(self):
        return 1

    def go(self):
        self.report("went")


def test_non_bool_predicate_gives_a_user_warning_at_run_time():
    with pytest.warns(UserWarning, match="truthy"):
        _, node = run_get_node(NonBoolPredicate)
    assert any("went" in log.message for log in node.logs)


def test_malformed_outline_is_a_type_error_when_the_class_is_used():
    class Malformed(WorkChain):
        @classmethod
        def define(cls, spec):
            super().define(spec)
            spec.outline(cls.go, 42)

        def go(self): ...

    with pytest.raises(TypeError, match="42"):
        run(Malformed)
    assert find_processes() == []


class Threads(WorkChain):
    seen: dict = {}

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.outline(cls.sync_step, cls.async_step, cls.sync_again)

    def sync_step(self):
        type(self).seen["sync"] = threading.get_ident()
        self.ctx.from_sync = 1

    async def async_step(self):
        await anyio.sleep(0)
        type(self).seen["async"] = threading.get_ident()
        type(self).seen["loop"] = id(asyncio.get_running_loop())
        self.ctx.from_async = self.ctx.from_sync + 1

    def sync_again(self):
        type(self).seen["sync_again"] = threading.get_ident()
        with pytest.raises(RuntimeError):
            asyncio.get_running_loop()
        assert self.ctx.from_async == 2


def test_def_steps_run_off_the_loop_thread_and_async_steps_on_it():
    Threads.seen.clear()
    _, node = run_get_node(Threads)
    assert node.is_finished_ok
    # run() drives the WorkChain on miniengine's loop thread: async steps run there, def steps
    # in worker threads (and never in the loop's thread)
    loop_thread = Threads.seen["async"]
    assert loop_thread != threading.get_ident()
    assert Threads.seen["sync"] != loop_thread
    assert Threads.seen["sync_again"] != loop_thread


# children and the context -------------------------------------------------------------------


class Child(WorkChain):
    """``y = x + 1``; raises for x < 0, exits with 300 for x == 300."""

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input("x", valid_type=Int)
        spec.output("y", valid_type=Int, required=False)
        spec.exit_code(300, "ERROR_CHILD", message="the child failed")
        spec.outline(cls.compute)

    def compute(self):
        if self.inputs.x.value < 0:
            raise RuntimeError("negative input")
        if self.inputs.x.value == 300:
            return self.exit_codes.ERROR_CHILD
        self.out("y", Int(self.inputs.x.value + 1))
        return None


class Collecting(WorkChain):
    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.output("summary", valid_type=Str)
        spec.outline(cls.plain_ctx, cls.launch, cls.more, cls.dict_return, cls.check)

    def plain_ctx(self):
        self.ctx.number = 5
        self.ctx["text"] = "t"
        self.ctx.nested = {"a": [1, 2]}

    def launch(self):
        assert self.ctx.number == 5 and self.ctx.text == "t"
        assert self.ctx.nested["a"] == [1, 2]
        assert not hasattr(self.ctx, "missing")
        single = self.submit(Child, x=Int(1))
        # the child's node, at once: stored, linked, not started before this step ends
        assert isinstance(single, WorkChainNode) and single.pk is not None
        assert single.process_state is ProcessState.CREATED
        assert single.caller == self.node
        return ToContext(
            single=single,
            listed=append_(self.submit(Child, x=Int(2))),
            assigned=assign_(self.submit(Child, x=Int(3))),
            **{"deep.er.child": self.submit(Child, x=Int(4))},
        )

    def more(self):
        self.to_context(listed=append_(self.submit(Child, x=Int(5))))
        self.to_context(listed=append_(self.submit(Child, x=Int(6))))
        self.to_context(**{"deep.other": self.submit(Child, x=Int(7))})

    def dict_return(self):
        return {"from_dict": self.submit(Child, x=Int(8))}

    def check(self):
        ctx = self.ctx
        assert isinstance(ctx.single, WorkChainNode) and ctx.single.is_finished_ok
        assert isinstance(ctx.assigned, WorkChainNode)
        assert [node.outputs.y.value for node in ctx.listed] == [3, 6, 7]
        assert ctx.deep.er.child.outputs.y.value == 5
        assert ctx.deep.other.outputs.y.value == 8
        assert ctx.from_dict.outputs.y.value == 9
        values = [
            ctx.single.outputs.y.value,
            ctx.assigned.outputs.y.value,
            ctx.deep.er.child.outputs.y.value,
            ctx.from_dict.outputs.y.value,
        ]
        self.out("summary", Str(" ".join(map(str, values))))


def test_context_attribute_access_to_context_append_assign_and_dotted_keys():
    result, node = run_get_node(Collecting)
    assert result["summary"].value == "2 4 5 9"
    called = node.called
    assert len(called) == 8
    assert sorted(child.inputs.x.value for child in called) == [1, 2, 3, 4, 5, 6, 7, 8]
    links = node.base.links.get_outgoing(link_type=LinkType.CALL_WORK).all()
    assert len(links) == 8
    assert all(child.caller == node for child in called)


class TolerantParent(WorkChain):
    """Puts failed children in the context and decides itself what that means."""

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.output("states", valid_type=Str)
        spec.exit_code(400, "ERROR_SUB", message="a child failed: {states}")
        spec.outline(cls.launch, cls.inspect)

    def launch(self):
        return ToContext(
            raised=self.submit(Child, x=Int(-1)),
            failed=self.submit(Child, x=Int(300)),
            fine=self.submit(Child, x=Int(1)),
        )

    def inspect(self):
        ctx = self.ctx
        states = " ".join(
            f"{key}={ctx[key].process_state.value}:{ctx[key].exit_status}"
            for key in ("raised", "failed", "fine")
        )
        self.out("states", Str(states))
        if not (ctx.raised.is_finished_ok and ctx.failed.is_finished_ok):
            return self.exit_codes.ERROR_SUB.format(states=states)
        return None


def test_failed_children_land_in_the_context_and_the_parent_decides():
    result, node = run_get_node(TolerantParent)
    states = "raised=excepted:None failed=finished:300 fine=finished:0"
    assert result["states"].value == states
    assert node.exit_status == 400
    assert node.exit_message == f"a child failed: {states}"
    raised = next(child for child in node.called if child.inputs.x.value == -1)
    assert raised.is_excepted and "negative input" in raised.exception


class Clashing(WorkChain):
    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.outline(cls.first, cls.second, cls.never)

    def first(self):
        return ToContext(a=self.submit(Child, x=Int(1)))

    def second(self):
        return ToContext(**{"a.b": self.submit(Child, x=Int(2))})

    def never(self):
        self.report("never")


def test_context_key_clash_is_a_value_error():
    with pytest.raises(ValueError, match=r"a\.b"):
        run(Clashing)
    (node,) = find_processes(process_label="Clashing")
    assert node.is_excepted
    assert not any("never" in log.message for log in node.logs)


class BadToContext(WorkChain):
    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.outline(cls.go)

    def go(self):
        return ToContext(value=Int(1))


def test_to_context_of_something_that_is_not_a_process_is_a_value_error():
    with pytest.raises(ValueError, match="value"):
        run(BadToContext)


@calcfunction
def add(x, y):
    return Int(x + y)


class CallsProcesses(WorkChain):
    """Steps that call a calcfunction (def and async) and run a WorkChain from a def step."""

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input("x", valid_type=Int)
        spec.output("from_def", valid_type=Int)
        spec.output("from_async", valid_type=Int)
        spec.output("from_run", valid_type=Int)
        spec.outline(cls.sync_calc, cls.async_calc, cls.sync_run)

    def sync_calc(self):
        self.out("from_def", add(self.inputs.x, Int(1)))

    async def async_calc(self):
        self.out("from_async", await add.arun(self.inputs.x, Int(2)))

    def sync_run(self):
        self.out("from_run", run(Child, x=self.inputs.x)["y"])


def test_steps_call_process_functions_and_run_workchains_as_children():
    result, node = run_get_node(CallsProcesses, x=Int(10))
    assert {name: value.value for name, value in result.items()} == {
        "from_def": 11,
        "from_async": 12,
        "from_run": 11,
    }
    calls = node.base.links.get_outgoing(link_type=(LinkType.CALL_CALC, LinkType.CALL_WORK))
    kinds = [(link.link_type, type(link.node).__name__) for link in calls.all()]
    assert kinds == [
        (LinkType.CALL_CALC, "CalcFunctionNode"),
        (LinkType.CALL_CALC, "CalcFunctionNode"),
        (LinkType.CALL_WORK, "WorkChainNode"),
    ]
    assert all(child.is_finished_ok and child.caller == node for child in node.called)
    # a calcfunction's result is CREATEd by it and RETURNed by the WorkChain
    created = node.called[0].base.links.get_outgoing(link_type=LinkType.CREATE).one().node
    assert created.pk == result["from_def"].pk


class RaisingPredicate(WorkChain):
    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.outline(cls.go, while_(cls.broken)(cls.go))

    def go(self):
        self.report("go ran")

    def broken(self):
        raise LookupError("the predicate broke")


def test_predicate_that_raises_excepts_the_process():
    with pytest.raises(LookupError, match="the predicate broke"):
        run(RaisingPredicate)
    (node,) = find_processes(process_label="RaisingPredicate")
    assert node.is_excepted and "the predicate broke" in node.exception
    assert [log.message.endswith("go ran") for log in node.logs].count(True) == 1


# outputs ------------------------------------------------------------------------------------


class Outputs(WorkChain):
    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.output("plain", valid_type=Int)
        spec.output("prestored", valid_type=Int)
        spec.output("many_a", valid_type=Int)
        spec.output("many_b", valid_type=Str)
        spec.output("ns.sub.value", valid_type=Int)
        spec.output_namespace("dyn", dynamic=True)
        spec.output("errors", valid_type=Str)
        spec.outline(cls.attach, cls.more)

    def attach(self):
        errors = []
        for name, value in [
            ("undeclared", Int(1)),
            ("plain", Str("wrong type")),
            ("ns.sub.nope", Int(1)),
            ("plain", 5),
        ]:
            try:
                self.out(name, value)
            except ValueError as exc:
                errors.append(f"{name}: {exc}")
        self.ctx.errors = errors
        data = Int(1)
        self.out("plain", data)
        self.ctx.unstored_after_out = data.is_stored
        stored = Int(3).store()
        assert stored.is_stored and stored.pk is not None
        self.out("prestored", stored)
        self.ctx.prestored_pk = stored.pk

    def more(self):
        self.out_many({"many_a": Int(2), "many_b": Str("b")})
        self.out("ns.sub.value", Int(4))
        self.out("dyn", {"x": Int(5), "z": Int(6)})
        self.out("errors", Str("\n".join(self.ctx.errors)))


def test_out_validates_at_once_and_stores_for_you():
    result, node = run_get_node(Outputs)
    errors = result["errors"].value.splitlines()
    assert len(errors) == 4
    assert errors[0].startswith("undeclared:") and "undeclared" in errors[0][11:]
    assert errors[1].startswith("plain:") and "Str" in errors[1]
    assert errors[2].startswith("ns.sub.nope:")
    assert errors[3].startswith("plain:")
    assert result["plain"].value == 1 and result["plain"].is_stored
    assert result["prestored"].value == 3
    assert result["many_a"].value == 2 and result["many_b"].value == "b"
    assert result["ns"]["sub"]["value"].value == 4
    assert result["dyn"]["x"].value == 5 and result["dyn"]["z"].value == 6
    assert node.outputs.ns.sub.value.value == 4
    assert node.outputs.dyn.z.value == 6
    assert node.outputs.prestored.pk == result["prestored"].pk
    links = node.base.links.get_outgoing(link_type=LinkType.RETURN).all()
    assert sorted(link.link_label for link in links) == [
        "dyn__x",
        "dyn__z",
        "errors",
        "many_a",
        "many_b",
        "ns__sub__value",
        "plain",
        "prestored",
    ]
    assert all(link.node.is_stored for link in links)
    assert node.base.links.get_outgoing(link_type=LinkType.CREATE).all() == []


class NestedDynamicOutputs(WorkChain):
    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.output_namespace("dyn", dynamic=True)
        spec.outline(cls.go)

    def go(self):
        self.out("dyn", {"deeper": {"y": Int(6)}})
        self.out("dyn.other.z", Int(7))


def test_dynamic_output_namespace_accepts_nested_namespaces():
    # Inputs accept nested mappings in a dynamic namespace (PortNamespace.validate), and so do
    # process functions' outputs; WorkChain outputs should too.
    result, node = run_get_node(NestedDynamicOutputs)
    assert result["dyn"]["deeper"]["y"].value == 6
    assert node.outputs.dyn.other.z.value == 7


class MissingOutput(WorkChain):
    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.output("needed", valid_type=Int)
        spec.output("optional", valid_type=Int, required=False)
        spec.outline(cls.go)

    def go(self):
        self.out("optional", Int(1))


def test_required_output_missing_at_the_end_is_exit_status_11():
    result, node = run_get_node(MissingOutput)
    assert node.is_finished and node.exit_status == 11
    assert node.exit_message == MissingOutput.exit_codes.ERROR_MISSING_OUTPUT.message
    assert result["optional"].value == 1


def needs_two(value, port):
    return None if len(value) == 2 else f"needs two values, got {len(value)}"


class InvalidAtTheEnd(WorkChain):
    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.output_namespace("pair", dynamic=True, valid_type=Int, validator=needs_two)
        spec.outline(cls.go)

    def go(self):
        self.out("pair.first", Int(1))  # valid on its own: the namespace is checked at the end


def test_outputs_failing_validation_at_termination_is_exit_status_10():
    _, node = run_get_node(InvalidAtTheEnd)
    assert node.is_finished and node.exit_status == 10
    assert "needs two values, got 1" in node.exit_message


def test_dynamic_output_namespace_valid_type_is_checked_at_once():
    class WrongDynamic(WorkChain):
        @classmethod
        def define(cls, spec):
            super().define(spec)
            spec.output_namespace("ints", valid_type=Int)
            spec.outline(cls.go)

        def go(self):
            self.out("ints.a", Str("no"))

    with pytest.raises(ValueError, match=r"ints\.a"):
        run(WrongDynamic)


# errors -------------------------------------------------------------------------------------


class Raising(WorkChain):
    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.outline(cls.fine, cls.explode, cls.never)

    def fine(self):
        self.report("fine ran")

    def explode(self):
        raise KeyError("the key that broke it")

    def never(self):
        self.report("never")


def test_step_that_raises_excepts_the_process_and_reaches_the_caller():
    with pytest.raises(KeyError, match="the key that broke it"):
        run(Raising)
    (node,) = find_processes(process_label="Raising")
    assert node.process_state is ProcessState.EXCEPTED
    assert node.is_excepted and node.is_terminated and node.exit_status is None
    assert "Traceback" in node.exception and "the key that broke it" in node.exception
    assert "explode" in node.exception
    errors = [log for log in node.logs if log.levelname == "ERROR"]
    assert errors and "the key that broke it" in errors[-1].message
    messages = [log.message for log in node.logs]
    assert any("fine ran" in message for message in messages)
    assert not any("never" in message for message in messages)


async def test_async_step_that_raises_excepts_the_process():
    from miniengine import arun

    class AsyncRaising(WorkChain):
        @classmethod
        def define(cls, spec):
            super().define(spec)
            spec.outline(cls.go)

        async def go(self):
            await anyio.sleep(0)
            raise ZeroDivisionError("async boom")

    with pytest.raises(ZeroDivisionError):
        await arun(AsyncRaising)
    (node,) = find_processes(process_label="AsyncRaising")
    assert node.is_excepted and "async boom" in node.exception


_child_started: dict = {}


class BlockedChild(WorkChain):
    """Tells its parent it is running, then waits on an event nobody ever sets."""

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.outline(cls.block, cls.never)

    async def block(self):
        _child_started["event"].set()
        await anyio.Event().wait()

    def never(self):
        self.report("never")


class ParentThatRaises(WorkChain):
    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.outline(cls.launch, cls.wait_until_running, cls.explode)

    async def launch(self):
        _child_started["event"] = anyio.Event()
        self.ctx.child_pk = self.submit(BlockedChild).pk  # not awaited: it runs meanwhile

    async def wait_until_running(self):
        await _child_started["event"].wait()

    def explode(self):
        raise RuntimeError("parent failed while its child was running")


def test_step_that_raises_kills_the_running_children():
    with pytest.raises(RuntimeError, match="parent failed"):
        run(ParentThatRaises)
    (parent,) = find_processes(process_label="ParentThatRaises")
    (child,) = parent.called
    assert parent.is_excepted
    assert child.process_state is ProcessState.KILLED
    assert child.is_killed and child.exit_status is None
    assert not any("never" in log.message for log in child.logs)
    assert find_processes(state=["created", "running", "waiting"]) == []


ROOT = Path(__file__).resolve().parent.parent


def test_child_submitted_in_the_step_that_raises_is_killed_too(miniengine_db):
    # In a subprocess: if the child is not killed, run() never returns, and the timeout turns
    # that hang into a failure.
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "MINIENGINE_DB": str(miniengine_db), "PYTHONPATH": path}
    try:
        completed = subprocess.run(
            [sys.executable, "-m", "tests.workchains.orphans"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("run() never returned: the child submitted by the failing step kept running")
    lines = completed.stdout.splitlines()
    assert "RAISED raised right after submitting" in lines, completed.stderr
    assert "SubmitThenRaise excepted" in lines
    assert "BlockingChild killed" in lines


def test_data_stored_in_another_database_is_not_linked_by_its_foreign_pk(tmp_path, monkeypatch):
    # DESIGN: the database is resolved from $MINIENGINE_DB at each top-level launch, so one
    # script may run against two files.
    x = Int(3)
    monkeypatch.setenv("MINIENGINE_DB", str(tmp_path / "first.sqlite"))
    run(Child, x=x)
    assert x.is_stored
    monkeypatch.setenv("MINIENGINE_DB", str(tmp_path / "second.sqlite"))
    before = len(find_processes())
    try:
        _, node = run_get_node(Child, x=x)
    except MiniengineError as exc:  # refusing it clearly, before anything is written, is fine
        assert isinstance(exc, ValueError) and "'x'" in str(exc) and "database" in str(exc)
        assert len(find_processes()) == before
        return
    linked = node.inputs.x
    assert isinstance(linked, Int) and linked.value == 3


@pytest.mark.sqlite_only
def test_bad_input_is_refused_before_any_node_is_created(miniengine_db):
    run(NestedWorkChain, inp=Int(0))
    before = db_count(miniengine_db, "SELECT count(*) FROM nodes")
    processes = len(find_processes())
    with pytest.raises(ValueError, match="inp"):
        run(NestedWorkChain, inp=Str("x"))
    with pytest.raises(ValueError, match="inp"):
        run(NestedWorkChain)
    with pytest.raises(ValueError, match="bogus"):
        run(NestedWorkChain, inp=Int(1), bogus=Int(2))
    with pytest.raises(ValueError, match="inp"):
        run(NestedWorkChain, inp=5)
    assert len(find_processes()) == processes
    assert db_count(miniengine_db, "SELECT count(*) FROM nodes") == before


def test_bad_input_error_is_a_miniengine_error():
    from miniengine import InputValidationError, MiniengineError

    with pytest.raises(InputValidationError) as info:
        run(NestedWorkChain, inp=Str("x"))
    assert isinstance(info.value, MiniengineError) and isinstance(info.value, ValueError)


class RunInsideAsyncStep(WorkChain):
    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.output("message", valid_type=Str)
        spec.outline(cls.go)

    async def go(self):
        try:
            run(Child, x=Int(1))
        except EventLoopError as exc:
            self.out("message", Str(str(exc)))


def test_top_level_run_inside_an_async_step_raises_event_loop_error():
    result, node = run_get_node(RunInsideAsyncStep)
    assert "await arun" in result["message"].value
    assert node.called == []
    assert find_processes(process_label="Child") == []


class ReadOnlyInputs(WorkChain):
    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input("x", valid_type=Int)
        spec.input("ns.y", valid_type=Int)
        spec.output("errors", valid_type=Str)
        spec.outline(cls.go)

    def go(self):
        errors = []
        for attempt in (
            lambda: setattr(self.inputs, "x", Int(2)),
            lambda: self.inputs.__setitem__("x", Int(2)),
            lambda: delattr(self.inputs, "x"),
            lambda: setattr(self.inputs.ns, "y", Int(2)),
            lambda: setattr(self.inputs, "new", Int(2)),
        ):
            try:
                attempt()
            except (AttributeError, TypeError) as exc:
                errors.append(type(exc).__name__)
        assert self.inputs.x.value == 1 and self.inputs.ns.y.value == 3
        assert self.inputs["x"] is self.inputs.x
        self.out("errors", Str(" ".join(errors)))


def test_inputs_are_read_only():
    result = run(ReadOnlyInputs, x=Int(1), ns={"y": Int(3)})
    assert len(result["errors"].value.split()) == 5


class Reporting(WorkChain):
    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.outline(cls.one, cls.two)

    def one(self):
        self.report("first message")
        self.report("second message")

    async def two(self):
        self.report("third message")


def test_reports_are_stored_in_order_with_the_process_pk():
    _, node = run_get_node(Reporting)
    messages = [log.message for log in node.logs]
    assert len(messages) == 3
    for message, expected, step in zip(
        messages, ["first", "second", "third"], ["one", "one", "two"], strict=True
    ):
        assert f"{expected} message" in message
        assert str(node.pk) in message and step in message


# one unstored node given twice ----------------------------------------------------------------


class TwoInputs(WorkChain):
    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input("a", valid_type=Int)
        spec.input("b", valid_type=Int)
        spec.input_namespace("ns", dynamic=True, required=False)
        spec.output("sum", valid_type=Int)
        spec.outline(cls.add_them)

    def add_them(self):
        self.out("sum", add(self.inputs.a, self.inputs.b))


class SharesNodes(WorkChain):
    """Gives one unstored node to two inputs of children (submitted and inline) and to two
    outputs, and attaches a node that it also gives to a child."""

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.output_namespace("out", dynamic=True)
        spec.outline(cls.submit_child, cls.call_inline, cls.output_twice, cls.output_and_input)

    def submit_child(self):
        shared = Int(3)
        return ToContext(child=self.submit(TwoInputs, a=shared, b=shared))

    def call_inline(self):
        shared = Int(4)
        self.ctx.inline_sum = add(shared, shared)
        self.ctx.run_sum = run(TwoInputs, a=shared, b=shared, ns={"c": shared, "d": {"e": shared}})
        self.ctx.shared_inline = shared

    def output_twice(self):
        shared = Int(5)
        self.out("out.first", shared)
        self.out("out.second", shared)

    def output_and_input(self):
        shared = Int(6)
        self.out("out.third", shared)
        self.ctx.last = self.submit(TwoInputs, a=shared, b=shared)


def _input_links(node):
    return sorted(
        (triple.link_label, triple.node.pk)
        for triple in node.base.links.get_incoming(link_type=LinkType.INPUT_WORK)
    )


@pytest.mark.sqlite_only
def test_the_same_unstored_node_as_two_inputs_is_stored_once_and_linked_twice(miniengine_db):
    shared = Int(1)
    result, node = run_get_node(TwoInputs, a=shared, b=shared)
    assert result["sum"] == 2 and shared.is_stored
    assert _input_links(node) == [("a", shared.pk), ("b", shared.pk)]
    other = Int(2)
    _, node = run_get_node(
        TwoInputs, **{"a": other, "b": other, "ns": {"c": other, "d": {"e": other}}}
    )
    assert _input_links(node) == [
        ("a", other.pk),
        ("b", other.pk),
        ("ns__c", other.pk),
        ("ns__d__e", other.pk),
    ]
    assert db_count(miniengine_db, "SELECT count(*) FROM nodes WHERE uuid = ?", other.uuid) == 1


@pytest.mark.sqlite_only
def test_steps_give_one_unstored_node_to_two_inputs_and_two_outputs(miniengine_db):
    result, node = run_get_node(SharesNodes)
    assert node.is_finished_ok
    submitted, inline_add, inline_run, last = node.called
    assert submitted.outputs.sum == 6 and inline_add.outputs.result == 8
    assert inline_run.outputs.sum == 8 and last.outputs.sum == 12
    (pk,) = {pk for _, pk in _input_links(submitted)}
    assert _input_links(submitted) == [("a", pk), ("b", pk)]
    assert {pk for _, pk in _input_links(inline_run)} == {inline_add.inputs.x.pk}
    assert result["out"]["first"].pk == result["out"]["second"].pk
    assert result["out"]["third"].pk == last.inputs.a.pk == last.inputs.b.pk
    returned = node.base.links.get_outgoing(link_type=LinkType.RETURN).all()
    assert sorted(triple.link_label for triple in returned) == [
        "out__first",
        "out__second",
        "out__third",
    ]
    assert db_count(miniengine_db, "SELECT count(*) FROM nodes GROUP BY uuid ORDER BY 1 DESC") == 1


async def test_one_unstored_node_in_the_context_twice_survives_eviction(backend_db):
    from miniengine import asubmit, await_node
    from miniengine.daemon import Worker
    from tests.workchains.aiida_semantics import SharedNodeWorkChain

    async with Worker(db=backend_db, lease_timeout=5.0):
        node = await asubmit(SharedNodeWorkChain)
        await await_node(node, timeout=60)
    assert node.is_finished_ok, node.exception
    assert node.outputs.first.pk == node.outputs.second.pk
    assert node.outputs.first.value == 5


async def test_a_worker_reads_the_processes_of_a_claim_together(backend_db, monkeypatch):
    """The nodes, checkpoints and inputs of the processes a worker claims at once are read in
    two queries for all of them, not two per process (a round trip each on a server)."""
    from miniengine import Int, asubmit, await_node
    from miniengine.daemon import Worker
    from miniengine.storage.open import open_backend
    from tests.workchains.chaos_chains import Leaf

    nodes = [await asubmit(Leaf, x=Int(x)) for x in range(6)]  # queued before the worker claims
    opened = open_backend(backend_db)
    cls = type(opened.checkpoints)  # the backend's class, which the worker's store uses too
    opened.close()
    singles: list[int] = []
    batches: list[list[int]] = []
    read_process, read_processes = cls.read_process, cls.read_processes
    monkeypatch.setattr(
        cls, "read_process", lambda self, pk: singles.append(pk) or read_process(self, pk)
    )
    monkeypatch.setattr(
        cls,
        "read_processes",
        lambda self, pks: batches.append(list(pks)) or read_processes(self, pks),
    )
    async with Worker(db=backend_db, lease_timeout=5.0):
        for node in nodes:
            await await_node(node, timeout=60)
    assert [node.outputs.y.value for node in nodes] == [2 * x for x in range(6)]
    first = {node.pk for node in nodes}
    assert batches and set(batches[0]) == first  # the first claim took all six, read together
    assert not first & set(singles)  # none of them read on its own for its first run


# what a step's return value means ----------------------------------------------------------


class ZeroIsNotAStop(WorkChain):
    """Steps returning zero-like results (which go on, as in AiiDA) before one that stops."""

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.output_namespace("seen", dynamic=True)
        spec.exit_code(300, "ERROR_LATE", message="stopped late")
        spec.outline(
            cls.empty_exit_code,
            cls.zero_with_message,
            cls.int_zero,
            cls.negative,
            cls.negative_exit_code,
            cls.stop,
            cls.never,
        )

    def empty_exit_code(self):
        self.out("seen.a", Int(1))
        return ExitCode()

    def zero_with_message(self):
        self.out("seen.b", Int(2))
        return ExitCode(0, "all fine")

    def int_zero(self):
        self.out("seen.c", Int(3))
        return 0

    def negative(self):
        self.out("seen.d", Int(4))
        return -1

    def negative_exit_code(self):
        self.out("seen.e", Int(5))
        return ExitCode(-2)

    def stop(self):
        self.out("seen.f", Int(6))
        return self.exit_codes.ERROR_LATE

    def never(self):
        self.out("seen.g", Int(7))


def test_a_step_returning_a_zero_exit_code_or_zero_goes_on():
    result, node = run_get_node(ZeroIsNotAStop)
    assert sorted(result["seen"]) == ["a", "b", "c", "d", "e", "f"]
    assert node.is_finished and node.exit_status == 300
    assert node.exit_message == "stopped late"


class EndsOnZeroExitCode(WorkChain):
    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.output("x", valid_type=Int)
        spec.outline(cls.zero, cls.attach)

    def zero(self):
        return ExitCode(0)

    def attach(self):
        self.out("x", Int(1))


def test_outputs_after_a_zero_exit_code_are_attached_and_the_process_is_ok():
    result, node = run_get_node(EndsOnZeroExitCode)
    assert node.is_finished_ok and node.exit_status == 0
    assert result["x"] == 1


# predicates that return something other than a bool ---------------------------------------------

NON_BOOL = "The conditional predicate `{}` returned `{}` instead of a bool"


def _warnings_in_log(node):
    return [log.message for log in node.logs if log.levelname == "WARNING"]


def test_non_bool_predicates_of_if_elif_and_while_warn_in_aiida_words_and_still_decide():
    from tests.workchains.aiida_semantics import NonBoolPredicateWorkChain

    with pytest.warns(UserWarning) as caught:
        result, node = run_get_node(NonBoolPredicateWorkChain)
    assert result["path"] == "right loop2 loop1"  # truthy and falsy values still decide
    shown = {str(warning.message).split(";")[0] for warning in caught}
    expected = {
        NON_BOOL.format("empty_list", "[]"),
        NON_BOOL.format("non_empty_string", "yes"),
        *(NON_BOOL.format("left_to_do", count) for count in (2, 1, 0)),
    }
    assert shown == expected
    logged = [message.split(";")[0] for message in _warnings_in_log(node)]
    assert logged == [
        NON_BOOL.format("empty_list", "[]"),
        NON_BOOL.format("non_empty_string", "yes"),
        NON_BOOL.format("left_to_do", 2),  # once per predicate
    ]


async def test_non_bool_predicates_are_reported_on_the_node_under_a_daemon_worker(backend_db):
    from miniengine import asubmit, await_node
    from miniengine.daemon import Worker
    from tests.workchains.aiida_semantics import NonBoolPredicateWorkChain

    with pytest.warns(UserWarning, match="instead of a bool"):
        async with Worker(db=backend_db, lease_timeout=5.0):
            node = await asubmit(NonBoolPredicateWorkChain)
            await await_node(node, timeout=60)
    assert node.is_finished_ok, node.exception
    assert node.outputs.path == "right loop2 loop1"
    assert len(_warnings_in_log(node)) == 3
    assert NON_BOOL.format("non_empty_string", "yes") in _warnings_in_log(node)[1]


# self.logger and report times ------------------------------------------------------------------


def test_self_logger_records_at_report_level_and_above_go_to_the_node_log(caplog):
    from tests.workchains.aiida_semantics import LoggingWorkChain

    with caplog.at_level(logging.DEBUG, logger="miniengine.process"):
        _, node = run_get_node(LoggingWorkChain)
    assert node.is_finished_ok
    levels = [(log.levelname, log.message.splitlines()[0]) for log in node.logs]
    assert levels == [
        ("WARNING", "warning 1"),
        ("ERROR", "error 2"),
        ("REPORT", f"[{node.pk}|LoggingWorkChain|finish]: reported"),
        ("ERROR", "caught"),
    ]
    assert "ValueError: boom" in node.logs[-1].message  # logger.exception keeps the traceback
    # every record, debug included, also reaches Python's logging, tagged with the process
    records = [r for r in caplog.records if r.name == "miniengine.process"]
    assert [r.getMessage() for r in records] == [
        "debug hidden",
        "info hidden",
        "warning 1",
        "error 2",
        "caught",
    ]
    assert all(r.process_pk == node.pk for r in records)
    assert records[0].funcName == "write_logs"  # the step that logged, not the adapter


class VerboseLogging(WorkChain):
    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.outline(cls.go)

    def go(self):
        assert isinstance(self.logger, logging.LoggerAdapter)
        self.logger.setLevel("INFO")
        self.logger.info("kept %s", "now")
        self.logger.debug("still dropped")
        self.logger.report("as report")


def test_self_logger_set_level_keeps_lower_records():
    _, node = run_get_node(VerboseLogging)
    assert node.is_finished_ok, node.exception
    assert [(log.levelname, log.message) for log in node.logs] == [
        ("INFO", "kept now"),
        ("REPORT", "as report"),
    ]


class TimedReports(WorkChain):
    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.outline(cls.two_reports, cls.one_more)

    def two_reports(self):
        self.report("first")
        self.logger.warning("second")

    def one_more(self):
        self.report("third")


def test_reports_and_log_records_are_dated_when_made_not_when_committed(monkeypatch):
    from miniengine.runtime import lifecycle

    made = iter([1_000_000.0, 2_000_000.0, 3_000_000.0])
    monkeypatch.setattr(lifecycle, "clock", lambda: next(made))
    _, node = run_get_node(TimedReports)
    assert node.is_finished_ok
    assert [log.time.timestamp() for log in node.logs] == [1_000_000.0, 2_000_000.0, 3_000_000.0]
    assert node.mtime.timestamp() > 3_000_000.0  # the commits happened at the real time


def test_submit_with_one_unstored_node_as_two_inputs_stores_it_once():
    from miniengine import submit

    shared = Int(9)
    node = submit(TwoInputs, a=shared, b=shared)  # created and queued; no worker needed
    assert node.process_state is ProcessState.CREATED
    assert _input_links(node) == [("a", shared.pk), ("b", shared.pk)]
