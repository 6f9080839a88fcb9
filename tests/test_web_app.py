"""The web view's app (``miniengine.web.create_app``) driven in-process through httpx's ASGI
transport: who gets in, what a state change needs, what the pages show (on each backend), and
that nothing a request sends ends up as markup or as a name imported."""

from __future__ import annotations

import contextlib
import json
import re
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import markupsafe
import pytest

from miniengine import Int, arun, arun_get_node, calcfunction, load_node
from miniengine.control import kill
from miniengine.core.ids import new_uuid
from miniengine.orm import Group
from miniengine.runtime.context import store_for
from miniengine.storage.interfaces.provenance import NewProcess
from miniengine.web import create_app

TOKEN = "test-token-" + "x" * 24
BASE = "http://127.0.0.1:8765"
ORIGIN = {"origin": BASE}
SCRIPT = "<script>alert(1)</script>"


@calcfunction
def add(x, y):
    return Int(x + y)


@calcfunction
def fail(x):
    raise RuntimeError(f"failed on {x.value}")


def new_process(label: str = "Job", state: str = "created") -> int:
    """A process node as stored by a submit, without anything to run it."""
    new = NewProcess(
        uuid=new_uuid(),
        node_type="process.workflow.workchain",
        process_type=f"tests.test_web_app:{label}",
        process_label=label,
        process_state=state,
        label="",
        description="",
        inputs=[("x", Int(4))],
        input_link_type="input_work",
        owner=None,
        lease_expires=None,
    )
    pk, _ = store_for(None).provenance.begin_process(new)
    return pk


