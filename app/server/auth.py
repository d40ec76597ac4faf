"""The server's one credential: a bearer token checked on every route but the health check.

Why a token from day one: an unauthenticated engine port is remote code execution for anyone
who reaches it (ComfyUI's port 8188 was mined by botnets). The server makes a random token when
none is given, keeps it in the data dir readable by its owner only (0600) and reuses it on the
next start, so a desktop that connected once keeps working. Tokens are compared in constant
time, and never logged: the access log is off (see `cli`), the token is registered with
`app.secrets` so any log line that would show it is blanked, and no event, job record or error
message contains a request header.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from app.engine.protocol import API, TOKEN_HEADER

TOKEN_FILE_NAME = "token"
#: A token shorter than this is refused: it could be guessed.
MIN_TOKEN_CHARS = 16
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
#: Routes a client may call without the token (to tell "server down" from "wrong token").
OPEN_PATHS = frozenset({f"{API}/health"})

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class TokenError(ValueError):
    """A token file that cannot be used (missing, empty, too short); one line."""


def _remember(token: str) -> None:
    """Let `app.secrets` blank this token in any log line (its redaction knows the tokens it saw)."""
    from app import secrets as app_secrets

    app_secrets.install_log_redaction()
    remember = getattr(app_secrets, "remember", None) or getattr(app_secrets, "_remember", None)
    if callable(remember):
        remember(token)


def read_token_file(path: str | os.PathLike[str]) -> str:
    """The token in `path` (surrounding white space ignored)."""
    p = Path(path).expanduser()
    try:
        token = p.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenError(f"cannot read the token file {p}: {getattr(exc, 'strerror', None) or exc}") from None
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
        raise TokenError(f"the token in {p} must be one word of at least {MIN_TOKEN_CHARS} characters")
    return token


def load_or_make_token(data_dir: str | os.PathLike[str],
                       token_file: str | os.PathLike[str] | None = None) -> tuple[str, Path, bool]:
    """(token, where it is kept, whether it was made just now).

    With `token_file` the token is read from it; otherwise `<data dir>/token` is reused, or made
    with `secrets.token_urlsafe` and written with mode 0600 (created exclusively, so two servers
    starting at once cannot end up with different tokens).
    """
    if token_file is not None:
        token = read_token_file(token_file)
        _remember(token)
        return token, Path(token_file).expanduser(), False
    path = Path(data_dir) / TOKEN_FILE_NAME
    made = False
    if not path.exists():
        token = secrets.token_urlsafe(32)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another start made it a moment ago: use theirs
        else:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(token + "\n")
            made = True
    if os.name == "posix":
        os.chmod(path, 0o600)  # an older copy (or a hand-made one) readable by others: close it
    token = read_token_file(path)
    _remember(token)
    return token, path, made


def bearer_ok(header: str | None, token: str) -> bool:
    """Whether an Authorization header value carries `token` (constant-time comparison)."""
    if not header:
        return False
    scheme, _, credential = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(credential.strip().encode("utf-8", "replace"), token.encode("utf-8"))


def is_loopback(host: str) -> bool:
    return host.strip("[]").lower() in LOOPBACK_HOSTS


class BearerAuth:
    """ASGI middleware: every HTTP request and WebSocket handshake but OPEN_PATHS needs the token.

    It sits outside FastAPI, so it covers /openapi.json, /docs and unknown paths too. A refused
    HTTP request gets 401 with one JSON line; a refused WebSocket handshake gets the same 401
    response where the server supports denial responses (uvicorn does), else close code 1008.
    """

    def __init__(self, app: ASGIApp, token: str, open_paths: frozenset[str] = OPEN_PATHS) -> None:
        self.app = app
        self.token = token
        self.open_paths = open_paths
        self._header = TOKEN_HEADER.lower().encode("latin-1")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope.get("type")
        if kind not in ("http", "websocket") or scope.get("path") in self.open_paths:
            await self.app(scope, receive, send)
            return
        value = None
        for name, raw in scope.get("headers") or ():
            if name.lower() == self._header:
                value = raw.decode("latin-1")
                break
        if bearer_ok(value, self.token):
            await self.app(scope, receive, send)
            return
        why = "missing token" if not value else "wrong token"
        message = f"{why}: send the server's token as 'Authorization: Bearer <token>'"
        body = json.dumps({"error": message}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   (b"www-authenticate", b'Bearer realm="imagebash"')]
        if kind == "http":
            await send({"type": "http.response.start", "status": 401, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await receive()  # websocket.connect
        if "websocket.http.response" in (scope.get("extensions") or {}):
            await send({"type": "websocket.http.response.start", "status": 401, "headers": headers})
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send({"type": "websocket.close", "code": 1008, "reason": message[:120]})
