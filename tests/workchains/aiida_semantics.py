"""WorkChains for the tests of AiiDA's WorkChain semantics under a daemon worker, importable by
module path as a worker needs.

- :class:`SharedNodeWorkChain` keeps one unstored node twice in its context across a wait (so
  the worker evicts it and restores the context from its checkpoint), then attaches it as two
  outputs in two steps: one node, two links.
- :class:`NonBoolPredicateWorkChain` has ``if_``, ``elif_`` and ``while_`` predicates that return
  truthy or falsy values that are not bools.
- :class:`LoggingWorkChain` writes through ``self.logger`` and ``self.report``.
"""

from __future__ import annotations

import logging

from miniengine import ExitCode, Int, Str, ToContext, WorkChain, if_, while_
from tests.workchains.daemon_chains import LeafWorkChain


class SharedNodeWorkChain(WorkChain):
    """One unstored node kept under two context keys through an eviction, output twice."""

    @classmethod
    def define(cls, spec):  # type: ignore[no-untyped-def]
        super().define(spec)
        spec.output("first", valid_type=Int)
        spec.output("second", valid_type=Int)
        spec.outline(cls.keep, cls.attach_first, cls.attach_second)

    def keep(self) -> ToContext:
        shared = Int(5)
        self.ctx.a = shared
        self.ctx.b = shared
        return ToContext(child=self.submit(LeafWorkChain, x=Int(1)))

    def attach_first(self) -> None:
        self.out("first", self.ctx.a)

    def attach_second(self) -> None:
        self.out("second", self.ctx.b)


class NonBoolPredicateWorkChain(WorkChain):
    """Predicates returning a non-empty string, an empty list and an int count."""

    @classmethod
    def define(cls, spec):  # type: ignore[no-untyped-def]
        super().define(spec)
        spec.output("path", valid_type=Str)
        spec.outline(
            cls.setup,
            if_(cls.empty_list)(cls.wrong).elif_(cls.non_empty_string)(cls.right),
            while_(cls.left_to_do)(cls.count_down),
            cls.finish,
        )

    def setup(self) -> None:
        self.ctx.path = []
        self.ctx.todo = 2

    def empty_list(self) -> list[int]:
        return []

    def non_empty_string(self) -> str:
        return "yes"

    def left_to_do(self) -> int:
        return self.ctx.todo  # type: ignore[no-any-return]

    def wrong(self) -> None:
        self.ctx.path.append("wrong")

    def right(self) -> None:
        self.ctx.path.append("right")

    def count_down(self) -> None:
        self.ctx.path.append(f"loop{self.ctx.todo}")
        self.ctx.todo -= 1

    def finish(self) -> None:
        self.out("path", Str(" ".join(self.ctx.path)))


class LoggingWorkChain(WorkChain):
    """Logs at every level through ``self.logger``, and reports once."""

    @classmethod
    def define(cls, spec):  # type: ignore[no-untyped-def]
        super().define(spec)
        spec.outline(cls.write_logs, cls.finish)

    def write_logs(self) -> None:
        self.logger.debug("debug %s", "hidden")
        self.logger.info("info %s", "hidden")
        self.logger.warning("warning %d", 1)
        self.logger.error("error %d", 2)

    def finish(self) -> ExitCode | None:
        self.report("reported")
        try:
            raise ValueError("boom")
        except ValueError:
            self.logger.exception("caught")
        logging.getLogger(__name__).debug("done")
        return None