@contextlib.asynccontextmanager
async def client(
    read_only: bool = False, auth: str | None = "cookie"
) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan running, and a client that has the token (as a cookie, a
    header, or not at all)."""
    app = create_app(token=TOKEN, read_only=read_only)
    headers = {"authorization": f"token {TOKEN}"} if auth == "header" else {}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE, headers=headers) as c:
            if auth == "cookie":
                entered = await c.get(f"/?token={TOKEN}")
                assert entered.status_code == 303
            yield c


def rows(html: str) -> list[int]:
    return [int(pk) for pk in re.findall(r'<tr data-pk="(\d+)">', html)]


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    assert match is not None
    return match.group(1)


# -- who gets in ----------------------------------------------------------------------------------


async def test_the_token_is_needed_and_once_given_is_kept_in_a_cookie() -> None:
    pk = (await arun_get_node(add, 1, 2))[1].pk
    async with client(auth=None) as c:
        refused = await c.get("/")
        assert refused.status_code == 403
        assert "?token=" in refused.text  # says how to get in
        assert (await c.get("/?token=wrong-token-of-the-same-size-xxxxxxx")).status_code == 403
        assert (await c.get(f"/process/{pk}")).status_code == 403
        assert (await c.get("/static/app.js")).status_code == 403

        entered = await c.get(f"/processes?state=finished&token={TOKEN}")
        assert entered.status_code == 303
        assert entered.headers["location"] == "/processes?state=finished"  # token dropped
        cookie = entered.headers["set-cookie"]
        assert TOKEN in cookie
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie

        raw = f"//evil.test/?token={TOKEN}".encode()
        elsewhere = await c.get(httpx.URL(BASE).copy_with(raw_path=raw))
        assert elsewhere.headers["location"] == "/evil.test/"  # never to another site

        page = await c.get("/processes?state=finished")  # the cookie, from now on
        assert page.status_code == 200
        assert rows(page.text) == [pk]
        assert (await c.get("/static/app.js")).status_code == 200


async def test_scripts_use_the_authorization_header() -> None:
    pk = (await arun_get_node(add, 1, 2))[1].pk
    async with client(auth="header") as c:
        answer = await c.get("/api/processes")
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "application/json"
        assert [p["pk"] for p in answer.json()["processes"]] == [pk]
        wrong = await c.get("/api/processes", headers={"authorization": "token nope"})
        assert wrong.status_code == 403
        # a script needs no CSRF value: no browser sends that header by itself
        done = await c.post(
            f"/process/{new_process()}/pause", headers={"accept": "application/json"}
        )
        assert done.status_code == 200
        assert done.json()["action"] == "pause"


async def test_a_state_change_needs_the_csrf_value_and_this_servers_origin() -> None:
    pk = new_process()
    async with client() as c:
        csrf = csrf_of((await c.get(f"/process/{pk}")).text)
        url = f"/process/{pk}/pause"
        assert (await c.post(url, headers=ORIGIN)).status_code == 403
        wrong = await c.post(url, data={"csrf": "0" * 64}, headers=ORIGIN)
        assert wrong.status_code == 403
        assert (await c.post(url, data={"csrf": csrf})).status_code == 403  # no Origin
        foreign = await c.post(url, data={"csrf": csrf}, headers={"origin": "http://evil.test"})
        assert foreign.status_code == 403
        referer = {"referer": "http://evil.test/page"}
        assert (await c.post(url, data={"csrf": csrf}, headers=referer)).status_code == 403
        assert not load_node(pk).paused  # nothing refused changed anything

        done = await c.post(url, data={"csrf": csrf}, headers=ORIGIN)
        assert done.status_code == 303
        assert done.headers["location"].startswith(f"/process/{pk}?outcome=")
        assert load_node(pk).paused
        by_header = await c.post(
            f"/process/{pk}/play",
            headers={"x-csrf-token": csrf, **ORIGIN, "accept": "application/json"},
        )
        assert by_header.json()["outcome"] == f"played process {pk}"
        assert not load_node(pk).paused
        assert (await c.get(url)).status_code == 405  # GET never changes anything


@pytest.mark.backends
async def test_the_buttons_pause_play_and_kill_in_the_database() -> None:
    pk = new_process()
    async with client() as c:
        page = (await c.get(f"/process/{pk}")).text
        for action in ("pause", "play", "kill"):
            assert f'data-action="{action}"' in page
            assert f'formaction="/process/{pk}/{action}"' in page
        csrf = csrf_of(page)

        async def press(action: str) -> str:
            answer = await c.post(f"/process/{pk}/{action}", data={"csrf": csrf}, headers=ORIGIN)
            assert answer.status_code == 303
            return (await c.get(answer.headers["location"])).text

        def shown(html: str) -> set[str]:
            buttons = re.findall(r'<button type="submit" data-action="(\w+)"([^>]*)>', html)
            return {action for action, rest in buttons if "hidden" not in rest}

        assert shown(page) == {"pause", "kill"}
        paused = await press("pause")
        assert '<dd id="state">created (paused)</dd>' in paused
        assert load_node(pk).paused
        assert shown(paused) == {"play", "kill"}
        played = await press("play")
        assert '<dd id="state">created</dd>' in played
        assert not load_node(pk).paused
        killed = await press("kill")
        assert '<dd id="state">killed</dd>' in killed
        assert load_node(pk).process_state.value == "killed"
        assert 'class="control"' not in killed  # nothing left to do to it
        assert f"killed process {pk}" in killed


async def test_read_only_shows_no_buttons_and_refuses_every_change() -> None:
    pk = new_process()
    async with client(read_only=True) as c:
        page = (await c.get(f"/process/{pk}")).text
        assert 'class="control"' not in page and "data-action" not in page
        assert "read-only" in page
        csrf = re.search(r'data-csrf="([0-9a-f]+)"', page)
        assert csrf is not None
        refused = await c.post(f"/process/{pk}/kill", data={"csrf": csrf.group(1)}, headers=ORIGIN)
        assert refused.status_code == 403
        assert load_node(pk).process_state.value == "created"


# -- escaping and names from requests ------------------------------------------------------------


async def test_markup_in_labels_reports_extras_and_tracebacks_shows_as_text() -> None:
    pk = new_process(label=SCRIPT)
    store_for(None).provenance.add_log(pk, "REPORT", f"report {SCRIPT} <b>x</b>")
    node = load_node(pk)
    node.base.extras.set("note", SCRIPT)
    data_pk = node.inputs.x.pk
    load_node(data_pk).base.extras.set(SCRIPT, SCRIPT)
    with pytest.raises(RuntimeError):
        await arun(fail, Int(SCRIPT.count("<")))
    async with client() as c:
        pages = {
            "list": await c.get("/"),
            "list filtered": await c.get("/", params={"label": SCRIPT}),
            "process": await c.get(f"/process/{pk}"),
            "node": await c.get(f"/node/{data_pk}"),
            "error": await c.get("/", params={"state": SCRIPT}),
        }
        for name, page in pages.items():
            assert "<script>alert" not in page.text, name
            assert "<b>x</b>" not in page.text, name
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pages["process"].text
        assert (
            "report &lt;script&gt;alert(1)&lt;/script&gt; &lt;b&gt;x&lt;/b&gt;"
            in pages["process"].text
        )
        assert "&lt;script&gt;" in pages["node"].text
        assert pages["error"].status_code == 400
        graph = await c.get(f"/node/{pk}/graph.svg")
        if graph.status_code == 200:  # (without dot: 503, tested with the daemon page)
            assert "<script>alert" not in graph.text and "alert(1)" in graph.text
            assert "default-src 'none'" in graph.headers["content-security-policy"]
        excepted = (await c.get("/api/processes", params={"state": "excepted"})).json()
        traceback = await c.get(f"/process/{excepted['processes'][0]['pk']}")
        assert '<pre id="exception">' in traceback.text
        assert "RuntimeError: failed on 2" in traceback.text


async def test_no_request_names_a_module_or_class_to_load() -> None:
    pk = new_process()
    async with client() as c:
        csrf = csrf_of((await c.get(f"/process/{pk}")).text)
        for name in ("antigravity", "os.system", "miniengine.control.kill"):
            assert name not in sys.modules
            answer = await c.post(f"/process/{pk}/{name}", data={"csrf": csrf}, headers=ORIGIN)
            assert answer.status_code == 404
            assert name not in sys.modules
        assert (await c.get("/", params={"state": "os.path"})).status_code == 400
        graph = await c.get(f"/node/{pk}/graph.svg", params={"direction": "__import__"})
        assert graph.status_code == 400
        assert (await c.get(f"/node/{pk}/graph.svg", params={"depth": "99"})).status_code == 400
        assert (await c.get("/process/antigravity")).status_code == 404
        assert (await c.get("/process/999999")).status_code == 404


# -- what the pages show -------------------------------------------------------------------------


@pytest.mark.backends
async def test_filters_and_keyset_paging_give_what_python_computes() -> None:
    made: list[tuple[int, str, str]] = []  # (pk, label, state)
    for index in range(7):
        label = "Alpha" if index % 2 else "BetaChain"
        made.append((new_process(label=label), label, "created"))
    for x in range(3):
        made.append(((await arun_get_node(add, x, 1))[1].pk, "add", "finished"))
    killed = new_process(label="Alpha")
    kill(killed)
    made.append((killed, "Alpha", "killed"))
    made.sort(reverse=True)

    def expected(state: str | None = None, label: str = "") -> list[int]:
        return [
            pk
            for pk, lab, st in made
            if (state is None or st == state) and label.lower() in lab.lower()
        ]

    async with client() as c:

        async def listed(**params: Any) -> list[int]:
            answer = await c.get("/api/processes", params=params)
            assert answer.status_code == 200, answer.text
            return [p["pk"] for p in answer.json()["processes"]]

        assert await listed() == expected()
        assert await listed(state="created") == expected("created")
        assert await listed(label="alp") == expected(label="alp")
        assert await listed(state="killed", label="ALPHA") == [killed]
        assert await listed(state="finished,killed") == sorted(
            expected("finished") + expected("killed"), reverse=True
        )
        assert await listed(since="1h") == expected()
        group = Group(label="<b>chosen</b>").store()
        chosen = [made[1][0], made[4][0]]
        group.add_nodes([load_node(pk) for pk in chosen])
        assert await listed(group="<b>chosen</b>") == chosen
        assert await listed(group="chosen", label="alpha") == []
        assert await listed(until="2000-01-01") == []

        # keyset paging: three at a time, the whole list once, newest first, and back
        def link(html: str, which: str) -> str | None:
            found = re.search(rf'<a id="{which}" href="([^"]+)"', html)
            return None if found is None else found.group(1).replace("&amp;", "&")

        pages: list[list[int]] = []
        page = await c.get("/", params={"limit": 3})
        assert link(page.text, "prev-page") is None
        while True:
            assert page.status_code == 200
            pages.append(rows(page.text))
            older = link(page.text, "next-page")
            if older is None:
                break
            page = await c.get(older)
        assert [pk for shown in pages for pk in shown] == expected()
        assert all(len(shown) == 3 for shown in pages[:-1])
        for shown in reversed(pages[:-1]):
            newer = link(page.text, "prev-page")
            assert newer is not None
            page = await c.get(newer)
            assert rows(page.text) == shown
        assert link(page.text, "prev-page") is None
        assert (await c.get("/", params={"back": "1.x"})).status_code == 400
        html = (await c.get("/", params={"label": "beta"})).text
        assert rows(html) == expected(label="beta")
        assert 'name="label" value="beta"' in html
        assert 'data-events="/events?label=beta&amp;limit=50"' in html


@pytest.mark.backends
async def test_the_process_page_shows_inputs_outputs_tree_and_json_twin() -> None:
    result, node = await arun_get_node(add, 20, 22)
    async with client() as c:
        page = (await c.get(f"/process/{node.pk}")).text
        assert '<dd id="state">finished</dd>' in page
        assert '<dd id="exit-status">0</dd>' in page
        for label, value in (("x", "20"), ("y", "22")):
            row = re.search(rf'<tr data-label="{label}">.*?</tr>', page, re.S)
            assert row is not None and f'<td class="value">{value}</td>' in row.group(0)
        outputs = page[page.index('<table id="outputs">') :]
        assert '<tr data-label="result">' in outputs and '<td class="value">42</td>' in outputs
        assert f'<li data-pk="{node.pk}">' in page
        assert f'data-events="/events?pk={node.pk}&amp;after=' in page
        data = (await c.get(f"/api/process/{node.pk}")).json()
        assert data["state"] == "finished"
        assert {i["label"]: i["value"] for i in data["inputs"]} == {"x": "20", "y": "22"}
        assert data["outputs"][0]["value"] == "42"
        result_page = await c.get(f"/node/{result.pk}")
        assert '<dd id="value">42</dd>' in result_page.text
        incoming = result_page.text[result_page.text.index('<table id="incoming">') :]
        assert '<td class="link-label">result</td><td class="link-type">create</td>' in incoming
        assert f'<a href="/process/{node.pk}">{node.pk}</a>' in incoming
        inputs = (await c.get(f"/node/{node.inputs.x.pk}")).text
        outgoing = inputs[inputs.index('<table id="outgoing">') :]
        assert '<td class="link-label">x</td><td class="link-type">input_calc</td>' in outgoing
        assert (await c.get(f"/node/{node.pk}")).status_code == 303  # a process: its own page


@pytest.mark.backends
async def test_the_daemon_page_and_the_graph() -> None:
    node = (await arun_get_node(add, 1, 2))[1]
    async with client() as c:
        page = (await c.get("/daemon")).text
        assert '<table id="workers">' in page
        assert '<strong id="queue-depth">0</strong>' in page
        chart = re.search(r'<svg id="finished-per-minute".*?</svg>', page, re.S)
        assert chart is not None and "<title>1</title>" in chart.group(0)
        graph = await c.get(f"/node/{node.pk}/graph.svg", params={"depth": "2"})
        from miniengine.web.graph import missing

        if missing() is None:
            assert graph.status_code == 200
            assert graph.headers["content-type"] == "image/svg+xml"
            assert graph.text.lstrip().startswith("<?xml") and "<svg" in graph.text
        else:  # no dot here: the page says so
            assert graph.status_code == 503
            message = missing()
            assert message is not None
            page = (await c.get(f"/process/{node.pk}")).text
            assert str(markupsafe.escape(message)) in page  # as the template escapes it


def test_the_json_of_the_list_is_json() -> None:
    from miniengine.storage.interfaces.reads import ProcessSummary
    from miniengine.web.stream import summary_json

    summary = ProcessSummary(1, "u", "L", "finished", 3, True, 1.0, 2.0, None)
    text = json.dumps(summary_json(summary))
    assert json.loads(text)["state"] == "finished [exit 3] (paused)"


def test_importing_the_web_package_loads_no_web_framework() -> None:
    import subprocess

    code = (
        "import sys, miniengine, miniengine.web; "
        "print(sorted(m for m in ('starlette', 'uvicorn', 'jinja2', 'miniengine.web.app') "
        "if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


async def test_mounted_in_another_app_it_links_and_keeps_its_cookie_below_its_path() -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    pk = new_process()
    web = create_app(token=TOKEN)
    host = Starlette(routes=[Mount("/engine", app=web)])
    transport = httpx.ASGITransport(app=host)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as c:
        assert (await c.get("/engine/")).status_code == 403
        entered = await c.get(f"/engine/process/{pk}?token={TOKEN}")
        assert entered.headers["location"] == f"/engine/process/{pk}"
        assert "Path=/engine;" in entered.headers["set-cookie"]
        page = (await c.get(f"/engine/process/{pk}")).text
        assert 'href="/engine/static/app.css"' in page
        assert f'formaction="/engine/process/{pk}/kill"' in page
        assert (await c.get("/engine/static/app.js")).status_code == 200
        # the host app did not run the web app's lifespan: live updates say so
        off = await c.get("/engine/events", headers={"accept": "application/json"})
        assert off.status_code == 503
        assert "lifespan" in off.json()["error"]


async def test_a_calcjob_page_has_its_job_section() -> None:
    new = NewProcess(
        uuid=new_uuid(),
        node_type="process.calcjob",
        process_type="tests.test_web_app:SomeJob",
        process_label="SomeJob",
        process_state="created",
        label="",
        description="",
        inputs=[("x", Int(4))],
        input_link_type="input_calc",
        owner=None,
        lease_expires=None,
        attributes={"job_id": "4242"},
    )
    pk, _ = store_for(None).provenance.begin_process(new)
    async with client() as c:
        page = (await c.get(f"/process/{pk}")).text
        section = re.search(r'<section id="calcjob">.*?</section>', page, re.S)
        assert section is not None
        assert '<dd class="job-id">4242</dd>' in section.group(0)
        assert (await c.get(f"/api/process/{pk}")).json()["calcjob"]["job_id"] == "4242"
        plain = (await c.get(f"/process/{(await arun_get_node(add, 1, 2))[1].pk}")).text
        assert 'id="calcjob"' not in plain


HOSTILE = [
    {"label": "\x00"},
    {"group": "a\x00b"},
    {"label": "%_\\'\"; DROP TABLE nodes; --"},
    {"since": "1" + "0" * 400 + "d"},
    {"since": "1e400"},
    {"until": "10000-01-01"},
    {"since": "0001-01-01T00:00"},
    {"before": "99999999999999999999"},
    {"before": "-1"},
    {"limit": "0"},
    {"limit": "100000"},
    {"state": "finished,,running"},
    {"label": "x" * 201},
    {"back": "9." * 60},
]


@pytest.mark.backends
async def test_hostile_filters_are_answered_not_crashed_on() -> None:
    await arun_get_node(add, 1, 2)
    async with client() as c:
        for params in HOSTILE:
            for path in ("/", "/api/processes"):
                answer = await c.get(path, params=params)
                assert answer.status_code in (200, 400), (params, answer.status_code, answer.text)
        assert len((await c.get("/api/processes")).json()["processes"]) == 1  # still answers


async def test_behind_https_the_cookie_is_secure() -> None:
    app = create_app(token=TOKEN)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://engine.example") as c:
        cookie = (await c.get(f"/?token={TOKEN}")).headers["set-cookie"]
        assert "; Secure" in cookie
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as c:
        assert "Secure" not in (await c.get(f"/?token={TOKEN}")).headers["set-cookie"]
