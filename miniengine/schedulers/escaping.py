"""Quoting for the shell lines of submit scripts."""

from __future__ import annotations

__all__ = ["escape_for_bash"]


def escape_for_bash(value: str | None, use_double_quotes: bool = False) -> str:
    """Quote ``value`` so that bash reads it as one word.

    Single quotes (the default) pass everything literally.  Double quotes let ``$VARIABLE`` and
    ``${VARIABLE}`` expand, which is what ``use_double_quotes`` on a code or computer asks for;
    backslashes, double quotes and backticks are still escaped, so a value can never end the quote
    or run a command.  ``None`` becomes the empty string (nothing on the line), as in AiiDA.
    """
    if value is None:
        return ""
    text = str(value)
    if use_double_quotes:
        for char in ("\\", '"', "`"):
            text = text.replace(char, "\\" + char)
        text = text.replace("$(", "\\$(")  # command substitution stays literal
        return f'"{text}"'
    return "'" + text.replace("'", "'\"'\"'") + "'"
