"""``self.logger`` of a process: a ``logging.Logger``-like object that writes to the node's log.

AiiDA users log from steps with ``self.logger.warning(...)`` and read the lines back with
``verdi process report``.  Here a record at the logger's level or above becomes a line of the
node's log with its own level name and the time of the call, written with the commit of the step
that made it (so it is fenced by the lease like every other write of the process).  The level is
``REPORT`` by default, AiiDA's default for what reaches the database (``logging.db_loglevel``):
``info`` and ``debug`` are not kept unless ``self.logger.setLevel(logging.INFO)`` asks for them.
Every record also goes to the Python logger ``miniengine.process`` (the daemon's log, or whatever
the application configured), filtered by that logger's own level.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

__all__ = ["REPORT", "ProcessLogger"]

#: The level of ``self.report()``, between INFO and WARNING, as in AiiDA.
REPORT = 23
logging.addLevelName(REPORT, "REPORT")

#: The Python logger every process record goes to as well.
PYTHON_LOGGER = logging.getLogger("miniengine.process")


class ProcessLogger(logging.LoggerAdapter[logging.Logger]):
    """The logger of one running process; ``sink(levelname, message)`` keeps a line for the
    node's log (the process writes it with its next commit)."""

    def __init__(self, sink: Callable[[str, str], None], pk: int | None, label: str) -> None:
        super().__init__(PYTHON_LOGGER, {"process_pk": pk, "process_label": label})
        self._sink = sink
        self._node_level = REPORT

    def setLevel(self, level: int | str) -> None:
        """The lowest level kept in the node's log (the Python logger keeps its own level)."""
        if isinstance(level, str):
            number = logging.getLevelName(level.upper())
            if not isinstance(number, int):
                raise ValueError(f"unknown logging level {level!r}")
            level = number
        self._node_level = level

    def getEffectiveLevel(self) -> int:
        return min(self._node_level, self.logger.getEffectiveLevel())

    def isEnabledFor(self, level: int) -> bool:
        return level >= self._node_level or self.logger.isEnabledFor(level)

    def report(self, msg: object, *args: object, **kwargs: Any) -> None:
        """Log at ``REPORT``, as AiiDA's ``logger.report``."""
        self.log(REPORT, msg, *args, **kwargs)

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if not isinstance(level, int):
            raise TypeError("level must be an integer")
        if level >= self._node_level:
            self._sink(logging.getLevelName(level), _message(msg, args, kwargs))
        if self.logger.isEnabledFor(level):
            msg, processed = self.process(msg, kwargs)
            processed["stacklevel"] = processed.get("stacklevel", 1) + 1  # the caller, not here
            self.logger.log(level, msg, *args, **processed)

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        """Add the process's pk and label to the record's ``extra`` (the caller's win)."""
        extra = kwargs.get("extra")
        own = dict(self.extra or {})
        kwargs["extra"] = {**own, **extra} if isinstance(extra, Mapping) else own
        return msg, kwargs


def _message(msg: object, args: tuple[object, ...], kwargs: Mapping[str, Any]) -> str:
    """The text of a record as ``logging`` would render it, with its traceback if any."""
    record = logging.LogRecord(PYTHON_LOGGER.name, 0, "", 0, msg, args or None, None)
    text = record.getMessage()
    exc_info = kwargs.get("exc_info")
    if exc_info:
        if isinstance(exc_info, BaseException):
            exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
        elif not isinstance(exc_info, tuple):
            exc_info = sys.exc_info()
        if exc_info[0] is not None:
            text = f"{text}\n{logging.Formatter().formatException(exc_info)}"
    return text
