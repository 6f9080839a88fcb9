"""Caching wherever a process is launched: CalcJobs submitted by WorkChain steps and
calcfunctions called in them, in run mode and in the daemon (whose workers learn the setting
from the database), on both backends."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from miniengine import (
    InstalledCode,
    Int,
    Str,
    WorkChain,
    calcfunction,
    enable_caching,
    load_node,
    run,
)
from miniengine.exceptions import MiniengineError, ValidationError
from miniengine.runtime import caching
from miniengine.runtime.computers import localhost_computer
from tests.workchains.caching_chains import CachedJobsWorkChain, add_counted
from tests.workchains.calcjob_plugins import ArithmeticAddCalculation

pytestmark = pytest.mark.backends

IDENTIFIERS = ["tests.workchains.calcjob_plugins.*", "tests.workchains.caching_chains.*"]


@pytest.fixture(autouse=True)
def _no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(caching.ENVIRONMENT_VARIABLE, raising=False)


@pytest.fixture
def setup(backend_db: Any, tmp_path: Path) -> dict[str, Any]:
    work = tmp_path / "work"
    work.mkdir()
    code = InstalledCode(
        computer=localhost_computer(work), filepath_executable="/bin/bash", label="bash"
    ).store()
    return {"db": backend_db, "work": work, "code": code, "counter": tmp_path / "counter"}


def _ran(setup: dict[str, Any]) -> Counter[str]:
    """How often the job's program and the calcfunction's body ran (from the counter file)."""
    counter: Path = setup["counter"]
    return Counter(counter.read_text().split()) if counter.exists() else Counter()


def _uploads(setup: dict[str, Any]) -> int:
    """How many jobs were uploaded (each has an input file in its working folder)."""
    return sum(1 for _ in setup["work"].rglob("aiida.in"))


def _inputs(setup: dict[str, Any], x: int = 4, y: int = 5) -> dict[str, Any]:
    return {"code": setup["code"], "x": Int(x), "y": Int(y), "counter": Str(str(setup["counter"]))}


def _called(node: Any) -> dict[str, Any]:
    """The children of a CachedJobsWorkChain by kind: job, more, calc."""
    children = sorted(node.called, key=lambda child: child.pk)
    jobs = [child for child in children if child.process_label == "ArithmeticAddCalculation"]
    calcs = [child for child in children if child.process_label == "add_counted"]
    assert len(jobs) == 2 and len(calcs) == 1, children
    return {"job": jobs[0], "more": jobs[1], "calc": calcs[0]}


def test_a_workchain_reuses_the_jobs_and_calls_of_an_equal_run(setup: dict[str, Any]) -> None:
    with enable_caching(identifier="tests.workchains.*"):
        first, source = run.get_node(CachedJobsWorkChain, **_inputs(setup))
        assert source.is_finished_ok and _ran(setup) == {"ran": 2, "calc": 1}
        assert _uploads(setup) == 2
        second, node = run.get_node(CachedJobsWorkChain, **_inputs(setup))
    assert _ran(setup) == {"ran": 2, "calc": 1}  # no program ran, no body either
    assert _uploads(setup) == 2  # nothing was uploaded or submitted
    assert node.is_finished_ok and node.exit_status == 0
    assert node.base.caching.get_cache_source() is None  # a WorkChain itself is never cached
    assert {k: v.value for k, v in second.items()} == {k: v.value for k, v in first.items()}
    assert {k: v.value for k, v in second.items()} == {"sum": 9, "total": 19}
    before, after = _called(source), _called(node)
    for kind in ("job", "more", "calc"):
        assert after[kind].is_finished_ok and after[kind].exit_status == 0
        assert after[kind].base.caching.get_cache_source() == before[kind].uuid, kind
        assert after[kind].pk != before[kind].pk
        assert after[kind].caller.pk == node.pk  # called by the new WorkChain
    # the parent saw the copies as finished children: ToContext, append_ and outputs
    assert second["sum"].pk == after["job"].outputs.sum.pk
    assert second["total"].pk == after["calc"].outputs.result.pk
    retrieved = load_node(after["job"].pk).outputs.retrieved.list_object_names()
    assert "aiida.out" in retrieved
    assert retrieved == before["job"].outputs.retrieved.list_object_names()


def test_other_inputs_a_new_version_or_no_cache_run_again(setup: dict[str, Any]) -> None:
    with enable_caching(identifier="tests.workchains.*"):
        run(CachedJobsWorkChain, **_inputs(setup))
        assert _ran(setup) == {"ran": 2, "calc": 1}
        _, node = run.get_node(CachedJobsWorkChain, **_inputs(setup, x=6))  # 6 + 5 is new
        assert _ran(setup) == {"ran": 3, "calc": 2}  # 5 + 5 was reused
        assert _called(node)["more"].base.caching.get_cache_source() is not None
        assert _called(node)["job"].base.caching.get_cache_source() is None
        ArithmeticAddCalculation._CACHE_VERSION = 2  # type: ignore[attr-defined]
        try:
            run(CachedJobsWorkChain, **_inputs(setup))
            assert _ran(setup) == {"ran": 5, "calc": 2}  # both jobs again; the sums are equal
        finally:
            del ArithmeticAddCalculation._CACHE_VERSION  # type: ignore[attr-defined]
        ArithmeticAddCalculation._cachable = False  # type: ignore[attr-defined]
        try:
            _, node = run.get_node(CachedJobsWorkChain, **_inputs(setup))
            assert _ran(setup) == {"ran": 7, "calc": 2}
            assert _called(node)["job"].base.caching.get_hash() is None
        finally:
            del ArithmeticAddCalculation._cachable  # type: ignore[attr-defined]


def test_an_invalid_cache_is_never_used(setup: dict[str, Any]) -> None:
    with enable_caching(identifier="tests.workchains.*"):
        _, source = run.get_node(CachedJobsWorkChain, **_inputs(setup))
        for child in source.called:
            child.base.caching.is_valid_cache = False
        _, node = run.get_node(CachedJobsWorkChain, **_inputs(setup))
        assert _ran(setup) == {"ran": 4, "calc": 2}
        assert all(c.base.caching.get_cache_source() is None for c in node.called)


def test_a_run_made_with_caching_off_is_a_source(setup: dict[str, Any]) -> None:
    _, unhashed = run.get_node(CachedJobsWorkChain, **_inputs(setup))
    assert all(c.base.caching.get_hash() is None for c in unhashed.called)
    caching.set_caching_config(store_all_hashes=True, db=setup["db"])
    _, source = run.get_node(CachedJobsWorkChain, **_inputs(setup))  # off: it all runs again
    assert _ran(setup) == {"ran": 4, "calc": 2}
    assert all(c.base.caching.get_hash() is not None for c in source.called)
    caching.set_caching_config(enabled_for=IDENTIFIERS, db=setup["db"])
    _, node = run.get_node(CachedJobsWorkChain, **_inputs(setup))
    assert _ran(setup) == {"ran": 4, "calc": 2}
    assert _called(node)["job"].base.caching.get_cache_source() == _called(source)["job"].uuid


#: What the bodies of the calcfunctions below ran, in order.
BODIES: list[str] = []


@calcfunction
def add_in_step(x: Int, y: Int) -> Int:
    BODIES.append("add")
    return Int(x.value + y.value)


@calcfunction
def multiply_in_step(x: Int, y: Int) -> Int:
    BODIES.append("multiply")
    return Int(x.value * y.value)


class AddMultiplyWorkChain(WorkChain):
    """Plain ``def`` steps calling calcfunctions (no submit, no ToContext)."""

    @classmethod
    def define(cls, spec: Any) -> None:
        super().define(spec)
        spec.input("x", valid_type=Int)
        spec.input("y", valid_type=Int)
        spec.input("z", valid_type=Int)
        spec.outline(cls.add, cls.multiply)
        spec.output("result", valid_type=Int)

    def add(self) -> None:
        self.ctx.sum = add_in_step(self.inputs.x, self.inputs.y)

    def multiply(self) -> None:
        self.out("result", multiply_in_step(self.ctx.sum, self.inputs.z))


def _children(node: Any) -> list[Any]:
    return sorted(node.called, key=lambda child: child.pk)


def test_calls_in_plain_steps_follow_the_block_the_workchain_is_launched_in(
    setup: dict[str, Any],
) -> None:
    BODIES.clear()

    def inputs() -> dict[str, Int]:
        return {"x": Int(1), "y": Int(2), "z": Int(3)}

    _, unhashed = run.get_node(AddMultiplyWorkChain, **inputs())  # caching off: no hash
    assert [c.base.caching.get_hash() for c in _children(unhashed)] == [None, None]
    with enable_caching():
        # the run made with caching off is no source (store_all_hashes is off): all runs again
        _, source = run.get_node(AddMultiplyWorkChain, **inputs())
        assert BODIES == ["add", "multiply"] * 2
        assert all(c.base.caching.get_hash() is not None for c in _children(source))
        result, node = run.get_node(AddMultiplyWorkChain, **inputs())
        _, direct = add_in_step.run_get_node(Int(1), Int(2))
    assert BODIES == ["add", "multiply"] * 2  # neither body ran in the block's last two runs
    assert result["result"].value == 9 and node.is_finished_ok
    sources = [c.base.caching.get_cache_source() for c in _children(node)]
    assert sources == [c.uuid for c in _children(source)]
    assert direct.base.caching.get_cache_source() is not None
    _, after = run.get_node(AddMultiplyWorkChain, **inputs())  # the block is over: runs again
    assert BODIES == ["add", "multiply"] * 3
    assert [c.base.caching.get_cache_source() for c in _children(after)] == [None, None]


def test_the_database_setting(setup: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    db = setup["db"]
    assert caching.get_caching_config(db=db) == caching.CachingConfig()
    assert not caching.get_use_cache(identifier=add_counted.process_type, db=db)
    bad_values: list[dict[str, Any]] = [
        {"default_enabled": "yes"},
        {"enabled_for": "a.b"},
        {"disabled_for": [""]},
        {"store_all_hashes": 1},
    ]
    for bad in bad_values:
        with pytest.raises(ValidationError, match="caching"):
            caching.set_caching_config(db=db, **bad)
    assert caching.get_caching_config(db=db) == caching.CachingConfig()  # nothing written
    config = caching.set_caching_config(enabled_for=["tests.*"], disabled_for=["*.x"], db=db)
    assert config == caching.CachingConfig(False, ("tests.*",), ("*.x",))
    assert caching.get_use_cache(identifier=add_counted.process_type, db=db)
    assert not caching.get_use_cache(identifier="tests.x", db=db)  # disabled wins
    assert not caching.get_use_cache(identifier="other.y", db=db)
    monkeypatch.setenv(caching.ENVIRONMENT_VARIABLE, "0")  # the environment replaces it
    assert not caching.get_use_cache(identifier=add_counted.process_type, db=db)
    monkeypatch.delenv(caching.ENVIRONMENT_VARIABLE)
    config = caching.set_caching_config(default_enabled=True, enabled_for=[], db=db)
    assert config == caching.CachingConfig(True, (), ("*.x",))
    assert caching.set_caching_config(store_all_hashes=True, db=db).store_all_hashes
    assert caching.get_use_cache(identifier="other.y", db=db)
    assert isinstance(ValidationError("x"), MiniengineError | ValueError)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the daemon uses pidfds")
def test_daemon_workers_follow_the_database_setting(setup: dict[str, Any]) -> None:
    from miniengine import await_node, submit
    from tests.workchains.daemon_chains import DaemonGuard

    caching.set_caching_config(enabled_for=IDENTIFIERS, db=setup["db"])
    with DaemonGuard(setup["db"]) as daemon:
        daemon.start("--workers", "1")
        first = submit(CachedJobsWorkChain, **_inputs(setup))
        await_node(first, timeout=60)
        source = load_node(first.pk)
        assert source.is_finished_ok, source.exit_status
        assert _ran(setup) == {"ran": 2, "calc": 1} and _uploads(setup) == 2
        second = submit(CachedJobsWorkChain, **_inputs(setup))
        await_node(second, timeout=60)
        node = load_node(second.pk)
    assert node.is_finished_ok and node.outputs.total.value == 19
    assert _ran(setup) == {"ran": 2, "calc": 1} and _uploads(setup) == 2
    before, after = _called(source), _called(node)
    for kind in ("job", "more", "calc"):
        assert after[kind].base.caching.get_cache_source() == before[kind].uuid, kind


def _cli(db: Any, *args: str) -> str:
    import subprocess

    from tests.workchains.daemon_chains import ROOT, python_env

    env = python_env()
    env.pop("MINIENGINE_DB", None)
    completed = subprocess.run(
        [sys.executable, "-m", "miniengine", *args, "--db", str(db)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return completed.stdout


@pytest.mark.sqlite_only  # (each command is a new interpreter; the API it calls runs on both)
def test_the_command_line_sets_caching_and_shows_hashes(setup: dict[str, Any]) -> None:
    import json

    db = setup["db"]
    _cli(db, "caching", "enable", "tests.workchains.*")
    _cli(db, "caching", "disable", "tests.workchains.caching_chains.add_counted")
    shown = json.loads(_cli(db, "caching", "show", "--json"))
    assert shown == {
        "caching.default_enabled": False,
        "caching.enabled_for": ["tests.workchains.*"],
        "caching.disabled_for": ["tests.workchains.caching_chains.add_counted"],
        "caching.store_all_hashes": False,
    }
    _, source = run.get_node(CachedJobsWorkChain, **_inputs(setup))
    _, node = run.get_node(CachedJobsWorkChain, **_inputs(setup))
    assert _ran(setup) == {"ran": 2, "calc": 2}  # the calcfunction is disabled
    job, calc = _called(node)["job"], _called(node)["calc"]
    fields = json.loads(_cli(db, "node", "show", str(job.pk), "--json"))
    assert fields["cache_source"] == _called(source)["job"].uuid
    assert fields["hash"] == job.base.caching.get_hash() is not None
    fields = json.loads(_cli(db, "node", "show", str(calc.pk), "--json"))
    assert fields["cache_source"] is None and fields["hash"] is None
    listed = json.loads(_cli(db, "process", "list", "--all", "--cached", "--json"))
    assert sorted(row["pk"] for row in listed) == sorted(c.pk for c in (job, _called(node)["more"]))
    text = _cli(db, "node", "show", str(job.pk))
    assert f"cache_source   {_called(source)['job'].uuid}" in text.splitlines()
    _cli(db, "caching", "disable")
    assert "caching.default_enabled   false" in _cli(db, "caching", "show").splitlines()
    assert json.loads(_cli(db, "caching", "show", "--json"))["caching.enabled_for"] == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the daemon uses pidfds")
@pytest.mark.long_on("postgresql")
def test_killing_a_workchain_with_a_cached_child(setup: dict[str, Any], tmp_path: Path) -> None:
    from miniengine import await_node, submit
    from miniengine.control import kill
    from tests.workchains.caching_chains import OPTIONS, CachedAndGatedWorkChain
    from tests.workchains.daemon_chains import DaemonGuard, wait_until

    inputs = _inputs(setup)
    caching.set_caching_config(enabled_for=IDENTIFIERS, db=setup["db"])
    _, source = run.get_node(
        ArithmeticAddCalculation,
        code=inputs["code"],
        x=inputs["x"],
        y=inputs["y"],
        counter=inputs["counter"],
        metadata={"options": OPTIONS},
    )
    gate = tmp_path / "gate"  # never opened: the second job waits until it is killed
    with DaemonGuard(setup["db"]) as daemon:
        daemon.start("--workers", "1")
        node = submit(CachedAndGatedWorkChain, gate=Str(str(gate)), **inputs)
        wait_until(lambda: _ran(setup)["ran"] == 2, 60, "the gated job to start")
        assert kill(node, wait=True, timeout=60).confirmed
        await_node(node, timeout=60)
        # The waiting workchain is killed in the database at once; the gated job, which the
        # worker may still hold, is asked to die: wait for it before the daemon stops, or a
        # request still pending at the stop leaves it to the next daemon.
        for child in load_node(node.pk).called:
            await_node(child, timeout=60)
    node = load_node(node.pk)
    assert node.process_state.value == "killed"
    jobs = sorted(node.called, key=lambda child: child.pk)
    assert [job.process_state.value for job in jobs] == ["finished", "killed"]
    assert jobs[0].base.caching.get_cache_source() == source.uuid
    assert _ran(setup) == {"ran": 2}  # the source and the gated job; the copy ran nothing
