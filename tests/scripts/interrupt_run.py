"""Run a workfunction whose calcfunction blocks, to be interrupted with SIGINT by a test.

``sync``: ``run(parent)``; the calcfunction prints ``READY`` and sleeps (in the script's thread).
``async``: ``asyncio.run(arun(parent))`` with ``async def`` bodies; the calcfunction prints
``READY`` and awaits a long sleep.  The database is taken from ``$MINIENGINE_DB``.
"""

from __future__ import annotations

import asyncio
import sys
import time

from miniengine import Int, arun, calcfunction, run, workfunction


@calcfunction
def blocking_child(x: Int) -> Int:
    print("READY", flush=True)
    time.sleep(60)
    return Int(x.value + 1)


@workfunction
def blocking_parent(x: Int) -> Int:
    result: Int = blocking_child(x)
    return result


@calcfunction
async def waiting_child(x: Int) -> Int:
    print("READY", flush=True)
    await asyncio.sleep(60)
    return Int(x.value + 1)


@workfunction
async def waiting_parent(x: Int) -> Int:
    result: Int = await waiting_child.arun(x)
    return result


def main() -> None:
    if sys.argv[1] == "sync":
        run(blocking_parent, 1)
    else:
        asyncio.run(arun(waiting_parent, 1))
    print("NOT INTERRUPTED", flush=True)


if __name__ == "__main__":
    main()
