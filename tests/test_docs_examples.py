"""The documentation's examples run as written (see tests/docs_examples.py for how a page's
blocks run and how a block is marked), and the documentation speaks for itself."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.docs_examples import ROOT, Block, Page, missing_lines, pages, parse

BLOCKS: list[Block] = [block for page in pages() for block in parse(page) if block.runs]
LAST_OF_PAGE = {block.page: block for block in BLOCKS if block.skip_reason is None}


@pytest.fixture(scope="module")
def page_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[Path, Page]]:
    """The run of each page, created at its first block; every daemon is stopped at the end."""
    runs: dict[Path, Page] = {}
    yield runs
    for run in runs.values():
        run.close()


@pytest.mark.parametrize("block", BLOCKS, ids=[block.id for block in BLOCKS])
def test_example_runs(
    block: Block, page_runs: dict[Path, Page], tmp_path_factory: pytest.TempPathFactory
) -> None:
    if block.skip_reason is not None:
        pytest.skip(f"{block.id}: {block.skip_reason}")
    run = page_runs.get(block.page)
    if run is None:
        folder = tmp_path_factory.mktemp(re.sub(r"\W+", "-", block.page.stem))
        run = page_runs[block.page] = Page(block.page, folder)
    try:
        run.run(block)
    finally:
        if LAST_OF_PAGE.get(block.page) is block:
            run.close()


def test_every_skipped_block_says_why() -> None:
    unexplained = [block.id for block in BLOCKS if block.skip_reason == "marked skip"]
    assert not unexplained, f"say why each block is skipped: {unexplained}"


# The documentation speaks for itself: no references to files or documents a reader does not have.
FORBIDDEN = [
    (re.compile(r"\.\./shared\b"), "a path outside the repository"),
    (re.compile(r"\bDESIGN\.md\b"), "a document that is not published"),
    (re.compile(r"\bthe seed\b|\bseed's\b", re.I), "the seed"),
    (
        re.compile(r"\b(issues?|tickets?|bugs?|PR|pull request)\s*#?\d+\b|\(#\d+\)|\bgh-\d+", re.I),
        "an issue number",
    ),
]


def documents() -> list[Path]:
    return [*pages(), *sorted((ROOT / "docs" / "reference").glob("*.md"))]


@pytest.mark.parametrize("path", documents(), ids=lambda path: str(path.relative_to(ROOT)))
def test_the_documentation_speaks_for_itself(path: Path) -> None:
    found = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        for pattern, what in FORBIDDEN:
            match = pattern.search(line)
            if match:
                found.append(f"{path.relative_to(ROOT)}:{number}: {what}: {match.group(0)!r}")
    assert not found, "\n".join(found)


def test_the_reference_pages_are_up_to_date() -> None:
    """docs/reference/ is generated from the code (``python docs/gen_reference.py``)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "gen_reference", ROOT / "docs" / "gen_reference.py"
    )
    assert spec is not None and spec.loader is not None
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    stale = [
        str(path.relative_to(ROOT))
        for path, text in generator.pages().items()
        if not path.exists() or path.read_text() != text.rstrip("\n") + "\n"
    ]
    assert not stale, f"out of date, run python docs/gen_reference.py: {stale}"


def test_the_loose_comparison_masks_what_changes_and_keeps_the_rest() -> None:
    shown = """PK  Age     Label  State
--  ------  -----  ------------
 7  0s ago  add    Finished [0]
daemon pid 8299 (ready) for /home/you/tutorial/tutorial.sqlite
2026-12-05 20:18:48 [REPORT] [48|AddMany|add_once]: turn 1: total is 1
..."""
    actual = """PK   Age      Label  State
---  -------  -----  ------------
123  12s ago  add    Finished [0]
daemon pid 4 (ready) for /tmp/pytest-of-x/engine.sqlite
2026-01-01 00:00:00 [REPORT] [5|AddMany|add_once]: turn 1: total is 1
and more"""
    assert missing_lines(shown, actual) == []
    assert missing_lines("$ 7  0s ago  add    Excepted", actual) != []
    assert missing_lines("and more\nPK Age", actual) == ["PK Age"]  # the order counts


def test_a_failing_block_fails(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "```python\nraise ValueError('wrong')\n```\n\n"
        "<!-- docs-test: fails -->\n```python\nraise ValueError('meant')\n```\n\n"
        "```console\n$ python -c 'print(\"one\")'\ntwo\n```\n"
    )
    failing, meant, wrong_output = parse(page)
    run = Page(page, tmp_path / "run")
    try:
        with pytest.raises(AssertionError, match="wrong"):
            run.run(failing)
        run.run(meant)
        with pytest.raises(AssertionError, match="lacks"):
            run.run(wrong_output)
    finally:
        run.close()
