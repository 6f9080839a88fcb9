"""The name of the host this process runs on, as workers and leases record it.

A worker's identity includes its host, so that ``daemon status`` and ``process show`` can say
which machine runs what when daemons on several machines share one PostgreSQL database.  It is
the machine's hostname; ``$MINIENGINE_HOST`` overrides it (several "hosts" simulated on one
machine, or a name clearer than the hostname).  The name is also a folder name (the daemon's
files of a PostgreSQL database live under ``~/.miniengine/daemons/<host>/``) and a part of
worker ids (``worker:<host>:<pid>:...``), so it is refused if it could not be either.
"""

from __future__ import annotations

import os
import re
import socket

from miniengine.exceptions import StoreError

__all__ = ["HOST_ENV_VAR", "current_host"]

HOST_ENV_VAR = "MINIENGINE_HOST"

#: ASCII letters, digits, ``.``, ``-`` and ``_``, starting with a letter, a digit or ``_``: a
#: hostname, and a safe folder name (not hidden, and not read as an option on a command line).
_VALID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,252}$")


def current_host() -> str:
    """``$MINIENGINE_HOST`` if set, else the hostname (read each call: tests switch it)."""
    given = os.environ.get(HOST_ENV_VAR)
    if given:
        if not _VALID.match(given):
            raise StoreError(
                f"${HOST_ENV_VAR} is {given!r}: a host name has 1 to 253 ASCII letters, "
                "digits, '.', '-' or '_', and starts with a letter, a digit or '_'"
            )
        return given
    name = socket.gethostname()
    if _VALID.match(name):
        return name
    # not expected of a hostname, but it must still be a folder name and a part of an id
    return re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".-")[:253] or "localhost"
