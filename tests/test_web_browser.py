"""The web view in a real headless Chromium, as a person would check it.

One module-wide set-up: a sqlite database in a temp folder, a daemon started with the real
command line (``miniengine daemon start``) that runs the processes the tests submit, and
``miniengine web --port 0`` as a subprocess whose printed URL (with its token) the browser opens.
The pages are found through their DOM contract (``table#process-list``, ``#state``,
``form.control button[data-action=...]``, ...); every wait is on the DOM, never a sleep.

Screenshots of the list and of a process page are saved into ``$MINIENGINE_ARTIFACTS`` (else the
module's temp folder; the folder is printed).
"""

from __future__ import annotations

import re
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.services.browser import (
    WebServer,
    artifacts_folder,
    off_loop,
    require_browser,
    running_chromium,
    running_web,
)
from tests.workchains.daemon_chains import ROOT, DaemonGuard, python_env
from tests.workchains.web_chains import HTML_REPORT

#: How long the page may take to show a change (the stream brings it in well under a second).
SHOWN_WITHIN_MS = 5_000


@dataclass
class Site:
    db: Path
    guard: DaemonGuard
    server: WebServer
    context: Any  # playwright's BrowserContext
    artifacts: Path


def _miniengine(*args: str, db: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "miniengine", *args, "--db", str(db)],
        env=python_env(db),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    require_browser()
    folder = tmp_path_factory.mktemp("web-browser")
    db = folder / "engine.sqlite"
    artifacts = artifacts_folder(folder / "artifacts")
    with DaemonGuard(db) as guard:
        started = _miniengine("daemon", "start", "--workers", "1", db=db)
        guard.track_all()
        assert started.returncode == 0, started.stdout + started.stderr
        _earlier_work(db)
        with (
            running_web(db, env=python_env(db)) as server,
            running_chromium(folder / "chromium-profile") as context,
        ):
            yield Site(db, guard, server, context, artifacts)


def _earlier_work(db: Path) -> None:
    """Processes that ran before the page opened, so the list is not empty: a nested workchain
    (a call tree four deep) and one that raises (excepted, with its traceback)."""
    script = (
        "from miniengine import Int, submit\n"
        "from tests.workchains.daemon_chains import NestedWorkChain, RaisingWorkChain\n"
        "submit(NestedWorkChain, inp=Int(3))\n"
        "submit(RaisingWorkChain)\n"
    )
    subprocess.run(
        [sys.executable, "-c", script], env=python_env(db), cwd=ROOT, check=True, timeout=120
    )


