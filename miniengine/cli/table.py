"""Output: aligned tables and key/value blocks for people, JSON for scripts."""

from __future__ import annotations

import json
import sys
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from miniengine.cli.render import json_safe, printable

__all__ = ["emit", "format_pairs", "format_table", "json_array", "json_object"]


def format_table(
    headers: Sequence[str], rows: Iterable[Sequence[str]], *, right: Collection[int] = ()
) -> str:
    """Columns separated by two spaces under a line of dashes (tabulate's "simple" style);
    the columns numbered in ``right`` are right-aligned (numbers)."""
    table = [tuple(headers), *(tuple(map(printable, row)) for row in rows)]
    widths = [max(map(len, column)) for column in zip(*table, strict=True)]
    line = "  ".join(
        f"{{:{'>' if column in right else '<'}{width}}}" for column, width in enumerate(widths)
    ).format
    lines = [line(*row).rstrip() for row in table]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def format_pairs(pairs: Iterable[tuple[str, str]]) -> str:
    """``key  value`` lines with the values aligned."""
    items = [(printable(key), printable(value)) for key, value in pairs]
    width = max((len(key) for key, _ in items), default=0)
    return "\n".join(f"{key.ljust(width)}  {value}".rstrip() for key, value in items)


def json_array(objects: Iterable[Mapping[str, Any]]) -> str:
    """One JSON array with one object per line: valid JSON that ``grep`` and people can read
    too, and fast (the C encoder serialises each object)."""
    body = ",\n".join(json_safe(json.dumps(obj, ensure_ascii=False)) for obj in objects)
    return f"[\n{body}\n]" if body else "[]"


def json_object(obj: Mapping[str, Any]) -> str:
    return json_safe(json.dumps(obj, indent=2, ensure_ascii=False))


def emit(text: str) -> None:
    """Print ``text`` and a newline in one write, its control characters escaped (newlines and
    tabs excepted): what users wrote (labels, reports, values) never drives the terminal."""
    sys.stdout.write(printable(text, lines=True) + "\n")
