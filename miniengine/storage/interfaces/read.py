"""One read of a backend, usable from a plain thread and from an event loop that must go on."""

from __future__ import annotations

from typing import ParamSpec, Protocol, TypeVar

__all__ = ["Read"]

P = ParamSpec("P")
R_co = TypeVar("R_co", covariant=True)


class Read(Protocol[P, R_co]):
    """A named read: ``read(*args)`` answers in this thread, ``await read.aio(*args)`` on a loop.

    The awaited form is for the reads a worker's own loops make again and again (is work ready,
    are there kill or pause requests, which jobs to watch).  A worker embedded in an application
    runs them on the application's loop, so while a database server restarts or cannot be
    reached (a read waits up to 30 s for it), a read made in the loop's thread would stop
    everything else the application does.  On a server, ``aio`` sends the statement on the
    loop's async connection; on a local sqlite file it reads inline, since that read takes
    microseconds and never waits for a writer (WAL), and a hop to a thread would cost more than
    it saves.
    """

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R_co: ...

    async def aio(self, *args: P.args, **kwargs: P.kwargs) -> R_co: ...