@pytest.fixture
def engine_db(site: Site, miniengine_db: Path | str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The module's database as this test's ``$MINIENGINE_DB`` (``submit`` takes it from there)."""
    monkeypatch.setenv("MINIENGINE_DB", str(site.db))
    return site.db


@pytest.fixture
def page(site: Site) -> Iterator[Any]:
    """A new tab, signed in through the printed URL (the token becomes a cookie)."""
    tab = site.context.new_page()
    response = tab.goto(site.server.url)
    assert response is not None and response.status == 200, response and response.status
    assert "token=" not in tab.url  # redirected to the same page without the token
    yield tab
    tab.close()


@pytest.fixture
def dialogs(page: Any) -> list[str]:
    """The messages of the dialogs (``alert``, ``confirm``) the page opens; each is dismissed."""
    seen: list[str] = []

    def dismiss(dialog: Any) -> None:
        seen.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", dismiss)
    return seen


def _submit(process: str, **inputs: Any) -> int:
    """Submit ``process`` (``module:Class``) to the daemon; its pk."""

    def go() -> int:
        import importlib

        from miniengine import submit

        module, name = process.split(":")
        node = submit(getattr(importlib.import_module(module), name), **inputs)
        assert node.pk is not None
        return int(node.pk)

    return off_loop(go)


def _load(pk: int, db: Path) -> Any:
    from miniengine import load_node

    return off_loop(load_node, pk, db=db)


def _attributes(tab: Any, selector: str, name: str) -> list[str]:
    return list(
        tab.eval_on_selector_all(selector, f"els => els.map(e => e.getAttribute('{name}'))")
    )


def _wait_live(tab: Any) -> None:
    """Until the page's event stream said hello: from then on, changes arrive by themselves."""
    tab.wait_for_selector('body[data-stream="open"]', state="attached", timeout=SHOWN_WITHIN_MS)


def _int_inputs(**values: int) -> dict[str, Any]:
    from miniengine import Int

    return {name: Int(value) for name, value in values.items()}


def test_a_process_submitted_after_the_page_opened_shows_up_live(
    site: Site, page: Any, engine_db: Path
) -> None:
    from playwright.sync_api import expect

    _wait_live(page)
    page.evaluate("window.stillTheSamePage = true")
    pk = _submit("tests.workchains.web_chains:ReportingAddWorkChain", **_int_inputs(x=20, y=22))
    row = page.locator(f'table#process-list tr[data-pk="{pk}"]')
    expect(row).to_have_count(1, timeout=SHOWN_WITHIN_MS)
    expect(row.locator("td.label")).to_contain_text("ReportingAddWorkChain")
    expect(row.locator("td.state")).to_have_text("finished", timeout=SHOWN_WITHIN_MS)
    shown = [int(value) for value in _attributes(page, "table#process-list tr[data-pk]", "data-pk")]
    assert shown == sorted(shown, reverse=True), shown  # newest first, its child above it
    assert shown[0] > pk  # its add, inserted at the top too
    assert page.evaluate("window.stillTheSamePage === true"), "the page was reloaded"
    assert _load(pk, engine_db).is_finished_ok
    shot = site.artifacts / "web-process-list.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"saved {shot}")


def test_clicking_a_process_opens_its_page_with_inputs_outputs_and_reports(
    site: Site, page: Any, engine_db: Path
) -> None:
    from playwright.sync_api import expect

    _wait_live(page)
    pk = _submit("tests.workchains.web_chains:ReportingAddWorkChain", **_int_inputs(x=2, y=3))
    row = page.locator(f'table#process-list tr[data-pk="{pk}"]')
    expect(row.locator("td.state")).to_have_text("finished", timeout=SHOWN_WITHIN_MS)
    row.locator("a.process-link").click()
    page.wait_for_url(f"**/process/{pk}", timeout=SHOWN_WITHIN_MS)
    expect(page.locator("#state")).to_have_text("finished")
    expect(page.locator('table#inputs tr[data-label="x"] td.value')).to_have_text("2")
    expect(page.locator('table#inputs tr[data-label="y"] td.value')).to_have_text("3")
    expect(page.locator('table#outputs tr[data-label="result"] td.value')).to_have_text("5")
    expect(page.locator('table#outputs tr[data-label="result"] a')).to_have_count(1)
    reports = page.locator("#reports li.report")
    expect(reports.first).to_contain_text("adding 2 and 3")
    expect(reports.first).to_contain_text(re.compile("report", re.IGNORECASE))  # the level
    node = _load(pk, engine_db)
    assert node.outputs.result.value == 5
    (child,) = node.called
    expect(page.locator(f'#call-tree li[data-pk="{child.pk}"]')).to_contain_text("add")
    graph = page.locator("#graph img")
    graph.scroll_into_view_if_needed()  # it loads lazily
    page.wait_for_function(
        "img => img.complete && img.naturalWidth > 0", arg=graph.element_handle(), timeout=10_000
    )  # the provenance graph, drawn by Graphviz on the server
    shot = site.artifacts / "web-process-page.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"saved {shot}")

    page.locator('table#outputs tr[data-label="result"] td.node a').click()  # the output's node
    page.wait_for_url(f"**/node/{node.outputs.result.pk}", timeout=SHOWN_WITHIN_MS)
    expect(page.locator("#node-type")).to_have_text("core.int")
    expect(page.locator("#value")).to_have_text("5")
    incoming = page.locator("table#incoming td.node a").all_text_contents()
    assert str(pk) in incoming, incoming  # returned by the workchain (and created by its add)


def test_pause_play_and_kill_buttons_change_the_process(
    site: Site, page: Any, engine_db: Path
) -> None:
    from playwright.sync_api import expect

    from miniengine import ProcessState, Str

    pk = _submit("miniengine.testing.gates:WaitingProcess", gate=Str("web-browser-controls"))
    page.on("dialog", lambda dialog: dialog.accept())  # "kill process ...?": yes
    page.goto(site.server.page_url(f"/process/{pk}"))
    _wait_live(page)
    state = page.locator("#state")
    # the stream brings the change once a worker runs the first step (it waits there at a gate)
    expect(state).to_have_text(re.compile("^(running|waiting)$"), timeout=SHOWN_WITHIN_MS)

    page.locator('form.control button[data-action="pause"]').click()
    expect(state).to_contain_text("(paused)", timeout=SHOWN_WITHIN_MS)
    assert _load(pk, engine_db).paused

    page.locator('form.control button[data-action="play"]').click()
    expect(state).not_to_contain_text("(paused)", timeout=SHOWN_WITHIN_MS)
    assert not _load(pk, engine_db).paused

    page.locator('form.control button[data-action="kill"]').click()
    expect(state).to_have_text("killed", timeout=SHOWN_WITHIN_MS)
    assert _load(pk, engine_db).process_state is ProcessState.KILLED
    expect(page.locator("form.control button")).to_have_count(0)  # nothing left to control


def test_html_in_a_report_is_shown_as_text(
    site: Site, page: Any, dialogs: list[str], engine_db: Path
) -> None:
    from playwright.sync_api import expect

    pk = _submit("tests.workchains.web_chains:ReportingAddWorkChain", **_int_inputs(x=1, y=1))
    page.goto(site.server.page_url(f"/process/{pk}"))
    _wait_live(page)
    reports = page.locator("#reports li.report")
    expect(reports).to_have_count(2, timeout=SHOWN_WITHIN_MS)
    expect(reports.nth(1)).to_contain_text(HTML_REPORT)
    assert page.locator("#reports script, #reports b").count() == 0
    assert dialogs == []  # no alert(1) ran
    page.reload()  # the page as rendered by the server, not only what the stream inserted
    expect(page.locator("#reports li.report").nth(1)).to_contain_text(HTML_REPORT)
    assert page.locator("#reports script, #reports b").count() == 0
    assert dialogs == []


def _status(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read().decode()


def test_a_request_without_the_token_is_refused(site: Site) -> None:
    server = site.server
    status, body = _status(server.page_url("/"))
    assert status == 403
    assert "token" in body  # says how to get in
    assert _status(server.page_url("/?token=" + "0" * len(server.token)))[0] == 403
    assert _status(server.page_url("/api/processes"))[0] == 403
    assert _status(server.page_url("/"), {"Authorization": f"token {server.token}x"})[0] == 403
    assert (
        _status(server.page_url("/api/processes"), {"Authorization": f"token {server.token}"})[0]
        == 200
    )

    tab = site.context.new_page()  # the browser without its cookie
    try:
        site.context.clear_cookies()
        response = tab.goto(server.page_url("/"))
        assert response is not None and response.status == 403
        assert tab.locator("#process-list").count() == 0
    finally:
        tab.close()


def test_the_daemon_page_shows_the_worker_and_what_it_finished(
    site: Site, page: Any, engine_db: Path
) -> None:
    from playwright.sync_api import expect

    from miniengine import await_node, load_node

    pk = _submit("tests.workchains.web_chains:ReportingAddWorkChain", **_int_inputs(x=4, y=5))
    off_loop(lambda: await_node(load_node(pk), timeout=30))
    page.locator("a#nav-daemon").click()
    page.wait_for_url("**/daemon", timeout=SHOWN_WITHIN_MS)
    rows = page.locator("table#workers tr[data-worker]")
    expect(rows).to_have_count(1)
    ((worker, worker_pid),) = site.guard.workers()
    row = page.locator(f'table#workers tr[data-worker="{worker}"]')
    expect(row.locator("td.pid")).to_have_text(str(worker_pid))
    expect(row.locator("td.host")).not_to_be_empty()
    expect(page.locator("#queue-depth")).to_have_text(re.compile(r"^\d+$"))
    chart = page.locator("svg#finished-per-minute")
    expect(chart).to_be_visible()
    counts = [int(text) for text in chart.locator("rect title").all_text_contents()]
    assert sum(counts) >= 1, counts  # at least the process above, finished this minute


def test_an_excepted_process_shows_its_traceback(site: Site, page: Any, engine_db: Path) -> None:
    from playwright.sync_api import expect

    from miniengine import await_node, find_processes

    def raised() -> int:
        (node,) = find_processes(process_label="RaisingWorkChain")
        await_node(node, timeout=30)
        return int(node.pk)

    pk = off_loop(raised)  # submitted before the page opened (the module's earlier work)
    page.goto(site.server.page_url(f"/process/{pk}"))
    expect(page.locator("#state")).to_have_text("excepted")
    exception = page.locator("pre#exception")
    expect(exception).to_contain_text("Traceback")
    expect(exception).to_contain_text("RuntimeError: this step always raises")
