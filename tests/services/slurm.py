"""A private single-node SLURM cluster: munged, slurmctld and slurmd from Debian's packages.

Everything lives in a temp folder (config, state, spool, logs, the munge key and socket) and the
daemons listen on free loopback ports, so the machine's own SLURM setup (if any) is never read
or changed.  Client commands find the cluster through ``SLURM_CONF``, which the fixture sets.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.services.sshd import free_port

DAEMONS = {
    name: shutil.which(name) or f"/usr/sbin/{name}" for name in ("munged", "slurmctld", "slurmd")
}


@dataclass
class SlurmCluster:
    folder: Path
    conf: Path
    node: str
    partition: str

    def environment(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}


def missing_slurm() -> list[str]:
    """The SLURM programs that are not installed here (empty when it can run)."""
    missing = [name for name, path in DAEMONS.items() if not os.path.exists(path)]
    if shutil.which("sbatch") is None:
        missing.append("sbatch")
    return missing


def require_slurm() -> None:
    missing = missing_slurm()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"{', '.join(missing)} missing: .ci/run installs slurm-wlm and munge")
        pytest.skip(
            f"SLURM is not installed ({', '.join(missing)}): apt-get install slurm-wlm munge"
        )
    if os.geteuid() != 0:
        pytest.skip("the private SLURM cluster runs its daemons as root")


def _config(
    folder: Path, node: str, ctld_port: int, slurmd_port: int, cpus: int | None = None
) -> str:
    # more CPUs than the machine has: slurmd accepts the config's figure, and each scheduling
    # pass looks at that many pending jobs (100 by default), so that many can start at once
    overrides = (
        []
        if cpus is None
        else [
            "SlurmdParameters=config_overrides",
            f"SchedulerParameters=default_queue_depth={cpus}",
        ]
    )
    return "\n".join(
        [
            "ClusterName=miniengine",
            f"SlurmctldHost={node}(127.0.0.1)",
            f"SlurmctldPort={ctld_port}",
            f"SlurmdPort={slurmd_port}",
            "AuthType=auth/munge",
            f"AuthInfo=socket={folder / 'munge.socket'}",
            "CredType=cred/munge",
            f"StateSaveLocation={folder / 'state'}",
            f"SlurmdSpoolDir={folder / 'spool'}",
            f"SlurmctldPidFile={folder / 'slurmctld.pid'}",
            f"SlurmdPidFile={folder / 'slurmd.pid'}",
            f"SlurmctldLogFile={folder / 'slurmctld.log'}",
            f"SlurmdLogFile={folder / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SchedulerType=sched/builtin",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "ReturnToService=2",
            "SlurmUser=root",
            "SlurmdUser=root",
            "MpiDefault=none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none",
            "MinJobAge=600",
            *overrides,
            f"NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus or os.cpu_count() or 1} "
            "RealMemory=1000 State=UNKNOWN",
            "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
            "",
        ]
    )


@contextmanager
def running_slurm(folder: Path, *, cpus: int | None = None) -> Iterator[SlurmCluster]:
    """Start munged, slurmctld and slurmd in ``folder``; stop them (and their jobs) on exit.

    ``cpus``: how many CPUs the node says it has (default: this machine's), hence how many
    one-CPU jobs run at once; the benchmarks run hundreds of sleeping jobs together.
    """
    require_slurm()
    for sub in ("state", "spool"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    key = folder / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    node = socket.gethostname().split(".")[0]
    conf = folder / "slurm.conf"
    conf.write_text(_config(folder, node, free_port(), free_port(), cpus))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    processes: list[subprocess.Popen[bytes]] = []

    def start(*argv: str) -> None:
        processes.append(
            subprocess.Popen(
                list(argv),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,  # each daemon logs to its file in the folder
            )
        )

    try:
        start(
            DAEMONS["munged"],
            "--foreground",
            "--force",
            f"--key-file={key}",
            f"--socket={folder / 'munge.socket'}",
            f"--pid-file={folder / 'munged.pid'}",
            f"--log-file={folder / 'munged.log'}",
            f"--seed-file={folder / 'munged.seed'}",
        )
        _wait_for(lambda: (folder / "munge.socket").exists(), "munged's socket", processes)
        start(DAEMONS["slurmctld"], "-D", "-i", "-f", str(conf))
        start(DAEMONS["slurmd"], "-D", "-f", str(conf))
        _wait_for(lambda: _node_idle(env, node), "the SLURM node to be idle", processes)
        yield SlurmCluster(folder, conf, node, "debug")
    finally:
        subprocess.run(["scancel", "--full", "-u", "root"], env=env, capture_output=True)
        for process in reversed(processes):
            process.terminate()
        for process in reversed(processes):
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _node_idle(env: dict[str, str], node: str) -> bool:
    result = subprocess.run(
        ["sinfo", "--noheader", "-n", node, "-o", "%t"], env=env, capture_output=True, text=True
    )
    return result.returncode == 0 and result.stdout.strip() == "idle"


def _wait_for(ready: object, what: str, processes: list[subprocess.Popen[bytes]]) -> None:
    """Wait for a service to come up: there is no event to await from another program's
    start-up, so ask it (every 50 ms, for at most 60 s), failing at once if it died."""
    assert callable(ready)
    deadline = time.monotonic() + 60
    while not ready():
        for process in processes:
            if process.poll() is not None:
                raise RuntimeError(
                    f"{process.args[0]} exited ({process.returncode}) while waiting for {what}"
                )
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)
