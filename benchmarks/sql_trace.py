"""Count every SQL statement a daemon workload runs, and diff two checkouts' counts.

Timings on a shared machine are noise; the statements a workload runs are not.  This runs a
scenario under the tracer of ``benchmarks/sqltrace/sitecustomize.py`` (every sqlite connection
of the client, the supervisor and the workers counts its statements and who issued them) against
the miniengine of any checkout, and compares two such runs statement by statement::

    python -m benchmarks.sql_trace run w5 --root /tmp/before --out /tmp/trace-before
    python -m benchmarks.sql_trace run w5 --root . --out /tmp/trace-after
    python -m benchmarks.sql_trace diff /tmp/trace-before /tmp/trace-after

Scenarios (1 worker, sqlite; the daemon is started before and stopped after):

- ``w5``: ``NestedWorkChain(inp=10)`` submitted and awaited ``--reps`` times (W5).
- ``w6``: ``--n`` SmallWorkChains queued before the daemon starts, then drained (W6 without the
  client's submits racing the worker, so that each claim takes the same tasks in every run).
- ``w6-live``: W6 itself: ``--n`` SmallWorkChains submitted to the running daemon, timed from
  the first submit until all ended (claims then depend on timing).

Statements whose count depends on timing (the idle worker's ``PRAGMA data_version``, heartbeat
renewals) differ between runs; the rest are deterministic.  ``--timing`` also sums the time
inside each kind of write transaction (``BEGIN IMMEDIATE`` to ``COMMIT``), i.e. how long each
holds sqlite's write lock.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SHIM = Path(__file__).resolve().parent / "sqltrace"
_STRING = re.compile(r"[xX]?'(?:[^']|'')*'")
_NUMBER = re.compile(r"(?<![\w.])-?\d+(\.\d+)?(e-?\d+)?\b")
_PLACEHOLDERS = re.compile(r"\b(N|S)(\s*,\s*(N|S))+")


def normalise(sql: str) -> str:
    """A statement with its values folded (strings to ``S``, numbers to ``N``, lists to ``..``)."""
    return _PLACEHOLDERS.sub("..", _NUMBER.sub("N", _STRING.sub("S", sql)))


ENV_VAR = "MINIENGINE_BENCH_SQLTRACE"


def _scenario(name: str, reps: int, n: int, workers: int) -> None:
    """Run in the traced child: the scenario against the miniengine on ``sys.path``."""
    import sqlite3

    from miniengine import Int, submit
    from miniengine.daemon.__main__ import start_daemon, stop_daemon

    db = Path(os.environ["MINIENGINE_DB"])

    def wait(pks: list[int], timeout: float = 300) -> None:
        # a raw connection of this script, not the engine's: its statements are left out
        connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        marks = ",".join("?" * len(pks))
        query = (
            f"SELECT count(*) FROM nodes WHERE pk IN ({marks}) "
            "AND process_state IN ('finished', 'excepted', 'killed')"
        )
        deadline = time.monotonic() + timeout
        try:
            while connection.execute(query, pks).fetchone()[0] < len(pks):
                if time.monotonic() > deadline:
                    raise SystemExit(f"only part of {len(pks)} processes ended in {timeout} s")
                time.sleep(0.002)
        finally:
            connection.close()

    if name == "w5":
        from miniengine.demo_nested import NestedWorkChain

        start_daemon(db, workers=workers)
        try:
            for _ in range(reps):
                node = submit(NestedWorkChain, inp=Int(10))
                assert node.pk is not None
                wait([node.pk])
        finally:
            stop_daemon(db, timeout=30)
    elif name == "w6":
        from benchmarks.workchains import SmallWorkChain
        from miniengine.daemon.files import DaemonFiles

        nodes = [submit(SmallWorkChain, x=Int(i), y=Int(1)) for i in range(n)]
        start_daemon(db, workers=workers)
        try:
            state = DaemonFiles(db).read() or {}
            pids = [int(pid) for pid in state.get("workers", []) or []]  # type: ignore[attr-defined]
            supervisor = int(state["pid"])  # type: ignore[call-overload]
            cpu = [_cpu_seconds(pid) for pid in pids]
            supervisor_cpu = _cpu_seconds(supervisor)
            start = time.perf_counter()
            wait([node.pk for node in nodes if node.pk is not None])
            wall = time.perf_counter() - start
            used = sum(_cpu_seconds(pid) - before for pid, before in zip(pids, cpu, strict=True))
            supervisor_used = _cpu_seconds(supervisor) - supervisor_cpu
            print(
                f"drained {n} in {wall:.3f} s from the workers' start: {n / wall:.0f} wc/s, "
                f"worker CPU {1e3 * used / n:.3f} ms per workchain ({used / wall:.0%} of the "
                f"wall), supervisor CPU {1e3 * supervisor_used:.0f} ms"
            )
        finally:
            stop_daemon(db, timeout=30)
    elif name == "w6-live":
        from benchmarks.workchains import SmallWorkChain

        start_daemon(db, workers=workers)
        try:
            start = time.perf_counter()
            nodes = [submit(SmallWorkChain, x=Int(i), y=Int(1)) for i in range(n)]
            submitted = time.perf_counter() - start
            wait([node.pk for node in nodes if node.pk is not None])
            wall = time.perf_counter() - start
            print(
                f"{n} submitted in {submitted:.3f} s, all done in {wall:.3f} s: {n / wall:.0f} wc/s"
            )
        finally:
            stop_daemon(db, timeout=30)
    else:
        raise SystemExit(f"unknown scenario {name!r}: w5, w6 or w6-live")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (``/proc/<pid>/stat``)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(args: argparse.Namespace) -> int:
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    for old in [*out.glob("trace-*.json"), *out.glob("trace-*.prof")]:
        old.unlink()
    root = Path(args.root).resolve()
    with tempfile.TemporaryDirectory(prefix="me-sqltrace-") as folder:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(root), str(SHIM)])
        if not args.untraced:
            env[ENV_VAR] = str(out / "trace")
        env["MINIENGINE_DB"] = str(Path(folder) / "engine.sqlite")
        if args.timing:
            env["MINIENGINE_BENCH_SQLTRACE_TIMING"] = "1"
        if args.profile:
            env["MINIENGINE_BENCH_SQLTRACE_PROFILE"] = "1"
        # this file's scenario, whatever the checkout has (an older one has none)
        code = (
            f"import runpy; ns = runpy.run_path({str(Path(__file__))!r}); "
            f"ns['_scenario']({args.scenario!r}, {args.reps}, {args.n}, {args.workers})"
        )
        completed = subprocess.run([sys.executable, "-c", code], env=env, cwd=folder, check=False)
        if completed.returncode:
            for log in Path(folder).rglob("*log*"):  # the daemon's log, for the reason
                if log.is_file():
                    sys.stderr.write(f"--- {log.name}\n{log.read_text()[-4000:]}\n")
    if completed.returncode or args.untraced:
        return completed.returncode
    if args.profile:
        print("\n".join(str(path) for path in sorted(out.glob("trace-*.prof"))))
        return 0
    summary(load(out), sys.stdout)
    return 0


def load(folder: Path) -> dict[str, Any]:
    """The traces of a run folder, merged per role (client, supervisor, worker)."""
    statements: dict[str, collections.Counter[tuple[str, str]]] = collections.defaultdict(
        collections.Counter
    )
    transactions: dict[str, dict[str, list[float]]] = collections.defaultdict(dict)
    for path in sorted(folder.glob("trace-*.json")):
        data = json.loads(path.read_text())
        role = data["role"]
        for sql, site, count in data["statements"]:
            statements[role][(normalise(sql), site)] += count
        for kind, (count, total, longest, cpu) in data["transactions"].items():
            entry = transactions[role].setdefault(kind, [0, 0.0, 0.0, 0.0])
            entry[0] += count
            entry[1] += total
            entry[2] = max(entry[2], longest)
            entry[3] += cpu
    return {"statements": statements, "transactions": transactions}


def summary(trace: dict[str, Any], out: Any) -> None:
    for role, counter in sorted(trace["statements"].items()):
        total = sum(counter.values())
        print(f"{role}: {total} statements", file=out)
    for role, kinds in sorted(trace["transactions"].items()):
        print(
            f"{role} write transactions (count, total ms, mean us, longest ms, "
            "mean us of the thread's CPU inside):",
            file=out,
        )
        for kind, (count, total, longest, cpu) in sorted(kinds.items(), key=lambda kv: -kv[1][1]):
            print(
                f"  {count:6d} {1e3 * total:9.1f} {1e6 * total / count:8.0f} {1e3 * longest:7.2f}"
                f" {1e6 * cpu / count:8.0f}  {kind}",
                file=out,
            )


def diff(args: argparse.Namespace) -> int:
    before, after = load(args.before), load(args.after)
    for role in sorted(set(before["statements"]) | set(after["statements"])):
        a = before["statements"].get(role, collections.Counter())
        b = after["statements"].get(role, collections.Counter())
        print(f"== {role}: {sum(a.values())} -> {sum(b.values())} statements")
        by_sql_a: collections.Counter[str] = collections.Counter()
        by_sql_b: collections.Counter[str] = collections.Counter()
        for (sql, _), count in a.items():
            by_sql_a[sql] += count
        for (sql, _), count in b.items():
            by_sql_b[sql] += count
        changed = [
            (by_sql_b[sql] - by_sql_a[sql], sql)
            for sql in set(by_sql_a) | set(by_sql_b)
            if by_sql_a[sql] != by_sql_b[sql]
        ]
        for delta, sql in sorted(changed, key=lambda item: -abs(item[0])):
            print(f"  {delta:+6d} ({by_sql_a[sql]} -> {by_sql_b[sql]})  {sql[:160]}")
            if args.sites:
                for label, counter in (("before", a), ("after", b)):
                    for (s, site), count in counter.most_common():
                        if s == sql:
                            print(f"           {label} {count:6d}  {site}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sql_trace", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="run a scenario under the tracer")
    run_parser.add_argument("scenario", choices=["w5", "w6", "w6-live"])
    run_parser.add_argument("--root", default=".", help="the checkout whose miniengine runs")
    run_parser.add_argument("--out", type=Path, required=True, help="folder for the traces")
    run_parser.add_argument("--reps", type=int, default=3, help="w5: submissions")
    run_parser.add_argument("--n", type=int, default=200, help="w6: workchains")
    run_parser.add_argument("--workers", type=int, default=1)
    run_parser.add_argument(
        "--timing", action="store_true", help="time each write transaction by kind"
    )
    run_parser.add_argument(
        "--profile",
        action="store_true",
        help="cProfile every process (all threads) instead of counting statements",
    )
    run_parser.add_argument(
        "--untraced",
        action="store_true",
        help="neither count nor profile: only the scenario's own figures (wall, worker CPU)",
    )
    diff_parser = commands.add_parser("diff", help="compare two run folders")
    diff_parser.add_argument("before", type=Path)
    diff_parser.add_argument("after", type=Path)
    diff_parser.add_argument("--sites", action="store_true", help="also who issued each")
    args = parser.parse_args(argv)
    return run(args) if args.command == "run" else diff(args)


if __name__ == "__main__":
    sys.exit(main())
