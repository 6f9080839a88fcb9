"""The table printed at the end of a run, and the same as JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.runner import MetricResult, WorkloadResult

EN_DASH = "\u2013"
HEADERS = ("workload", "unit", "median", f"min{EN_DASH}max", "target", "AiiDA 2.9.4", "holds")


def _number(value: float, digits: int) -> str:
    return f"{value:,.{digits}f}"


def table_rows(results: list[WorkloadResult]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for result in results:
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
    rows = table_rows(results)
    if markdown:
        lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in [HEADERS, *rows]) for i in range(len(HEADERS))]
    numeric = {2, 3}  # right-aligned columns

    def line(row: tuple[str, ...]) -> str:
        cells = [
            cell.rjust(width) if i in numeric else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(HEADERS), rule, *(line(row) for row in rows)])


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
        "workloads": [
            {
                "id": result.workload.id,
                "title": result.workload.title,
                "status": result.status,
                "message": result.message,
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
