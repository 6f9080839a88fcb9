"""One repetition of one workload, in the fresh interpreter that :mod:`benchmarks.runner` starts.

``python -m benchmarks.child ID --out FILE [--quick] [--profile FILE]`` writes a JSON object to
FILE: ``status`` is ``ok``, ``skipped``, ``wrong`` (an assertion on the result failed) or
``crashed``, with the metrics, details or error.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from benchmarks.machine import cpu_reference_ms
from benchmarks.registry import Measurement, Skipped
from benchmarks.workloads import select

EXIT_WRONG = 3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.child")
    parser.add_argument("workload")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--profile", type=Path, default=None)
    args = parser.parse_args(argv)
    (workload,) = select(args.workload)
    params = workload.params_for(args.quick)
    report: dict[str, Any] = {
        "workload": workload.id,
        "params": dict(params),
        "cpu_ref_ms": cpu_reference_ms(),  # how busy the machine was for this repetition
    }
    exit_code = 0
    start = time.perf_counter()
    try:
        measurement = _measure(workload.measure, params, args.profile)
    except Skipped as exc:
        report.update(status="skipped", reason=str(exc))
    except AssertionError as exc:
        report.update(status="wrong", error=f"wrong result: {exc}", traceback=_tb())
        exit_code = EXIT_WRONG
    except BaseException as exc:
        report.update(status="crashed", error=f"{type(exc).__name__}: {exc}", traceback=_tb())
        exit_code = 1
    else:
        report.update(status="ok", metrics=measurement.metrics, details=measurement.details)
    report["elapsed_s"] = time.perf_counter() - start
    args.out.write_text(json.dumps(report, default=str))
    return exit_code


def _measure(measure: Any, params: Any, profile_path: Path | None) -> Measurement:
    if profile_path is None:
        result: Measurement = measure(params)
        return result
    import os

    from benchmarks.profiling import ENV_VAR, ThreadProfiles

    # daemons started by the workload profile themselves next to this file (see profiling)
    os.environ[ENV_VAR] = str(profile_path.with_suffix(""))
    profiles = ThreadProfiles()
    profiles.start()
    try:
        result = measure(params)
    finally:
        profiles.stop(profile_path)
    return result


def _tb() -> str:
    return traceback.format_exc(limit=-8)


if __name__ == "__main__":
    sys.exit(main())
