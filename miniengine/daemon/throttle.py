"""Log a recurring problem once per interval, not once per attempt.

A daemon retries what fails (a locked or full database, a pid file it cannot write) every few
milliseconds to seconds, for as long as the problem lasts; logging every attempt would bury the
log (tens of thousands of lines in seconds) and fill the disk that may be the problem.  Each
problem has a key: its first occurrence is logged, repeats within the interval are counted, and
the next line says how many there were.  When the problem goes away, one line says so.
"""

from __future__ import annotations

import logging
import time

__all__ = ["ThrottledLog"]


class ThrottledLog:
    """Warnings about recurring problems, at most one line per key and ``interval`` seconds."""

    def __init__(self, logger: logging.Logger, interval: float = 30.0) -> None:
        self.logger = logger
        self.interval = interval
        #: key -> (monotonic time of the last line, repeats since then)
        self._problems: dict[str, tuple[float, int]] = {}

    def problem(self, key: str, message: str, *, exc_info: bool = False) -> bool:
        """Report ``message`` unless ``key`` was reported less than ``interval`` s ago; True
        when a line was written."""
        now = time.monotonic()
        last = self._problems.get(key)
        if last is not None and now - last[0] < self.interval:
            self._problems[key] = (last[0], last[1] + 1)
            return False
        if last is not None and last[1]:
            message = f"{message} (repeated {last[1]} times in the last {now - last[0]:.0f} s)"
        self.logger.warning(message, exc_info=exc_info)
        self._problems[key] = (now, 0)
        return True

    def solved(self, key: str, message: str) -> None:
        """Say ``message`` once if ``key`` was a problem, and forget it."""
        if self._problems.pop(key, None) is not None:
            self.logger.info(message)

    def __contains__(self, key: str) -> bool:
        return key in self._problems
