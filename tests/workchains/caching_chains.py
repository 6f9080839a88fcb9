"""WorkChains whose steps submit CalcJobs and call a calcfunction, for the caching tests
(importable by daemon workers).

Every run of the job's program appends ``ran`` (the job script does) and every run of the
calcfunction's body ``calc`` to the file named by the ``counter`` input, so a test can tell
which really ran.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from miniengine import ExitCode, Int, Str, WorkChain, append_, calcfunction
from miniengine.engine import ToContext
from tests.workchains.calcjob_plugins import ArithmeticAddCalculation

OPTIONS = {"resources": {"num_machines": 1, "num_mpiprocs_per_machine": 1}}


@calcfunction
def add_counted(x: Int, y: Int, counter: Str) -> Int:
    """``x + y``; appends ``calc`` to the counter file."""
    with Path(counter.value).open("a") as handle:
        handle.write("calc\n")
    return Int(x.value + y.value)


class CachedJobsWorkChain(WorkChain):
    """Submits ``x + y`` (to ``ctx.job``) and ``y + y`` (appended to ``ctx.more``), then adds
    their sums with a calcfunction called in the step."""

    @classmethod
    def define(cls, spec: Any) -> None:
        super().define(spec)
        spec.input("code")
        spec.input("x", valid_type=Int)
        spec.input("y", valid_type=Int)
        spec.input("counter", valid_type=Str)
        spec.outline(cls.submit_jobs, cls.collect)
        spec.output("sum", valid_type=Int)
        spec.output("total", valid_type=Int)
        spec.exit_code(400, "ERROR_JOB_FAILED", message="a job did not finish OK")

    def submit_jobs(self) -> Any:
        common = {"code": self.inputs.code, "counter": self.inputs.counter}
        job = self.submit(
            ArithmeticAddCalculation,
            x=self.inputs.x,
            y=self.inputs.y,
            metadata={"options": OPTIONS},
            **common,
        )
        more = self.submit(
            ArithmeticAddCalculation,
            x=self.inputs.y,
            y=self.inputs.y,
            metadata={"options": OPTIONS},
            **common,
        )
        self.to_context(more=append_(more))
        return ToContext(job=job)

    def collect(self) -> ExitCode | None:
        jobs = [self.ctx.job, *self.ctx.more]
        if any(job.exit_status != 0 for job in jobs):
            return self.exit_codes.ERROR_JOB_FAILED  # type: ignore[no-any-return]
        self.out("sum", self.ctx.job.outputs.sum)
        total = add_counted(
            self.ctx.job.outputs.sum, self.ctx.more[0].outputs.sum, self.inputs.counter
        )
        self.out("total", total)
        return None


class CachedAndGatedWorkChain(WorkChain):
    """Submits ``x + y`` (reused when cached) and ``y + y``, whose job waits for the ``gate``
    file, and waits for both."""

    @classmethod
    def define(cls, spec: Any) -> None:
        super().define(spec)
        spec.input("code")
        spec.input("x", valid_type=Int)
        spec.input("y", valid_type=Int)
        spec.input("counter", valid_type=Str)
        spec.input("gate", valid_type=Str)
        spec.outline(cls.submit_jobs, cls.collect)
        spec.output("sum", valid_type=Int)

    def submit_jobs(self) -> Any:
        common = {"code": self.inputs.code, "counter": self.inputs.counter}
        job = self.submit(
            ArithmeticAddCalculation,
            x=self.inputs.x,
            y=self.inputs.y,
            metadata={"options": OPTIONS},
            **common,
        )
        gated = self.submit(
            ArithmeticAddCalculation,
            x=self.inputs.y,
            y=self.inputs.y,
            gate=self.inputs.gate,
            metadata={"options": OPTIONS},
            **common,
        )
        return ToContext(job=job, gated=gated)

    def collect(self) -> None:
        self.out("sum", self.ctx.job.outputs.sum)
