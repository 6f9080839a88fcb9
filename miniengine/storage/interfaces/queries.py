"""The queries concern of a backend (see :mod:`miniengine.storage.interfaces`)."""

from __future__ import annotations

from typing import Protocol

__all__ = ["Queries"]


class Queries(Protocol):
    """What the code above storage may ask about queries."""
