"""``aiida.common.exceptions``: the errors AiiDA code catches, from miniengine's one tree."""

from __future__ import annotations

from miniengine.exceptions import (
    InputValidationError,
    InvalidOperation,
    ModificationNotAllowed,
    MultipleObjectsError,
    NotExistent,
    StoreError,
    ValidationError,
)
from miniengine.exceptions import MiniengineError as AiidaException
from miniengine.plugins import MissingEntryPointError

__all__ = [
    "AiidaException",
    "InputValidationError",
    "InvalidOperation",
    "MissingEntryPointError",
    "ModificationNotAllowed",
    "MultipleObjectsError",
    "NotExistent",
    "StoreError",
    "ValidationError",
]
