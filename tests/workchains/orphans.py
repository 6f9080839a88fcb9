"""A parent that raises in the very step that submitted a child which blocks forever.

``python -m tests.workchains.orphans`` runs it and prints the final state of every process, one
``<label> <state>`` per line, then ``DONE``.  Run in a subprocess with a timeout, because when the
child is not killed the parent never returns.
"""

from __future__ import annotations

import anyio

from miniengine import WorkChain, find_processes, run


class BlockingChild(WorkChain):
    """Waits on an event that nobody sets."""

    @classmethod
    def define(cls, spec):  # type: ignore[no-untyped-def]
        super().define(spec)
        spec.outline(cls.block)

    async def block(self) -> None:
        await anyio.Event().wait()


class SubmitThenRaise(WorkChain):
    """Submits a child and raises in the same step."""

    @classmethod
    def define(cls, spec):  # type: ignore[no-untyped-def]
        super().define(spec)
        spec.outline(cls.go)

    def go(self) -> None:
        self.submit(BlockingChild)
        raise RuntimeError("raised right after submitting")


def main() -> None:
    try:
        run(SubmitThenRaise)
    except RuntimeError as exc:
        print(f"RAISED {exc}", flush=True)
    for node in find_processes():
        print(f"{node.process_label} {node.process_state.value}", flush=True)
    print("DONE", flush=True)


if __name__ == "__main__":
    main()
