"""The control concern of a backend (see :mod:`miniengine.storage.interfaces`)."""

from __future__ import annotations

from typing import Protocol

__all__ = ["Control"]


class Control(Protocol):
    """What the code above storage may ask about control."""
