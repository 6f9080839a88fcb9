"""``python -m miniengine.daemon start|stop|status|restart|logs|incr|decr``.

``start`` launches the supervisor in the background and returns once every worker is ready;
``start --foreground`` *is* the supervisor.  Exit codes: 0 ok, 1 error, 2 usage.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from miniengine.daemon.files import DaemonFiles, db_arguments, process_alive, shown
from miniengine.exceptions import MiniengineError
from miniengine.storage.host import current_host
from miniengine.storage.interfaces.broker import MAX_ATTEMPTS, SILENT_AFTER
from miniengine.storage.paths import ensure_folder, resolve_db
from miniengine.storage.permissions import check_not_shared

__all__ = ["main", "run", "start_daemon", "stop_daemon"]


def _parser() -> argparse.ArgumentParser:
    from miniengine.daemon.commands import parser

    return parser()


def start_daemon(
    db: Path | str,
    *,
    workers: int = 1,
    slots: int = 200,
    lease_timeout: float = 10.0,
    stop_timeout: float = 10.0,
    timeout: float = 60.0,
    max_attempts: int = MAX_ATTEMPTS,
) -> int:
    """Start a supervisor in the background and wait until its workers are ready; its pid."""
    files = DaemonFiles(db)
    running = files.read()
    if running is not None:
        raise RuntimeError(f"a daemon is already running for {shown(db)} (pid {running['pid']})")
    _check_database(db)
    files.ensure_folder()  # once the database is known to be there
    db_argv, environment = db_arguments(db)
    with files.open_log() as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "miniengine.daemon",
                "start",
                "--foreground",
                *db_argv,
                "--workers",
                str(workers),
                "--slots",
                str(slots),
                "--lease-timeout",
                str(lease_timeout),
                "--stop-timeout",
                str(stop_timeout),
                "--max-attempts",
                str(max_attempts),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            env=environment,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            lock = files.lock()
            if lock is None:  # another supervisor won a race to start
                running = files.read()
                holder = f" (pid {running['pid']})" if running is not None else ""
                raise RuntimeError(f"a daemon is already running for {shown(db)}{holder}")
            lock.close()
            files.remove()  # the supervisor may have died before it could remove its pid file
            said = _last_log_line(files)
            raise RuntimeError(
                f"the daemon exited at start (code {process.returncode})"
                + (f": {said}" if said else "")
                + f"; see {files.log_file}"
            )
        state = files.read()
        if state is not None and state.get("pid") == process.pid and state.get("state") == "ready":
            return process.pid
        time.sleep(0.01)
    process.kill()
    raise RuntimeError(f"the daemon did not become ready in {timeout:.0f} s; see {files.log_file}")


def _last_log_line(files: DaemonFiles) -> str:
    """The last line of the daemon's log (what a supervisor that exited at start said)."""
    try:
        with open(files.log_file, "rb") as log:
            log.seek(max(log.seek(0, os.SEEK_END) - 4096, 0))
            lines = log.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1].strip() if lines else ""


def _check_database(db: Path | str) -> None:
    """Open the database as the supervisor will, so that a missing folder, a file of another
    user, a read-only file or one that is not a miniengine database (or a server that cannot be
    reached) is reported here, in one line, before a supervisor is started (and leaves a pid
    file) only to exit."""
    from miniengine.storage.open import open_backend

    store = open_backend(db)
    try:
        store.check_writable()
    finally:
        store.close()


def stop_daemon(db: Path | str, *, timeout: float = 20.0) -> bool:
    """Stop the daemon of ``db`` gracefully (then SIGKILL); False if none was running."""
    files = DaemonFiles(db)
    state = files.read()
    if state is None:
        return False
    pid = int(state["pid"])  # type: ignore[call-overload]
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while process_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    if process_alive(pid):
        for worker in state.get("workers", []) or []:  # type: ignore[attr-defined]
            try:
                os.kill(int(worker), signal.SIGKILL)
            except ProcessLookupError:
                pass
        os.kill(pid, signal.SIGKILL)
        files.remove()
    return True


