"""WorkChains for the control tests (importable, so that daemon workers can run them too)."""

from __future__ import annotations

import time
from typing import Any

from miniengine import Int, Str, ToContext, WorkChain, while_
from miniengine.testing import WaitingProcess, gate_is_open


class ParentOfWaiting(WorkChain):
    """Submits a WaitingProcess at its gate and waits for it."""

    @classmethod
    def define(cls, spec: Any) -> None:
        super().define(spec)
        spec.input("gate", valid_type=Str)
        spec.output("seen", valid_type=Int, required=False)
        spec.outline(cls.launch, cls.collect)

    def launch(self) -> ToContext:
        return ToContext(child=self.submit(WaitingProcess, gate=self.inputs.gate))

    def collect(self) -> None:
        self.out("seen", Int(self.ctx.child.pk))


class NappingChain(WorkChain):
    """Naps in plain ``def`` steps (the thread cannot be interrupted) until its gate opens; a
    kill or a pause must take effect at a step boundary."""

    @classmethod
    def define(cls, spec: Any) -> None:
        super().define(spec)
        spec.input("gate", valid_type=Str)
        spec.output("naps", valid_type=Int)
        spec.outline(cls.setup, while_(cls.gate_closed)(cls.nap), cls.finish)

    def setup(self) -> None:
        self.ctx.naps = 0

    def gate_closed(self) -> bool:
        return not gate_is_open(self.inputs.gate.value, db=self.node.store)

    def nap(self) -> None:
        time.sleep(0.05)  # the work of the step: blocking, not a synchronisation
        self.ctx.naps += 1
        self.report(f"nap {self.ctx.naps}")

    def finish(self) -> None:
        self.out("naps", Int(self.ctx.naps))
