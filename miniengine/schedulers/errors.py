"""Errors of scheduler plugins, in miniengine's exception tree under AiiDA's names."""

from __future__ import annotations

from miniengine.exceptions import MiniengineError

__all__ = ["SchedulerError", "SchedulerParsingError", "SubmissionRefusedError"]


class SchedulerError(MiniengineError):
    """A scheduler command failed (non-zero exit, or output that says it refused)."""


class SchedulerParsingError(SchedulerError):
    """A scheduler's output could not be understood (an unknown format or a cut-off line)."""


class SubmissionRefusedError(SchedulerError):
    """The scheduler refused the job for a reason that is the job's own (an invalid account);
    ``exit_code_label`` names the CalcJob exit code that reports it."""

    def __init__(self, message: str, exit_code_label: str) -> None:
        super().__init__(message)
        self.exit_code_label = exit_code_label