def _status(db: Path | str) -> int:
    from miniengine.storage.open import open_backend

    files = DaemonFiles(db)
    state = files.read()
    if state is None:
        if isinstance(db, Path):
            print(f"the daemon is not running ({db})")
            return 1
        print(f"no daemon runs on this host for {shown(db)}")
    else:
        print(f"daemon pid {state['pid']} ({state.get('state')}) for {shown(db)}")
    if not isinstance(db, Path):  # its files are not beside the database: say where they are
        print(f"host {current_host()}: daemon files in {files.folder}")
    store = open_backend(db)
    try:
        workers = store.broker.workers()
        depth = store.broker.queue_depth()
    finally:
        store.close()
    now = time.time()
    # every host's workers: daemons on several hosts may serve one PostgreSQL database
    width = max([len(worker.id) for worker in workers] + [40])
    host_width = max([len(worker.host) for worker in workers] + [10])
    print(f"{'worker':<{width}} {'host':<{host_width}} {'pid':>7} {'slots':>11} {'heartbeat':>10}")
    for worker in workers:
        silent = now - worker.heartbeat
        print(
            f"{worker.id:<{width}} {worker.host or '?':<{host_width}} {worker.pid:>7} "
            f"{worker.busy:>5} / {worker.slots:<5} {silent:>8.1f} s"
            # a host that died whole leaves its workers' rows behind (its leases expire)
            + ("  (silent: its host may be down)" if silent > SILENT_AFTER else "")
        )
    print(f"queue: {depth.ready} ready, {depth.leased} running")
    return 0 if state is not None else 1  # the other hosts' workers are shown all the same


def main(argv: list[str] | None = None) -> int:
    return run(_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Run the daemon command that ``args`` (from :mod:`miniengine.daemon.commands`) names."""
    try:
        db = resolve_db(args.db)
    except MiniengineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    files = DaemonFiles(db)
    if args.command == "worker":  # pragma: no cover - reserved
        return 2
    if args.command == "start" and args.foreground:
        from miniengine.daemon.supervisor import Supervisor

        handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
        logging.basicConfig(
            level=logging.INFO,
            format=f"%(asctime)s supervisor {os.getpid()} %(levelname)s: %(message)s",
            handlers=handlers,
        )
        try:
            if isinstance(db, Path):
                ensure_folder(db)
                check_not_shared(db)
            files.ensure_folder()
            lock = files.lock()
        except MiniengineError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        if lock is None:
            running = files.read()
            holder = f" (pid {running['pid']})" if running is not None else ""
            print(f"error: a daemon is already running for {shown(db)}{holder}", file=sys.stderr)
            return 1
        try:
            return Supervisor(
                db,
                workers=args.workers,
                slots=args.slots,
                lease_timeout=args.lease_timeout,
                stop_timeout=args.stop_timeout,
                max_attempts=args.max_attempts,
            ).run()
        except MiniengineError as exc:  # the database cannot be opened: say why, in one line
            print(f"error: {exc}", file=sys.stderr)
            return 1
        finally:
            lock.close()
    try:
        if args.command in ("start", "restart"):
            if args.command == "restart":
                if stop_daemon(db, timeout=args.stop_timeout + 10):
                    print(f"daemon stopped for {shown(db)}", flush=True)
                else:
                    print(f"the daemon was not running ({shown(db)})", flush=True)
            pid = start_daemon(
                db,
                workers=args.workers,
                slots=args.slots,
                lease_timeout=args.lease_timeout,
                stop_timeout=args.stop_timeout,
                max_attempts=args.max_attempts,
            )
            print(f"daemon started (pid {pid}, {args.workers} worker(s)) for {shown(db)}")
            return 0
        if args.command == "stop":
            if stop_daemon(db):
                print(f"daemon stopped for {shown(db)}")
            else:
                print(f"the daemon is not running ({shown(db)})")
            return 0
        if args.command == "status":
            return _status(db)
        if args.command == "logs":
            try:
                lines = files.log_file.read_text(errors="replace").splitlines()
            except FileNotFoundError:
                print(f"no log yet at {files.log_file}", file=sys.stderr)
                return 1
            from miniengine.cli.render import printable

            # the log holds what processes raised and reported: no raw control characters
            print(printable("\n".join(lines[-args.lines :]), lines=True))
            return 0
        if args.command in ("incr", "decr"):
            state = files.read()
            if state is None:
                print(f"the daemon is not running ({shown(db)})", file=sys.stderr)
                return 1
            os.kill(int(state["pid"]), signal.SIGUSR1 if args.command == "incr" else signal.SIGUSR2)  # type: ignore[call-overload]
            print(f"asked the daemon to {'add' if args.command == 'incr' else 'remove'} a worker")
            return 0
    except (RuntimeError, MiniengineError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
