"""Scheduler plugins: how a job's submit script is written and how its scheduler is asked.

``core.direct`` and ``core.slurm`` ship with miniengine; other plugins are found by the entry
point group ``miniengine.schedulers`` or by a dotted class path (``package.module:Class`` or
``package.module.Class``).  Plugins are pure: they build commands and parse their output, and a
transport runs the commands.
"""

from __future__ import annotations

from miniengine.schedulers.datastructures import (
    CodeRunMode,
    JobInfo,
    JobResource,
    JobState,
    JobTemplate,
    JobTemplateCodeInfo,
    NodeNumberJobResource,
)
from miniengine.schedulers.errors import (
    SchedulerError,
    SchedulerParsingError,
    SubmissionRefusedError,
)
from miniengine.schedulers.plugins import SchedulerFactory, load_scheduler
from miniengine.schedulers.scheduler import EXIT_STATUS_FILENAME, Scheduler, parse_exit_statuses

__all__ = [
    "EXIT_STATUS_FILENAME",
    "CodeRunMode",
    "JobInfo",
    "JobResource",
    "JobState",
    "JobTemplate",
    "JobTemplateCodeInfo",
    "NodeNumberJobResource",
    "Scheduler",
    "SchedulerError",
    "SchedulerFactory",
    "SchedulerParsingError",
    "SubmissionRefusedError",
    "load_scheduler",
    "parse_exit_statuses",
]
