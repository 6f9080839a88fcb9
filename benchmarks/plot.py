"""``python -m benchmarks.plot RESULT.json [--out DIR]``: draw the scaling curves of a saved run
again (the PNGs the run wrote sit in the git-ignored results folder; this puts them where a
document can reference them)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.report import plot_scaling
from benchmarks.runner import MetricResult, WorkloadResult
from benchmarks.workloads import all_workloads


def results_of(document: dict[str, object]) -> list[WorkloadResult]:
    """The scaling workloads of a saved run, as the run had them (medians of the values)."""
    workloads = all_workloads()
    results: list[WorkloadResult] = []
    for saved in document["workloads"]:  # type: ignore[attr-defined]
        workload = workloads.get(saved["id"])
        if workload is None or workload.scaling is None or saved["status"] != "ok":
            continue
        metrics = {metric.key: metric for metric in workload.metrics}
        results.append(
            WorkloadResult(
                workload,
                saved.get("backend", "sqlite"),
                metrics=[
                    MetricResult(metrics[m["key"]], m["values"])
                    for m in saved["metrics"]
                    if m["key"] in metrics
                ],
            )
        )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.plot", description=__doc__)
    parser.add_argument("result", type=Path, help="a JSON file the suite wrote")
    parser.add_argument("--out", type=Path, default=Path("."), help="folder for the PNGs")
    args = parser.parse_args(argv)
    document = json.loads(args.result.read_text())
    machine = document.get("machine", {})
    load = machine.get("load_average") or ["n/a"]
    load_text = f"{load[0]:.1f}" if isinstance(load[0], float) else str(load[0])
    caption = (
        f"1-min load average {load_text} at the start, {machine.get('cpu_count', '?')} CPUs, "
        f"{document.get('timestamp', '')}"
    )
    for path in plot_scaling(
        results_of(document), args.out, str(document.get("timestamp", "")), caption=caption
    ):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
