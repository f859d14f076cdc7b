"""What keeps the console to its operator. It may run with an operator's AWS credentials against
production, so a web page open in the same browser must neither read it nor act through it:

- DNS rebinding: a page of evil.example whose name comes to resolve to 127.0.0.1 reaches the
  console as a same-origin site. Its requests carry `Host: evil.example`; only the console's own
  names (127.0.0.1, localhost, [::1]) are served, anything else gets 421.
- Cross-site requests: a form or `fetch` from another site can POST `text/plain` without a
  preflight. A state change must be JSON, carry the page's CSRF token (a random value made when
  the app is made, never at import) in `X-CSRF-Token`, and, when the browser says where it comes
  from (`Origin`, `Sec-Fetch-Site`), come from the console itself; anything else gets 403.
- Framing and injection: every answer forbids being framed (a page that frames the console
  could trick a click on a re-drive button) and loads scripts, styles and images from the
  console alone (`SECURITY_HEADERS`); the pages escape everything they show.
"""

from __future__ import annotations

import hmac
import json
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

LOCAL_NAMES = frozenset({"127.0.0.1", "localhost", "[::1]", "::1"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "x-csrf-token"
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                                 b"img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; "
                                 b"form-action 'self'; base-uri 'none'"),
    (b"x-frame-options", b"DENY"), (b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
]


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def host_name(host: str) -> str:
    """`127.0.0.1:8765` -> `127.0.0.1`; `[::1]:8765` -> `[::1]`."""
    if host.startswith("["):
        return host[:host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def refusal(method: str, headers: dict[str, str], token: str, names: frozenset[str] = LOCAL_NAMES
            ) -> tuple[int, str] | None:
    """The status and reason to refuse a request with, or None to serve it."""
    host = headers.get("host", "")
    if host_name(host).lower() not in names:
        return 421, f"this console answers to {', '.join(sorted(names))} only, not {host[:100]!r}"
    if method in SAFE_METHODS:
        return None
    if headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return 403, "a cross-site request cannot change anything here"
    origin = headers.get("origin")
    if origin is not None and (urlsplit(origin).netloc.lower() != host.lower()):
        return 403, "a request from another origin cannot change anything here"
    if headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        return 403, "a change must be sent as application/json"
    if not hmac.compare_digest(headers.get(CSRF_HEADER, ""), token):
        return 403, "a change must carry the page's CSRF token (X-CSRF-Token): reload the page"
    return None


def guarded(app: ASGIApp, token: str, names: frozenset[str] = LOCAL_NAMES) -> ASGIApp:
    """`app` behind the checks above (an ASGI middleware)."""
    async def guard(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
            refused = refusal(scope.get("method", "GET"), headers, token, names)
            if refused is not None:
                status, reason = refused
                body = json.dumps({"error": reason}).encode()
                await send({"type": "http.response.start", "status": status,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode()), *SECURITY_HEADERS]})
                await send({"type": "http.response.body", "body": body})
                return

        async def send_secured(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await app(scope, receive, send_secured)

    return guard
