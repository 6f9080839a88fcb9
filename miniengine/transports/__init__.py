"""Transport plugins: reach a computer's files and shell, locally or over SSH.

``core.local`` and ``core.ssh`` ship with miniengine (``core.ssh`` needs the ``ssh`` extra);
others are found by the entry point group ``miniengine.transports`` or a class path.  A worker
shares one open transport per computer among all its jobs (:class:`TransportPool`).
"""

from __future__ import annotations

from miniengine.transports.errors import TransportError, TransportFileNotFoundError
from miniengine.transports.plugins import TransportFactory
from miniengine.transports.pool import TransportPool
from miniengine.transports.transport import AuthParam, CommandResult, Transport

__all__ = [
    "AuthParam",
    "CommandResult",
    "Transport",
    "TransportError",
    "TransportFactory",
    "TransportFileNotFoundError",
    "TransportPool",
]
