"""A real headless Chromium driven by Playwright, and ``miniengine web`` as a subprocess.

The browser is Debian's ``chromium`` (``.ci/run`` installs it), launched by Playwright's Python
package (the ``test`` extra; its wheel carries the driver, so nothing is downloaded) with a fresh
profile in a temp folder.  This machine has no network: without the flags of :data:`FLAGS`
Chromium keeps trying to reach Google's services and stalls on the refused connections.

Without Chromium or Playwright the tests that need them skip with the reason printed, and fail
under ``CI``, as the PostgreSQL ones do.

Playwright's synchronous API keeps an event loop running on the thread that uses it, so the
engine's own synchronous calls (``submit``, ``run``), which refuse to run on a thread whose loop
is running, go through :func:`off_loop` in a test that also drives the browser.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pytest

T = TypeVar("T")

#: Where Debian's package puts the browser.
CHROMIUM = Path("/usr/bin/chromium")

#: Headless, and quiet on a machine without network: no sandbox (root in a container), no GPU,
#: no QUIC, and none of the background fetches (updates, sync, first-run pages).
FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)

#: The environment variable naming a folder for screenshots and other test artifacts.
ARTIFACTS_VAR = "MINIENGINE_ARTIFACTS"


def chromium_executable() -> Path | None:
    """Debian's Chromium, else any ``chromium`` on ``$PATH``."""
    if CHROMIUM.exists():
        return CHROMIUM
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    return Path(found) if found else None


def browser_problem() -> str | None:
    """Why the browser tests cannot run here (``None``: they can)."""
    if chromium_executable() is None:
        return "Chromium is not installed (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[test]')"
    return None


def require_browser() -> Path:
    """Chromium's path; skip the test (fail under ``CI``) when Chromium or Playwright is missing."""
    reason = browser_problem()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"{reason}: .ci/run installs Debian's chromium and the test extra")
        print(f"skipped: {reason}")
        pytest.skip(reason)
    executable = chromium_executable()
    assert executable is not None
    return executable


@contextmanager
def running_chromium(profile: Path, width: int = 1280, height: int = 600) -> Iterator[Any]:
    """A headless Chromium with a fresh profile in ``profile``: its Playwright ``BrowserContext``
    (closed, with the browser, on exit)."""
    executable = require_browser()
    from playwright.sync_api import sync_playwright

    profile.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(executable),
            headless=True,
            args=list(FLAGS),
            viewport={"width": width, "height": height},
        )
        try:
            yield context
        finally:
            context.close()


def off_loop(call: Callable[..., T], *args: Any, timeout: float = 60, **kwargs: Any) -> T:
    """``call(*args, **kwargs)`` on a thread of its own: Playwright's loop runs on this one."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(call, *args, **kwargs).result(timeout=timeout)


def artifacts_folder(fallback: Path) -> Path:
    """``$MINIENGINE_ARTIFACTS`` (created if needed), else ``fallback``; printed, so a person
    finds the screenshots of a run."""
    chosen = Path(os.environ.get(ARTIFACTS_VAR) or fallback)
    chosen.mkdir(parents=True, exist_ok=True)
    print(f"web view screenshots and artifacts: {chosen}")
    return chosen


# the web view as a subprocess ------------------------------------------------------------------

#: The line ``miniengine web`` prints: the URL with its access token.
_URL = re.compile(r"(https?://[^\s/]+/\S*[?&]token=[^\s&#]+)")


@dataclass
class WebServer:
    """A running ``miniengine web``: the URL it printed (with the token) and its process."""

    url: str
    process: subprocess.Popen[str]
    #: every line the server printed on stdout and stderr so far
    output: list[str]

    @property
    def base(self) -> str:
        """``http://host:port`` without path or token."""
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def token(self) -> str:
        match = re.search(r"[?&]token=([^&#]+)", self.url)
        assert match is not None, self.url
        return match.group(1)

    def page_url(self, path: str) -> str:
        """The URL of ``path`` on this server, without the token (the cookie carries it)."""
        return self.base + path

    def stop(self) -> None:
        """Stop the server as Ctrl-C would; kill it when it does not end within 10 s."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def _pump(stream: Any, lines: list[str], found: threading.Event) -> None:
    for line in stream:
        lines.append(line.rstrip("\n"))
        if _URL.search(line):
            found.set()
    found.set()  # the stream ended: whoever waits looks at why


@contextmanager
def running_web(
    db: Path | str | None, *args: str, env: dict[str, str] | None = None, timeout: float = 30
) -> Iterator[WebServer]:
    """``python -m miniengine web --db DB --port 0 ARGS`` until the block ends; the URL it prints
    (with the token) is read from its output.  Without ``db`` the server takes
    ``$MINIENGINE_DB`` (a PostgreSQL URL then stays off the command line)."""
    where = [] if db is None else ["--db", str(db)]
    process = subprocess.Popen(
        [sys.executable, "-m", "miniengine", "web", *where, "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    lines: list[str] = []
    found = threading.Event()
    assert process.stdout is not None
    threading.Thread(target=_pump, args=(process.stdout, lines, found), daemon=True).start()
    server = WebServer("", process, lines)
    try:
        if not found.wait(timeout):
            raise AssertionError(f"miniengine web printed no URL within {timeout} s: {lines}")
        urls = [match.group(1) for line in lines if (match := _URL.search(line))]
        if not urls:
            raise AssertionError(f"miniengine web ended without a URL: {lines}")
        server.url = urls[0]
        yield server
    finally:
        server.stop()
