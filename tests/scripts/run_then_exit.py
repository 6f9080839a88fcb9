"""A script that launches with ``run`` and with ``arun`` (asyncio and uvloop), then ends.

Prints the result of each launch, the threads alive after its last launch, then ``LAST``: the test
measures the time from that line to the exit of the process.  After it, the script waits (bounded)
for the non-daemon threads, as the interpreter would at exit, and prints those still alive.
"""

from __future__ import annotations

import asyncio
import json
import threading

import uvloop

from miniengine import Int, arun, calcfunction, run, workfunction


@calcfunction
def add(x: Int, y: Int) -> Int:
    return Int(x.value + y.value)


@calcfunction
def multiply(x: Int, y: Int) -> Int:
    return Int(x.value * y.value)


@workfunction
def add_and_multiply(x: Int, y: Int, z: Int) -> Int:
    result: Int = multiply(add(x, y), z)
    return result


def main() -> None:
    print("RESULT", run(add_and_multiply, 1, 2, 3).value, flush=True)
    print("RESULT", asyncio.run(arun(add_and_multiply, 1, 2, 3)).value, flush=True)
    print("RESULT", uvloop.run(arun(add_and_multiply, 1, 2, 3)).value, flush=True)
    alive = [(thread.name, thread.daemon) for thread in threading.enumerate()]
    print("THREADS", json.dumps(alive), flush=True)
    print("LAST", flush=True)
    # What the interpreter does next anyway (it joins non-daemon threads), but bounded and
    # reported: a thread still alive after this would keep a script from exiting.
    main_thread = threading.main_thread()
    others = [t for t in threading.enumerate() if t is not main_thread and not t.daemon]
    for thread in others:
        thread.join(timeout=2.0)
    print("LINGERING", json.dumps([t.name for t in others if t.is_alive()]), flush=True)


if __name__ == "__main__":
    main()
