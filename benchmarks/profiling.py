"""cProfile across every thread of a process, and the top of a profile without the idle waits.

miniengine runs a synchronous step or body in a worker thread while the event loop waits, so a
plain ``cProfile.runcall`` sees only the loop sleeping in ``epoll``.  :class:`ThreadProfiles`
gives each thread started after it its own profiler and merges them all at the end.

Daemon processes are profiled too when ``--profile`` runs a daemon workload: the child sets
:data:`ENV_VAR` to a path prefix, :func:`benchmarks.support.daemon` puts ``benchmarks/_sync_shim``
on the daemon's ``PYTHONPATH``, and its ``sitecustomize`` calls :func:`profile_this_process`, which
writes ``<prefix>-worker-<pid>.prof`` (or ``-supervisor-``) when the process exits normally.
"""

from __future__ import annotations

import atexit
import cProfile
import os
import pstats
import sys
import threading
from pathlib import Path
from typing import Any

ENV_VAR = "MINIENGINE_BENCH_PROFILE"

#: Functions that only wait (for the loop's next event, a lock, a thread pool's work): left out
#: of the printed top lines, their total is printed instead.
WAITS = (
    "method 'poll' of 'select.epoll' objects",
    "method 'acquire' of '_thread.lock' objects",
    "method 'acquire' of '_thread.RLock' objects",
    "built-in method time.sleep",
    "method 'get' of '_queue.SimpleQueue' objects",
)


class ThreadProfiles:
    """One ``cProfile.Profile`` for the calling thread and one for each thread started later."""

    def __init__(self) -> None:
        self._profiles: list[cProfile.Profile] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        main = cProfile.Profile()
        self._profiles.append(main)
        threading.setprofile(self._thread_started)
        main.enable()

    def _thread_started(self, frame: Any, event: str, arg: Any) -> None:
        # The first profile event of a new thread: give the thread a profiler of its own, which
        # replaces this hook for the thread.
        profile = cProfile.Profile()
        with self._lock:
            self._profiles.append(profile)
        profile.enable()

    def stop(self, path: Path) -> None:
        """Stop profiling new threads and write the merged profile to ``path``."""
        threading.setprofile(None)
        self._profiles[0].disable()
        with self._lock:
            profiles = list(self._profiles)
        for profile in profiles:
            profile.snapshot_stats()  # threads still idling in a pool keep theirs enabled
        stats = pstats.Stats(profiles[0])
        for profile in profiles[1:]:
            if getattr(profile, "stats", None):
                stats.add(profile)
        stats.dump_stats(str(path))


def profile_this_process(prefix: str) -> None:
    """Profile this whole process (all threads) and write it at exit (daemon processes)."""
    profiles = ThreadProfiles()
    profiles.start()

    def dump() -> None:
        role = "worker" if "worker_process" in " ".join(sys.argv) else "supervisor"
        profiles.stop(Path(f"{prefix}-{role}-{os.getpid()}.prof"))

    atexit.register(dump)


def print_top(path: Path, lines: int, *, out: Any = None) -> None:
    """The ``lines`` functions with the most own time, waits left out (their total shown)."""
    out = out or sys.stdout
    stats = pstats.Stats(str(path), stream=out)
    table: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    waited = 0.0
    for key in list(table):
        if any(wait in key[2] for wait in WAITS):
            waited += table[key][2]
            del table[key]
    stats.total_tt = sum(entry[2] for entry in table.values())  # type: ignore[attr-defined]
    print(f"(waits left out: {waited:.3f} s in epoll, lock acquire and sleep)", file=out)
    stats.strip_dirs().sort_stats("tottime").print_stats(lines)
