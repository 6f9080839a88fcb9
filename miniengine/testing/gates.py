"""A process that waits at a gate until a test (or a person) opens it."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from miniengine.core.data import Bool, Str
from miniengine.core.spec import ProcessSpec
from miniengine.runtime import context
from miniengine.runtime.workchain import WorkChain

if TYPE_CHECKING:
    from miniengine.storage.interfaces import Backend

__all__ = ["WaitingProcess", "gate_is_open", "open_gate"]

#: How long a waiting process sleeps between two looks at its gate when nothing commits.
WAIT_TIMEOUT = 1.0


def open_gate(name: str, *, db: Backend | str | os.PathLike[str] | None = None) -> None:
    """Open the gate ``name``: every process waiting at it continues."""
    context.store_for(db).events.open_gate(name, time.time())


def gate_is_open(name: str, *, db: Backend | str | os.PathLike[str] | None = None) -> bool:
    return context.store_for(db).events.gate_is_open(name)


class WaitingProcess(WorkChain):
    """Waits in its first step until the gate named by its ``gate`` input is opened, then
    finishes in a second step with the output ``passed``.  A test can pause, play or kill it
    at a known point."""

    @classmethod
    def define(cls, spec: ProcessSpec) -> None:
        super().define(spec)
        spec.input("gate", valid_type=Str, help="the name of the gate to wait at")
        spec.output("passed", valid_type=Bool)
        spec.outline(cls.wait_at_gate, cls.pass_gate)

    async def wait_at_gate(self) -> None:
        self.report(f"waiting at gate {self.inputs.gate.value!r}")
        store = self.node.store
        assert store is not None
        while True:
            marker = store.commit_marker()  # before the look: a later opening changes it
            if store.events.gate_is_open(self.inputs.gate.value):
                return
            await store.await_commit(marker, WAIT_TIMEOUT)

    def pass_gate(self) -> None:
        self.out("passed", Bool(True))
