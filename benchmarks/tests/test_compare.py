"""``--compare aiida`` without aiida: a fake interpreter stands in for an AiiDA environment.

Run with ``python -m pytest benchmarks/tests`` (the project's ``testpaths`` is ``tests``).
"""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import pytest

from benchmarks import __main__ as cli
from benchmarks.compare import PEERS, compare, format_comparison, problem_with, recorded
from benchmarks.registry import Metric, Target, Workload
from benchmarks.runner import MetricResult, WorkloadResult
from benchmarks.workloads import select

#: What the fake "AiiDA" prints per workload: the peer script's JSON fields.
FAKE_OUTPUT = {
    "w1": {"per_s": 4.0, "n": 10},
    "w2": {"per_s": 1.25, "n": 5},
    "w3": {"per_s": 0.5, "n": 2},
    "w4": {"depth": 10, "wall_s": 10.0, "ok": True, "error": None},
}


def fake_python(tmp_path: Path, *, fail: str | None = None) -> Path:
    """An executable that behaves like ``python workloads.py wN ...`` of peers/aiida."""
    log = tmp_path / "calls.log"
    script = tmp_path / "fake-python"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, sys\n"
        f"outputs = {json.dumps(FAKE_OUTPUT)!r}\n"
        f"with open({str(log)!r}, 'a') as f: f.write(' '.join(sys.argv[1:]) + '\\n')\n"
        "workload = sys.argv[2]\n"
        f"if workload == {fail!r}:\n"
        "    sys.stderr.write('ModuleNotFoundError: No module named aiida\\n'); sys.exit(1)\n"
        "print('some warning line')\n"
        "print(json.dumps(json.loads(outputs)[workload]))\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def peer_script(tmp_path: Path) -> Path:
    path = tmp_path / "workloads.py"
    path.write_text("# stands in for peers/aiida/workloads.py\n")
    return path


def result(workload_id: str, value: float) -> WorkloadResult:
    (workload,) = select(workload_id)
    metric = workload.metrics[0]
    return WorkloadResult(workload, metrics=[MetricResult(metric, [value])])


def test_ratios_from_a_fake_interpreter(tmp_path: Path) -> None:
    python = fake_python(tmp_path)
    results = [result("W1", 2000.0), result("W2", 800.0), result("W3", 150.0), result("W4", 20.0)]
    comparisons = compare(results, str(python), script=peer_script(tmp_path), quick=True)
    by_id = {c.peer.workload: c for c in comparisons}
    assert set(by_id) == {"W1", "W2", "W3", "W4"}
    assert by_id["W1"].theirs == 4.0 and by_id["W1"].ratio == pytest.approx(500)
    assert by_id["W3"].ratio == pytest.approx(300)
    # W4 is a time: AiiDA's 10 s in ms, and the ratio is theirs over ours
    assert by_id["W4"].theirs == pytest.approx(10_000) and by_id["W4"].ratio == pytest.approx(500)
    table = format_comparison(comparisons)
    assert "x500 faster" in table and "x300 faster" in table
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert calls[0].endswith("workloads.py " + " ".join(PEERS[0].quick_args))
    assert any("w4 --depth 10" in call for call in calls)


def test_only_the_workloads_that_ran_are_compared(tmp_path: Path) -> None:
    python = fake_python(tmp_path)
    skipped = result("W2", 1.0)
    skipped.status = "skipped"
    comparisons = compare(
        [result("W1", 2000.0), skipped], str(python), script=peer_script(tmp_path)
    )
    assert [c.peer.workload for c in comparisons] == ["W1"]


def test_a_failing_peer_workload_is_reported_not_raised(tmp_path: Path) -> None:
    python = fake_python(tmp_path, fail="w1")
    comparisons = compare(
        [result("W1", 2000.0), result("W4", 20.0)], str(python), script=peer_script(tmp_path)
    )
    w1, w4 = comparisons
    assert w1.theirs is None and w1.ratio is None and "No module named aiida" in (w1.error or "")
    assert w4.ratio == pytest.approx(500)
    assert "failed: exited 1" in format_comparison(comparisons)


def test_problems_that_stop_the_comparison(tmp_path: Path) -> None:
    script = peer_script(tmp_path)
    assert "no such file" in (problem_with(str(tmp_path / "nope" / "python"), script) or "")
    assert "needs --aiida-python" in (problem_with(None, script) or "")
    assert "not an executable" in (problem_with(str(script), script) or "")
    python = fake_python(tmp_path)
    assert "is missing" in (problem_with(str(python), tmp_path / "missing.py") or "")
    assert problem_with(str(python), script) is None


def test_the_suite_goes_on_without_a_missing_interpreter(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli, "RESULTS_DIR", tmp_path)
    code = cli.main(
        ["--only", "checkpoint", "--quick", "--compare", "aiida", "--aiida-python", "/no/python"]
    )
    captured = capsys.readouterr()
    assert code == 0
    assert "[aiida] no comparison: --aiida-python /no/python: no such file" in captured.err
    assert "checkpoint encode + decode" in captured.out


