"""One atomic write of a backend, usable from a plain thread and from an event loop."""

from __future__ import annotations

from typing import ParamSpec, Protocol, TypeVar

__all__ = ["Transaction"]

P = ParamSpec("P")
R_co = TypeVar("R_co", covariant=True)


class Transaction(Protocol[P, R_co]):
    """A named write: ``tx(*args)`` commits in this thread, ``await tx.aio(*args)`` on a loop.

    The two forms exist because a process lifecycle is driven either in a plain thread (a
    script, or a worker thread running a ``def`` step) or by a coroutine, and both must commit
    the same transaction.  Each call is one transaction: it either commits whole or raises.
    """

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R_co: ...

    async def aio(self, *args: P.args, **kwargs: P.kwargs) -> R_co: ...

    def deferring_interrupt(
        self, *args: P.args, **kwargs: P.kwargs
    ) -> tuple[R_co, KeyboardInterrupt | None]:
        """Call it, but a Ctrl-C that lands just after the commit is returned with the result
        instead of raised, so the caller learns what was committed."""
        ...

    def within(self, busy_seconds: float, *args: P.args, **kwargs: P.kwargs) -> R_co:
        """Call it, waiting at most ``busy_seconds`` for another writer (then
        ``DatabaseLockedError``): for a caller with other duties, such as the supervisor,
        which tries again later rather than wait the default patience."""
        ...
