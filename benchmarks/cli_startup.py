"""CLI start to first output on a database of 100,000 nodes (issue 6: <= 300 ms; AiiDA's
``verdi`` needs > 2.7 s just to start).

The database is filled through the store's own transaction bodies (``rows.begin_process_tx`` and
``rows.finish_process_tx``), so its rows, links, logs, indexes and triggers are those the engine
writes: units of an ``AddWorkChain`` with two ``Int`` inputs that calls the ``add`` calcfunction,
whose ``result`` it returns (5 nodes each), spread over the last 30 days, plus a few processes
still waiting for a child.  Each sample is a fresh ``python -m miniengine ...`` subprocess; the
time is from ``Popen`` to the first byte on its stdout (and, as a detail, to its exit).

Defines ``WORKLOAD`` for the suite's registry, and also runs alone:
``python -m benchmarks.cli_startup [--quick] [--nodes N] [--db PATH]`` prints one JSON line.
The registry imports workloads from :mod:`benchmarks.workloads`; to list this one there, add a
module ``benchmarks/workloads/cli_startup.py`` holding ``from benchmarks.cli_startup import
WORKLOAD`` and put ``"cli_startup"`` in its ``_MODULES``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.registry import Measurement, Metric, Params, Target, Workload, check

#: The commands timed, by metric key (``{pk}`` is a finished workchain, ``{wait}`` a waiting one).
COMMANDS: dict[str, list[str]] = {
    "list": ["process", "list"],
    "list_all_limit": ["process", "list", "--all", "--limit", "50"],
    "list_past_json": ["process", "list", "--all", "--past", "1d", "--json"],
    "list_state_limit": ["process", "list", "--state", "killed", "--limit", "20"],
    "show": ["process", "show", "{pk}"],
    "status": ["process", "status", "{wait}"],
    "report": ["process", "report", "{pk}"],
    "db_info": ["db", "info"],
}
#: Timed once each, as details: they print every process of the database.
FULL_LISTINGS: dict[str, list[str]] = {
    "list_all": ["process", "list", "--all"],
    "list_all_json": ["process", "list", "--all", "--json"],
}
NODES_PER_UNIT = 5
SPREAD_SECONDS = 30 * 86400.0
WAITING = 20


def populate(db: Path, nodes: int) -> dict[str, int]:
    """Fill a new database with about ``nodes`` nodes; the pks the timed commands use."""
    from miniengine.storage.store import Store

    store = Store(db)
    try:
        # finished units have 5 nodes, the waiting ones 4 (no output yet)
        units = max(-(-(nodes - (NODES_PER_UNIT - 1) * WAITING) // NODES_PER_UNIT), 1)
        batch = 2000
        last: dict[str, int] = {}
        for start in range(0, units, batch):
            last = store.write_sync(_units_tx, min(batch, units - start), store.owner, False)
        waiting = store.write_sync(_units_tx, WAITING, store.owner, True)
        store.write_sync(_spread_ctime_tx, time.time())
    finally:
        store.close()
    return {"pk": last["workchain"], "wait": waiting["workchain"]}


def _units_tx(connection: Any, count: int, owner: str, leave_waiting: bool) -> dict[str, int]:
    from miniengine.core.data import Int
    from miniengine.core.ids import new_uuid
    from miniengine.storage import rows

    expires = time.time() + 3600
    pks: dict[str, int] = {}
    for index in range(count):
        x, y = Int(index), Int(1)
        workchain = rows.NewProcess(
            uuid=new_uuid(),
            node_type="process.workchain",
            process_type="benchmarks.procs:AddWorkChain",
            process_label="AddWorkChain",
            process_state="running",
            label="",
            description="",
            inputs=[("x", x), ("y", y)],
            input_link_type="input_work",
            owner=owner,
            lease_expires=expires,
        )
        workchain_pk, input_pks = rows.begin_process_tx(connection, workchain)
        for data, pk in zip((x, y), input_pks, strict=True):
            data._set_stored(pk, data.uuid)
        add = rows.NewProcess(
            uuid=new_uuid(),
            node_type="process.calcfunction",
            process_type="benchmarks.procs:add",
            process_label="add",
            process_state="running",
            label="",
            description="",
            inputs=[("x", x), ("y", y)],
            input_link_type="input_calc",
            owner=owner,
            lease_expires=expires,
            parent=(workchain_pk, owner, 1),
            call_link_type="call_calc",
            call_link_label="CALL",
        )
        add_pk, _ = rows.begin_process_tx(connection, add)
        pks = {"workchain": workchain_pk, "add": add_pk}
        if leave_waiting:
            connection.execute(
                "UPDATE nodes SET process_state = 'waiting', process_status = ?, owner = NULL "
                "WHERE pk = ?",
                (f"Waiting for child processes: {add_pk}", workchain_pk),
            )
            continue
        result = Int(index + 1)
        (result_pk,) = rows.finish_process_tx(
            connection,
            rows.FinishProcess(
                pk=add_pk,
                owner=owner,
                epoch=1,
                process_state="finished",
                exit_status=0,
                outputs=[("result", result, "create")],
            ),
        )
        result._set_stored(result_pk, result.uuid)
        rows.finish_process_tx(
            connection,
            rows.FinishProcess(
                pk=workchain_pk,
                owner=owner,
                epoch=1,
                process_state="finished",
                exit_status=0,
                outputs=[("result", result, "return")],
                logs=[("REPORT", f"add({index}, 1) launched as pk {add_pk}")],
            ),
        )
    return pks


def _spread_ctime_tx(connection: Any, now: float) -> None:
    """Newest node now, oldest ``SPREAD_SECONDS`` ago, in pk order (so ``--past 1d`` selects a
    thirtieth of them)."""
    top = connection.execute("SELECT max(pk) FROM nodes").fetchone()[0]
    step = SPREAD_SECONDS / max(top, 1)
    connection.execute(
        "UPDATE nodes SET ctime = ? - (? - pk) * ?, mtime = ? - (? - pk) * ?",
        (now, top, step, now, top, step),
    )


def _substitute(command: Sequence[str], pks: Mapping[str, int]) -> list[str]:
    return [part.format(**pks) for part in command]


def time_command(command: Sequence[str], env: Mapping[str, str]) -> tuple[float, float, int]:
    """(ms to the first byte on stdout, ms to exit, bytes printed) of one CLI run."""
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "miniengine", *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(env),
    )
    assert process.stdout is not None
    first = process.stdout.read(1)
    first_ms = 1e3 * (time.perf_counter() - start)
    rest, errors = process.communicate()
    total_ms = 1e3 * (time.perf_counter() - start)
    check(
        process.returncode == 0 and first,
        f"miniengine {' '.join(command)} failed ({process.returncode}): {errors.decode()[-500:]}",
    )
    return first_ms, total_ms, len(first) + len(rest)


def _python_pass_ms(env: Mapping[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True, env=dict(env))
    return 1e3 * (time.perf_counter() - start)


def measure_on(db: Path, pks: Mapping[str, int], samples: int) -> Measurement:
    """Time every command ``samples`` times (interleaved) against an existing database."""
    base_env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    with tempfile.TemporaryDirectory(prefix="miniengine-pycache-") as cache:
        # Bytecode caching on, as for an installed package (see benchmarks/workloads/import_time).
        env = {**base_env, "PYTHONPYCACHEPREFIX": cache, "MINIENGINE_DB": str(db)}
        commands = {key: _substitute(command, pks) for key, command in COMMANDS.items()}
        for command in commands.values():  # warm the bytecode and OS file caches
            time_command(command, env)
        first: dict[str, list[float]] = {key: [] for key in commands}
        total: dict[str, list[float]] = {key: [] for key in commands}
        printed: dict[str, int] = {}
        python_pass = []
        for _ in range(samples):
            python_pass.append(_python_pass_ms(env))
            for key, command in commands.items():
                first_ms, total_ms, size = time_command(command, env)
                first[key].append(first_ms)
                total[key].append(total_ms)
                printed[key] = size
        full = {key: time_command(command, env) for key, command in FULL_LISTINGS.items()}
    medians = {key: statistics.median(values) for key, values in first.items()}
    return Measurement(
        metrics={
            "list_ms": medians["list"],
            "list_all_limit_ms": medians["list_all_limit"],
            "slowest_process_ms": max(
                value for key, value in medians.items() if not key.startswith("db_")
            ),
            "db_info_ms": medians["db_info"],
            "python_pass_ms": statistics.median(python_pass),
        },
        details={
            "samples": samples,
            "first_output_median_ms": medians,
            "exit_median_ms": {key: statistics.median(values) for key, values in total.items()},
            "bytes_printed": printed,
            "first_output_ms": first,
            "full_listings_ms": {
                key: {"first_output": f, "exit": t, "bytes": b} for key, (f, t, b) in full.items()
            },
            "pks": dict(pks),
        },
    )


def measure(params: Params) -> Measurement:
    with tempfile.TemporaryDirectory(prefix="miniengine-cli-") as folder:
        db = Path(folder) / "engine.sqlite"
        start = time.perf_counter()
        pks = populate(db, params["nodes"])
        populate_s = time.perf_counter() - start
        measurement = measure_on(db, pks, params["samples"])
    measurement.details["populate_s"] = populate_s
    measurement.details["nodes"] = params["nodes"]
    return measurement


WORKLOAD = Workload(
    id="cli",
    title="miniengine process list/show/... on 100,000 nodes: start to first output",
    metrics=(
        Metric(
            "list_ms",
            "process list (start to first output)",
            "ms",
            Target("<=", 300),
            aiida="> 2.7 s",
            digits=0,
        ),
        Metric(
            "list_all_limit_ms",
            "  process list --all --limit 50",
            "ms",
            Target("<=", 300),
            digits=0,
        ),
        Metric(
            "slowest_process_ms",
            "  slowest of process list/show/status/report",
            "ms",
            Target("<=", 300),
            digits=0,
        ),
        Metric("db_info_ms", "  db info", "ms", Target("<=", 300), digits=0),
        Metric("python_pass_ms", '  python -c "pass"', "ms", digits=0),
    ),
    measure=measure,
    params={"nodes": 100_000, "samples": 7},
    quick_params={"nodes": 100_000, "samples": 2},
    # Filling the database takes ~10 s: one repetition, with several samples of each command.
    repeat=1,
    quick_repeat=1,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cli_startup", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer samples")
    parser.add_argument("--nodes", type=int, help="nodes in the database (default 100,000)")
    parser.add_argument(
        "--db",
        type=Path,
        help="fill (if missing) and keep this database instead of a temporary one",
    )
    args = parser.parse_args(argv)
    params = dict(WORKLOAD.params_for(args.quick))
    if args.nodes is not None:
        params["nodes"] = args.nodes
    if args.db is None:
        measurement = measure(params)
    else:
        pks_file = args.db.with_name(args.db.name + ".bench.json")
        if not args.db.exists():
            pks_file.write_text(json.dumps(populate(args.db, params["nodes"])))
        measurement = measure_on(args.db, json.loads(pks_file.read_text()), params["samples"])
    print(json.dumps({"workload": WORKLOAD.id, "params": params, **measurement.__dict__}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
