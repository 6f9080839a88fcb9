"""Run a WorkChain in this process with a short lease, for the crash tests to SIGKILL.

``python -m tests.workchains.crash MODULE:CLASS DB X LOG`` runs ``CLASS(x=Int(X), log=Str(LOG))``
on the database ``DB`` with a short lease (:data:`LEASE_SECONDS`), so that after a SIGKILL another
process can take the WorkChain over quickly.  Prints ``DONE`` if it ever finishes.
"""

from __future__ import annotations

import asyncio
import os
import sys

from miniengine import Int, Str
from miniengine.runtime.workchain import import_process_class
from miniengine.runtime.workchain_launch import launch
from miniengine.storage.store import Store

#: The lease of this process's store: heartbeats every quarter of it, expiry soon after a kill.
#: ``$MINIENGINE_TEST_LEASE`` overrides it.
LEASE_SECONDS = 0.5
LEASE_VARIABLE = "MINIENGINE_TEST_LEASE"


def main(argv: list[str]) -> None:
    class_path, db, x, log = argv
    cls = import_process_class(class_path)
    store = Store(db, lease_timeout=float(os.environ.get(LEASE_VARIABLE, LEASE_SECONDS)))
    try:
        asyncio.run(launch(cls, {"x": Int(int(x)), "log": Str(log)}, db=store))
    finally:
        store.close()
    print("DONE", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
