"""The process list's filters, read from a request's query string and checked before any read.

The same filters select the rows of a page, the rows of ``/api/processes`` and the changes an
event stream sends, so a live row is one that a reload would show.  Times are ISO 8601 (a time
without a zone is UTC, as the pages show them) or an age such as ``30m``, ``2h``, ``1d``.
"""

from __future__ import annotations

import datetime
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from miniengine.core.states import ProcessState
from miniengine.exceptions import MiniengineError

if TYPE_CHECKING:
    from miniengine.storage.interfaces.reads import ProcessSummary

__all__ = ["BadRequest", "ProcessFilters", "parse_filters", "parse_pk"]

_AGE = re.compile(r"(\d+(?:\.\d*)?)([smhdw])", re.IGNORECASE)
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}
_STATES = tuple(state.value for state in ProcessState)
_LONGEST_AGE = 10_000 * 365.25 * 86400.0
#: Longest label or group filter taken (a longer one is a mistake, not a search).
MAX_TEXT = 200


class BadRequest(MiniengineError, ValueError):
    """A request the server cannot answer as asked (a bad filter, pk or depth): 400."""


@dataclass(frozen=True)
class ProcessFilters:
    """Which processes a list shows: states (any of), label (substring, any case), group
    (its label), and a creation time from ``since`` (included) to ``until`` (excluded), in
    seconds since the epoch."""

    states: tuple[str, ...] = ()
    label: str = ""
    group: str = ""
    since: float | None = None
    until: float | None = None
    #: the filters as they were written, for links and the event stream's URL
    raw: tuple[tuple[str, str], ...] = ()

    def matches(self, summary: ProcessSummary) -> bool:
        """Whether a process passes every filter but the group (which needs a read)."""
        if self.states and summary.process_state not in self.states:
            return False
        if self.label and self.label.casefold() not in (summary.process_label or "").casefold():
            return False
        if self.since is not None and summary.ctime < self.since:
            return False
        return self.until is None or summary.ctime < self.until

    def query(self, **more: str | int) -> str:
        """The query string of these filters (and ``more``), for links."""
        pairs = [*self.raw, *((key, str(value)) for key, value in more.items())]
        return urlencode(pairs)


def _time(name: str, text: str) -> float:
    text = text.strip()
    match = _AGE.fullmatch(text)
    if match is not None:
        seconds = float(match.group(1)) * _UNITS[match.group(2).lower()]
        if seconds > _LONGEST_AGE:
            raise BadRequest(f"{name}: an age of at most 10,000 years, not {text[:40]!r}")
        return time.time() - seconds
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise BadRequest(
            f"{name}: expected an ISO 8601 time (2026-12-05T10:00) or an age (30m, 2h, 1d), "
            f"not {text!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


def parse_filters(params: Mapping[str, str], states: list[str]) -> ProcessFilters:
    """The filters in a query string (``states``: every ``state`` value given); ``BadRequest``
    naming the first bad one."""
    chosen: list[str] = []
    for value in states:
        for item in value.split(","):
            item = item.strip().lower()
            if not item:
                continue
            if item not in _STATES:
                raise BadRequest(f"state: {item!r} is not one of {', '.join(_STATES)}")
            if item not in chosen:
                chosen.append(item)
    label = params.get("label", "").strip()
    group = params.get("group", "").strip()
    for name, text in (("label", label), ("group", group)):
        if len(text) > MAX_TEXT:
            raise BadRequest(f"{name}: longer than {MAX_TEXT} characters")
        if "\x00" in text:
            raise BadRequest(f"{name}: contains a NUL character")
    since_text = params.get("since", "").strip()
    until_text = params.get("until", "").strip()
    since = _time("since", since_text) if since_text else None
    until = _time("until", until_text) if until_text else None
    raw = [("state", state) for state in chosen]
    raw += [(k, v) for k, v in (("label", label), ("group", group)) if v]
    raw += [(k, v) for k, v in (("since", since_text), ("until", until_text)) if v]
    return ProcessFilters(tuple(chosen), label, group, since, until, tuple(raw))


def parse_pk(name: str, text: str | None) -> int | None:
    """A positive integer from the query string (None when absent); ``BadRequest`` otherwise."""
    if text is None or text == "":
        return None
    if not text.isdigit() or len(text) > 18:
        raise BadRequest(f"{name}: expected a positive integer, not {text[:40]!r}")
    return int(text)
