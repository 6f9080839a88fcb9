"""What every route of one web app shares: the database, its reads, the token and the mode."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starlette.requests import Request

    from miniengine.storage.interfaces import Backend
    from miniengine.web.auth import TokenAuth
    from miniengine.web.reads import PageReads
    from miniengine.web.stream import Broadcaster

__all__ = ["WebState", "web_state"]


@dataclass(eq=False)
class WebState:
    """One app's database, reads, token checks, commit watcher, and whether it may change
    anything."""

    backend: Backend
    reads: PageReads
    auth: TokenAuth
    broadcaster: Broadcaster
    read_only: bool

    def context(self, request: Request, page: str, title: str, **values: Any) -> dict[str, Any]:
        """The values every template needs, and ``values``."""
        return {
            "root": request.scope.get("root_path", ""),
            "csrf": self.auth.csrf_value,
            "read_only": self.read_only,
            "location": self.backend.location,
            "page": page,
            "title": title,
            "events": None,
            "shown_state": None,
            **values,
        }


def web_state(request: Request) -> WebState:
    """The state of the app serving ``request``."""
    state: WebState = request.app.state.miniengine
    return state
