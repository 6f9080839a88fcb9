"""Count the CPU instructions of start-up and of W1-W3 with valgrind, for one or more checkouts.

Instruction counts do not depend on the machine's load, so they show a change of a few percent
where timings on a shared machine cannot.  Each measure is a fresh interpreter run under
``valgrind --tool=callgrind`` (only the total is kept) against the miniengine of a checkout::

    python -m benchmarks.instructions --root /tmp/before --root .

- ``startup``: a process that imports miniengine, creates a sqlite database and makes 23 calls
  of the ``add`` calcfunction (what every script and command pays before its work);
- ``reopen``: the same on a database that exists already (no schema to create);
- ``import``: ``from miniengine import Int, calcfunction, run`` alone;
- ``W1``, ``W2``, ``W3``: the steady state per operation, the difference of two run lengths
  divided by the difference of their lengths (start-up and warm-up cancel out): W1 ``add`` calls,
  W2 scenario-1 workfunctions, W3 10-step WorkChains, in run mode.

Bytecode is cached (``PYTHONDONTWRITEBYTECODE`` is ignored; the cache lives under
``--cache``), as in an installed package, and each workload runs once uncounted first so that its
modules are compiled before counting.

Work that a wall-clock timer starts is left out of W1-W3: valgrind runs the code ~50 times
slower, so a timer fires ~50 times as often per operation as in a real run, and as often as the
machine's load makes it (W3 varied by up to 5% between two runs of the same code).  In the
counted runs of W1-W3 a coroutine's ``anyio.sleep(delay)`` with ``delay > 0`` waits until it is
cancelled (in W3 the only such sleep is the run-mode control watcher's 20 ms poll, which a
real ~15 ms workchain ends before it wakes; under valgrind it ran tens of times per workchain,
~1 M instructions), and the store's lease heartbeat (a write every 2.5 s while a process
runs), its time-triggered WAL checkpoint (``CHECKPOINT_SECONDS``) and the caching settings'
re-read (``CONFIG_REFRESH``, where the checkout has it) do not come due; the checkpoints that
commits trigger (every ``CHECKPOINT_EVERY`` commits, or a WAL above 16 MiB), counted, stay.  A
workload that waits for such a sleep itself fails with a timeout instead of counting it.
``--repeat`` takes the median and shows the range.

sqlite's work per page written grows with the WAL since the last checkpoint (its WAL index
step took ~600 instructions per page in a short run, ~1,500-1,900 in a long one), so a count
depends on where its run falls in the checkpoint cycle, which the commits of start-up shift
from one checkout to another.  W3 writes ~0.9 MB of WAL per workchain, a cycle every ~18:
counted over 20 workchains, two checkouts' difference moved by 0.5% with the run's start; over
100 it holds within 0.05%.  The workload code is this file's, whatever the checkout carries.
Needs valgrind (``apt-get install valgrind``); a measure takes 10-60 s, W3 ~90 s.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

#: The workloads run in the measured child (this file's own copy, whatever the checkout holds).
CHILD = """
import sys
what, n = sys.argv[1], int(sys.argv[2])
from miniengine import Int, calcfunction, run
if what == "import":
    sys.exit(0)
from miniengine import workfunction

@calcfunction
def add(x, y):
    return Int(x + y)

@calcfunction
def multiply(x, y):
    return Int(x * y)

@workfunction
def add_and_multiply(x, y, z):
    return multiply(add(x, y), z)

if what in ("startup", "reopen"):
    for i in range(n):
        add(Int(i), Int(1))
    sys.exit(0)

# Wall-clock timers do not fire (see the module's documentation): a positive sleep of a
# coroutine lasts until it is cancelled, and the lease heartbeat, the periodic WAL checkpoint
# and the caching re-read never come due.
import importlib
import anyio
from miniengine.storage import background

_background_init = background.BackgroundThread.__init__

def _without_heartbeat(self, *args, **kwargs):
    kwargs["idle_interval"] = 1e6
    _background_init(self, *args, **kwargs)

background.BackgroundThread.__init__ = _without_heartbeat

_sleep = anyio.sleep

async def _until_cancelled(delay, *args, **kwargs):
    if delay > 0:
        await anyio.Event().wait()
    return await _sleep(delay, *args, **kwargs)

anyio.sleep = _until_cancelled
for module, name in (
    ("miniengine.storage.store", "CHECKPOINT_SECONDS"),
    ("miniengine.runtime.caching", "CONFIG_REFRESH"),
):
    try:
        found = importlib.import_module(module)
    except ImportError:
        continue
    if hasattr(found, name):
        setattr(found, name, float("inf"))
