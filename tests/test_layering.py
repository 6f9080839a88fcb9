"""Layering (DESIGN.md): the pure core does no IO and no asyncio; imports only point down.

The import checks run in fresh interpreters, so that what this test process has already imported
cannot hide an import made by the module under test.
"""

from __future__ import annotations

import ast
import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import miniengine
import miniengine.core

REPO = Path(__file__).resolve().parents[1]
PACKAGE = Path(miniengine.__file__).resolve().parent

#: Top-level modules the pure core must never pull in (msgpack is allowed: the codec is pure).
FORBIDDEN_IN_CORE = (
    "asyncio",
    "anyio",
    "aiosqlite",
    "sqlite3",
    "_sqlite3",
    "uvloop",
    "socket",
    "subprocess",
    "miniengine.storage",
    "miniengine.runtime",
)

CORE_MODULES = sorted(
    ["miniengine.core", "miniengine.exceptions"]
    + [info.name for info in pkgutil.walk_packages(miniengine.core.__path__, "miniengine.core.")]
)


def imported_after(statement: str, watched: tuple[str, ...]) -> list[str]:
    """The modules of ``watched`` (or their submodules) present after ``statement`` runs fresh."""
    probe = (
        "import json, sys\n"
        f"{statement}\n"
        f"watched = {watched!r}\n"
        "print(json.dumps(sorted(name for name in sys.modules\n"
        "    if any(name == w or name.startswith(w + '.') for w in watched))))\n"
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    completed = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    found: list[str] = json.loads(completed.stdout.strip().splitlines()[-1])
    return found


def test_core_modules_are_found() -> None:
    # guard against the discovery silently finding nothing
    for name in ("miniengine.core.states", "miniengine.core.codec", "miniengine.exceptions"):
        assert name in CORE_MODULES


@pytest.mark.parametrize("module", CORE_MODULES)
def test_core_module_imports_no_io_and_no_event_loop(module: str) -> None:
    assert imported_after(f"import {module}", FORBIDDEN_IN_CORE) == []


def test_importing_the_whole_core_imports_no_io_and_no_event_loop() -> None:
    statement = "; ".join(f"import {module}" for module in CORE_MODULES)
    assert imported_after(statement, FORBIDDEN_IN_CORE) == []


def test_import_miniengine_is_lazy() -> None:
    heavy = (
        "anyio",
        "asyncio",
        "sqlite3",
        "msgpack",
        "miniengine.core",
        "miniengine.storage",
        "miniengine.runtime",
    )
    assert imported_after("import miniengine", heavy) == []


# imports only point down ----------------------------------------------------------------------

LAYERS = {
    "core": 1,
    "exceptions": 1,
    "plugins": 1,  # finding a plugin class by name
    "schedulers": 1,  # sans-IO: scripts and the parsing of command output
    "storage": 2,
    "transports": 2,  # files and commands on a computer
    "folders": 2,
    "runtime": 3,
}
EDGE = 4  # the daemon, the CLI, testing helpers, the demo, and the package's own __init__


def layer_of(module: str) -> int:
    parts = module.split(".")
    if parts[0] != "miniengine" or len(parts) == 1:
        return EDGE
    return LAYERS.get(parts[1], EDGE)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def runtime_imports(path: Path, module: str) -> list[tuple[int, str]]:
    """``(line, imported module)`` for every miniengine import outside ``if TYPE_CHECKING``."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    type_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                type_only.update(id(sub) for sub in ast.walk(child))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            for alias in node.names:  # ``from miniengine.storage import store`` names a module
                found.append((node.lineno, f"{target}.{alias.name}"))
    return [(line, name) for line, name in found if name.split(".")[0] == "miniengine"]


def known_module(name: str) -> str:
    """Trim ``from package import name`` targets that are attributes, not modules."""
    parts = name.split(".")
    while len(parts) > 1:
        candidate = PACKAGE.parent.joinpath(*parts)
        if candidate.with_suffix(".py").exists() or (candidate / "__init__.py").exists():
            break
        parts.pop()
    return ".".join(parts)


def test_imports_only_point_down() -> None:
    violations = []
    sources = sorted(PACKAGE.rglob("*.py"))
    assert len(sources) > 10
    for path in sources:
        module = module_name(path)
        if module == "miniengine":
            continue  # the lazy public namespace, importing by name on first use
        for line, imported in runtime_imports(path, module):
            target = known_module(imported)
            if layer_of(target) > layer_of(module):
                violations.append(f"{module} (line {line}) imports {target}")
    assert violations == []


def test_reading_types_of_the_runtime_imports_no_runtime_from_the_core() -> None:
    # a Data type or a codec type defined above the core is known once the runtime's registry
    # (miniengine.runtime.registry) is imported, never by the core importing a module by name
    statement = (
        "from miniengine.core import codec, data\n"
        "from miniengine.exceptions import CheckpointError, UnknownDataTypeError\n"
        "try:\n"
        "    data.data_class('core.singlefile')\n"
        "except UnknownDataTypeError:\n"
        "    pass\n"
        "import msgpack\n"
        "blob = codec.encode(None)[:4] + msgpack.packb([msgpack.ExtType(31, b''), 'x'])\n"
        "try:\n"
        "    codec.decode(blob)\n"
        "except CheckpointError:\n"
        "    pass\n"
    )
    assert imported_after(statement, ("miniengine.runtime", "miniengine.storage")) == []
