"""Loaded only by processes started with this folder on their ``PYTHONPATH``
(``python -m benchmarks.sql_trace``); nothing else loads it.  Self-contained, so that it also
traces an older checkout of miniengine (whose ``benchmarks`` package does not have it).

``MINIENGINE_BENCH_SQLTRACE=<prefix>``: every sqlite connection this process opens gets a trace
callback that counts each statement it runs (numbers folded to ``N``) together with the
miniengine functions that issued it (the innermost frames outside ``storage``), and
``<prefix>-<role>-<pid>.json`` is written at exit and every half second (a worker may end by a
signal).  ``MINIENGINE_BENCH_SQLTRACE_TIMING=1`` also times every write transaction of the
process (``BEGIN IMMEDIATE`` to ``COMMIT``/``ROLLBACK``) by the function that opened it.
"""

import os

_prefix = os.environ.get("MINIENGINE_BENCH_SQLTRACE")
_profile = os.environ.get("MINIENGINE_BENCH_SQLTRACE_PROFILE") == "1"
if _prefix and _profile:
    # cProfile instead of the statement counts: every thread gets its own profiler, merged
    # into ``<prefix>-<role>-<pid>.prof`` at exit (ncalls are deterministic, times are not)
    import atexit
    import cProfile
    import pstats
    import sys
    import threading

    _profiles = []
    _profiles_lock = threading.Lock()

    def _thread_started(frame, event, arg):  # type: ignore[no-untyped-def]
        profile = cProfile.Profile()
        with _profiles_lock:
            _profiles.append(profile)
        profile.enable()

    _main_profile = cProfile.Profile()
    _profiles.append(_main_profile)
    threading.setprofile(_thread_started)
    _main_profile.enable()

    def _dump_profile() -> None:
        threading.setprofile(None)
        _main_profile.disable()
        with _profiles_lock:
            profiles = list(_profiles)
        for profile in profiles:
            profile.snapshot_stats()
        stats = pstats.Stats(profiles[0])
        for profile in profiles[1:]:
            if getattr(profile, "stats", None):
                stats.add(profile)
        command = " ".join(sys.argv)
        role = (
            "worker"
            if "worker" in command
            else "supervisor"
            if "miniengine.daemon" in command or "daemon/__main__" in command
            else "client"
        )
        stats.dump_stats(f"{_prefix}-{role}-{os.getpid()}.prof")

    atexit.register(_dump_profile)
elif _prefix:
    import atexit
    import collections
    import json
    import re
    import sqlite3
    import sys
    import threading
    import time

    _NUMBER = re.compile(r"(?<![\w.])-?\d+(\.\d+)?(e-?\d+)?\b")
    _STRING = re.compile(r"[xX]?'(?:[^']|'')*'")
    _SPACE = re.compile(r"\s+")
    _PLACEHOLDERS = re.compile(r"\?(\s*,\s*\?)+")
    _counts: "collections.Counter[tuple[str, str]]" = collections.Counter()
    _tx_time: "collections.defaultdict[str, list[float]]" = collections.defaultdict(
        lambda: [0, 0.0, 0.0, 0.0]
    )
    _open_tx: "dict[int, tuple[float, str]]" = {}
    _lock = threading.Lock()
    _timing = os.environ.get("MINIENGINE_BENCH_SQLTRACE_TIMING") == "1"
    try:  # sys.argv is not complete yet while site runs (``-m``)
        with open("/proc/self/cmdline", "rb") as _cmdline:
            _command = _cmdline.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        _command = " ".join(sys.argv)
    _role = (
        "worker"
        if "worker" in _command
        else "supervisor"
        if "miniengine.daemon" in _command
        else "client"
    )

    def _site(skip_storage: bool = True) -> str:
        frame = sys._getframe(2)
        names = []
        while frame is not None and len(names) < 3:
            path = frame.f_code.co_filename
            if "/miniengine/" in path:
                short = path.split("/miniengine/", 1)[1]
                if not (skip_storage and short.startswith("storage/")):
                    names.append(f"{short}:{frame.f_code.co_name}")
            frame = frame.f_back
        return " < ".join(names) or "(outside miniengine)"

    def _storage_site() -> str:
        frame = sys._getframe(2)
        while frame is not None:
            path = frame.f_code.co_filename
            if "/miniengine/storage/" in path and not path.endswith(
                ("storage/store.py", "storage/sqlite/transaction.py")
            ):
                return f"{path.split('/miniengine/', 1)[1]}:{frame.f_code.co_name}"
            frame = frame.f_back
        return ""

    def _transaction_kind() -> str:
        """The transaction function being run: the frame that the store's ``_transaction``
        called (read from code objects only; a frame's ``f_locals`` is not touched)."""
        frame = sys._getframe(2)
        while frame is not None and frame.f_back is not None:
            if frame.f_back.f_code.co_name == "_transaction":
                code = frame.f_code
                return f"{code.co_filename.rpartition('/miniengine/')[2]}:{code.co_name}"
            frame = frame.f_back
        return "(other)"

    def _callback(connection_id: int):
        if _timing:
            # light: only the bounds of write transactions, timed (counting every statement
            # and its issuer would lengthen the transactions it measures)
            def trace(statement: str) -> None:
                if statement.startswith("BEGIN IMMEDIATE"):
                    _open_tx[connection_id] = (time.perf_counter(), time.thread_time(), "")
                elif connection_id in _open_tx and not _open_tx[connection_id][2]:
                    # the transaction's first statement: its function is on the stack now
                    start, cpu_start, _ = _open_tx[connection_id]
                    _open_tx[connection_id] = (start, cpu_start, _transaction_kind())
                if statement.startswith(("COMMIT", "ROLLBACK")):
                    now, cpu = time.perf_counter(), time.thread_time()
                    opened = _open_tx.pop(connection_id, None)
                    if opened is not None:
                        start, cpu_start, kind = opened
                        with _lock:
                            entry = _tx_time[f"{kind} [{statement.split()[0]}]"]
                            entry[0] += 1
                            entry[1] += now - start
                            entry[2] = max(entry[2], now - start)
                            entry[3] += cpu - cpu_start

            return trace

        def trace(statement: str) -> None:
            text = _PLACEHOLDERS.sub(
                "?,..", _NUMBER.sub("N", _STRING.sub("S", _SPACE.sub(" ", statement.strip())))
            )
            key = (text[:300], f"{_site()} | {_storage_site()}")
            with _lock:
                _counts[key] += 1

        return trace

    _original_connect = sqlite3.connect

    def _connect(*args, **kwargs):  # type: ignore[no-untyped-def]
        connection = _original_connect(*args, **kwargs)
        connection.set_trace_callback(_callback(id(connection)))
        return connection

    sqlite3.connect = _connect  # type: ignore[assignment]

    def _dump() -> None:
        with _lock:
            data = {
                "role": _role,
                "argv": sys.argv,
                "statements": [[sql, site, n] for (sql, site), n in _counts.items()],
                "transactions": {kind: list(v) for kind, v in _tx_time.items()},
            }
        path = f"{_prefix}-{_role}-{os.getpid()}.json"
        with open(path + ".tmp", "w") as out:
            json.dump(data, out)
        os.replace(path + ".tmp", path)

    def _every_half_second() -> None:
        while True:
            time.sleep(0.5)
            _dump()

    threading.Thread(target=_every_half_second, daemon=True, name="sqltrace-dump").start()
    atexit.register(_dump)
