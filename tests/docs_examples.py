"""Run the code blocks of the documentation (README.md and docs/**/*.md) as a reader would.

Each page gets a folder of its own (its working directory and ``$HOME``) and a database of its own
(``$MINIENGINE_DB``); its blocks run in the order of the page, so a later block sees what an
earlier one stored, and files that an earlier block saved.

- Every page starts with the modules that the quick start saves (``arith.py``, ``chains.py``):
  the guides import them. A page that saves its own replaces them.
- A ``python`` block runs in a fresh interpreter. If its first line is a comment naming a file
  (``# chains.py``), the block is also saved under that name first, so that later blocks (and
  daemon workers started in the page's folder) can import it. If a ``text`` block follows it
  directly, that is its output, compared loosely.
- A ``console`` block runs each ``$ command`` line (``miniengine`` and ``python`` are this
  checkout's); the lines after a command are its output, compared loosely. ``export NAME=VALUE``
  sets a variable for the rest of the page. A ``bash`` block without ``$`` prompts runs each line.
- Loosely: uuids, times and absolute paths are masked, runs of spaces and of dashes collapsed,
  and every line shown must appear in the output in that order (``...`` matches anything). A
  command's numbers are masked too (ages, pids, sizes); a python block's are not (its fresh
  database gives the same pks at every run). A command whose shown output starts a line with
  ``error:`` must fail; any other must succeed.
- Other blocks (``text``, ``sql``, ``mermaid``, ...) are not run.

An HTML comment on the line before a block changes this:

- ``<!-- docs-test: skip (why) -->``: the block is not run (a reader could not run it here: it
  needs a cluster, installs a package, ...). The test reports it as skipped, with the reason.
- ``<!-- docs-test: daemon -->``: the block needs a daemon: one is started for the page's
  database before it, unless one is running already (stopped at the end of the page).
- ``<!-- docs-test: no-compare (why) -->``: run the block, but do not compare its output (the
  output shown is an example from another database).
- ``<!-- docs-test: fails -->``: the block is meant to fail (show an error): it must exit non-zero.
- ``<!-- docs-test: continue -->``: a python block that goes on from the python block before it,
  in the same interpreter, as in an interactive session (it uses what that one defined).
- ``<!-- docs-test: pytest -->``: a python block of tests: saved as a test module and run with
  ``python -m pytest`` in the page's folder (a block saved as ``# conftest.py`` configures it).

- ``<!-- docs-test: skip-page (why) -->`` anywhere in a page: none of its blocks run (the page
  needs what a test cannot have: a cluster, several hosts, a PostgreSQL server of its own).

Several may be combined with commas: ``<!-- docs-test: daemon, no-compare (timings) -->``.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DIRECTIVE = re.compile(r"^\s*<!--\s*docs-test:\s*(?P<body>.*?)\s*-->\s*$")
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")
RUN_LANGUAGES = {"python", "py", "console", "bash", "sh", "shell"}
FILE_COMMENT = re.compile(r"^[#;]\s*(?P<name>[\w./-]+\.(py|ini|toml|cfg|txt|sh))\s*$")
#: The pages whose modules every page starts with (the first that saves a name wins).
QUICK_START = [ROOT / "docs" / "tutorial" / "quick-start.md", ROOT / "README.md"]
PYTHON_TIMEOUT = 120.0
COMMAND_TIMEOUT = 60.0


def pages() -> list[Path]:
    """The pages whose examples run: the README and every page under docs/ (not the generated
    reference pages, which hold no examples)."""
    found = [ROOT / "README.md"]
    found += sorted(
        path
        for path in (ROOT / "docs").rglob("*.md")
        if "reference" not in path.relative_to(ROOT / "docs").parts
    )
    return found


@dataclass
class Block:
    """One fenced code block of a page."""

    page: Path
    line: int  # 1-based line of the opening fence
    language: str
    text: str
    directives: dict[str, str] = field(default_factory=dict)
    output: str | None = None  # a ``text`` block right after a python block: its output

    @property
    def id(self) -> str:
        page = self.page.relative_to(ROOT) if self.page.is_relative_to(ROOT) else self.page
        return f"{page}:{self.line}"

    @property
    def runs(self) -> bool:
        return self.language in RUN_LANGUAGES

    @property
    def skip_reason(self) -> str | None:
        if "skip" in self.directives:
            return self.directives["skip"] or "marked skip"
        return None


def _directives(body: str) -> dict[str, str]:
    """``skip (why), daemon`` -> ``{"skip": "why", "daemon": ""}``."""
    found: dict[str, str] = {}
    for part in re.findall(r"[\w-]+(?:\s*\([^)]*\))?|[\w-]+:[^,]*", body):
        match = re.match(r"([\w-]+)\s*(?:\((.*)\)|:(.*))?$", part.strip(), re.S)
        if match:
            found[match.group(1)] = (match.group(2) or match.group(3) or "").strip()
    return found


def parse(page: Path) -> list[Block]:
    """Every fenced block of ``page``, with the directives of the comment before it."""
    lines = page.read_text().splitlines()
    blocks: list[Block] = []
    index = 0
    previous_end = -1
    while index < len(lines):
        match = FENCE.match(lines[index])
        if not match:
            index += 1
            continue
        indent, fence = match.group("indent"), match.group("fence")
        info = match.group("info").strip()
        language = info.split()[0].lower() if info else ""
        body: list[str] = []
        end = index + 1
        while end < len(lines) and not lines[end].strip().startswith(fence):
            line = lines[end]
            body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
            end += 1
        before = index - 1
        while before >= 0 and not lines[before].strip():
            before -= 1
        directive = DIRECTIVE.match(lines[before]) if before >= 0 else None
        block = Block(
            page,
            index + 1,
            language,
            "\n".join(body) + "\n",
            _directives(directive.group("body")) if directive else {},
        )
        if (
            language == "text"
            and blocks
            and blocks[-1].language in ("python", "py")
            and blocks[-1].output is None
            and previous_end == before
            and not directive
        ):
            blocks[-1].output = block.text  # the output of the python block just before
        blocks.append(block)
        previous_end = end
        index = end + 1
    for line in lines:
        directive = DIRECTIVE.match(line)
        if directive and "skip-page" in _directives(directive.group("body")):
            reason = _directives(directive.group("body"))["skip-page"] or "marked skip-page"
            for block in blocks:
                block.directives.setdefault("skip", reason)
    return blocks


# -- loose comparison ----------------------------------------------------------------------------

_MASKS = [
    (re.compile(r"\x1b\[[0-9;]*m"), ""),
    (re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"), "<uuid>"),
    (re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d(:\d\d([.,]\d+)?)?(\+\d\d:\d\d|Z)?"), "<time>"),
    (re.compile(r"\b\d\d:\d\d:\d\d(\.\d+)?"), "<time>"),
    (re.compile(r"(?<![\w.])(~|/)[\w.@~+-]*(/[\w.@~*+{}-]*)+"), "<path>"),
    (re.compile(r"(?<![\w.])\d[\d,]*(\.\d+)?"), "0"),  # numbers: only with mask_numbers
    (re.compile(r"-{2,}"), "--"),
    (re.compile(r"\s+"), " "),
]


_NUMBERS = _MASKS[5]


def normalise(text: str, mask_numbers: bool = True) -> list[str]:
    """The lines of ``text`` with what changes from run to run masked (numbers too, unless told
    not to); blank lines dropped."""
    out = []
    masks = _MASKS if mask_numbers else [mask for mask in _MASKS if mask is not _NUMBERS]
    for line in text.splitlines():
        for pattern, replacement in masks:
            line = pattern.sub(replacement, line)
        line = line.strip()
        if line:
            out.append(line)
    return out


def _line_pattern(expected: str) -> re.Pattern[str]:
    parts = [re.escape(part) for part in expected.split("...")]
    return re.compile("^" + ".*".join(parts) + "$")


def missing_lines(expected: str, actual: str, mask_numbers: bool = True) -> list[str]:
    """The lines of ``expected`` not found, in order, in ``actual`` (empty: it matches)."""
    have = normalise(actual, mask_numbers)
    position = 0
    missing = []
    for line in normalise(expected, mask_numbers):
        if line == "...":
            continue
        pattern = _line_pattern(line)
        for index in range(position, len(have)):
            if pattern.match(have[index]):
                position = index + 1
                break
        else:
            missing.append(line)
    return missing


# -- running a page --------------------------------------------------------------------------------


@dataclass
class Command:
    """One ``$ command`` of a console block and the output shown under it."""

    text: str
    output: str


def commands(block: Block) -> Iterator[Command]:
    """The commands of a console or bash block."""
    lines = block.text.splitlines()
    prompted = any(line.startswith("$ ") for line in lines)
    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        if prompted and not line.startswith("$ "):
            continue  # output without a command: cannot happen after the first prompt
        if not prompted and (not line.strip() or line.lstrip().startswith("#")):
            continue
        command = line[2:] if prompted else line
        while command.endswith("\\") and index < len(lines):
            command = command[:-1] + " " + lines[index].strip()
            index += 1
        output: list[str] = []
        while prompted and index < len(lines) and not lines[index].startswith("$ "):
            output.append(lines[index])
            index += 1
        yield Command(command.strip(), "\n".join(output))


SESSION = r"""
def _serve():
    import json, os, sys, traceback

    sys.path.insert(0, os.getcwd())
    replies = os.fdopen(int(sys.argv[1]), "w")
    namespace = sys.modules["__main__"].__dict__  # classes defined by a block are importable
    del namespace["_serve"]
    for request in sys.stdin:
        path = json.loads(request)["path"]
        capture = open(path + ".out", "w+b")
        sys.stdout.flush(); sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        os.dup2(capture.fileno(), 1); os.dup2(capture.fileno(), 2)
        status = 0
        try:
            namespace["__file__"] = path
            exec(compile(open(path).read(), path, "exec"), namespace)
        except SystemExit as exit:
            status = exit.code if isinstance(exit.code, int) else 1
        except BaseException:
            traceback.print_exc()
            status = 1
        finally:
            sys.stdout.flush(); sys.stderr.flush()
            os.dup2(saved[0], 1); os.dup2(saved[1], 2)
            os.close(saved[0]); os.close(saved[1])
        capture.seek(0)
        output = capture.read().decode(errors="replace")
        capture.close()
        replies.write(json.dumps({"status": status, "output": output}) + "\n")
        replies.flush()


