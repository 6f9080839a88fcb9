"""WorkChains for the control tests (importable, so that daemon workers can run them too)."""

from __future__ import annotations

from typing import Any

from miniengine import Int, Str, ToContext, WorkChain
from miniengine.testing import WaitingProcess


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
