"""WEB3: what open event streams cost ``miniengine web`` (a real uvicorn subprocess): 100 clients
of the live process list (``/events``, httpx on one asyncio loop), then

- the server's CPU while they sit idle for 10 s (user + system time of all its threads from
  ``/proc``, as a percentage of one core), and the part of it the streams add: the same
  interval measured before they opened is subtracted (what is left over is the server's one
  commit watcher, whatever the number of streams); no per-stream polling means ~0;
- its memory per stream: the difference in resident memory before and after the streams opened,
  divided by their number;
- the fan-out: one commit that changes a process's state, until every stream has its event.

The server is warmed first (a page and one stream opened and closed), so the memory difference
is the streams' and not the first request's imports.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from benchmarks.registry import Measurement, Metric, Params, Target, Workload, check


async def _stream(
    client: Any, arrived: dict[str, Any], hello: asyncio.Event, index: int, watched: int
) -> None:
    from benchmarks.web_support import parse_events

    async with client.stream("GET", "/events") as response:
        check(response.status_code == 200, f"/events answered {response.status_code}")
        lines: list[str] = []

        def deliver(name: str, data: Any) -> None:
            if name == "hello":
                arrived["hello"] += 1
                if arrived["hello"] == arrived["streams"]:
                    hello.set()
            elif (
                name == "process"
                and isinstance(data, dict)
                and data.get("pk") == watched
                and data.get("process_state") == "killed"
            ):
                arrived["killed"][index] = time.perf_counter()
                if len(arrived["killed"]) == arrived["streams"]:
                    arrived["all_killed"].set()

        async for line in response.aiter_lines():
            lines.append(line)
            if not line:
                parse_events(iter(lines), deliver)
                lines.clear()


async def _run(server: Any, streams: int, idle_s: float, watched: int) -> dict[str, Any]:
    import httpx

    from benchmarks.web_support import auth, cpu_seconds, rss_kib
    from miniengine.control import kill

    pid = server.process.pid
    limits = httpx.Limits(max_connections=streams + 10, max_keepalive_connections=streams + 10)
    timeout = httpx.Timeout(30, read=None)
    async with httpx.AsyncClient(
        base_url=server.base, headers=auth(server), limits=limits, timeout=timeout
    ) as client:
        check((await client.get("/")).status_code == 200, "the list page did not answer 200")
        warm: dict[str, Any] = {
            "hello": 0,
            "streams": 1,
            "killed": {},
            "all_killed": asyncio.Event(),
        }
        warm_hello = asyncio.Event()
        task = asyncio.create_task(_stream(client, warm, warm_hello, 0, watched))
        await asyncio.wait_for(warm_hello.wait(), 30)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.sleep(0.5)  # let the server let go of the closed stream
        rss_before = rss_kib(pid)
        cpu_start, wall_start = cpu_seconds(pid), time.perf_counter()
        await asyncio.sleep(idle_s)  # the same interval with no stream open: the baseline
        cpu_no_streams = cpu_seconds(pid) - cpu_start
        wall_no_streams = time.perf_counter() - wall_start

        arrived: dict[str, Any] = {
            "hello": 0,
            "streams": streams,
            "killed": {},
            "all_killed": asyncio.Event(),
        }
        hello = asyncio.Event()
        opened = time.perf_counter()
        tasks = [
            asyncio.create_task(_stream(client, arrived, hello, i, watched)) for i in range(streams)
        ]
        await asyncio.wait_for(hello.wait(), 60)
        open_s = time.perf_counter() - opened
        rss_open = rss_kib(pid)

        cpu_start, wall_start = cpu_seconds(pid), time.perf_counter()
        await asyncio.sleep(idle_s)  # the measurement interval itself: nothing happens in it
        cpu_idle = cpu_seconds(pid) - cpu_start
        wall_idle = time.perf_counter() - wall_start
        check(not any(t.done() for t in tasks), "a stream ended while idle")

        start = time.perf_counter()
        await asyncio.to_thread(kill, watched)
        try:
            await asyncio.wait_for(arrived["all_killed"].wait(), 30)
        except TimeoutError:
            raise AssertionError(
                f"{len(arrived['killed'])} of {streams} streams had the event within 30 s"
            ) from None
        fan_out = [moment - start for moment in arrived["killed"].values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "rss_before_kib": rss_before,
        "rss_open_kib": rss_open,
        "cpu_idle_s": cpu_idle,
        "wall_idle_s": wall_idle,
        "cpu_no_streams_s": cpu_no_streams,
        "wall_no_streams_s": wall_no_streams,
        "open_s": open_s,
        "fan_out_last_ms": 1e3 * max(fan_out),
        "fan_out_first_ms": 1e3 * min(fan_out),
    }


def measure(params: Params) -> Measurement:
    from benchmarks.support import submit_small
    from benchmarks.web_support import web_server

    streams = params["streams"]
    (node,), _ = submit_small(1)
    with web_server() as server:
        found = asyncio.run(_run(server, streams, params["idle_s"], int(node.pk)))
    per_stream_kib = (found["rss_open_kib"] - found["rss_before_kib"]) / streams
    idle = 100 * found["cpu_idle_s"] / found["wall_idle_s"]
    baseline = 100 * found["cpu_no_streams_s"] / found["wall_no_streams_s"]
    return Measurement(
        metrics={
            "idle_cpu_percent": idle,
            "streams_cpu_percent": idle - baseline,
            "kib_per_stream": per_stream_kib,
            "fan_out_ms": found["fan_out_last_ms"],
        },
        details={
            "streams": streams,
            "idle_s": params["idle_s"],
            "idle_cpu_percent_no_streams": baseline,
            **found,
        },
    )


WORKLOAD = Workload(
    id="WEB3",
    title="web view: 100 open event streams (idle CPU, memory, fan-out)",
    metrics=(
        Metric(
            "idle_cpu_percent",
            "WEB3 server CPU, 100 idle streams",
            "% of a core",
            Target("<=", 1),
            digits=2,
        ),
        Metric(
            "streams_cpu_percent",
            "WEB3 CPU added by the 100 idle streams",
            "% of a core",
            Target("<=", 0.2),
            digits=2,
        ),
        Metric("kib_per_stream", "WEB3 server memory per open stream", "KiB", digits=1),
        Metric(
            "fan_out_ms",
            "WEB3 one commit to the event on all 100 streams",
            "ms",
            Target("<=", 100),
            digits=1,
        ),
    ),
    measure=measure,
    params={"streams": 100, "idle_s": 10.0},
    quick_params={"streams": 100, "idle_s": 3.0},
    repeat=1,
    backends=("sqlite", "postgresql"),
)
