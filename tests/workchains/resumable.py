"""WorkChains that record every step they run, and can be made to block at a given step.

Each step appends one line (``<step> <iteration>``) to the file named by the ``log`` input, so a
test can count how often each step ran across a crash and a resume.  When the environment
variable :data:`BLOCK_AT` is ``k``, the step that writes the k-th line of that file prints
``READY <pk>`` and blocks forever: steps 1..k-1 have committed (a step starts only after the
previous one's commit), and the test can SIGKILL the process.  The variable is set only in the
subprocess, so the same step runs through when the process is resumed elsewhere.
"""

from __future__ import annotations

import os
import sys
import threading

import anyio

from miniengine import Int, Str, ToContext, WorkChain, while_

BLOCK_AT = "MINIENGINE_TEST_BLOCK_AT"

#: How many times ``add`` runs.
ITERATIONS = 3


def record(log: Str, line: str) -> int:
    """Append ``line`` to the step log and return how many lines it holds now."""
    with open(log.value, "a", encoding="utf-8") as handle:
        handle.write(line + "\n")
    with open(log.value, encoding="utf-8") as handle:
        return sum(1 for _ in handle)


def should_block(count: int) -> bool:
    return os.environ.get(BLOCK_AT) == str(count)


def announce(pk: int | None) -> None:
    print(f"READY {pk}", flush=True)
    sys.stdout.flush()


def record_step(process: WorkChain, line: str) -> None:
    """Record a ``def`` step, and block forever here if this is the step to be killed in."""
    count = record(process.inputs.log, line)
    if should_block(count):
        announce(process.node.pk)
        threading.Event().wait()


class CountingWorkChain(WorkChain):
    """``setup``, ``ITERATIONS`` times ``add`` (an async step), then ``finalize``."""

    @classmethod
    def define(cls, spec):  # type: ignore[no-untyped-def]
        super().define(spec)
        spec.input("x", valid_type=Int)
        spec.input("log", valid_type=Str)
        spec.output("result", valid_type=Int)
        spec.output("iterations", valid_type=Int)
        spec.output("last", valid_type=Int)
        spec.outline(cls.setup, while_(cls.not_done)(cls.add), cls.finalize)

    def setup(self) -> None:
        record_step(self, "setup")
        self.ctx.total = self.inputs.x.value
        self.ctx.i = 0

    def not_done(self) -> bool:
        return bool(self.ctx.i < ITERATIONS)

    async def add(self) -> None:
        count = record(self.inputs.log, f"add {self.ctx.i}")
        if should_block(count):
            announce(self.node.pk)
            await anyio.Event().wait()
        self.ctx.total += 10**self.ctx.i
        self.ctx.last = Int(self.ctx.i)  # unstored Data: checkpointed by value
        self.ctx.i += 1

    def finalize(self) -> None:
        record_step(self, "finalize")
        self.out("result", Int(self.ctx.total))
        self.out("iterations", Int(self.ctx.i))
        self.out("last", self.ctx.last)


class ParentWorkChain(WorkChain):
    """Submits a :class:`CountingWorkChain` (same log file), then adds one to its result; the
    child's node is in the context, so in the checkpoint ``inspect`` commits, when ``collect``
    runs."""

    @classmethod
    def define(cls, spec):  # type: ignore[no-untyped-def]
        super().define(spec)
        spec.input("x", valid_type=Int)
        spec.input("log", valid_type=Str)
        spec.output("result", valid_type=Int)
        spec.outline(cls.launch, cls.inspect, cls.collect)

    def launch(self) -> ToContext:
        record_step(self, "launch")
        child = self.submit(CountingWorkChain, x=self.inputs.x, log=self.inputs.log)
        return ToContext(child=child)

    def inspect(self) -> None:
        record_step(self, "inspect")
        self.ctx.child_pk = self.ctx.child.pk

    def collect(self) -> None:
        record_step(self, "collect")
        assert self.ctx.child.is_finished_ok and self.ctx.child.pk == self.ctx.child_pk
        self.out("result", Int(self.ctx.child.outputs.result.value + 1))
