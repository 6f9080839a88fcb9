"""The web view as an attacker on the same machine or network would try it: another site's
name pointed at loopback (DNS rebinding), paths out of the static folder, graphs too big to
draw, markup in every value a page shows (the database's path, group names, attribute values,
retrieved file names), and the token leaking into a page or a redirect."""

from __future__ import annotations

import argparse
from pathlib import Path

import httpx
import pytest

from miniengine import Dict, Int, arun_get_node, workfunction
from miniengine.orm import Group
from miniengine.web import create_app
from miniengine.web.auth import host_name
from tests.test_async_reads_web import store_calcjob
from tests.test_web_app import BASE, TOKEN, add, client

HOSTILE = "<img src=x onerror=alert(1)>"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@workfunction
def add_twice(x, y):
    return add(add(x, y), y)


def assert_shown_as_text(html: str) -> None:
    assert HOSTILE not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html


# -- who may ask --------------------------------------------------------------------------------


async def test_on_loopback_a_request_naming_another_host_is_refused_token_or_not() -> None:
    app = create_app(token=TOKEN, allowed_hosts=LOOPBACK)
    header = {"authorization": f"token {TOKEN}"}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE, headers=header) as c:
        for host in ("127.0.0.1:8765", "localhost:8765", "[::1]:8765", "LOCALHOST"):
            assert (await c.get("/api/processes", headers={"host": host})).status_code == 200
        for host in ("attacker.example:8765", "attacker.example", "127.0.0.1.attacker.example"):
            refused = await c.get("/api/processes", headers={"host": host})
            assert refused.status_code == 403, host
            assert "--allow-host" in refused.text
            entered = await c.get(f"/?token={TOKEN}", headers={"host": host})
            assert entered.status_code == 403 and "set-cookie" not in entered.headers
    # no list of names: every Host is answered (a server on every address, or mounted)
    anywhere = create_app(token=TOKEN)
    transport = httpx.ASGITransport(app=anywhere)
    async with httpx.AsyncClient(transport=transport, base_url=BASE, headers=header) as c:
        assert (await c.get("/api/processes", headers={"host": "engine.example"})).is_success


def test_the_command_allows_the_loopback_names_and_the_ones_it_is_given() -> None:
    from miniengine.cli.web import allowed_hosts

    def args(host: str, *allow: str) -> argparse.Namespace:
        return argparse.Namespace(host=host, allow_host=list(allow))

    assert allowed_hosts(args("127.0.0.1")) == LOOPBACK
    assert allowed_hosts(args("[::1]", "Engine.Example")) == LOOPBACK | {"engine.example"}
    assert allowed_hosts(args("0.0.0.0")) is None  # reachable by any name: the token guards
    assert host_name("[::1]:80") == "::1" and host_name("Example:1") == "example"
    assert host_name("") is None and host_name("[::1") is None


async def test_the_token_never_shows_in_a_page_a_redirect_or_an_error() -> None:
    async with client(auth=None) as c:
        wrong = "wrong-token-" + "z" * 30
        refused = await c.get(f"/?token={wrong}")
        assert refused.status_code == 403 and wrong not in refused.text
        entered = await c.get(f"/process/1?state=x&token={TOKEN}")
        assert TOKEN not in entered.headers["location"]
        assert entered.headers["referrer-policy"] == "no-referrer"
        crlf = await c.get(f"/a%0d%0aSet-Cookie:%20x=1?token={TOKEN}")
        assert "\r" not in crlf.headers["location"] and "x=1" not in crlf.headers.get_list(
            "set-cookie"
        )
    async with client() as c:
        for path in ("/", "/process/999999", "/node/999999", "/no/such/page", "/daemon"):
            answer = await c.get(path)
            assert TOKEN not in answer.text, path
            assert answer.headers["x-frame-options"] == "DENY"  # no framing, any status
            assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]


async def test_no_path_leads_out_of_the_static_folder() -> None:
    async with client() as c:
        assert (await c.get("/static/app.js")).status_code == 200
        for raw in (
            b"/static/../app.py",
            b"/static/%2e%2e/app.py",
            b"/static/..%2fapp.py",
            b"/static/%2e%2e%2f%2e%2e%2fexceptions.py",
            b"/static//etc/passwd",
            b"/static/..\\app.py",
        ):
            answer = await c.get(httpx.URL(BASE).copy_with(raw_path=raw))
            assert answer.status_code in (400, 404), raw
            assert "create_app" not in answer.text and "root:" not in answer.text


# -- what a request may cost -----------------------------------------------------------------------


async def test_a_graph_too_big_to_draw_is_refused_before_dot_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from miniengine.web import graph

    if graph.missing():
        pytest.skip(graph.missing() or "")
    _, work = await arun_get_node(add_twice, Int(1), Int(2))
    ran: list[object] = []
    real_run = graph.subprocess.run
    monkeypatch.setattr(graph.subprocess, "run", lambda *a, **k: ran.append(a) or real_run(*a, **k))
    async with client() as c:
        assert (await c.get(f"/node/{work.pk}/graph.svg?depth=1")).status_code == 200
        assert len(ran) == 1
        monkeypatch.setattr(graph, "MAX_NODES", 3)
        refused = await c.get(f"/node/{work.pk}/graph.svg?depth=1")
        assert refused.status_code == 503 and "too many" in refused.text
        assert len(ran) == 1  # dot never started
        assert (await c.get(f"/node/{work.pk}/graph.svg?depth=99")).status_code == 400
        assert (await c.get(f"/node/{work.pk}/graph.svg?direction=__import__")).status_code == 400


# -- every value is text -------------------------------------------------------------------------


async def test_markup_in_the_database_path_group_names_attributes_and_file_names(
    tmp_path: Path,
) -> None:
    data = Dict({"key": HOSTILE, HOSTILE: 1}).store()
    Group(label=HOSTILE).store().add_nodes([data])
    job = store_calcjob({HOSTILE: b"content"})
    async with client() as c:
        assert_shown_as_text((await c.get(f"/node/{data.pk}")).text)
        assert_shown_as_text((await c.get("/", params={"group": HOSTILE})).text)
        assert_shown_as_text((await c.get(f"/process/{job}")).text)  # its retrieved files

    from miniengine.storage.store import Store

    folder = tmp_path / HOSTILE
    folder.mkdir()
    Store(folder / "engine.sqlite").close()
    app = create_app(db=folder / "engine.sqlite", token=TOKEN)
    transport = httpx.ASGITransport(app=app)
    headers = {"authorization": f"token {TOKEN}"}
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url=BASE, headers=headers) as c,
    ):
        assert_shown_as_text((await c.get("/")).text)
