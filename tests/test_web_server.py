"""The web view served for real: uvicorn on a free loopback port, its event streams read by
httpx as a browser's EventSource reads them, and the ``miniengine web`` command as users start
and stop it."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import uvicorn

from miniengine import Int, calcfunction, load_node, run
from miniengine.control import pause
from miniengine.runtime.context import store_for
from miniengine.web import create_app
from tests.test_web_app import new_process

TOKEN = "server-token-" + "y" * 24
HEADERS = {"authorization": f"token {TOKEN}"}
WAIT = 20.0  # seconds an awaited event may take on a busy machine before the test fails


@calcfunction
def add(x, y):
    return Int(x + y)


@contextlib.asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    """``app`` served by uvicorn on a free loopback port; its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(server.serve, [sock])
        with anyio.fail_after(WAIT):
            while not server.started:  # uvicorn offers no event to await
                await anyio.sleep(0.01)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            app.state.miniengine.broadcaster.stop()
            server.should_exit = True
    sock.close()


class Events:
    """The events of one open stream, read as EventSource does."""

    def __init__(self, response: httpx.Response) -> None:
        self._lines = response.aiter_lines()

    async def next(self) -> tuple[str, Any]:
        name, data = "message", ""
        with anyio.fail_after(WAIT):
            async for line in self._lines:
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    data += line[6:]
                elif line == "" and data:
                    return name, json.loads(data)
        raise AssertionError("the stream ended")

    async def until(self, name: str, **fields: Any) -> Any:
        """The next event ``name`` whose data has ``fields`` (others are skipped)."""
        while True:
            got, data = await self.next()
            if got == name and all(data.get(k) == v for k, v in fields.items()):
                return data


