"""The mixed workload of the chaos suite (``tests/test_chaos.py``), importable by module path
as daemon workers need.

Every WorkChain's outputs are a pure function of its inputs (``expected_outputs``) and every
process it calls has inputs of its own (no two calls of one parent share process type and
inputs), so the checks can find a wrong result or a duplicated call from the database alone.

- :class:`Leaf`: two steps, one inline ``slow_add``;
- :class:`InlineChain`: a ``while_`` loop whose every step calls ``add`` then ``mul`` inline;
- :class:`Nested`: submits a ``Nested`` one level shallower and a ``Leaf``, waits, adds inline;
- :class:`FanOut`: submits ``n`` ``Leaf`` children in one step, waits, adds their sum inline.

Steps take a nap (``nap`` input, seconds; in a thread, so it costs no CPU): short enough for
hundreds of processes a minute, long enough that the driver's signals land while steps run,
before and between inline calls.
"""

from __future__ import annotations

import time
from typing import Any

from miniengine import Float, Int, WorkChain, append_, calcfunction, while_


@calcfunction
def add(x: Int, y: Int) -> Int:
    return Int(x.value + y.value)


@calcfunction
def mul(x: Int, y: Int) -> Int:
    return Int(x.value * y.value)


@calcfunction
def slow_add(x: Int, y: Int, nap: Float) -> Int:
    """``add`` that takes a nap first, so that kills also land inside inline calls."""
    time.sleep(nap.value)
    return Int(x.value + y.value)


def _nap(seconds: Float) -> None:
    if seconds.value > 0:
        time.sleep(seconds.value)


class Leaf(WorkChain):
    """``double`` (``slow_add(x, x)`` inline), then ``finish``: output ``y == 2 * x``."""

    @classmethod
    def define(cls, spec):  # type: ignore[no-untyped-def]
        super().define(spec)
        spec.input("x", valid_type=Int)
        spec.input("nap", valid_type=Float, default=lambda: Float(0.0))
        spec.output("y", valid_type=Int)
        spec.outline(cls.double, cls.finish)

    def double(self) -> None:
        self.ctx.y = slow_add(self.inputs.x, self.inputs.x, self.inputs.nap)

    def finish(self) -> None:
        self.out("y", self.ctx.y)


class InlineChain(WorkChain):
    """``n`` loop steps, step ``k`` turning ``acc`` into ``2 * (acc + k + 1)`` with two inline
    calls; output ``acc``."""

    @classmethod
    def define(cls, spec):  # type: ignore[no-untyped-def]
        super().define(spec)
        spec.input("x", valid_type=Int)
        spec.input("n", valid_type=Int)
        spec.input("nap", valid_type=Float, default=lambda: Float(0.0))
        spec.output("acc", valid_type=Int)
        spec.outline(cls.setup, while_(cls.more)(cls.advance), cls.finish)

    def setup(self) -> None:
        self.ctx.k = 0
        self.ctx.acc = self.inputs.x

    def more(self) -> bool:
        return bool(self.ctx.k < self.inputs.n.value)

    def advance(self) -> None:
        total = add(self.ctx.acc, Int(self.ctx.k + 1))
        _nap(self.inputs.nap)  # a kill here replays the step, which must reuse the finished add
        self.ctx.acc = mul(total, Int(2))
        self.ctx.k += 1

    def finish(self) -> None:
        self.out("acc", self.ctx.acc)


