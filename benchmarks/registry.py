"""What a workload is: an id, the metrics it reports with their targets, and its measure function.

A workload module (in :mod:`benchmarks.workloads`) defines ``WORKLOAD = Workload(...)`` and imports
miniengine only inside its ``measure`` function, so that listing workloads stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Params = Mapping[str, Any]


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
        """How far ``measured`` misses the target, as a fraction of the target (0 if it holds).

        A target of 0 (``<= 0`` orphans) has no scale: the miss is the measured value itself.
        """
        if self.holds(measured):
            return 0.0
        if self.value == 0:
            return abs(measured)
        return abs(measured - self.value) / self.value

    def distance(self, measured: float) -> float:
        """Measured over target, oriented so that > 1 means worse than the target."""
        if self.value == 0:
            return 1.0 if self.holds(measured) else 1.0 + abs(measured)
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
class Series:
    """One scaling curve: a cost per item (a metric key at each size) that should stay flat.

    ``growth_limit`` is how much the cost may rise from any point to a later (larger) one before
    the table flags it ``GROWS``: a cost that grows with the size of the database or of a
    fan-out is a missing index or a quadratic loop, a bug rather than a number.  None: no flag
    (e.g. throughput against the number of workers, which is expected to change).
    """

    name: str
    unit: str
    points: tuple[tuple[int, str], ...]  # (size, metric key), sizes in increasing order
    growth_limit: float | None = 2.0
    digits: int = 0
    #: on a linear x (workers), draw the line of perfect scaling from the first point (not for
    #: a quantity that is not a throughput, such as the busy cores beside it)
    perfect_scaling: bool = True


@dataclass(frozen=True)
class Scaling:
    """How a scaling workload's metrics form curves (printed as tables, drawn when possible)."""

    x_label: str
    series: tuple[Series, ...]
    #: Draw x on a linear scale (a few small counts, such as workers), not a log scale.
    linear_x: bool = False


@dataclass(frozen=True)
class Workload:
    """A benchmark workload: run once per repetition, each time in a fresh subprocess.

    ``repeat`` overrides the suite's default number of repetitions (a scaling curve is one long
    repetition); ``backends`` names the databases it is measured on (``sqlite``,
    ``postgresql``); ``--repeat`` on the command line still wins.  A workload with ``scaling`` is
    printed as curves after the table instead of as rows in it; ``quick_params`` may leave
    sizes out, and its metrics list every size of the full run (missing ones are skipped).
    """

    id: str
    title: str
    metrics: tuple[Metric, ...]
    measure: Callable[[Params], Measurement]
    params: Params
    quick_params: Params
    repeat: int | None = None
    quick_repeat: int | None = None
    scaling: Scaling | None = None
    #: The backends it runs on (``--backend both`` measures it on each of these).
    backends: tuple[str, ...] = ("sqlite",)

    def params_for(self, quick: bool) -> Params:
        return self.quick_params if quick else self.params

    def repeat_for(self, quick: bool, default: int) -> int:
        chosen = self.quick_repeat if quick else self.repeat
        return default if chosen is None else chosen
