"""WorkChains for the tests of a database that stops answering (a restart, a failover)."""

from __future__ import annotations

from pathlib import Path

from miniengine import Int, Str, WorkChain, calcfunction
from miniengine.exceptions import DatabaseUnavailableError


@calcfunction
def double(x: Int) -> Int:
    return Int(2 * x.value)


class UnavailableOnceWorkChain(WorkChain):
    """A step whose first run fails as a read of a database that stopped answering would
    (``DatabaseUnavailableError``), then succeeds; every run of the step appends a line to
    ``folder/runs``."""

    @classmethod
    def define(cls, spec):  # type: ignore[no-untyped-def]
        super().define(spec)
        spec.input("folder", valid_type=Str)
        spec.input("x", valid_type=Int)
        spec.output("result", valid_type=Int)
        spec.outline(cls.compute)

    def compute(self) -> None:
        runs = Path(self.inputs.folder.value) / "runs"
        with open(runs, "a", encoding="utf-8") as handle:
            handle.write("compute\n")
        result = double(self.inputs.x)
        if len(runs.read_text().splitlines()) == 1:
            raise DatabaseUnavailableError("the server could not be reached for 30 s (simulated)")
        self.out("result", result)
