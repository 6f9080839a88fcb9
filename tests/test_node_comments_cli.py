"""``miniengine node comment add|show|update|remove`` on both backends, against the comments that
``node.base.comments`` reads and writes in Python."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from miniengine import Int, load_node

pytestmark = pytest.mark.backends


def _cli(db: Path | str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "miniengine", "node", "comment", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "MINIENGINE_DB": str(db)},
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def test_comments_from_the_command_line(miniengine_db: Path | str) -> None:
    node = Int(7).store()
    first = node.base.comments.add("from Python")
    added = _cli(miniengine_db, "add", node.uuid[:8], "from the\ncommand line")
    assert added.returncode == 0, added.stderr
    (second,) = [c for c in load_node(node.pk).base.comments.all() if c.pk != first.pk]
    assert added.stdout.strip() == f"added comment {second.pk} to node {node.pk}"
    assert second.content == "from the\ncommand line"

    shown = _cli(miniengine_db, "show", str(node.pk), "--json")
    assert shown.returncode == 0, shown.stderr
    rows = json.loads(shown.stdout)
    assert [(r["pk"], r["node"], r["content"]) for r in rows] == [
        (first.pk, node.pk, "from Python"),
        (second.pk, node.pk, "from the\ncommand line"),
    ]
    assert rows[0]["uuid"] == first.uuid

    updated = _cli(miniengine_db, "update", str(first.pk), "changed")
    assert updated.returncode == 0 and updated.stdout.strip() == f"updated comment {first.pk}"
    refused = _cli(miniengine_db, "remove", str(second.pk))  # no terminal to ask on
    assert refused.returncode != 0 and "pass -f" in refused.stderr
    removed = _cli(miniengine_db, "remove", "-f", str(second.pk))
    assert removed.returncode == 0 and removed.stdout.strip() == f"removed comment {second.pk}"
    assert [c.content for c in load_node(node.pk).base.comments.all()] == ["changed"]

    shown = _cli(miniengine_db, "show", str(node.pk))
    lines = shown.stdout.splitlines()
    assert (
        lines[0].startswith(f"comment {first.pk} on node {node.pk}, ") and ", changed" in lines[0]
    )
    assert lines[1:] == ["changed"]

    missing = _cli(miniengine_db, "remove", "-f", str(second.pk))
    assert missing.returncode != 0 and f"no comment with the id {second.pk}" in missing.stderr
    empty = _cli(miniengine_db, "add", str(node.pk), "  ")
    assert empty.returncode != 0 and "the comment is empty" in empty.stderr
    assert len(load_node(node.pk).base.comments.all()) == 1  # nothing written by the refusals
