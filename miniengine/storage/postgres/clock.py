"""Lease times on PostgreSQL are the server's clock, not the hosts'.

Hosts that share a database need not agree on the time: every statement that sets a lease's
expiry or compares one with "now" reads the server's clock (:data:`SERVER_NOW`), so a host whose
clock is off or jumps can neither take a live lease (its "now" is not consulted) nor keep one
past its timeout (the expiry it sets is the server's now plus the lease's length).

The interfaces pass an expiry as the caller's ``time.time() + timeout`` (one machine, one clock
on sqlite); :func:`lease_seconds` turns it back into the length of the lease, measured on the
same host's clock a moment later, so the length is right whatever that clock says.
"""

from __future__ import annotations

import time

__all__ = ["SERVER_NOW", "lease_seconds"]

#: The server's time in seconds since the epoch, as lease times are stored.  The start of the
#: current statement: one value within a statement (so an index can serve a comparison with
#: it), current at each statement of a transaction.
SERVER_NOW = "date_part('epoch', statement_timestamp())"


def lease_seconds(expires: float | None, now: float | None = None) -> float | None:
    """How long a lease that the caller's clock says ends at ``expires`` lasts from now
    (``now``: the caller's clock, read already), or ``None`` for no lease."""
    if expires is None:
        return None
    return expires - (time.time() if now is None else now)
