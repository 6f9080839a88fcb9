"""W10: 200 trivial CalcJobs (``/bin/true``) over ``core.ssh`` + ``core.direct`` to a private
OpenSSH server on this machine (``tests/services/sshd.py``), submitted to a 2-worker daemon.

Every stage reaches the computer through SSH: the upload (SFTP), the submit, the scheduler
queries (one ``ps`` per poll interval for all of a worker's jobs there, every 1 s here) and the
retrieve.  A worker should open one connection to the computer and share it between all of its
jobs: the logins are counted from sshd's log (``Accepted publickey``), over the daemon's whole
life, and divided by the number of workers.  Skipped where sshd is not installed.
"""

from __future__ import annotations

import os
import time
from typing import Any

from benchmarks.calcjob_support import (
    check_jobs,
    cpu_snapshot,
    cpu_used,
    installed_code,
    submit_jobs,
    wait_jobs,
    work_folder,
)
from benchmarks.registry import Measurement, Metric, Params, Skipped, Target, Workload, check
from benchmarks.support import daemon, db_path, rss_mib


def server(folder: Any) -> Any:
    """The private sshd's context manager, or Skipped when it cannot run here."""
    try:
        from tests.services.sshd import SSHD, running_sshd
    except ImportError as exc:
        raise Skipped(f"the sshd service helper is not importable ({exc})") from exc
    if not os.path.exists(SSHD):
        raise Skipped("sshd not installed (Debian's openssh-server)")
    return running_sshd(folder)


def logins(sshd: Any) -> int:
    return sum("Accepted publickey" in line for line in sshd.log)


def measure(params: Params) -> Measurement:
    from miniengine import Computer

    n, workers = params["n"], params["workers"]
    db = db_path()
    with server(db.parent / "sshd") as sshd:
        computer = Computer(
            "sshd",
            sshd.host,
            transport_type="core.ssh",
            scheduler_type="core.direct",
            workdir=str(work_folder()),
        ).store()
        computer.configure(**sshd.transport_params())
        computer.set_minimum_job_poll_interval(params["interval"])
        code = installed_code(computer, "/bin/true", "true")
        before_daemon = logins(sshd)
        with daemon(db, workers=workers) as running:
            warm, _ = submit_jobs(code, params["warmup"])  # untimed: imports, first logins
            wait_jobs(warm, timeout=120)
            check_jobs(warm)
            pids = running.worker_pids()
            cpu_before = cpu_snapshot(pids)
            start = time.perf_counter()
            nodes, submit_s = submit_jobs(code, n)
            end = wait_jobs(nodes, timeout=600, interval=0.005)
            cpu_after = cpu_snapshot(pids)
            rss = [rss_mib(pid) for pid in pids]
            check_jobs(nodes)
            respawned = sorted(set(running.worker_pids()) - set(pids))
            connections_open = len(sshd.connection_pids())
        time.sleep(0.2)  # the log line of a late login reaches the reader thread
        opened = logins(sshd) - before_daemon
    check(opened >= 1, "no SSH login in sshd's log: the jobs did not go through sshd")
    wall = end - start
    used = cpu_used(cpu_before, cpu_after)
    return Measurement(
        metrics={
            "connections_per_worker": opened / workers,
            "jobs_per_s": n / wall,
            "worker_cpu_ms_per_job": 1e3 * used.total / n,
        },
        details={
            "n": n,
            "workers": workers,
            "poll_interval_s": params["interval"],
            "logins": opened,
            "connections_open_at_end": connections_open,
            "wall_s": wall,
            "submit_s": submit_s,
            "worker_cpu_s": {"own": used.own, "children": used.children},
            "worker_rss_mib_after": rss,
            "workers_respawned": respawned,
            "daemon_start_s": running.start_s,
            "load1_at_end": os.getloadavg()[0],
        },
    )


WORKLOAD = Workload(
    id="W10",
    title="200 trivial CalcJobs over core.ssh to a local sshd, 2 workers",
    metrics=(
        Metric(
            "connections_per_worker",
            "W10 200 CalcJobs over SSH: logins per worker",
            "logins",
            Target("<=", 1),
            aiida="1 per transport task",
            digits=1,
        ),
        Metric("jobs_per_s", "  W10 jobs over SSH, 2 workers", "jobs/s", digits=1),
        Metric(
            "worker_cpu_ms_per_job",
            "  W10 worker CPU per job (with its shells)",
            "ms",
            digits=1,
        ),
    ),
    measure=measure,
    params={"n": 200, "workers": 2, "warmup": 2, "interval": 1.0},
    quick_params={"n": 50, "workers": 2, "warmup": 2, "interval": 1.0},
)