_serve()
"""


class Session:
    """A Python interpreter that runs the blocks it is given one after the other, in one
    namespace, as a reader's interactive session would (a ``continue`` block goes on from the one
    before). Its output is captured at the file descriptors, so a subprocess's output counts too."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        read, write = os.pipe()
        self.process = subprocess.Popen(
            [sys.executable, "-c", SESSION, str(write)],
            cwd=folder,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(write,),
            text=True,
        )
        os.close(write)
        self.replies = os.fdopen(read, "r")

    def run(self, path: Path, timeout: float) -> tuple[int, str]:
        """Run the file ``path`` in the session: (exit status, output)."""
        import json
        import select

        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"path": str(path)}) + "\n")
        self.process.stdin.flush()
        ready, _, _ = select.select([self.replies], [], [], timeout)
        if not ready:
            self.close()
            raise AssertionError(f"{path.name} did not finish within {timeout} s")
        line = self.replies.readline()
        if not line:
            status = self.process.wait()
            return status or 1, f"the interpreter ended (exit status {status})"
        reply = json.loads(line)
        return int(reply["status"]), str(reply["output"])

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.replies.close()


def module_name(block: Block) -> str | None:
    """The file a block is saved as: the name in a first-line comment (``# chains.py``)."""
    if not block.text.strip():
        return None
    named = FILE_COMMENT.match(block.text.splitlines()[0])
    return named.group("name") if named else None


