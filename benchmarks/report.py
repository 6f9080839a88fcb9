"""The table printed at the end of a run, and the same as JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.registry import Series, Workload
from benchmarks.runner import MetricResult, WorkloadResult

EN_DASH = "\u2013"
HEADERS = ("workload", "unit", "median", f"min{EN_DASH}max", "target", "AiiDA 2.9.4", "holds")


def _number(value: float, digits: int) -> str:
    return f"{value:,.{digits}f}"


def backends_of(results: list[WorkloadResult]) -> list[str]:
    """The backends the results were measured on, in the order they first appear."""
    return list(dict.fromkeys(result.backend for result in results))


def table_rows(results: list[WorkloadResult]) -> list[tuple[str, ...]]:
    if len(backends_of(results)) > 1:
        return _side_by_side_rows(results)
    rows: list[tuple[str, ...]] = []
    for result in results:
        if result.workload.scaling is not None and result.status == "ok":
            continue  # printed as curves by format_scaling
        if result.status != "ok":
            note = "skipped" if result.status == "skipped" else result.status.upper()
            label = result.workload.metrics[0].label
            rows.append((label, "", "", "", "", "", f"{note}: {result.message}"))
            continue
        for metric_result in result.metrics:
            metric = metric_result.metric
            digits = metric.digits
            low, high = _number(metric_result.low, digits), _number(metric_result.high, digits)
            spread = f"{low}{EN_DASH}{high}"
            rows.append(
                (
                    metric.label,
                    metric.unit,
                    _number(metric_result.median, digits),
                    spread,
                    str(metric.target) if metric.target else "",
                    metric.aiida or "",
                    metric_result.verdict(),
                )
            )
    return rows


def format_table(results: list[WorkloadResult], *, markdown: bool = False) -> str:
    backends = backends_of(results)
    if len(backends) > 1:
        headers = (
            "workload",
            "unit",
            *(cell for backend in backends for cell in (backend, f"min{EN_DASH}max")),
            "target",
            "AiiDA 2.9.4",
            "holds",
        )
        numeric = set(range(2, 2 + 2 * len(backends)))
        return render(headers, table_rows(results), markdown=markdown, numeric=numeric)
    return render(HEADERS, table_rows(results), markdown=markdown, numeric={2, 3})


def _side_by_side_rows(results: list[WorkloadResult]) -> list[tuple[str, ...]]:
    """One row per metric, a median and a min-max column per backend (blank where the workload
    does not run on that backend); ``holds`` names the backend where the verdicts differ."""
    backends = backends_of(results)
    by_workload: dict[str, dict[str, WorkloadResult]] = {}
    for result in results:
        by_workload.setdefault(result.workload.id, {})[result.backend] = result
    rows: list[tuple[str, ...]] = []
    for runs in by_workload.values():
        workload = next(iter(runs.values())).workload
        if workload.scaling is not None and all(r.status == "ok" for r in runs.values()):
            continue  # printed as curves by format_scaling
        notes = [
            f"{backend}: {'skipped' if r.status == 'skipped' else r.status.upper()}: {r.message}"
            for backend, r in runs.items()
            if r.status != "ok" and not (r.status == "skipped" and backend not in workload.backends)
        ]
        if not any(r.status == "ok" for r in runs.values()):
            blank = [""] * (2 * len(backends) + 2)
            rows.append((workload.metrics[0].label, "", *blank, "; ".join(notes)))
            continue
        for metric in workload.metrics:
            cells: list[str] = []
            verdicts: dict[str, str] = {}
            for backend in backends:
                run = runs.get(backend)
                found = (
                    next((m for m in run.metrics if m.metric.key == metric.key), None)
                    if run is not None and run.status == "ok"
                    else None
                )
                if found is None:
                    cells += ["", ""]
                    continue
                low = _number(found.low, metric.digits)
                high = _number(found.high, metric.digits)
                cells += [_number(found.median, metric.digits), f"{low}{EN_DASH}{high}"]
                verdicts[backend] = found.verdict()
            distinct = set(verdicts.values())
            if len(distinct) <= 1:
                holds = next(iter(distinct), "")
            else:
                holds = ", ".join(f"{backend} {verdict}" for backend, verdict in verdicts.items())
            rows.append(
                (
                    metric.label,
                    metric.unit,
                    *cells,
                    str(metric.target) if metric.target else "",
                    metric.aiida or "",
                    holds,
                )
            )
        for note in notes:
            rows.append((f"  {workload.id}", "", *([""] * (2 * len(backends))), "", "", note))
    return rows


def render(
    headers: tuple[str, ...],
    rows: list[tuple[str, ...]],
    *,
    markdown: bool = False,
    numeric: set[int] | frozenset[int] = frozenset(),
) -> str:
    """A plain-text table (``numeric`` columns right-aligned), or the same as Markdown."""
    if markdown:
        lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]

    def line(row: tuple[str, ...]) -> str:
        cells = [
            cell.rjust(width) if i in numeric else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])


# scaling curves ------------------------------------------------------------------------------


@dataclass
class Curve:
    """One series of a scaling workload as measured: (size, median) points and their growth."""

    workload: Workload
    series: Series
    points: list[tuple[int, float]]
    backend: str = "sqlite"

    @property
    def growth(self) -> float:
        """The largest rise of the cost from a point to any later (larger) one: 1 when flat."""
        worst = 1.0
        for i, (_, earlier) in enumerate(self.points):
            for _, later in self.points[i + 1 :]:
                if earlier > 0:
                    worst = max(worst, later / earlier)
        return worst

    @property
    def grows(self) -> bool:
        limit = self.series.growth_limit
        return limit is not None and self.growth > limit


def curves(results: list[WorkloadResult]) -> list[Curve]:
    found: list[Curve] = []
    for result in results:
        scaling = result.workload.scaling
        if scaling is None or result.status != "ok":
            continue
        medians = {
            metric_result.metric.key: metric_result.median for metric_result in result.metrics
        }
        for series in scaling.series:
            points = [(size, medians[key]) for size, key in series.points if key in medians]
            if points:
                found.append(Curve(result.workload, series, points, result.backend))
    return found


def format_scaling(results: list[WorkloadResult], *, markdown: bool = False) -> str:
    """One table per scaling workload: each series' median at each size, the last over the
    first, and ``GROWS`` where a cost rises more than its series allows."""
    blocks: list[str] = []
    several = len(backends_of(results)) > 1
    for workload, workload_curves in _by_workload(curves(results)):
        assert workload.scaling is not None
        sizes = sorted({size for curve in workload_curves for size, _ in curve.points})
        headers = ("series", "unit", *(f"{size:,}" for size in sizes), "last/first", "flat?")
        rows: list[tuple[str, ...]] = []
        for curve in workload_curves:
            by_size = dict(curve.points)
            cells = [
                _number(by_size[size], curve.series.digits) if size in by_size else ""
                for size in sizes
            ]
            first, last = curve.points[0][1], curve.points[-1][1]
            ratio = f"x{last / first:.2f}" if first > 0 else ""
            name = f"{curve.series.name} ({curve.backend})" if several else curve.series.name
            rows.append((name, curve.series.unit, *cells, ratio, _verdict(curve)))
        title = f"{workload.id}: {workload.title} (x = {workload.scaling.x_label})"
        numeric = set(range(2, 3 + len(sizes)))
        table = render(headers, rows, markdown=markdown, numeric=numeric)
        blocks.append(f"**{title}**\n\n{table}" if markdown else f"{title}\n{table}")
    return "\n\n".join(blocks)


def growing(results: list[WorkloadResult]) -> list[Curve]:
    """The curves whose cost grows faster than their series allows."""
    return [curve for curve in curves(results) if curve.grows]


def _verdict(curve: Curve) -> str:
    limit = curve.series.growth_limit
    if limit is None:
        return ""
    if curve.grows:
        return f"GROWS x{curve.growth:.1f} (limit x{limit:g})"
    return "ok"


def _by_workload(found: list[Curve]) -> list[tuple[Workload, list[Curve]]]:
    grouped: dict[str, list[Curve]] = {}
    for curve in found:
        grouped.setdefault(curve.workload.id, []).append(curve)
    return [(group[0].workload, group) for group in grouped.values()]


def plot_scaling(
    results: list[WorkloadResult], directory: Path, stamp: str, *, caption: str = ""
) -> list[Path]:
    """Draw each scaling workload as a PNG (log x) if matplotlib is importable, each backend a
    line of its own; the files.  ``caption`` is appended to each title (e.g. the load)."""
    try:
        import matplotlib  # type: ignore[import-not-found, unused-ignore]

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return []
    written: list[Path] = []
    directory.mkdir(parents=True, exist_ok=True)
    colours = {"sqlite": "tab:blue", "postgresql": "tab:green"}
    for workload, workload_curves in _by_workload(curves(results)):
        assert workload.scaling is not None
        panels: dict[str, list[Curve]] = {}  # a series' curves on every backend share a panel
        for curve in workload_curves:
            panels.setdefault(curve.series.name, []).append(curve)
        figure, axes = plt.subplots(
            1, len(panels), figsize=(max(6.4, 4.4 * len(panels)), 4.0), squeeze=False
        )
        for ax, panel in zip(axes[0], panels.values(), strict=True):
            top = 0.0
            for curve in panel:
                xs = [size for size, _ in curve.points]
                ys = [value for _, value in curve.points]
                top = max(top, *ys)
                colour = "tab:red" if curve.grows else colours.get(curve.backend, "tab:gray")
                ax.plot(xs, ys, marker="o", color=colour, label=curve.backend)
                if workload.scaling.linear_x and curve.series.perfect_scaling and xs[0] > 0:
                    # workers: the line of perfect scaling from the first point
                    ideal = [ys[0] * x / xs[0] for x in xs]
                    ax.plot(xs, ideal, linestyle=":", color=colour, alpha=0.5)
            ax.set_xscale("log")
            if workload.scaling.linear_x:
                ax.set_xscale("linear")
                ax.set_xticks(sorted({size for curve in panel for size, _ in curve.points}))
            if not workload.scaling.linear_x:
                ax.set_ylim(bottom=0, top=top * 1.25 if top > 0 else 1)
            else:
                ax.set_ylim(bottom=0)  # room for the dotted line of perfect scaling
            ax.set_xlabel(workload.scaling.x_label)
            ax.set_ylabel(panel[0].series.unit)
            grows = any(curve.grows for curve in panel)
            ax.set_title(panel[0].series.name + (" (GROWS)" if grows else ""), fontsize=10)
            ax.grid(True, alpha=0.3)
            if len(panel) > 1:
                ax.legend(fontsize=8)
        note = "\ndotted: perfect scaling from the first point" if workload.scaling.linear_x else ""
        title = f"{workload.id}: {workload.title}"
        if caption:
            title += f"\n{caption.strip()}{note}"
        figure.suptitle(title, fontsize=9)
        figure.tight_layout()
        path = directory / f"scaling-{workload.id}-{stamp}.png"
        figure.savefig(path, dpi=100)
        plt.close(figure)
        written.append(path)
    return written


def furthest_from_target(results: list[WorkloadResult]) -> MetricResult | None:
    """The metric whose median is worst relative to its target (missed or not)."""
    candidates = [
        metric_result
        for result in results
        for metric_result in result.metrics
        if metric_result.metric.target is not None
    ]
    if not candidates:
        return None

    def distance(metric_result: MetricResult) -> float:
        assert metric_result.metric.target is not None
        return metric_result.metric.target.distance(metric_result.median)

    return max(candidates, key=distance)


def to_json(results: list[WorkloadResult], meta: dict[str, Any]) -> dict[str, Any]:
    furthest = furthest_from_target(results)
    return {
        **meta,
        "furthest_from_target": furthest.metric.key if furthest else None,
        "scaling": [
            {
                "workload": curve.workload.id,
                "series": curve.series.name,
                "unit": curve.series.unit,
                "points": curve.points,
                "growth": curve.growth,
                "growth_limit": curve.series.growth_limit,
                "grows": curve.grows,
                "backend": curve.backend,
            }
            for curve in curves(results)
        ],
        "workloads": [
            {
                "id": result.workload.id,
                "title": result.workload.title,
                "backend": result.backend,
                "status": result.status,
                "message": result.message,
                "elapsed_s": result.elapsed_s,
                "metrics": [_metric_json(metric_result) for metric_result in result.metrics],
                "runs": result.runs,
            }
            for result in results
        ],
    }


def _metric_json(metric_result: MetricResult) -> dict[str, Any]:
    metric = metric_result.metric
    target = metric.target
    return {
        "key": metric.key,
        "label": metric.label.strip(),
        "unit": metric.unit,
        "median": metric_result.median,
        "min": metric_result.low,
        "max": metric_result.high,
        "values": metric_result.values,
        "target": str(target) if target else None,
        "holds": metric_result.holds,
        "shortfall_pct": 100 * target.shortfall(metric_result.median) if target else None,
        "aiida": metric.aiida,
    }


def write_json(document: dict[str, Any], directory: Path, stamp: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{stamp}.json"
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    return path
