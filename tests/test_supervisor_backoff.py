"""The supervisor's restart backoff tells a crash loop from workers killed from outside.

A worker that reported ready and was then killed by a signal (an operator, the OOM killer, the
heartbeat watchdog) is restarted at once however often it happens: before, five such kills
within a minute left the slot empty for 10, then 30 seconds after each further kill, and a
daemon under repeated kills spent most of its time with no worker at all.
"""

from __future__ import annotations

import re
import signal
import sys
from pathlib import Path

import pytest

from miniengine.daemon.supervisor import KILLED_WHEN_READY_DELAY
from tests.workchains.daemon_chains import DaemonGuard, alive, kill_quietly, wait_until

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")

KILLS = 7


def log_lines(db: Path, needle: str) -> list[str]:
    log = db.parent / f"{db.name}.daemon.log"
    text = log.read_text(errors="replace") if log.exists() else ""
    return [line for line in text.splitlines() if needle in line]


def test_workers_killed_after_ready_are_restarted_without_growing_delay(
    miniengine_db: Path,
) -> None:
    with DaemonGuard(miniengine_db) as daemon:
        daemon.start("--workers", "1", "--lease-timeout", "60")
        for kill in range(KILLS):
            wait_until(
                lambda kill=kill: len(log_lines(miniengine_db, " is ready")) > kill,
                60,
                f"worker number {kill + 1} to be ready",
            )
            (victim,) = [pid for pid in daemon.worker_pids() if alive(pid)][-1:]
            kill_quietly(victim, signal.SIGKILL)
            wait_until(
                lambda kill=kill: len(log_lines(miniengine_db, "restarting in")) > kill,
                60,
                f"the supervisor to reap worker number {kill + 1}",
            )
        wait_until(
            lambda: len(log_lines(miniengine_db, " is ready")) > KILLS,
            60,
            "the worker started after the last kill to be ready",
        )
    delays = [
        float(match.group(1))
        for line in log_lines(miniengine_db, "restarting in")
        if (match := re.search(r"restarting in ([0-9.]+) s", line))
    ]
    assert len(delays) == KILLS
    assert max(delays) <= KILLED_WHEN_READY_DELAY, delays
