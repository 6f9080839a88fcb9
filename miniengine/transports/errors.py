"""Errors of transport plugins: miniengine's tree and the ``OSError`` AiiDA's transports raise."""

from __future__ import annotations

from miniengine.exceptions import MiniengineError

__all__ = ["TransportError", "TransportFileNotFoundError"]


class TransportError(MiniengineError, OSError):
    """A computer could not be reached, or a file or command operation on it failed."""


class TransportFileNotFoundError(TransportError, FileNotFoundError):
    """A path on the computer (or a local source of an upload) does not exist."""