class Page:
    """The folder, database, environment and daemon of one page's run."""

    def __init__(self, page: Path, folder: Path) -> None:
        self.page = page
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        bin_folder = folder / ".bin"
        bin_folder.mkdir(exist_ok=True)
        for name, module in (("miniengine", "-m miniengine"), ("python", ""), ("python3", "")):
            shim = bin_folder / name
            shim.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} {module} "$@"\n')
            shim.chmod(0o755)
        self.db = folder / "engine.sqlite"
        self.env = {
            **os.environ,
            "HOME": str(folder),
            "MINIENGINE_DB": str(self.db),
            "MINIENGINE_HOST": "vm",  # the host name the pages show
            "PATH": os.pathsep.join([str(bin_folder), os.environ.get("PATH", "")]),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "PYTHONDONTWRITEBYTECODE": "1",
            "COLUMNS": "100",
        }
        self.env.pop("MINIENGINE_REPOSITORY", None)
        self.daemon_running = False
        self.guard: object | None = None
        self.counter = 0
        self.session: Session | None = None
        for source in QUICK_START:  # the modules that the guides import
            for block in parse(source) if source.exists() else []:
                name = module_name(block)
                if name is not None and block.runs and not (folder / name).exists():
                    (folder / name).write_text(block.text)
        for block in parse(page):  # its configuration files (pytest.ini, ...): never run
            name = module_name(block)
            if name is not None and not block.runs:
                (folder / name).write_text(block.text)

    # -- the daemon --------------------------------------------------------------------------

    def _guard(self) -> object:
        if self.guard is None:
            from tests.workchains.daemon_chains import DaemonGuard

            self.guard = DaemonGuard(self.db)
        return self.guard

    def ensure_daemon(self, block: Block) -> None:
        if self.daemon_running or "daemon start" in block.text:
            return
        completed = self.shell("miniengine daemon start", COMMAND_TIMEOUT)
        assert completed.returncode == 0, f"could not start a daemon: {completed.stdout}"
        self.daemon_running = True

    def track(self, command: str) -> None:
        if re.search(r"daemon(\.__main__)? start\b", command):
            self.daemon_running = True
        elif re.search(r"daemon(\.__main__)? stop\b", command):
            self.daemon_running = False
        if self.guard is not None or self.daemon_running:
            self._guard().track_all()  # type: ignore[attr-defined]

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None
        if self.guard is not None or self.daemon_running:
            self._guard().close()  # type: ignore[attr-defined]

    # -- running ----------------------------------------------------------------------------

    def shell(self, command: str, timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", command],
            cwd=self.folder,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
        )

    def run(self, block: Block) -> None:
        """Run ``block``; an AssertionError says what went wrong."""
        if "daemon" in block.directives:
            self.ensure_daemon(block)
        if block.language in ("python", "py"):
            self.run_python(block)
        else:
            self.run_commands(block)

    def run_python(self, block: Block) -> None:
        named = module_name(block)
        self.counter += 1
        prefix = "test_block" if "pytest" in block.directives else "block"
        path = self.folder / (named or f"{prefix}_{self.counter}.py")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(block.text)
        if "pytest" in block.directives:
            # without the plugins that only slow its start here (hypothesis, benchmark)
            command = (
                "python -m pytest -q -p no:cacheprovider -p no:hypothesispytest -p no:benchmark "
                + shlex.quote(path.name)
            )
            completed = self.shell(command, PYTHON_TIMEOUT)
            self.track("")
            self.check(block, command, completed, None, "fails" in block.directives)
            return
        if self.session is None or "continue" not in block.directives:
            if self.session is not None:
                self.session.close()
            self.session = Session(self.folder, self.env)
        try:
            status, output = self.session.run(path, PYTHON_TIMEOUT)
        finally:
            self.track("")
        completed = subprocess.CompletedProcess([path.name], status, output)
        self.check(
            block, "python " + path.name, completed, block.output, "fails" in block.directives
        )

    def run_commands(self, block: Block) -> None:
        ran = 0
        for command in commands(block):
            ran += 1
            export = re.fullmatch(r"export (\w+)=(.*)", command.text)
            if export:
                value = self.shell(f"printf %s {export.group(2)}", COMMAND_TIMEOUT).stdout
                self.env[export.group(1)] = value
                continue
            try:
                completed = self.shell(command.text, COMMAND_TIMEOUT)
            finally:
                self.track(command.text)
            shown = command.output if command.output.strip() else None
            fails = "fails" in block.directives or any(
                line.startswith("error:") for line in command.output.splitlines()
            )
            self.check(block, command.text, completed, shown, fails)
        assert ran, f"{block.id}: no command found in the block"

    def check(
        self,
        block: Block,
        what: str,
        completed: subprocess.CompletedProcess[str],
        shown: str | None,
        fails: bool,
    ) -> None:
        output = completed.stdout
        where = f"{block.id}: `{what}`"
        if fails:
            assert completed.returncode != 0, f"{where} was meant to fail; it printed:\n{output}"
        else:
            assert completed.returncode == 0, (
                f"{where} exited with {completed.returncode}; it printed:\n{output}"
            )
        if shown is None or "no-compare" in block.directives:
            return
        # a script's output is the same at every run (a fresh database: the same pks too); a
        # command's shows ages, pids and sizes
        script = block.language in ("python", "py")
        missing = missing_lines(shown, output, mask_numbers=not script)
        assert not missing, (
            f"{where}: the page shows lines that the output lacks:\n  "
            + "\n  ".join(missing)
            + "\nthe output (normalised):\n  "
            + "\n  ".join(normalise(output, mask_numbers=not script))
        )
