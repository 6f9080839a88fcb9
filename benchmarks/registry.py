"""What a workload is: an id, the metrics it reports with their targets, and its measure function.

A workload module (in :mod:`benchmarks.workloads`) defines ``WORKLOAD = Workload(...)`` and imports
miniengine only inside its ``measure`` function, so that listing workloads stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Params = Mapping[str, int]


class Skipped(Exception):
    """Raised by ``measure`` when the workload cannot run here (e.g. a module not written yet)."""


class WrongResult(AssertionError):
    """Raised by :func:`check`: the engine gave a wrong result, so the timing means nothing."""


def check(condition: object, message: str) -> None:
    """Like ``assert``, but also under ``python -O``: raise :class:`WrongResult` unless true."""
    if not condition:
        raise WrongResult(message)


@dataclass(frozen=True)
class Measurement:
    """What one repetition of a workload returns: metric values and free-form details."""

    metrics: dict[str, float]
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Target:
    """A performance target such as ``>= 2,000`` calls/s or ``<= 50`` µs."""

    op: Literal[">=", "<="]
    value: float

    def holds(self, measured: float) -> bool:
        return measured >= self.value if self.op == ">=" else measured <= self.value

    def shortfall(self, measured: float) -> float:
        """How far ``measured`` misses the target, as a fraction of the target (0 if it holds)."""
        if self.holds(measured):
            return 0.0
        return abs(measured - self.value) / self.value

    def distance(self, measured: float) -> float:
        """Measured over target, oriented so that > 1 means worse than the target."""
        if measured <= 0:
            return float("inf") if self.op == ">=" else 0.0
        return self.value / measured if self.op == ">=" else measured / self.value

    def __str__(self) -> str:
        value = f"{self.value:,.0f}" if self.value == int(self.value) else f"{self.value:,}"
        return f"{self.op} {value}"


@dataclass(frozen=True)
class Metric:
    """One row of the table: a value that ``measure`` reports under ``key``."""

    key: str
    label: str
    unit: str
    target: Target | None = None
    aiida: str | None = None  # AiiDA 2.9.4's figure on this machine (DESIGN.md, peers/aiida)
    digits: int = 0


@dataclass(frozen=True)
class Workload:
    """A benchmark workload: run once per repetition, each time in a fresh subprocess."""

    id: str
    title: str
    metrics: tuple[Metric, ...]
    measure: Callable[[Params], Measurement]
    params: Params
    quick_params: Params

    def params_for(self, quick: bool) -> Params:
        return self.quick_params if quick else self.params
