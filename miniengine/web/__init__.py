"""The web view: a live process list, process and node pages, provenance graphs, the daemon's
state and pause/play/kill, served by ``miniengine web`` or mounted in an app.

``from miniengine.web import create_app`` imports Starlette only when called for, so the engine
never loads the web extra by itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from miniengine.web.app import create_app

__all__ = ["create_app"]

MISSING_EXTRA = "the web view needs the web extra: pip install 'miniengine[web]'"


def __getattr__(name: str) -> Any:
    if name == "create_app":
        try:
            from miniengine.web.app import create_app
        except ModuleNotFoundError as exc:
            if exc.name in ("starlette", "uvicorn", "jinja2", "markupsafe"):
                from miniengine.exceptions import MiniengineError

                raise MiniengineError(MISSING_EXTRA) from exc
            raise
        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
