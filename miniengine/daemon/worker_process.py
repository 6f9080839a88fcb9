"""The entry point of one worker OS process started by the supervisor.

It runs a :class:`~miniengine.daemon.worker.Worker` until SIGTERM (graceful: stop claiming, let
running steps reach their commit, hand the rest back to the queue) or until its supervisor dies
(it must never outlive it).  It prints ``READY <worker id>`` on stdout once it takes work, so
the supervisor starts nothing on guesswork.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import logging
import os
import signal
import sys

import anyio

from miniengine.daemon.worker import Worker
from miniengine.storage.interfaces.broker import MAX_ATTEMPTS

__all__ = ["main"]

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Ask Linux to send SIGTERM to this process when its parent (the supervisor) dies."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass


async def _serve(args: argparse.Namespace) -> None:
    supervisor = args.supervisor_pid
    # Catch SIGTERM before the worker registers and claims anything: a SIGTERM that arrives
    # while it starts (e.g. its supervisor died at that moment) must stop it gracefully too,
    # not kill it with its row and leases left behind.
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with Worker(
            args.db,
            slots=args.slots,
            lease_timeout=args.lease_timeout,
            stop_timeout=args.stop_timeout,
            worker_id=args.worker_id,
            max_attempts=args.max_attempts,
        ) as worker:
            print(f"READY {worker.id}", flush=True)
            async with anyio.create_task_group() as group:

                async def watch_parent() -> None:
                    while supervisor is None or os.getppid() == supervisor:
                        await anyio.sleep(0.5)
                    logging.getLogger("miniengine.worker").warning("supervisor gone; stopping")
                    group.cancel_scope.cancel()

                async def watch_signals() -> None:
                    async for _ in signals:
                        group.cancel_scope.cancel()
                        return

                group.start_soon(watch_parent)
                group.start_soon(watch_signals)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m miniengine.daemon worker")
    # a PostgreSQL URL comes in $MINIENGINE_DB instead: it may hold a password
    parser.add_argument("--db", default=None)
    parser.add_argument("--slots", type=int, default=200)
    parser.add_argument("--lease-timeout", type=float, default=10.0)
    parser.add_argument("--stop-timeout", type=float, default=10.0)
    parser.add_argument("--worker-id", default=None)
    parser.add_argument("--max-attempts", type=int, default=MAX_ATTEMPTS)
    parser.add_argument("--supervisor-pid", type=int, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s worker {os.getpid()} %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    _die_with_parent()
    if args.supervisor_pid is not None and os.getppid() != args.supervisor_pid:
        return 1  # the supervisor died before we started
    asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
