"""Loaded only by the daemons that benchmark workloads start with this folder on their
``PYTHONPATH`` (:func:`benchmarks.support.daemon`); nothing else loads it.

- ``MINIENGINE_BENCH_SYNCHRONOUS=FULL``: every ``Store`` the daemon's processes open defaults to
  that ``synchronous`` mode.  The daemon has no option for it (``python -m miniengine.daemon
  start`` takes none), so this is how the durability workload measures W6 at ``FULL``.  Each
  process says so once on stderr (the daemon's log), which the workload checks.
- ``MINIENGINE_BENCH_PROFILE=<prefix>``: the process profiles all its threads and writes
  ``<prefix>-worker-<pid>.prof`` (or ``-supervisor-``) when it exits (``--profile W6``).
"""

import os
import sys

_mode = os.environ.get("MINIENGINE_BENCH_SYNCHRONOUS")
if _mode:
    from miniengine.storage import store as _store

    _original_init = _store.Store.__init__

    def _init(self, path, *, synchronous=None, **options):  # type: ignore[no-untyped-def]
        _original_init(self, path, synchronous=synchronous or str(_mode), **options)

    _store.Store.__init__ = _init  # type: ignore[method-assign]
    sys.stderr.write(f"benchmark shim: pid {os.getpid()} opens its stores at synchronous={_mode}\n")
    sys.stderr.flush()

_profile = os.environ.get("MINIENGINE_BENCH_PROFILE")
if _profile:
    from benchmarks.profiling import profile_this_process

    profile_this_process(_profile)
