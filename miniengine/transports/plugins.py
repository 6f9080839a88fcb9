"""Finding a transport plugin: ``core.local``, ``core.ssh``, an entry point or a class path."""

from __future__ import annotations

from miniengine.plugins import load_plugin
from miniengine.transports.transport import Transport

__all__ = ["ENTRY_POINT_GROUP", "TransportFactory"]

#: The entry point group where packages register transport plugins.
ENTRY_POINT_GROUP = "miniengine.transports"

_BUILT_IN = {
    "core.local": "miniengine.transports.local:LocalTransport",
    "core.ssh": "miniengine.transports.ssh:SshTransport",
}


def TransportFactory(name: str) -> type[Transport]:
    """The transport class named ``name``."""
    return load_plugin(ENTRY_POINT_GROUP, name, _BUILT_IN, Transport)  # type: ignore[type-abstract]
