"""The registry of workloads.  To add one, write a module here that defines ``WORKLOAD`` and add
its name to :data:`_MODULES` (a dotted name is a module elsewhere, e.g. ``benchmarks.cli_startup``);
the order here is the order of the table, and the scaling workloads come last."""

from __future__ import annotations

import importlib

from benchmarks.registry import Workload

_MODULES = (
    "w1_calcfunction",
    "w2_workfunction",
    "w3_workchain",
    "w4_nested",
    "w5_daemon_nested",
    "w6_daemon_throughput",
    "w6_io",
    "w7_daemon_kill",
    "w8_calcjobs",
    "w9_slurm",
    "w10_ssh",
    "c1_caching",
    "q1_query",
    "a1_archive",
    "web1_process_list",
    "web2_event_latency",
    "web3_idle_streams",
    "chaos",
    "checkpoint",
    "import_time",
    "daemon_start",
    "benchmarks.cli_startup",
    "durability",
    "scaling_dbsize",
    "scaling_depth",
    "scaling_fanout",
    "scaling_workers",
)


def all_workloads() -> dict[str, Workload]:
    """Every workload by id, in table order."""
    workloads: dict[str, Workload] = {}
    for name in _MODULES:
        module = name if "." in name else f"{__name__}.{name}"
        workload: Workload = importlib.import_module(module).WORKLOAD
        workloads[workload.id] = workload
    return workloads


def select(only: str | None) -> list[Workload]:
    """The workloads named in ``only`` (comma-separated ids, any case), else all of them."""
    workloads = all_workloads()
    if not only:
        return list(workloads.values())
    by_key = {key.lower(): workload for key, workload in workloads.items()}
    chosen: list[Workload] = []
    for raw in only.split(","):
        name = raw.strip().lower()
        if not name:
            continue
        if name not in by_key:
            known = ", ".join(workloads)
            raise KeyError(f"unknown workload {raw.strip()!r}; known: {known}")
        if by_key[name] not in chosen:
            chosen.append(by_key[name])
    return chosen
