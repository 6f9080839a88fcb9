"""``miniengine process pause|play|kill|watch|repair`` as real subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from miniengine import ProcessState, Str, submit
from miniengine.storage.control_rows import PAUSE_STATUS
from miniengine.storage.store import close_all_stores
from miniengine.testing import WaitingProcess
from tests.services import sql

pytestmark = pytest.mark.backends


def cli(db: Path | str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MINIENGINE_DB": str(db)}
    return subprocess.run(
        [sys.executable, "-m", "miniengine", "process", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def test_pause_play_and_kill_change_processes_nobody_runs(miniengine_db: Path) -> None:
    first = submit(WaitingProcess, gate=Str("a"))
    second = submit(WaitingProcess, gate=Str("b"))
    close_all_stores()
    paused = cli(miniengine_db, "pause", str(first.pk))
    assert paused.returncode == 0 and f"paused process {first.pk}" in paused.stdout
    assert first.paused and first.process_status == PAUSE_STATUS
    played = cli(miniengine_db, "play", str(first.pk))
    assert played.returncode == 0 and not first.paused
    killed = cli(miniengine_db, "kill", "--all", "-m", "tidy up")
    assert killed.returncode == 0
    assert f"killed process {first.pk}" in killed.stdout
    assert f"killed process {second.pk}" in killed.stdout
    assert first.process_state is ProcessState.KILLED and first.process_status == "tidy up"
    again = cli(miniengine_db, "kill", str(first.pk))
    assert again.returncode == 0 and "already terminated" in again.stdout


def test_unknown_pk_and_missing_arguments_fail_in_one_line(miniengine_db: Path) -> None:
    submit(WaitingProcess, gate=Str("a"))
    unknown = cli(miniengine_db, "kill", "999")
    assert unknown.returncode == 1
    assert unknown.stderr.strip() == "error: no process with pk 999"
    nothing = cli(miniengine_db, "pause")
    assert nothing.returncode == 1 and "--all" in nothing.stderr
    usage = cli(miniengine_db, "kill", "not-a-pk")
    assert usage.returncode == 2


def test_watch_prints_changes_until_the_process_terminates(miniengine_db: Path) -> None:
    node = submit(WaitingProcess, gate=Str("w"))
    env = {**os.environ, "MINIENGINE_DB": str(miniengine_db)}
    watcher = subprocess.Popen(
        [sys.executable, "-m", "miniengine", "process", "watch", str(node.pk), "--timeout", "60"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    assert watcher.stdout is not None
    first = watcher.stdout.readline()  # the current state: it is subscribed now
    assert f"{node.pk}" in first and "created" in first
    killer = cli(miniengine_db, "kill", str(node.pk))
    assert killer.returncode == 0
    rest = watcher.stdout.read()
    assert watcher.wait(timeout=30) == 0
    assert "created -> killed" in rest


def test_repair_finds_a_task_for_a_terminated_process_and_a_live_process_without_task(
    miniengine_db: Path,
) -> None:
    node = submit(WaitingProcess, gate=Str("r"))
    other = submit(WaitingProcess, gate=Str("s"))
    close_all_stores()
    with sql.connect(miniengine_db) as connection:
        connection.execute("UPDATE nodes SET process_state = 'finished' WHERE pk = ?", (node.pk,))
        connection.execute("UPDATE tasks SET status = 'done' WHERE process_pk = ?", (other.pk,))
    dry = cli(miniengine_db, "repair", "--dry-run")
    assert dry.returncode == 0 and "dry run" in dry.stdout
    fixed = cli(miniengine_db, "repair")
    assert f"is for process {node.pk}, which is finished: dropped" in fixed.stdout
    assert f"process {other.pk} is live but has no task: enqueued" in fixed.stdout
    clean = cli(miniengine_db, "repair")
    assert clean.stdout.strip() == "nothing to repair"


def test_kill_wait_that_the_owner_did_not_confirm_exits_non_zero(miniengine_db: Path) -> None:
    node = submit(WaitingProcess, gate=Str("never"))
    close_all_stores()
    # held by an owner whose lease is live but which never acts (e.g. stopped in a step)
    sql.execute(
        miniengine_db,
        "UPDATE nodes SET owner = 'worker:stuck', lease_expires = ? WHERE pk = ?",
        time.time() + 3600,
        node.pk,
    )
    waited = cli(
        miniengine_db, "kill", str(node.pk), "-m", "stop now", "--wait", "--timeout", "0.2"
    )
    assert waited.returncode == 1, waited.stdout + waited.stderr
    assert waited.stdout.strip() == (
        f"asked the owner of process {node.pk} to kill it; it has not confirmed yet"
    )
    asked = cli(miniengine_db, "kill", str(node.pk), "-m", "stop now")
    assert asked.returncode == 0
    assert asked.stdout.strip() == f"asked the owner of process {node.pk} to kill it"
    assert node.process_state is ProcessState.CREATED  # only its owner can end it now
    paused = cli(miniengine_db, "pause", str(node.pk), "--wait", "--timeout", "0.2")
    assert paused.returncode == 1 and "still in a step" in paused.stdout
