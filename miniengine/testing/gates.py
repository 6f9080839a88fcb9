"""A process that waits at a gate until a test (or a person) opens it."""

from __future__ import annotations

import os
import time
from typing import Any

import anyio

from miniengine.core.data import Bool, Str
from miniengine.core.spec import ProcessSpec
from miniengine.runtime import context
from miniengine.runtime.workchain import WorkChain
from miniengine.storage.store import Store

__all__ = ["WaitingProcess", "gate_is_open", "open_gate"]


def _open_gate_tx(connection: Any, name: str, now: float) -> None:
    connection.execute("INSERT OR IGNORE INTO gates (name, opened) VALUES (?, ?)", (name, now))


def open_gate(name: str, *, db: Store | str | os.PathLike[str] | None = None) -> None:
    """Open the gate ``name``: every process waiting at it continues."""
    context.store_for(db).write_sync(_open_gate_tx, name, time.time())


def gate_is_open(name: str, *, db: Store | str | os.PathLike[str] | None = None) -> bool:
    store = context.store_for(db)
    return store.read(
        lambda c: c.execute("SELECT 1 FROM gates WHERE name = ?", (name,)).fetchone() is not None
    )


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
        version = -1
        while True:
            current = store.data_version()
            if current != version:
                version = current
                if gate_is_open(self.inputs.gate.value, db=store):
                    return
            await anyio.sleep(0.005)

    def pass_gate(self) -> None:
        self.out("passed", Bool(True))
