"""A script that launches with ``run`` and with ``arun`` (asyncio and uvloop), then ends.

Prints the result of each launch, the threads alive after its last launch, then ``LAST``.  After
it, the script runs the exit handlers the interpreter would run at exit, and prints the engine's
threads still alive then: for a prompt exit there must be nothing left for the interpreter to wait
for (no non-daemon thread, no engine thread that ignored being stopped).
"""

from __future__ import annotations

import asyncio
import atexit
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
    # What the interpreter does next anyway: it runs the exit handlers (they stop the engine's
    # threads and close its connections), then joins the non-daemon threads.
    atexit._run_exitfuncs()
    main_thread = threading.main_thread()
    others = [t for t in threading.enumerate() if t is not main_thread]
    print("LINGERING", json.dumps([t.name for t in others if not t.daemon]), flush=True)
    engine = [t.name for t in others if t.name.startswith("miniengine")]
    print("ENGINE_AFTER_EXIT_HANDLERS", json.dumps(engine), flush=True)


if __name__ == "__main__":
    main()