@pytest.mark.backends
async def test_a_process_created_after_the_stream_opened_arrives_and_its_changes_follow() -> None:
    app = create_app(token=TOKEN)
    async with (
        serving(app) as url,
        httpx.AsyncClient(base_url=url, headers=HEADERS, timeout=WAIT) as client,
        client.stream("GET", "/events", params={"label": "wanted"}) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = Events(response)
        assert (await events.next())[0] == "hello"
        new_process(label="Other")  # filtered out by the stream's label filter
        pk = new_process(label="WantedJob")
        arrived = await events.until("process")
        assert arrived["pk"] == pk  # the first one through the filter is the wanted one
        assert arrived["state"] == "created"
        pause(pk)
        changed = await events.until("process", pk=pk, paused=True)
        assert changed["state"] == "created (paused)"


@pytest.mark.backends
async def test_a_process_page_stream_sends_its_state_new_reports_and_call_tree() -> None:
    pk = new_process(label="Parent")
    store = store_for(None)
    store.provenance.add_log(pk, "REPORT", "shown with the page")
    first_log = store.provenance.logs(pk)[-1].pk
    app = create_app(token=TOKEN)
    async with (
        serving(app) as url,
        httpx.AsyncClient(base_url=url, headers=HEADERS, timeout=WAIT) as client,
    ):
        params = {"pk": pk, "after": first_log}
        async with client.stream("GET", "/events", params=params) as response:
            events = Events(response)
            assert await events.next() == ("hello", {"pk": pk})
            assert (await events.until("process"))["state"] == "created"
            tree = await events.until("tree")
            assert [row["pk"] for row in tree] == [pk]
            store.provenance.add_log(pk, "WARNING", "<b>new</b> report")
            report = await events.until("report")
            assert (report["level"], report["message"]) == ("WARNING", "<b>new</b> report")
        missing = await client.get("/events", params={"pk": 999999})
        assert missing.status_code == 404


async def test_one_watcher_feeds_every_stream() -> None:
    app = create_app(token=TOKEN)
    broadcaster = app.state.miniengine.broadcaster
    async with (
        serving(app) as url,
        httpx.AsyncClient(base_url=url, headers=HEADERS, timeout=WAIT) as client,
    ):
        async with contextlib.AsyncExitStack() as stack:
            streams = []
            for _ in range(20):
                response = await stack.enter_async_context(client.stream("GET", "/events"))
                streams.append(Events(response))
                assert (await streams[-1].next())[0] == "hello"
            assert broadcaster.streams == 20
            pk = new_process(label="Everyone")
            for events in streams:
                assert (await events.until("process"))["pk"] == pk
        with anyio.fail_after(WAIT):
            while broadcaster.streams:  # the server sees the clients go
                await anyio.sleep(0.01)


# -- the command ----------------------------------------------------------------------------------


@contextlib.contextmanager
def web_command(db: Path, *args: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``miniengine web --db DB --port 0 ARGS`` running; its process and printed URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "miniengine", "web", "--db", str(db), "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline(), process.stdout.readline()]
        url = lines[1].strip()
        assert url.startswith("http://"), lines
        yield process, url
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=WAIT)


def test_miniengine_web_prints_a_url_with_a_token_and_stops_with_streams_open(
    miniengine_db: Path,
) -> None:
    run(add, 1, 2)
    with web_command(miniengine_db) as (process, url):
        base, _, token = url.partition("/?token=")
        assert len(token) >= 32
        assert httpx.get(base + "/").status_code == 403
        with httpx.Client() as browser:
            entered = browser.get(url, follow_redirects=True)
            assert entered.status_code == 200
            assert 'id="process-list"' in entered.text
            with browser.stream("GET", base + "/events") as stream:
                assert next(stream.iter_lines()) == "event: hello"
                process.send_signal(signal.SIGINT)  # Ctrl-C with a browser still listening
                assert process.wait(timeout=WAIT) == 0
    assert process.stderr is not None
    assert "Traceback" not in process.stderr.read()


def test_a_host_beyond_loopback_gets_a_warning_and_still_needs_the_token(
    miniengine_db: Path,
) -> None:
    run(add, 1, 2)
    with web_command(miniengine_db, "--host", "0.0.0.0", "--read-only") as (process, url):
        port = url.split(":")[2].split("/")[0]
        assert url.startswith(f"http://{socket.gethostname()}:")  # as other machines name it
        assert httpx.get(f"http://127.0.0.1:{port}/").status_code == 403
        token = url.partition("?token=")[2]
        page = httpx.get(f"http://127.0.0.1:{port}/", headers={"authorization": f"token {token}"})
        assert page.status_code == 200 and "read-only" in page.text
        process.send_signal(signal.SIGINT)
        process.wait(timeout=WAIT)
        assert process.stderr is not None
        assert "warning: listening on 0.0.0.0" in process.stderr.read()


def test_without_the_web_extra_the_command_says_what_to_install(miniengine_db: Path) -> None:
    run(add, 1, 2)
    code = (
        "import sys; sys.modules['uvicorn'] = None; from miniengine.__main__ import main; "
        f"sys.exit(main(['web', '--db', {str(miniengine_db)!r}]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=WAIT, check=False
    )
    assert done.returncode == 1
    assert "pip install 'miniengine[web]'" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_database_that_does_not_exist_is_refused_before_serving(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "miniengine", "web", "--db", str(tmp_path / "none.sqlite")],
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    assert done.returncode == 1
    assert "none.sqlite" in done.stderr and "http://" not in done.stdout


@pytest.mark.backends
async def test_a_process_on_a_worker_is_followed_live_and_the_daemon_page_shows_the_worker() -> (
    None
):
    from miniengine import Str, asubmit, await_node
    from miniengine.daemon import Worker
    from miniengine.testing.gates import WaitingProcess, open_gate

    app = create_app(token=TOKEN)
    async with (
        Worker(slots=4),
        serving(app) as url,
        httpx.AsyncClient(base_url=url, headers=HEADERS, timeout=WAIT) as client,
    ):
        node = await asubmit(WaitingProcess, gate=Str("web"))
        async with client.stream("GET", "/events", params={"pk": node.pk}) as response:
            events = Events(response)
            await events.until("process", process_state="running")
            page = (await client.get(f"/process/{node.pk}")).text
            assert '<dd id="state">running</dd>' in page
            assert '<dd id="owner">worker:' in page
            daemon = (await client.get("/daemon")).text
            worker = re.search(r'<tr data-worker="[^"]+">.*?</tr>', daemon, re.S)
            assert worker is not None
            assert '<td class="slots">1 / 4</td>' in worker.group(0)
            assert '<td class="alive">alive</td>' in worker.group(0)
            await anyio.to_thread.run_sync(open_gate, "web")
            seen: dict[str, Any] = {}
            while "finished" not in seen or "report" not in seen:
                name, data = await events.next()
                if name == "report":  # written with the step's commit
                    seen["report"] = data["message"]
                elif name == "process" and data["process_state"] == "finished":
                    seen["finished"] = data["state"]
            assert seen["report"].endswith("waiting at gate 'web'")
            assert seen["finished"] == "finished"
        await await_node(node, timeout=WAIT)
        page = (await client.get(f"/process/{node.pk}")).text
        assert '<tr data-label="passed">' in page


async def test_a_group_filtered_stream_sends_only_the_groups_processes() -> None:
    from miniengine.orm import Group

    outside, inside = new_process(label="Outside"), new_process(label="Inside")
    group = Group(label="watched").store()
    group.add_nodes([load_node(inside)])
    app = create_app(token=TOKEN)
    async with (
        serving(app) as url,
        httpx.AsyncClient(base_url=url, headers=HEADERS, timeout=WAIT) as client,
        client.stream("GET", "/events", params={"group": "watched"}) as response,
    ):
        events = Events(response)
        assert (await events.next())[0] == "hello"
        pause(outside)
        pause(inside)
        arrived = await events.until("process", paused=True)
        assert (arrived["pk"], arrived["state"]) == (inside, "created (paused)")


async def test_a_process_added_to_the_group_reaches_the_group_filtered_stream() -> None:
    """Joining a group changes no process: the stream sees it all the same, at the next
    commit (the one that added it)."""
    from miniengine.orm import Group

    joining = new_process(label="Joining")
    group = Group(label="joined").store()
    app = create_app(token=TOKEN)
    async with (
        serving(app) as url,
        httpx.AsyncClient(base_url=url, headers=HEADERS, timeout=WAIT) as client,
        client.stream("GET", "/events", params={"group": "joined"}) as response,
    ):
        events = Events(response)
        assert (await events.next())[0] == "hello"
        await anyio.to_thread.run_sync(group.add_nodes, [load_node(joining)])
        arrived = await events.until("process", pk=joining)
        assert arrived["state"] == "created"


async def test_a_list_stream_starts_with_what_changed_since_its_page_was_rendered() -> None:
    shown = new_process(label="Shown")
    app = create_app(token=TOKEN)
    async with (
        serving(app) as url,
        httpx.AsyncClient(base_url=url, headers=HEADERS, timeout=WAIT) as client,
    ):
        page = (await client.get("/")).text
        found = re.search(r'data-events="([^"]+)"', page)
        assert found is not None
        late = new_process(label="Late")  # after the page, before its stream
        pause(shown)
        events_url = found.group(1).replace("&amp;", "&")
        async with client.stream("GET", events_url) as response:
            events = Events(response)
            assert (await events.next())[0] == "hello"
            first, second = (await events.next()), (await events.next())
            assert first == ("process", first[1]) and second[0] == "process"
            assert (first[1]["pk"], first[1]["state"]) == (shown, "created (paused)")
            assert (second[1]["pk"], second[1]["state"]) == (late, "created")
            # the watcher read nothing while no stream was open; now it follows again
            later = new_process(label="Later")
            assert (await events.until("process", pk=later))["state"] == "created"


async def test_an_idle_stream_gets_a_keep_alive_comment_from_the_watcher() -> None:
    app = create_app(token=TOKEN)
    app.state.miniengine.broadcaster.keepalive = 0.2  # instead of 15 s
    async with (
        serving(app) as url,
        httpx.AsyncClient(base_url=url, headers=HEADERS, timeout=WAIT) as client,
        client.stream("GET", "/events") as response,
    ):
        lines = response.aiter_lines()
        with anyio.fail_after(WAIT):
            async for line in lines:
                if line.startswith(":"):
                    assert line == ": keep-alive"
                    break


@pytest.mark.backends
async def test_the_end_of_the_only_active_process_reaches_the_list_stream() -> None:
    from miniengine.control import kill

    only = new_process(label="Only")
    app = create_app(token=TOKEN)
    async with (
        serving(app) as url,
        httpx.AsyncClient(base_url=url, headers=HEADERS, timeout=WAIT) as client,
        client.stream("GET", "/events") as response,
    ):
        events = Events(response)
        assert (await events.until("process", pk=only))["state"] == "created"  # its start
        kill(only)
        assert (await events.until("process", pk=only, process_state="killed"))["pk"] == only
