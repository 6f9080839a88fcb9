# mypy: disable-error-code="no-untyped-def"
"""The WorkChains of the benchmark workloads, importable by module path (daemon workers load a
submitted class from its module, so none of these may live in ``__main__`` or a workload's
``measure``).  They mirror ``peers/aiida/procs.py``:

- :class:`LoopWorkChain` is W3: ``setup, while_(not_done)(do_step), finalize``; each iteration
  calls the ``add`` calcfunction once and the result is ``0 + 1 + ... + (n - 1)``.
- :class:`SmallWorkChain` is W6/W7: one step that calls ``add``.
- :class:`SleepWorkChain` is W6-io: one ``async`` step that awaits a 20 ms sleep (I/O, not
  CPU) and returns its input.
- :class:`FanOutWorkChain` submits ``n`` :class:`LeafWorkChain` children in one step and sums
  their outputs in the next (the fan-out scaling curve).

The seed's NestedWorkChain (W4, W5) is ``miniengine.demo_nested.NestedWorkChain``.
"""

from __future__ import annotations

import asyncio

from benchmarks.procs import add
from miniengine import Int, WorkChain, append_, while_

__all__ = ["FanOutWorkChain", "LeafWorkChain", "LoopWorkChain", "SleepWorkChain", "SmallWorkChain"]


class LoopWorkChain(WorkChain):
    """W3: ten iterations by default, one ``add`` each; ``result`` is the sum of 0..n-1."""

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input("n", valid_type=Int, default=lambda: Int(10))
        spec.output("result", valid_type=Int)
        spec.outline(cls.setup, while_(cls.not_done)(cls.do_step), cls.finalize)

    def setup(self):
        self.ctx.i = 0
        self.ctx.total = Int(0).store()

    def not_done(self):
        return self.ctx.i < self.inputs.n.value

    def do_step(self):
        # Not named `step`: AiiDA's pitfall (the name would shadow an engine attribute there).
        self.ctx.total = add(self.ctx.total, Int(self.ctx.i))
        self.ctx.i += 1

    def finalize(self):
        self.out("result", self.ctx.total)


class SmallWorkChain(WorkChain):
    """W6/W7: one step that calls ``add``; output ``sum`` = x + y."""

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input("x", valid_type=Int)
        spec.input("y", valid_type=Int)
        spec.output("sum", valid_type=Int)
        spec.outline(cls.compute)

    def compute(self):
        self.out("sum", add(self.inputs.x, self.inputs.y))


class LeafWorkChain(WorkChain):
    """The cheapest child: one step that returns its input."""

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input("x", valid_type=Int)
        spec.output("x", valid_type=Int)
        spec.outline(cls.echo)

    def echo(self):
        self.out("x", self.inputs.x)


class SleepWorkChain(WorkChain):
    """W6-io: one ``async`` step awaiting a sleep of ``seconds`` (default 20 ms), as a step that
    waits on a service would; output ``x`` is the input."""

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input("x", valid_type=Int)
        spec.output("x", valid_type=Int)
        spec.outline(cls.wait)

    async def wait(self):
        await asyncio.sleep(0.02)
        self.out("x", self.inputs.x)


class FanOutWorkChain(WorkChain):
    """Submits ``n`` :class:`LeafWorkChain` children in one step, then sums their outputs."""

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input("n", valid_type=Int)
        spec.output("total", valid_type=Int)
        spec.outline(cls.fan_out, cls.gather)

    def fan_out(self):
        for i in range(self.inputs.n.value):
            self.to_context(leaves=append_(self.submit(LeafWorkChain, x=Int(i))))

    def gather(self):
        self.out("total", Int(sum(leaf.outputs.x.value for leaf in self.ctx.leaves)))
