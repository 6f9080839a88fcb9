"""``aiida.common.datastructures``: what ``prepare_for_submission`` returns."""

from __future__ import annotations

from miniengine.core.calcinfo import (
    CalcInfo,
    CalcJobState,
    CodeInfo,
    CodeRunMode,
    FileCopyOperation,
)

__all__ = ["CalcInfo", "CalcJobState", "CodeInfo", "CodeRunMode", "FileCopyOperation"]