if what == "W3":
    from miniengine import WorkChain, while_

    class LoopWorkChain(WorkChain):
        @classmethod
        def define(cls, spec):
            super().define(spec)
            spec.input("n", valid_type=Int, default=lambda: Int(10))
            spec.output("result", valid_type=Int)
            spec.outline(cls.setup, while_(cls.not_done)(cls.do_step), cls.finalize)

        def setup(self):
            self.ctx.i = 0
            self.ctx.total = Int(0).store()

        def not_done(self):
            return self.ctx.i < self.inputs.n.value

        def do_step(self):
            self.ctx.total = add(self.ctx.total, Int(self.ctx.i))
            self.ctx.i += 1

        def finalize(self):
            self.out("result", self.ctx.total)

for i in range(3 + n):  # 3 warm-up operations, then n
    if what == "W1":
        assert add(Int(i), Int(1)) == i + 1
    elif what == "W2":
        assert add_and_multiply(Int(1), Int(2), Int(3)) == 9
    else:
        result, node = run.get_node(LoopWorkChain, n=Int(10))
        assert result["result"] == 45 and node.is_finished_ok
"""

#: The two run lengths of each steady-state workload.
LENGTHS = {"W1": (20, 220), "W2": (10, 110), "W3": (2, 102)}
STARTUP_CALLS = 23
#: Seconds one counted run may take (the longest take ~40 s; a workload stuck in a sleep that
#: never ends fails instead of hanging).
COUNT_TIMEOUT = 900
_COLLECTED = re.compile(r"Collected : (\d+)")


def count(root: Path, what: str, n: int, cache: Path, workdir: Path) -> int:
    """The instructions of one fresh run of ``what`` (length ``n``) against ``root``'s code."""
    script = workdir / "instructions_child.py"
    script.write_text(CHILD)
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop("MINIENGINE_CACHING", None)
    env.update(
        PYTHONPATH=str(root),
        PYTHONHASHSEED="0",
        PYTHONPYCACHEPREFIX=str(cache / re.sub(r"\W", "_", str(root))),
    )
    db = workdir / "engine.sqlite"

    def fresh() -> None:
        for path in workdir.glob("engine.sqlite*"):
            path.unlink()
        env["MINIENGINE_DB"] = str(db)

    fresh()  # the uncounted run: bytecode compiled and cached
    subprocess.run([sys.executable, str(script), what, "1"], env=env, check=True, cwd=workdir)
    child = [sys.executable, str(script), what, str(n)]
    if what != "reopen":  # (reopen: the database the uncounted run created stays)
        fresh()
    completed = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *child],
        env=env,
        cwd=workdir,
        capture_output=True,
        text=True,
        check=False,
        timeout=COUNT_TIMEOUT,
    )
    found = _COLLECTED.search(completed.stderr)
    if completed.returncode != 0 or found is None:
        raise RuntimeError(f"{what} {n} on {root} failed:\n{completed.stderr[-2000:]}")
    return int(found.group(1))


def measure(root: Path, what: str, cache: Path, repeat: int) -> list[float]:
    """Instructions of ``startup``/``import``, or per operation of W1-W3, once per repeat."""
    values: list[float] = []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory(prefix="me-instr-") as folder:
            workdir = Path(folder)
            if what in LENGTHS:
                short, long = LENGTHS[what]
                low = count(root, what, short, cache, workdir)
                high = count(root, what, long, cache, workdir)
                values.append((high - low) / (long - short))
            else:
                values.append(count(root, what, STARTUP_CALLS, cache, workdir))
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.instructions",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--root", action="append", type=Path, help="a checkout (repeatable; default: this one)"
    )
    parser.add_argument("--only", default="startup,W1,W2,W3", help="comma-separated measures")
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per measure (median, and [lowest-highest])"
    )
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "me-instr-pyc")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        parser.error("valgrind is not installed (apt-get install valgrind)")
    roots = [root.resolve() for root in (args.root or [Path(__file__).resolve().parents[1]])]
    measures = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(measures) - {"startup", "reopen", "import", *LENGTHS})
    if unknown:
        parser.error(f"unknown measures {unknown}: choose from startup, reopen, import, W1, W2, W3")
    runs = {
        str(root): {what: measure(root, what, args.cache, args.repeat) for what in measures}
        for root in roots
    }
    results = {
        root: {what: statistics.median(values) for what, values in by_measure.items()}
        for root, by_measure in runs.items()
    }
    if args.json:
        print(json.dumps(results))
        return 0
    first = results[str(roots[0])]
    print("| measure | " + " | ".join(str(root) for root in roots) + " |")
    print("|---|" + "---|" * len(roots))
    for what in measures:
        cells = []
        for root in roots:
            value = results[str(root)][what]
            change = f" ({100 * (value / first[what] - 1):+.1f}%)" if root != roots[0] else ""
            values = runs[str(root)][what]
            spread = (
                f" [{min(values) / 1e6:,.3f}-{max(values) / 1e6:,.3f}]" if len(values) > 1 else ""
            )
            cells.append(f"{value / 1e6:,.3f} M{spread}{change}")
        print(f"| {what} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
