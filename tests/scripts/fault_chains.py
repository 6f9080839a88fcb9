"""Processes for the fault-injection tests, importable by module path as a daemon worker needs.

- :func:`add_and_multiply`: the seed's scenario 1 (a workfunction calling two calcfunctions).
- :class:`StepsWorkChain`: every kind of write a WorkChain step makes -- an inline call, an
  output, a report, a submitted child waited for (the outbox and the wake-up), a middle step and
  a last step whose outputs go with the terminal commit.
- :class:`GatesWorkChain`: submits two :class:`~miniengine.testing.WaitingProcess` children and
  waits for them, so that a test can leave a tree of live processes in the database.
"""

from __future__ import annotations

from miniengine import Int, Str, ToContext, WorkChain, append_, calcfunction, workfunction
from miniengine.testing import WaitingProcess


@calcfunction
def add(x: Int, y: Int) -> Int:
    return Int(x.value + y.value)


@calcfunction
def multiply(x: Int, y: Int) -> Int:
    return Int(x.value * y.value)


@workfunction
def add_and_multiply(x: Int, y: Int, z: Int) -> Int:
    result: Int = multiply(add(x, y), z)
    return result


class LeafChain(WorkChain):
    """One step that returns its input."""

    @classmethod
    def define(cls, spec):  # type: ignore[no-untyped-def]
        super().define(spec)
        spec.input("x", valid_type=Int)
        spec.output("x", valid_type=Int)
        spec.outline(cls.echo)

    def echo(self) -> None:
        self.out("x", self.inputs.x)


class StepsWorkChain(WorkChain):
    """``first`` calls ``add`` inline, outputs and reports, submits a child and waits for it;
    ``second`` outputs the child's output; ``third`` (the last step) calls ``add`` again."""

    @classmethod
    def define(cls, spec):  # type: ignore[no-untyped-def]
        super().define(spec)
        spec.input("x", valid_type=Int)
        spec.input("y", valid_type=Int)
        spec.output("sum", valid_type=Int)
        spec.output("child", valid_type=Int)
        spec.output("double", valid_type=Int)
        spec.outline(cls.first, cls.second, cls.third)

    def first(self) -> ToContext:
        total = add(self.inputs.x, self.inputs.y)
        self.out("sum", total)
        self.report("first: the sum is computed")
        return ToContext(child=self.submit(LeafChain, x=total))

    def second(self) -> None:
        self.out("child", self.ctx.child.outputs.x)
        self.report("second: the child is collected")

    def third(self) -> None:
        value = self.ctx.child.outputs.x
        self.out("double", add(value, value))


class GatesWorkChain(WorkChain):
    """Submits two processes waiting at the gate named ``gate``, then counts them."""

    @classmethod
    def define(cls, spec):  # type: ignore[no-untyped-def]
        super().define(spec)
        spec.input("gate", valid_type=Str)
        spec.output("passed", valid_type=Int)
        spec.outline(cls.fan_out, cls.gather)

    def fan_out(self) -> None:
        for _ in range(2):
            self.to_context(waiting=append_(self.submit(WaitingProcess, gate=self.inputs.gate)))

    def gather(self) -> None:
        self.out("passed", Int(sum(1 for child in self.ctx.waiting if child.is_finished_ok)))


#: The value :class:`ContextChain` puts in its context (set by the test before each run).
CONTEXT_VALUE: list[object] = [None]


class ContextChain(WorkChain):
    """Puts :data:`CONTEXT_VALUE` in ``self.ctx.value`` (checkpointed at the step's commit),
    then says in a second step whether it is still there."""

    @classmethod
    def define(cls, spec):  # type: ignore[no-untyped-def]
        super().define(spec)
        spec.output("kept", valid_type=Int)
        spec.outline(cls.keep, cls.report_kept)

    def keep(self) -> None:
        self.ctx.value = CONTEXT_VALUE[0]

    def report_kept(self) -> None:
        self.out("kept", Int(1 if self.ctx.value is CONTEXT_VALUE[0] else 0))
