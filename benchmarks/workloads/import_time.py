"""Import time, each sample a fresh interpreter: ``python -c "import miniengine"`` minus
``python -c "pass"`` (medians of N runs, interleaved so that noise hits both alike).

``import miniengine`` is lazy, so the suite also times what a script pays before its first call,
``from miniengine import run, calcfunction, workfunction, Int``, against the same target.

Bytecode caching is on, as in any installed package: the interpreters share a private
``PYTHONPYCACHEPREFIX`` (filled by a warm-up run), even where ``PYTHONDONTWRITEBYTECODE`` is set,
and nothing is written into the source tree.  A few samples without any bytecode cache (every module
compiled from source, as under ``PYTHONDONTWRITEBYTECODE`` with no ``__pycache__``) go to the
details.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping

from benchmarks.registry import Measurement, Metric, Params, Target, Workload

COMMANDS = {
    "pass": "pass",
    "import": "import miniengine",
    "from_import": "from miniengine import run, calcfunction, workfunction, Int",
}
# Timed inside the interpreter: the import alone, without the subtraction's noise.
IN_PROCESS = "import time; t = time.perf_counter(); {code}; print(1e3 * (time.perf_counter() - t))"
UNCACHED_SAMPLES = 3


def _wall_ms(code: str, env: Mapping[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
    return 1e3 * (time.perf_counter() - start)


def _in_process_ms(code: str, env: Mapping[str, str]) -> float:
    output = subprocess.run(
        [sys.executable, "-c", IN_PROCESS.format(code=code)],
        check=True,
        env=env,
        capture_output=True,
        text=True,
    ).stdout
    return float(output.strip().splitlines()[-1])


def _medians(samples: Mapping[str, list[float]]) -> dict[str, float]:
    return {key: statistics.median(values) for key, values in samples.items()}


def measure(params: Params) -> Measurement:
    base_env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    with tempfile.TemporaryDirectory(prefix="miniengine-pycache-") as cache:
        env = {**base_env, "PYTHONPYCACHEPREFIX": cache}
        for code in COMMANDS.values():  # fill the bytecode cache and the OS file cache
            _wall_ms(code, env)
        samples: dict[str, list[float]] = {key: [] for key in COMMANDS}
        in_process: dict[str, list[float]] = {"import": [], "from_import": []}
        for _ in range(params["n"]):
            for key, code in COMMANDS.items():
                samples[key].append(_wall_ms(code, env))
            for key in in_process:
                in_process[key].append(_in_process_ms(COMMANDS[key], env))
    with tempfile.TemporaryDirectory(prefix="miniengine-nocache-") as empty:
        uncached_env = {**base_env, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPYCACHEPREFIX": empty}
        uncached = {
            key: [_wall_ms(code, uncached_env) for _ in range(UNCACHED_SAMPLES)]
            for key, code in COMMANDS.items()
        }
    wall = _medians(samples)
    uncached_wall = _medians(uncached)
    return Measurement(
        metrics={
            "import_net_ms": wall["import"] - wall["pass"],
            "import_wall_ms": wall["import"],
            "pass_wall_ms": wall["pass"],
            "from_import_net_ms": wall["from_import"] - wall["pass"],
        },
        details={
            "n": params["n"],
            "wall_ms": samples,
            "in_process_median_ms": _medians(in_process),
            "no_bytecode_cache_net_ms": {
                key: uncached_wall[key] - uncached_wall["pass"] for key in ("import", "from_import")
            },
            "no_bytecode_cache_wall_ms": uncached,
        },
    )


WORKLOAD = Workload(
    id="import",
    title='python -c "import miniengine" in fresh interpreters',
    metrics=(
        Metric(
            "import_net_ms",
            "import miniengine (net of startup)",
            "ms",
            Target("<=", 150),
            aiida="2.0 s",
            digits=1,
        ),
        Metric("import_wall_ms", '  python -c "import miniengine"', "ms", digits=1),
        Metric("pass_wall_ms", '  python -c "pass"', "ms", digits=1),
        Metric(
            "from_import_net_ms",
            "from miniengine import run, ... (net)",
            "ms",
            Target("<=", 150),
            aiida="2.0 s",
            digits=1,
        ),
    ),
    measure=measure,
    params={"n": 21},
    quick_params={"n": 7},
)
