"""Hold the write lock of the database file named by argv[1] until told to release it.

Prints ``LOCKED`` once a ``BEGIN IMMEDIATE`` transaction is open (with one log row inserted),
waits for a line on stdin, commits, and prints ``RELEASED``.  A plain sqlite3 connection in
another OS process: exactly what a second client or a daemon worker looks like to the store.
"""

from __future__ import annotations

import sqlite3
import sys
import time


def main() -> None:
    connection = sqlite3.connect(sys.argv[1], isolation_level=None)
    connection.execute("BEGIN IMMEDIATE")
    connection.execute(
        "INSERT INTO logs (node_pk, time, levelname, message) VALUES (0, ?, 'REPORT', ?)",
        (time.time(), "written by the lock holder"),
    )
    print("LOCKED", flush=True)
    sys.stdin.readline()
    connection.execute("COMMIT")
    connection.close()
    print("RELEASED", flush=True)


if __name__ == "__main__":
    main()
