"""Run a WorkChain in this process with a short lease, for the crash tests to SIGKILL.

``python -m tests.workchains.crash MODULE:CLASS DB X LOG`` runs ``CLASS(x=Int(X), log=Str(LOG))``
on the database ``DB`` with a short lease (:data:`LEASE_SECONDS`), so that after a SIGKILL another
process can take the WorkChain over quickly.  Prints ``DONE`` if it ever finishes.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from pathlib import Path

from miniengine import Int, Str, WorkChain, calcfunction, workfunction
from miniengine.runtime import context
from miniengine.runtime.workchain import import_process_class
from miniengine.runtime.workchain.launch import launch
from miniengine.storage.open import open_backend
from tests.workchains.resumable import announce, record, should_block

#: The lease of this process's store: heartbeats every quarter of it, expiry soon after a kill.
#: ``$MINIENGINE_TEST_LEASE`` overrides it.
LEASE_SECONDS = 0.5
LEASE_VARIABLE = "MINIENGINE_TEST_LEASE"


@calcfunction
def double(x: Int, log: Str) -> Int:
    record(log, f"double {x.value}")
    return Int(2 * x.value)


@calcfunction
def gated_add(x: Int, y: Int, log: Str) -> Int:
    """Add; in the crash subprocess, print ``READY <own pk>`` and block first."""
    count = record(log, f"gated_add {x.value} {y.value}")
    if should_block(count):
        running = context.current_process()
        announce(running.pk if running is not None else None)
        threading.Event().wait()
    return Int(x.value + y.value)


def offset_file(log: Str) -> Path:
    """A file beside the step log whose number the ``compute`` step adds to ``x`` (0 if absent):
    a test changes it between the crash and the replay to make the replay call with other
    inputs."""
    return Path(log.value + ".offset")


class InlineCallWorkChain(WorkChain):
    """A step that calls two calcfunctions inline (in the step's thread), then one that
    attaches the result: ``result = 2 * (x + offset) + x``.

    Killed inside ``gated_add``, it leaves a FINISHED ``double`` and a RUNNING ``gated_add``
    whose caller's step never committed; the replay of that step reuses the first and marks
    the second EXCEPTED ("owner lost"), unless the inputs of the calls changed meanwhile.  With a
    file ``<log>.direct``, the step adds by itself instead of calling ``gated_add``.
    """

    @classmethod
    def define(cls, spec):  # type: ignore[no-untyped-def]
        super().define(spec)
        spec.input("x", valid_type=Int)
        spec.input("log", valid_type=Str)
        spec.output("result", valid_type=Int)
        spec.outline(cls.compute, cls.finalize)

    def compute(self) -> None:
        record(self.inputs.log, "compute")
        offset_path = offset_file(self.inputs.log)
        offset = int(offset_path.read_text()) if offset_path.exists() else 0
        doubled = double(Int(self.inputs.x.value + offset), self.inputs.log)
        if Path(self.inputs.log.value + ".direct").exists():  # add without calling gated_add
            self.ctx.result = Int(doubled.value + self.inputs.x.value)
        else:
            self.ctx.result = gated_add(doubled, self.inputs.x, self.inputs.log)

    def finalize(self) -> None:
        record(self.inputs.log, "finalize")
        self.out("result", self.ctx.result)


@workfunction
def add_via_gate(x: Int, y: Int, log: Str) -> Int:
    """Call ``gated_add`` inline: killed inside it, this workfunction and its child are cut off."""
    result: Int = gated_add(x, y, log)
    return result


class NestedInlineCallWorkChain(WorkChain):
    """A step that calls a workfunction that calls ``gated_add``: ``result = 2 * x``."""

    @classmethod
    def define(cls, spec):  # type: ignore[no-untyped-def]
        super().define(spec)
        spec.input("x", valid_type=Int)
        spec.input("log", valid_type=Str)
        spec.output("result", valid_type=Int)
        spec.outline(cls.compute)

    def compute(self) -> None:
        record(self.inputs.log, "compute")
        self.out("result", add_via_gate(self.inputs.x, self.inputs.x, self.inputs.log))


def main(argv: list[str]) -> None:
    class_path, db, x, log = argv
    cls = import_process_class(class_path)
    store = open_backend(db, lease_timeout=float(os.environ.get(LEASE_VARIABLE, LEASE_SECONDS)))
    try:
        asyncio.run(launch(cls, {"x": Int(int(x)), "log": Str(log)}, db=store))
    finally:
        store.close()
    print("DONE", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
