"""Who may use the web view: the access token, its cookie, and the checks on state changes.

Every request carries the token, in one of three ways: ``?token=`` once (the answer sets an
HttpOnly, SameSite=Strict cookie and redirects to the same URL without it, so the token leaves
the address bar and the history), the cookie, or an ``Authorization: token <t>`` header for
scripts.  Tokens are compared in constant time.  The cookie's name is derived from the token,
so two servers on one host (cookies ignore ports) do not overwrite each other's.

A state change (a POST) made with the cookie also needs the CSRF value (derived from the token:
a hidden form field or an ``X-CSRF-Token`` header) and an ``Origin`` (or, without one, a
``Referer``) naming this server: a page on another site can make a browser send the cookie, but
cannot read the value nor forge the origin.  A POST authorised by the header needs neither,
since no browser adds that header by itself.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

__all__ = ["LOOPBACK_NAMES", "TokenAuth", "host_name", "new_token"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: ``scope["state"]`` key telling a route how the request was authorised ("cookie" or "header").
AUTH_KEY = "miniengine_auth"

_REFUSED = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>miniengine: access token needed</title></head><body><main>
<h1>Access token needed</h1>
<p>{reason} Open the URL that <code>miniengine web</code> printed when it started (it ends in
<code>?token=...</code>); the token is then kept in a cookie for this browser.</p>
</main></body></html>
"""


def new_token() -> str:
    """A fresh random access token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def _cookies(scope: Scope) -> dict[str, str]:
    found: dict[str, str] = {}
    header = _header(scope, b"cookie") or ""
    for part in header.split(";"):
        name, _, value = part.strip().partition("=")
        if name:
            found.setdefault(name, value)
    return found


def host_name(header: str | None) -> str | None:
    """The name in a ``Host`` header, without its port, in lower case (``[::1]:80`` ->
    ``::1``); None if there is none."""
    if not header:
        return None
    text = header.strip().lower()
    if text.startswith("["):
        name, bracket, _ = text[1:].partition("]")
        return name if bracket else None
    name = text.rpartition(":")[0] if text.count(":") == 1 else text
    return name or None


#: The names of this machine's loopback a browser may put in ``Host``.
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


class TokenAuth:
    """The token of one server, and the ASGI middleware that requires it on every request.

    With ``allowed_hosts``, a request whose ``Host`` names none of them is refused before the
    token is looked at: a server bound to loopback answers to its loopback names only, so a
    page of another site whose name an attacker points at 127.0.0.1 (DNS rebinding) gets
    nothing, token or not."""

    def __init__(self, token: str, allowed_hosts: Iterable[str] | None = None) -> None:
        if not token or len(token) < 16:
            raise ValueError("the web view's token must have at least 16 characters")
        self.token = token
        self.allowed_hosts = (
            None
            if allowed_hosts is None
            else frozenset(h.lower().strip("[]") for h in allowed_hosts)
        )
        digest = hashlib.sha256(token.encode()).hexdigest()
        self.cookie_name = f"miniengine_web_{digest[:12]}"
        self.csrf_value = hmac.new(token.encode(), b"miniengine-csrf", hashlib.sha256).hexdigest()

    def token_ok(self, candidate: str | None) -> bool:
        """Whether ``candidate`` is the token (in constant time)."""
        if not candidate:
            return False
        return hmac.compare_digest(candidate.encode(), self.token.encode())

    def csrf_ok(self, candidate: str | None) -> bool:
        """Whether ``candidate`` is this token's CSRF value (in constant time)."""
        if not candidate:
            return False
        return hmac.compare_digest(candidate.encode(), self.csrf_value.encode())

    @staticmethod
    def same_origin(scope: Scope) -> bool:
        """Whether the request's ``Origin`` (else ``Referer``) names the host it was sent to;
        a request with neither is refused (browsers send ``Origin`` with every POST)."""
        host = _header(scope, b"host")
        source = _header(scope, b"origin")
        if source is None or source == "null":
            source = _header(scope, b"referer")
        if not host or not source:
            return False
        return urlsplit(source).netloc.lower() == host.lower()

    def middleware(self, app: ASGIApp) -> ASGIApp:
        """``app`` behind the token: refused requests get a 403 page saying how to get in."""

        async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            host = host_name(_header(scope, b"host"))
            if self.allowed_hosts is not None and host not in self.allowed_hosts:
                await _refuse(
                    send,
                    "This server answers to its own address only (the request's Host "
                    "header named another); to reach it under another name, start it "
                    "with --allow-host NAME.",
                )
                return
            query = parse_qsl(bytes(scope.get("query_string", b"")).decode("latin-1"), True)
            given = [value for key, value in query if key == "token"]
            if given:
                if not self.token_ok(given[-1]):
                    await _refuse(send, "The token in this URL is not this server's.")
                    return
                await self._enter(scope, send, [(k, v) for k, v in query if k != "token"])
                return
            how = None
            authorization = _header(scope, b"authorization") or ""
            scheme, _, value = authorization.partition(" ")
            if scheme.lower() == "token" and self.token_ok(value.strip()):
                how = "header"
            elif self.token_ok(_cookies(scope).get(self.cookie_name)):
                how = "cookie"
            if how is None:
                await _refuse(send, "This server needs its access token.")
                return
            scope.setdefault("state", {})[AUTH_KEY] = how
            await app(scope, receive, send)

        return guarded

    async def _enter(self, scope: Scope, send: Send, query: list[tuple[str, str]]) -> None:
        """Set the cookie and redirect to the same URL without the token."""
        # one leading slash: "//host/..." would send the browser to another site
        path = quote("/" + str(scope.get("path", "/")).lstrip("/"), safe="/-._~!$&'()*+,;=:@")
        location = path + (f"?{urlencode(query)}" if query else "")
        cookie_path = scope.get("root_path", "") or "/"
        secure = "; Secure" if scope.get("scheme") == "https" else ""
        cookie = (
            f"{self.cookie_name}={self.token}; Path={cookie_path}; HttpOnly; "
            f"SameSite=Strict{secure}"
        )
        await send(
            {
                "type": "http.response.start",
                "status": 303,
                "headers": [
                    (b"location", location.encode("latin-1", "replace")),
                    (b"set-cookie", cookie.encode("latin-1")),
                    (b"cache-control", b"no-store"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"content-length", b"0"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b""})


async def _refuse(send: Send, reason: str) -> None:
    body = _REFUSED.format(reason=reason).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 403,
            "headers": [
                (b"content-type", b"text/html; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
                (b"referrer-policy", b"no-referrer"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
