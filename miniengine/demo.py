# mypy: disable-error-code="no-untyped-def"
"""The seed's scenarios, run by ``python -m miniengine demo``.

Scenario 1 (verbatim except for the imports) runs here and :func:`format_provenance` prints the
workfunction's node; scenario 2 (:mod:`miniengine.demo_nested`) is submitted to a daemon that the
demo starts and stops itself.  The process functions are defined at module level, exactly as in
the seed, so their process type (``miniengine.demo.add``...) can be imported again.  (Their
parameters carry no type hints, as in the seed: a process function's hints would become its valid
input types.)
"""

from __future__ import annotations

from typing import Any

from miniengine import Int, calcfunction, run, workfunction

# --- seed scenario 1 -----------------------------------------------------------------------------


@calcfunction
def add(x, y):
    return Int(x + y)


@calcfunction
def multiply(x, y):
    return Int(x * y)


@workfunction
def add_and_multiply(x, y, z):
    sum = add(x, y)
    product = multiply(sum, z)
    return product


def scenario_1() -> tuple[Any, Any]:
    """Run scenario 1 on the default database, print as the seed does, return ``(result, node)``."""
    result, node = run.get_node(add_and_multiply, Int(1), Int(2), Int(3))
    print(result)
    print(node)
    return result, node


# --- provenance, like a small `verdi process show` ------------------------------------------------


def _describe_data(node: Any) -> str:
    value = getattr(node, "value", node)
    return f"{type(node).__name__}<{node.pk}> = {value!r}"


def _describe_process(node: Any) -> str:
    state = node.process_state.value if node.process_state is not None else "unknown"
    exit_status = node.exit_status
    status = f"{state} [{exit_status}]" if exit_status is not None else state
    return f"{type(node).__name__}<{node.pk}> {node.process_label}  {status}"


def _links(node: Any, indent: str) -> list[str]:
    """One line per link of ``node``: inputs, then calls (recursively), then outputs."""
    from miniengine import ProcessNode

    incoming = node.base.links.get_incoming().all()
    outgoing = node.base.links.get_outgoing().all()
    calls = [link for link in outgoing if isinstance(link.node, ProcessNode)]
    outputs = [link for link in outgoing if not isinstance(link.node, ProcessNode)]
    inputs = [link for link in incoming if not isinstance(link.node, ProcessNode)]
    width = max((len(link.link_type.name) for link in incoming + outgoing), default=0)
    label_width = max((len(link.link_label) for link in incoming + outgoing), default=0)
    lines: list[str] = []
    for link in inputs:
        kind, label = link.link_type.name.ljust(width), link.link_label.ljust(label_width)
        lines.append(f"{indent}{kind}  {label}  {_describe_data(link.node)}")
    for link in calls:
        kind, label = link.link_type.name.ljust(width), link.link_label.ljust(label_width)
        lines.append(f"{indent}{kind}  {label}  {_describe_process(link.node)}")
        lines.extend(_links(link.node, indent + " " * (width + 2 + label_width + 2 + 2)))
    for link in outputs:
        kind, label = link.link_type.name.ljust(width), link.link_label.ljust(label_width)
        lines.append(f"{indent}{kind}  {label}  {_describe_data(link.node)}")
    return lines


def format_provenance(node: Any) -> str:
    """The process ``node``, its inputs, the processes it called (with theirs) and its outputs."""
    header = [
        _describe_process(node),
        f"  uuid          {node.uuid}",
        f"  process type  {node.process_type}",
        f"  created       {node.ctime.isoformat(timespec='milliseconds')}",
    ]
    return "\n".join(header + _links(node, "  "))


def main(db: str | None = None) -> int:
    """Run the demo (on ``db`` if given, else ``$MINIENGINE_DB`` or the default database)."""
    import os

    from miniengine.storage.paths import ENV_VAR, resolve_db, url_without_password

    if db is not None:
        os.environ[ENV_VAR] = db
    location = resolve_db()  # a file, or a PostgreSQL URL
    print(f"database: {url_without_password(location) if isinstance(location, str) else location}")
    print()
    print("Seed scenario 1: run.get_node(add_and_multiply, Int(1), Int(2), Int(3))")
    result, node = scenario_1()
    print()
    print(f"result: {result}  ((1 + 2) * 3)")
    print()
    print(format_provenance(node))
    ok = node.is_finished_ok and result == 9
    print()
    return 0 if scenario_2(location) and ok else 1


def scenario_2(db: Any, depth: int = 5) -> bool:
    """Submit the seed's NestedWorkChain to a daemon (started and stopped here unless one is
    already running for ``db``), wait for it, and print its call tree and reports."""
    import time

    from miniengine import await_node, submit
    from miniengine.daemon.__main__ import start_daemon, stop_daemon
    from miniengine.daemon.files import DaemonFiles
    from miniengine.demo_nested import NestedWorkChain

    print(f"Seed scenario 2: submit(NestedWorkChain, inp=Int({depth})) to a daemon")
    ours = DaemonFiles(db).read() is None
    if ours:
        started = time.perf_counter()
        pid = start_daemon(db, workers=1)
        print(f"started a daemon (pid {pid}) in {time.perf_counter() - started:.2f} s")
    try:
        started = time.perf_counter()
        node = submit(NestedWorkChain, inp=Int(depth))
        print(f"submitted: {_describe_process(node)}")
        await_node(node, timeout=60)
        elapsed = time.perf_counter() - started
        output = node.outputs.output if "output" in node.outputs else None
        print(f"finished in {elapsed * 1000:.0f} ms: output = {output}")
        print()
        _print_tree(node, "")
        return bool(node.is_finished_ok and output == depth)
    finally:
        if ours:
            stop_daemon(db)
            print()
            print("stopped the daemon")


def _print_tree(node: Any, indent: str) -> None:
    print(f"{indent}{_describe_process(node)}")
    for entry in node.logs:
        print(f"{indent}    {entry.levelname}: {entry.message}")
    for child in node.called:
        _print_tree(child, indent + "  ")
