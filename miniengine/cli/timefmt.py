"""Times for people and scripts: ages (``5m ago``), ISO 8601, and ``--past 1d`` durations."""

from __future__ import annotations

import argparse
import datetime
import re

__all__ = ["age", "iso_local", "iso_utc", "parse_duration", "report_time"]

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}
_DURATION = re.compile(r"\s*(\d+(?:\.\d*)?)\s*([smhdw]?)\s*", re.IGNORECASE)


def parse_duration(text: str) -> float:
    """Seconds in ``30m``, ``2h``, ``1d``, ``7d``, ``1w`` or ``45s``; a bare number is days,
    as ``verdi process list --past-days``.  An argparse ``type``: bad input is a usage error."""
    match = _DURATION.fullmatch(text)
    if match is None:
        raise argparse.ArgumentTypeError(
            f"expected a duration such as 30m, 2h, 1d or 7d (s, m, h, d, w), not {text!r}"
        )
    number, unit = match.groups()
    return float(number) * _UNITS[(unit or "d").lower()]


def age(seconds: float) -> str:
    """How long ago, in the largest whole unit: ``12s ago``, ``5m ago``, ``3h ago``, ``2d ago``."""
    seconds = max(seconds, 0.0)
    if seconds < 60:
        return f"{int(seconds)}s ago"
    if seconds < 3600:
        return f"{int(seconds // 60)}m ago"
    if seconds < 86400:
        return f"{int(seconds // 3600)}h ago"
    return f"{int(seconds // 86400)}d ago"


def iso_utc(timestamp: float) -> str:
    """ISO 8601 in UTC with microseconds, for JSON: ``2026-11-27T05:06:11.123456+00:00``."""
    return datetime.datetime.fromtimestamp(timestamp, tz=datetime.UTC).isoformat()


def iso_local(timestamp: float) -> str:
    """ISO 8601 in local time to the second, with the offset, for people."""
    moment = datetime.datetime.fromtimestamp(timestamp).astimezone()
    return moment.isoformat(sep=" ", timespec="seconds")


def report_time(timestamp: float) -> str:
    """Local time to the second, as ``verdi process report`` prints it."""
    return datetime.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")
