"""The events concern of a backend (see :mod:`miniengine.storage.interfaces`)."""

from __future__ import annotations

from typing import Protocol

__all__ = ["Events"]


class Events(Protocol):
    """What the code above storage may ask about events."""
