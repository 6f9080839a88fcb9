"""Open a store on the file named by argv[1] when told to, and write one transaction.

Used by the storage tests to race several OS processes opening the same new file: each process
prints ``READY`` once imported, waits for a line on stdin, then opens the store at once.
"""

from __future__ import annotations

import os
import sys

from miniengine.core.data import Int
from miniengine.storage.store import Store


def main() -> None:
    print("READY", flush=True)
    sys.stdin.readline()
    store = Store(sys.argv[1])
    try:
        pk = store.provenance.store_data(Int(os.getpid()))
    finally:
        store.close()
    print(f"OK {pk}", flush=True)


if __name__ == "__main__":
    main()
