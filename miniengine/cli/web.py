"""``miniengine web``: serve the web view of a database, as Jupyter serves notebooks.

It prints one URL with a fresh access token; opening it once keeps the token in a cookie for
that browser.  It listens on 127.0.0.1 unless told otherwise; any other address gets a warning,
and the token is needed all the same (put a TLS proxy in front of it for use across hosts).
``--port 0`` takes a free port and prints the one it got.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from typing import TYPE_CHECKING, Any

from miniengine.cli.errors import CliError, guarded
from miniengine.cli.options import add_db_option

if TYPE_CHECKING:
    import socket

__all__ = ["add_command", "allowed_hosts", "is_loopback"]


def add_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``web``."""
    parser = commands.add_parser(
        "web",
        help="serve a live web view of the processes, the daemon and provenance",
        description="Serve the web view of the database (the process list, process pages, "
        "provenance graphs and the daemon) and print its URL with an access token.",
    )
    add_db_option(parser)
    parser.add_argument(
        "--port", type=_port, default=8765, help="TCP port (0: any free one; default: 8765)"
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: 127.0.0.1, this machine only)",
    )
    parser.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="also answer requests whose Host header is NAME (a proxy's public name); on a "
        "loopback address only the loopback names are answered otherwise",
    )
    parser.add_argument(
        "--read-only",
        action="store_true",
        help="show everything, change nothing (no pause, play or kill)",
    )
    parser.set_defaults(handler=guarded(_web))


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 0 to 65535, not {text!r}")
    return int(text)


def is_loopback(host: str) -> bool:
    """Whether ``host`` only reaches this machine (``localhost``, 127.x, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def allowed_hosts(args: argparse.Namespace) -> set[str] | None:
    """The names a request's ``Host`` may give: on a loopback address its loopback names, the
    address itself and ``--allow-host``'s (a page of another site that an attacker's DNS
    points at 127.0.0.1 gets nothing); on any other address every name (None)."""
    from miniengine.web.auth import LOOPBACK_NAMES

    if not is_loopback(args.host):
        return None
    return {*LOOPBACK_NAMES, args.host.strip("[]").lower(), *(h.lower() for h in args.allow_host)}


def _bind(host: str, port: int) -> socket.socket:
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise CliError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


def _web(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from miniengine.web.app import create_app
    except ModuleNotFoundError as exc:
        raise CliError(
            f"the web view needs the web extra ({exc.name} is missing): "
            "pip install 'miniengine[web]'"
        ) from None
    from pathlib import Path

    from miniengine.cli.connection import require_file
    from miniengine.cli.options import db_location
    from miniengine.storage.open import close_all_backends, shared_backend

    location = db_location(args)
    if isinstance(location, Path):
        require_file(location)
    backend = shared_backend(location)
    try:
        app = create_app(db=backend, read_only=args.read_only, allowed_hosts=allowed_hosts(args))
        sock = _bind(args.host, args.port)
        port = sock.getsockname()[1]
        shown = f"[{args.host}]" if ":" in args.host else args.host
        if not is_loopback(args.host):
            sys.stderr.write(
                f"warning: listening on {args.host}, reachable from other machines; the "
                "token is still required, but it travels unencrypted: put a TLS proxy in "
                "front for use across a network\n"
            )
        mode = " (read-only)" if args.read_only else ""
        print(f"miniengine web view of {backend.location}{mode}:", flush=True)
        wildcard = args.host.strip("[]") in ("0.0.0.0", "::")
        if wildcard:  # every address of this machine: name it as others reach it
            import socket

            shown = socket.gethostname()
        print(f"    http://{shown}:{port}/?token={app.state.token}", flush=True)
        if wildcard:
            print(f" or http://127.0.0.1:{port}/?token={app.state.token}", flush=True)
        server = _server_class()(
            uvicorn.Config(
                app,
                log_level="warning",
                timeout_graceful_shutdown=3,
                lifespan="on",
                # h11 whatever else is installed: it refuses a request line and headers over
                # 16 KiB, so no query string or header can be made huge
                http="h11",
                h11_max_incomplete_event_size=16 * 1024,
                # a TLS proxy on this machine says the scheme was https: the cookie is Secure
                proxy_headers=True,
                forwarded_allow_ips="127.0.0.1",
            ),
            app,
        )
        try:
            server.run(sockets=[sock])
        except KeyboardInterrupt:
            pass  # uvicorn stopped cleanly on Ctrl-C and passes the signal on: a normal end
    finally:
        close_all_backends()
    return 0


def _server_class() -> Any:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server that ends the app's event streams first when it stops, so its
        shutdown does not wait for browsers to hang up."""

        def __init__(self, config: uvicorn.Config, app: Any) -> None:
            super().__init__(config)
            self._web_app = app

        async def shutdown(self, sockets: Any = None) -> None:
            self._web_app.state.miniengine.broadcaster.stop()
            await super().shutdown(sockets)

    return Server