class Nested(WorkChain):
    """Submits ``Nested(depth - 1, x + 1)`` (when ``depth > 0``) and ``Leaf(x)``, waits for
    both, outputs ``value == add(child value or 0, 2 * x)``."""

    @classmethod
    def define(cls, spec):  # type: ignore[no-untyped-def]
        super().define(spec)
        spec.input("depth", valid_type=Int)
        spec.input("x", valid_type=Int)
        spec.input("nap", valid_type=Float, default=lambda: Float(0.0))
        spec.output("value", valid_type=Int)
        spec.outline(cls.launch, cls.collect)

    def launch(self) -> None:
        _nap(self.inputs.nap)
        nap = self.inputs.nap
        if self.inputs.depth.value > 0:
            deeper = Int(self.inputs.depth.value - 1)
            self.to_context(deeper=self.submit(Nested, depth=deeper, x=self.inputs.x + 1, nap=nap))
        self.to_context(leaf=self.submit(Leaf, x=self.inputs.x, nap=nap))

    def collect(self) -> None:
        below = self.ctx.deeper.outputs.value if "deeper" in self.ctx else Int(0)
        self.out("value", add(below, self.ctx.leaf.outputs.y))


class FanOut(WorkChain):
    """Submits ``Leaf(x + i)`` for ``i < n`` in one step, waits for all, outputs
    ``total == add(sum of their y, n)``."""

    @classmethod
    def define(cls, spec):  # type: ignore[no-untyped-def]
        super().define(spec)
        spec.input("x", valid_type=Int)
        spec.input("n", valid_type=Int)
        spec.input("nap", valid_type=Float, default=lambda: Float(0.0))
        spec.output("total", valid_type=Int)
        spec.outline(cls.fan_out, cls.gather)

    def fan_out(self) -> None:
        for i in range(self.inputs.n.value):
            leaf = self.submit(Leaf, x=Int(self.inputs.x.value + i), nap=self.inputs.nap)
            self.to_context(leaves=append_(leaf))

    def gather(self) -> None:
        total = sum(leaf.outputs.y.value for leaf in self.ctx.get("leaves", []))
        self.out("total", add(Int(total), self.inputs.n))


# what the checks expect ------------------------------------------------------------------------


def _inline_acc(x: int, n: int) -> int:
    acc = x
    for k in range(n):
        acc = 2 * (acc + k + 1)
    return acc


def _nested_value(depth: int, x: int) -> int:
    return 2 * x + (_nested_value(depth - 1, x + 1) if depth > 0 else 0)


def expected_outputs(label: str, inputs: dict[str, Any]) -> dict[str, int]:
    """The outputs of a chaos WorkChain, from the plain values of its inputs."""
    if label == "Leaf":
        return {"y": 2 * inputs["x"]}
    if label == "InlineChain":
        return {"acc": _inline_acc(inputs["x"], inputs["n"])}
    if label == "Nested":
        return {"value": _nested_value(inputs["depth"], inputs["x"])}
    if label == "FanOut":
        return {"total": sum(2 * (inputs["x"] + i) for i in range(inputs["n"])) + inputs["n"]}
    raise ValueError(f"not a chaos WorkChain: {label}")


def expected_calls(label: str, inputs: dict[str, Any]) -> dict[str, int]:
    """How many finished children of each process label a chaos WorkChain calls."""
    if label == "Leaf":
        return {"slow_add": 1}
    if label == "InlineChain":
        n = inputs["n"]
        return {"add": n, "mul": n} if n else {}
    if label == "Nested":
        return {"add": 1, "Leaf": 1, **({"Nested": 1} if inputs["depth"] > 0 else {})}
    if label == "FanOut":
        return {"add": 1, **({"Leaf": inputs["n"]} if inputs["n"] else {})}
    raise ValueError(f"not a chaos WorkChain: {label}")


def process_count(label: str, inputs: dict[str, Any]) -> int:
    """Process nodes one chaos WorkChain makes when nothing is cut off (itself included)."""
    calls = expected_calls(label, inputs)
    count = 1 + sum(calls.get(name, 0) for name in ("add", "slow_add", "mul"))
    if label == "Nested":
        count += process_count("Leaf", {"x": inputs["x"]})
        if inputs["depth"] > 0:
            count += process_count("Nested", {"depth": inputs["depth"] - 1, "x": inputs["x"] + 1})
    if label == "FanOut":
        count += inputs["n"] * process_count("Leaf", {})
    return count
