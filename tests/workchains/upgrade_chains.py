"""Processes of the upgrade fixture (``tests/fixtures/previous_release.sqlite``).

The fixture's checkpoints and tasks name these classes by module path, so this module must keep
their names, ports and outlines as they were when the fixture was written: change it only together
with a regenerated fixture (``tests/fixtures/make_previous_release.py``).

:class:`HeldChild` parks in an ``async def`` step while ``MINIENGINE_FIXTURE_HOLD`` is set: the
generator sets it so that children are caught mid-flight when its worker stops; a daemon started
without it lets them through.
"""

from __future__ import annotations

import os

import anyio

from miniengine import Int, WorkChain, append_, calcfunction

HOLD_VARIABLE = "MINIENGINE_FIXTURE_HOLD"


@calcfunction
def add(x: Int, y: Int) -> Int:
    return Int(x.value + y.value)


@calcfunction
def triple(x: Int) -> Int:
    return Int(3 * x.value)


class HeldChild(WorkChain):
    """``setup`` (calls ``triple`` inline), ``hold`` (parks while the fixture is written),
    ``finish``."""

    @classmethod
    def define(cls, spec):  # type: ignore[no-untyped-def]
        super().define(spec)
        spec.input("x", valid_type=Int)
        spec.output("tripled", valid_type=Int)
        spec.outline(cls.setup, cls.hold, cls.finish)

    def setup(self) -> None:
        self.ctx.tripled = triple(self.inputs.x)
        self.report(f"tripled {self.inputs.x.value}")

    async def hold(self) -> None:
        if os.environ.get(HOLD_VARIABLE):
            await anyio.sleep_forever()

    def finish(self) -> None:
        self.out("tripled", self.ctx.tripled)


class WaitingParent(WorkChain):
    """Adds its inputs inline, submits ``n`` :class:`HeldChild` children and waits for them, then
    outputs the sum of the children's outputs plus the first sum."""

    @classmethod
    def define(cls, spec):  # type: ignore[no-untyped-def]
        super().define(spec)
        spec.input("x", valid_type=Int)
        spec.input("n", valid_type=Int)
        spec.output("first", valid_type=Int)
        spec.output("total", valid_type=Int)
        spec.outline(cls.start, cls.launch, cls.collect)

    def start(self) -> None:
        self.ctx.first = add(self.inputs.x, self.inputs.n)
        self.out("first", self.ctx.first)

    def launch(self) -> None:
        for i in range(self.inputs.n.value):
            child = self.submit(HeldChild, x=Int(self.inputs.x.value + i))
            self.to_context(children=append_(child))
        self.report(f"launched {self.inputs.n.value} children")

    def collect(self) -> None:
        total = sum(child.outputs.tripled.value for child in self.ctx.get("children", []))
        self.out("total", add(Int(total), self.ctx.first))
        self.report("collected")


def expected_total(x: int, n: int) -> int:
    """The ``total`` output of ``WaitingParent(x, n)``."""
    return sum(3 * (x + i) for i in range(n)) + x + n