def test_the_suite_prints_the_ratios_with_a_fake_interpreter(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli, "RESULTS_DIR", tmp_path)
    python = fake_python(tmp_path)
    code = cli.main(
        [
            "--only",
            "W4",
            "--quick",
            "--compare",
            "aiida",
            "--aiida-python",
            str(python),
            "--aiida-script",
            str(peer_script(tmp_path)),
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "Side by side with AiiDA, measured in this run" in captured.out
    assert "faster" in captured.out
    (document,) = [json.loads(p.read_text()) for p in tmp_path.glob("2*.json")]
    (row,) = document["compare_aiida"]
    assert row["workload"] == "W4" and row["aiida"] == pytest.approx(10_000)


def test_a_zero_target_has_a_shortfall_and_a_distance() -> None:
    target = Target("<=", 0)
    assert target.holds(0) and not target.holds(3)
    assert target.shortfall(3) == 3 and target.shortfall(0) == 0
    assert target.distance(0) == 1.0 and target.distance(3) > 1.0
    assert str(target) == "<= 0"


def test_a_growing_cost_is_flagged() -> None:
    from benchmarks.registry import Measurement, Scaling, Series
    from benchmarks.report import format_scaling, growing

    metrics = tuple(Metric(f"c@{n}", f"c at {n}", "µs") for n in (1, 10, 100))
    workload = Workload(
        id="fake",
        title="fake",
        metrics=metrics,
        measure=lambda params: Measurement({}),
        params={},
        quick_params={},
        scaling=Scaling(
            "size", (Series("cost", "µs", ((1, "c@1"), (10, "c@10"), (100, "c@100"))),)
        ),
    )
    flat = WorkloadResult(
        workload, metrics=[MetricResult(m, [v]) for m, v in zip(metrics, (9, 5, 6), strict=True)]
    )
    assert not growing([flat]) and "ok" in format_scaling([flat])
    steep = WorkloadResult(
        workload, metrics=[MetricResult(m, [v]) for m, v in zip(metrics, (5, 6, 30), strict=True)]
    )
    (curve,) = growing([steep])
    assert curve.growth == pytest.approx(6)
    assert "GROWS x6.0 (limit x2)" in format_scaling([steep])


def test_w8_is_shown_beside_aiidas_recorded_figures_without_an_interpreter(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (w8,) = select("W8")
    metrics = {metric.key: metric for metric in w8.metrics}
    ran = WorkloadResult(
        w8,
        metrics=[
            MetricResult(metrics["jobs_per_s"], [209.0]),
            MetricResult(metrics["worker_cpu_ms_per_job"], [4.86]),
            MetricResult(metrics["run_ms"], [9.6]),
        ],
    )
    comparisons = recorded([ran, result("W1", 2000.0)])
    assert [c.peer.metric for c in comparisons] == ["jobs_per_s", "worker_cpu_ms_per_job", "run_ms"]
    assert [round(c.ratio or 0) for c in comparisons] == [100, 100, 100]
    table = format_comparison(comparisons)
    assert "(recorded 2026-12-05)" in table and "x100 faster" in table

    # the suite shows them even when no AiiDA interpreter is there
    monkeypatch.setattr(cli, "RESULTS_DIR", tmp_path)
    monkeypatch.setattr(cli, "run_workload", lambda workload, **_: ran)
    code = cli.main(["--only", "W8", "--compare", "aiida", "--aiida-python", "/no/python"])
    captured = capsys.readouterr()
    assert code == 0
    assert "no such file" in captured.err
    assert "W8 one CalcJob in run mode" in captured.out and "x100 faster" in captured.out


def test_two_backends_share_one_table_with_a_column_each() -> None:
    from benchmarks.report import format_table

    (w1,) = select("W1")
    (w8,) = select("W8")
    metric = w1.metrics[0]
    results = [
        WorkloadResult(w1, "sqlite", metrics=[MetricResult(metric, [2500.0, 2400.0])]),
        WorkloadResult(w1, "postgresql", metrics=[MetricResult(metric, [500.0])]),
        WorkloadResult(w8, "sqlite", status="crashed", message="boom"),
        WorkloadResult(w8, "postgresql", status="skipped", message="measured on sqlite only"),
    ]
    header, _, row, failed = format_table(results).splitlines()
    dash = "\u2013"
    assert header.split()[2:6] == ["sqlite", f"min{dash}max", "postgresql", f"min{dash}max"]
    assert "2,450" in row and f"2,400{dash}2,500" in row and f"500{dash}500" in row
    assert "sqlite ok, postgresql MISSED by 75%" in row
    # a workload that runs on sqlite only has no PostgreSQL note, its own failure has one
    assert failed.startswith("W8 ") and failed.endswith("sqlite: CRASHED: boom")
