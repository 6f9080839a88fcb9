"""Helpers the web workloads (WEB1-WEB3) share: ``miniengine web`` as a real subprocess (uvicorn,
the token read from the URL it prints), its CPU time and memory from ``/proc``, a client of its
event stream on a thread of its own, and a database of many processes filled by bulk SQL.

The clients are httpx's and send the token in the ``Authorization`` header, as a script would.
Everything that imports miniengine, httpx or the test services does it inside a function, so that
listing the workloads stays cheap.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

#: Labels, node types and the share of the processes in the filled database.
LABELS = (
    ("add", "process.calcfunction"),
    ("MultiplyAddWorkChain", "process.workchain"),
    ("NestedWorkChain", "process.workchain"),
    ("ArithmeticAddCalculation", "process.calcjob"),
)

# Every 4th node is a process (the others its Data nodes); among the processes one in 1,000 is
# excepted, one in 1,000 killed, one in 100 finished with a nonzero exit status.
_SQLITE_FILL = """
WITH RECURSIVE series(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM series WHERE i < ?)
INSERT INTO nodes (uuid, node_type, process_type, process_label, process_state, exit_status,
                   ctime, mtime)
SELECT printf('web-%012d', i),
       CASE WHEN i % 4 != 0 THEN 'core.int'
            WHEN i % 16 = 0 THEN 'process.calcfunction'
            WHEN i % 16 = 12 THEN 'process.calcjob'
            ELSE 'process.workchain' END,
       CASE WHEN i % 4 = 0 THEN 'benchmarks.web.' || (i % 16) END,
       CASE WHEN i % 4 != 0 THEN NULL
            WHEN i % 16 = 0 THEN 'add'
            WHEN i % 16 = 4 THEN 'MultiplyAddWorkChain'
            WHEN i % 16 = 8 THEN 'NestedWorkChain'
            ELSE 'ArithmeticAddCalculation' END,
       CASE WHEN i % 4 != 0 THEN NULL
            WHEN i % 4000 = 0 THEN 'excepted'
            WHEN i % 4000 = 2000 THEN 'killed'
            ELSE 'finished' END,
       CASE WHEN i % 4 != 0 OR i % 4000 IN (0, 2000) THEN NULL
            WHEN i % 400 = 200 THEN 300
            ELSE 0 END,
       ? + i * 0.001, ? + i * 0.001
FROM series
"""

_POSTGRES_FILL = """
INSERT INTO nodes (uuid, node_type, process_type, process_label, process_state, exit_status,
                   ctime, mtime)
SELECT 'web-' || lpad(i::text, 12, '0'),
       CASE WHEN i %% 4 != 0 THEN 'core.int'
            WHEN i %% 16 = 0 THEN 'process.calcfunction'
            WHEN i %% 16 = 12 THEN 'process.calcjob'
            ELSE 'process.workchain' END,
       CASE WHEN i %% 4 = 0 THEN 'benchmarks.web.' || (i %% 16) END,
       CASE WHEN i %% 4 != 0 THEN NULL
            WHEN i %% 16 = 0 THEN 'add'
            WHEN i %% 16 = 4 THEN 'MultiplyAddWorkChain'
            WHEN i %% 16 = 8 THEN 'NestedWorkChain'
            ELSE 'ArithmeticAddCalculation' END,
       CASE WHEN i %% 4 != 0 THEN NULL
            WHEN i %% 4000 = 0 THEN 'excepted'
            WHEN i %% 4000 = 2000 THEN 'killed'
            ELSE 'finished' END,
       CASE WHEN i %% 4 != 0 OR i %% 4000 IN (0, 2000) THEN NULL
            WHEN i %% 400 = 200 THEN 300
            ELSE 0 END,
       %s + i * 0.001, %s + i * 0.001
