"""The statement-count diff of ``python -m benchmarks.sql_trace`` on traces written by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.sql_trace import load, main, normalise


def test_values_are_folded_so_that_one_statement_counts_once() -> None:
    assert normalise("SELECT 1 FROM tasks WHERE status = 'ready' AND not_before <= 17.5") == (
        "SELECT N FROM tasks WHERE status = S AND not_before <= N"
    )
    assert normalise("INSERT INTO t VALUES (1, 'a''b', x'00ff', -2.5e-3)") == (
        "INSERT INTO t VALUES (..)"
    )


def _trace(folder: Path, role: str, pid: int, statements: list[list[object]]) -> None:
    folder.mkdir(exist_ok=True)
    data = {"role": role, "argv": [], "statements": statements, "transactions": {}}
    (folder / f"trace-{role}-{pid}.json").write_text(json.dumps(data))


def test_the_diff_names_each_statement_whose_count_changed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before, after = tmp_path / "before", tmp_path / "after"
    _trace(before, "worker", 1, [["PRAGMA data_version", "worker.py:_wait", 3]])
    _trace(before, "worker", 2, [["SELECT pk FROM nodes WHERE pk = 5", "a", 2]])
    _trace(after, "worker", 3, [["PRAGMA data_version", "worker.py:_wait", 5]])
    _trace(after, "worker", 4, [["SELECT pk FROM nodes WHERE pk = 7", "a", 2]])
    assert sum(load(after)["statements"]["worker"].values()) == 7
    assert main(["diff", str(before), str(after), "--sites"]) == 0
    out = capsys.readouterr().out
    assert "== worker: 5 -> 7 statements" in out
    assert "+2 (3 -> 5)  PRAGMA data_version" in out
    assert "SELECT pk FROM nodes" not in out  # the same statement with other values
