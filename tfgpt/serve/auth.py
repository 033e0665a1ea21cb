"""Optional bearer-token auth for ``tfgpt serve --api-key-file FILE``.

Every route but ``/healthz`` (what load balancers and orchestrators probe) then needs
``Authorization: Bearer KEY``, as OpenAI's API and vLLM's ``--api-key`` do, so the ``openai``
client's ``api_key=`` just works. A missing or wrong key is a 401 in the route's own error shape.
The key is compared as a SHA-256 digest with :func:`hmac.compare_digest`: the time taken says
nothing about how much of a guess was right, nor about the key's length.

Example:
    >>> guard = BearerAuth(app=None, key="s3cret")
    >>> guard.allowed(b"Bearer s3cret"), guard.allowed(b"bearer s3cret"), guard.allowed(b"Bearer s3cre")
    (True, True, False)
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path
from typing import Any

from fastapi.responses import JSONResponse

from tfgpt.errors import ConfigError
from tfgpt.serve.replies import error_body, is_openai_route

#: Paths served without a key: the health check.
OPEN_PATHS = frozenset({"/healthz"})


def read_api_key(path: str | os.PathLike) -> str:
    """The key in ``path`` (its first line, stripped); a one-line ConfigError naming the file otherwise."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"--api-key-file {path}: cannot be read ({getattr(e, 'strerror', None) or e})") from None
    key = text.strip().splitlines()[0].strip() if text.strip() else ""
    if not key:
        raise ConfigError(f"--api-key-file {path}: the file is empty; put the key on its first line")
    return key


def _digest(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()


class BearerAuth:
    """ASGI middleware: requests without ``Authorization: Bearer <key>`` get a 401 (streams pass untouched)."""

    def __init__(self, app: Any, key: str) -> None:
        self.app = app
        self._want = _digest(key.encode("utf-8"))

    def allowed(self, header: bytes) -> bool:
        """Whether an ``Authorization`` header value carries the key (scheme case-insensitive)."""
        scheme, _, token = header.partition(b" ")
        return hmac.compare_digest(_digest(token.strip()), self._want) and scheme.lower() == b"bearer"

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        header = dict(scope["headers"]).get(b"authorization", b"")
        if self.allowed(header):
            await self.app(scope, receive, send)
            return
        message = ("missing API key: send the header 'Authorization: Bearer KEY'" if not header
                   else "invalid API key")
        body = error_body(message, 401, code="invalid_api_key") if is_openai_route(scope["path"]) \
            else {"error": message}
        await JSONResponse(body, status_code=401, headers={"WWW-Authenticate": "Bearer"})(scope, receive, send)