FROM generate_series(1, %s) AS i
"""


def fill_processes(db: Path | str, nodes: int) -> float:
    """Insert ``nodes`` nodes (a quarter of them processes) into ``db`` by SQL; seconds taken.
    The schema must exist (open the database with miniengine first)."""
    start = time.perf_counter()
    base = time.time() - nodes * 0.001
    if isinstance(db, str):
        import psycopg

        with psycopg.connect(db, autocommit=True) as connection:
            connection.execute(_POSTGRES_FILL, (base, base, nodes))
            connection.execute("VACUUM ANALYZE nodes")
    else:
        connection = sqlite3.connect(db, isolation_level=None, timeout=30)
        try:
            connection.execute("PRAGMA synchronous = OFF")
            connection.execute("BEGIN")
            connection.execute(_SQLITE_FILL, (nodes, base, base))
            connection.execute("COMMIT")
            connection.execute("ANALYZE")
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            connection.close()
    return time.perf_counter() - start


# the server --------------------------------------------------------------------------------------


@contextlib.contextmanager
def web_server(*args: str) -> Iterator[Any]:
    """``miniengine web --port 0`` on this repetition's database (``$MINIENGINE_DB``) until the
    block ends: a ``tests.services.browser.WebServer`` (its ``url``, ``token``, ``process``)."""
    import importlib.util

    from benchmarks.registry import Skipped
    from tests.services.browser import running_web

    for module in ("starlette", "uvicorn", "httpx"):
        if importlib.util.find_spec(module) is None:
            raise Skipped(f"{module} is not installed (pip install -e '.[web,test]')")
    with running_web(None, *args, timeout=120) as server:
        yield server


def auth(server: Any) -> dict[str, str]:
    """The header a script signs in with."""
    return {"Authorization": f"token {server.token}"}


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of every thread of ``pid`` so far (``/proc/<pid>/stat``)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    """Resident memory of ``pid`` in KiB (``VmRSS``)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


# an event-stream client --------------------------------------------------------------------------

Event = tuple[float, str, Any]  # (perf_counter at arrival, event name, decoded data)


def parse_events(lines: Iterator[str], deliver: Callable[[str, Any], None]) -> None:
    """Read server-sent events from ``lines`` and call ``deliver(name, data)`` for each one
    (comments such as keep-alives are skipped; the data is decoded as JSON when it is JSON)."""
    name, data = "message", []
    for line in lines:
        if not line:
            if data:
                text = "\n".join(data)
                try:
                    value: Any = json.loads(text)
                except ValueError:
                    value = text
                deliver(name, value)
            name, data = "message", []
        elif line.startswith(":"):
            continue
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))


class EventStream:
    """One client of ``path`` (``/events?...``) on a thread of its own, with httpx: every event
    with the moment it arrived.  ``hello`` is set once the server's first event came."""

    def __init__(self, server: Any, path: str = "/events") -> None:
        self.url = server.base + path
        self.headers = auth(server)
        self.events: queue.Queue[Event] = queue.Queue()
        self.hello = threading.Event()
        self.error: BaseException | None = None
        self._response: Any = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import httpx

        def deliver(name: str, data: Any) -> None:
            self.events.put((time.perf_counter(), name, data))
            if name == "hello":
                self.hello.set()

        try:
            with (
                httpx.Client(timeout=httpx.Timeout(10, read=None)) as client,
                client.stream("GET", self.url, headers=self.headers) as response,
            ):
                self._response = response
                response.raise_for_status()
                parse_events(response.iter_lines(), deliver)
        except BaseException as exc:  # kept for the waiting thread to raise
            self.error = exc
        finally:
            self.hello.set()

    def wait_hello(self, timeout: float = 30) -> None:
        if not self.hello.wait(timeout):
            raise TimeoutError(f"no hello from {self.url} within {timeout} s")
        if self.error is not None:
            raise RuntimeError(f"the event stream {self.url} failed: {self.error!r}")

    def wait_for(self, match: Callable[[str, Any], bool], timeout: float = 30) -> Event:
        """The first event (from now on) that ``match(name, data)`` accepts."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no matching event on {self.url} within {timeout} s")
            try:
                event = self.events.get(timeout=left)
            except queue.Empty:
                continue
            if match(event[1], event[2]):
                return event

    def close(self) -> None:
        if self._response is not None:
            with contextlib.suppress(Exception):
                self._response.close()
        self._thread.join(timeout=5)
