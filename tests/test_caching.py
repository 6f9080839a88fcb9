"""Caching: a calcfunction equal to one that finished OK is not run again, on both backends."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import miniengine.orm
from miniengine import (
    Int,
    calcfunction,
    disable_caching,
    enable_caching,
    load_node,
    workfunction,
)
from miniengine.core.exit_code import ExitCode
from miniengine.manage import caching as manage_caching
from miniengine.runtime import caching

pytestmark = pytest.mark.backends

_COUNTER: list[Path] = []


def _count() -> int:
    return len(_COUNTER[0].read_text()) if _COUNTER[0].exists() else 0


@calcfunction
def add(x: Int, y: Int) -> dict[str, Any]:
    with _COUNTER[0].open("a") as handle:
        handle.write("x")
    return {"sum": x + y, "diff": Int(x.value - y.value)}


@calcfunction
def fails(x: Int) -> ExitCode:
    with _COUNTER[0].open("a") as handle:
        handle.write("x")
    return ExitCode(400, "no")


@pytest.fixture(autouse=True)
def _counter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.delenv(caching.ENVIRONMENT_VARIABLE, raising=False)
    _COUNTER[:] = [tmp_path / "counter"]
    yield
    vars(add).pop("_CACHE_VERSION", None)


def test_names_are_importable_as_in_aiida() -> None:
    assert manage_caching.enable_caching is enable_caching
    assert miniengine.orm.disable_caching is disable_caching


def test_a_second_equal_run_is_a_copy_and_does_not_run(backend_db: Any) -> None:
    _, unhashed = add.run_get_node(Int(1), Int(2))  # off by default: it runs, stores no hash
    assert _count() == 1 and unhashed.base.caching.get_hash() is None
    caching.set_caching_config(store_all_hashes=True)
    try:
        first, source = add.run_get_node(Int(1), Int(2))  # caching off: it runs again
        again, other = add.run_get_node(Int(1), Int(2))
    finally:
        caching.set_caching_config(store_all_hashes=False)
    assert _count() == 3 and other.base.caching.get_cache_source() is None
    # run with caching off, it stored its hash all the same: it is a source once caching is on
    assert source.base.caching.get_hash() == other.base.caching.get_hash() is not None
    assert source.base.caching.get_cache_source() is None
    with enable_caching():
        second, node = add.run_get_node(Int(1), Int(2))
    assert _count() == 3  # the body did not run
    assert node.pk != source.pk and node.is_finished_ok
    assert node.base.caching.get_cache_source() == source.uuid
    assert node.base.caching.get_hash() == source.base.caching.get_hash() is not None
    assert {k: v.value for k, v in second.items()} == {"sum": 3, "diff": -1}
    assert second["sum"].pk != first["sum"].pk  # the outputs are clones, created by the copy
    assert second["sum"].uuid != first["sum"].uuid
    again = load_node(node.pk)
    assert sorted(again.outputs) == ["diff", "sum"]
    assert again.outputs.sum.value == 3
    assert [link.link_label for link in again.base.links.get_incoming().all()] == ["x", "y"]
    assert again.outputs.sum.base.links.get_incoming().one().node.pk == node.pk
    assert again.base.caching.is_created_from_cache
    # the clones are queryable by their attributes like the outputs that ran
    qb = miniengine.orm.QueryBuilder()
    qb.append(Int, filters={"attributes.value": -1}, project=["id"])
    found = {row[0] for row in qb.all()}
    assert len(found) == 4 and {first["diff"].pk, second["diff"].pk} <= found


def test_different_inputs_or_version_or_disabled_class_run_again(backend_db: Any) -> None:
    with enable_caching(identifier=add.process_type):
        add(Int(1), Int(2))
        add(Int(1), Int(3))
        assert _count() == 2
        add(Int(1), Int(2))
        assert _count() == 2
        add._CACHE_VERSION = 2  # type: ignore[attr-defined]
        add(Int(1), Int(2))
        assert _count() == 3
        with disable_caching(identifier="tests.test_caching.*"):
            add(Int(1), Int(2))
            assert _count() == 4
    add(Int(1), Int(2))
    assert _count() == 5  # off again outside the block


def test_environment_variable_enables_caching(
    backend_db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(caching.ENVIRONMENT_VARIABLE, f"{add.process_type},!other.*")
    add(Int(4), Int(5))
    _, node = add.run_get_node(Int(4), Int(5))
    assert _count() == 1 and node.base.caching.get_cache_source() is not None
    monkeypatch.setenv(caching.ENVIRONMENT_VARIABLE, "all,!tests.test_caching.add")
    add(Int(4), Int(5))
    assert _count() == 2


def test_an_invalid_or_failed_process_is_never_a_source(backend_db: Any) -> None:
    with enable_caching():
        _, source = add.run_get_node(Int(7), Int(1))
        source.base.caching.is_valid_cache = False
        assert not load_node(source.pk).base.caching.is_valid_cache
        _, node = add.run_get_node(Int(7), Int(1))
        assert _count() == 2 and node.base.caching.get_cache_source() is None
        _, third = add.run_get_node(Int(7), Int(1))  # the second run is a valid source
        assert _count() == 2 and third.base.caching.get_cache_source() == node.uuid
        node.base.caching.is_valid_cache = True
        fails(Int(1))
        _, failed = fails.run_get_node(Int(1))
        assert _count() == 4 and not failed.is_finished_ok
        assert failed.base.caching.get_cache_source() is None


def test_get_hash_is_stable_across_interpreters(backend_db: Any) -> None:
    with enable_caching():
        _, node = add.run_get_node(Int(1), Int(2))
    script = (
        "from miniengine import Int\n"
        "from miniengine.runtime.caching import process_hash\n"
        "print(process_hash('tests.test_caching.add', None, [('y', Int(2)), ('x', Int(1))]))\n"
    )
    runs = {
        subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, check=True
        ).stdout.strip()
        for _ in range(2)
    }
    assert runs == {node.base.caching.get_hash()}
    # what goes into a hash is fixed (a change would make every stored hash miss): this one is
    # the same on every machine and Python version
    assert runs == {"55e8b26a268a20343668eade2b4fb73e672e6ade0d89629f1caaaf6812fc7b18"}
    assert Int(5).base.caching.get_hash() == Int(5).base.caching.get_hash()
    assert Int(5).base.caching.get_hash() != Int(6).base.caching.get_hash()


# CalcJobs --------------------------------------------------------------------------------------

RESOURCES = {"num_machines": 1, "num_mpiprocs_per_machine": 1}


def _workdirs(root: Path) -> int:
    return sum(1 for _ in root.rglob("aiida.out"))


def test_a_calcjob_with_a_real_program_is_not_rerun(backend_db: Any, tmp_path: Path) -> None:
    from miniengine import InstalledCode, run, submit
    from miniengine.runtime.computers import localhost_computer
    from tests.workchains.calcjob_plugins import ArithmeticAddCalculation

    work = tmp_path / "work"
    work.mkdir()
    computer = localhost_computer(work)
    bash = InstalledCode(computer=computer, filepath_executable="/bin/bash", label="bash")
    bash.store()
    options = {"options": {"resources": RESOURCES}}
    with enable_caching(identifier="tests.workchains.calcjob_plugins.*"):
        result, source = run.get_node(
            ArithmeticAddCalculation, code=bash, x=Int(4), y=Int(5), metadata=options
        )
        assert _workdirs(work) == 1 and source.base.caching.get_hash() is not None
        again, node = run.get_node(
            ArithmeticAddCalculation, code=bash, x=Int(4), y=Int(5), metadata=options
        )
        assert _workdirs(work) == 1  # the program did not run again
        assert node.is_finished_ok and node.base.caching.get_cache_source() == source.uuid
        assert again["sum"].value == result["sum"].value == 9
        assert set(again) == {"sum", "remote_folder", "retrieved"}
        assert again["retrieved"].pk != result["retrieved"].pk
        assert again["retrieved"].list_object_names() == result["retrieved"].list_object_names()
        # submitted, it is finished at once, without a daemon: nothing is enqueued
        submitted = submit(
            ArithmeticAddCalculation, code=bash, x=Int(4), y=Int(5), metadata=options
        )
        assert submitted.is_finished_ok
        assert submitted.base.caching.get_cache_source() == source.uuid
        assert submitted.outputs.sum.value == 9
        import asyncio

        from miniengine import asubmit

        awaited = asyncio.run(
            asubmit(ArithmeticAddCalculation, code=bash, x=Int(4), y=Int(5), metadata=options)
        )
        assert awaited.is_finished_ok and awaited.base.caching.get_cache_source() == source.uuid
        # a changed option that says what it computes runs it again; a queue option does not
        other = {"options": {"resources": RESOURCES, "max_wallclock_seconds": 60}}
        run.get_node(ArithmeticAddCalculation, code=bash, x=Int(4), y=Int(5), metadata=other)
        assert _workdirs(work) == 1
        other = {"options": {"resources": RESOURCES, "output_filename": "other.out"}}
        run.get_node(ArithmeticAddCalculation, code=bash, x=Int(4), y=Int(5), metadata=other)
        assert _workdirs(work) == 2


@workfunction
def twice(x: Int, y: Int) -> Any:
    return add(x, y)["sum"]


def test_a_calcfunction_called_by_a_workfunction_is_reused(backend_db: Any) -> None:
    with enable_caching(identifier=add.process_type):
        first, outer = twice.run_get_node(Int(5), Int(6))
        second, again = twice.run_get_node(Int(5), Int(6))
    assert _count() == 1 and first.value == second.value == 11
    (called,) = again.called
    assert called.is_finished_ok and called.base.caching.get_cache_source() is not None
    assert second.pk == called.outputs.sum.pk  # the workfunction returns the clone
    assert [node.pk for node in outer.called] != [called.pk]


def test_a_class_that_is_not_cachable_always_runs(backend_db: Any) -> None:
    add._cachable = False  # type: ignore[attr-defined]
    try:
        with enable_caching():
            add(Int(3), Int(3))
            _, node = add.run_get_node(Int(3), Int(3))
        assert _count() == 2 and node.base.caching.get_hash() is None
    finally:
        del add._cachable  # type: ignore[attr-defined]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the daemon uses pidfds")
def test_a_submitted_calcjob_runs_in_the_daemon_once(backend_db: Any, tmp_path: Path) -> None:
    from miniengine import InstalledCode, await_node, submit
    from miniengine.runtime.computers import localhost_computer
    from tests.workchains.calcjob_plugins import ArithmeticAddCalculation
    from tests.workchains.daemon_chains import DaemonGuard

    work = tmp_path / "work"
    work.mkdir()
    code = InstalledCode(
        computer=localhost_computer(work), filepath_executable="/bin/bash", label="bash"
    ).store()
    options = {"options": {"resources": RESOURCES}}
    with DaemonGuard(backend_db) as daemon, enable_caching():
        daemon.start("--workers", "1")
        first = submit(ArithmeticAddCalculation, code=code, x=Int(2), y=Int(3), metadata=options)
        await_node(first, timeout=60)
        source = load_node(first.pk)
        assert source.is_finished_ok and _workdirs(work) == 1
        second = submit(ArithmeticAddCalculation, code=code, x=Int(2), y=Int(3), metadata=options)
        assert second.is_finished_ok and second.outputs.sum.value == 5  # at once: never queued
        assert second.base.caching.get_cache_source() == source.uuid
    assert _workdirs(work) == 1
