"""Keeping the key out of what goes to a client.

OpenAI's 401 quotes the key it was sent, and a misconfigured upstream may echo
request headers: every byte that comes from the upstream to a client passes
through :func:`redact` (error bodies and headers) or :func:`redacting` (streams).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable

__all__ = [
    "REDACTED",
    "SECRET_HEADER_WORDS",
    "is_secret_header",
    "redact",
    "redacting",
    "secrets_of",
]

REDACTED = b"[redacted]"
"""What replaces the API key (and other secret upstream header values) in upstream bytes."""

SECRET_HEADER_WORDS = ("authorization", "key", "token", "secret")
"""A configured upstream header whose name contains one of these holds a secret."""


def is_secret_header(name: str) -> bool:
    """Whether a configured header's value is a credential (Azure's ``api-key``, ...)."""
    lowered = name.lower()
    return any(word in lowered for word in SECRET_HEADER_WORDS)


def secrets_of(api_key: str | None, headers: Iterable[tuple[str, str]]) -> tuple[bytes, ...]:
    """The values to redact: the key and every secret-looking configured header value
    (short values are left alone: they would match ordinary text)."""
    values = [api_key] + [value for name, value in headers if is_secret_header(name)]
    return tuple(dict.fromkeys(v.encode() for v in values if v and len(v) >= 8))


def redact(data: bytes, secrets: tuple[bytes, ...]) -> bytes:
    """``data`` with every secret replaced by :data:`REDACTED`."""
    for secret in secrets:
        if secret in data:
            data = data.replace(secret, REDACTED)
    return data


async def redacting(
    items: AsyncIterator[bytes], secrets: tuple[bytes, ...]
) -> AsyncIterator[bytes]:
    """Upstream SSE bytes with every secret replaced, even one split across reads.

    Only a read's tail that could begin a secret is held back until the next
    read; event streams end their reads with a line break, so nothing is
    delayed in practice. (An async generator: the cheapest wrapper per read.)
    """
    carry = b""
    try:
        async for chunk in items:
            if type(chunk) is not bytes:
                chunk = bytes(chunk)
            if not carry and chunk.endswith(b"\n"):
                # The usual read, ending a line: no secret (a header value, so free
                # of line breaks) can continue into the next read.
                yield redact(chunk, secrets)
                continue
            data = redact(carry + chunk, secrets)
            hold = max(_pending_prefix(data, secret) for secret in secrets)
            data, carry = (data[:-hold], data[-hold:]) if hold else (data, b"")
            if data:
                yield data
        if carry:
            yield carry
    finally:
        aclose = getattr(items, "aclose", None)
        if aclose is not None:
            await aclose()


def _pending_prefix(data: bytes, secret: bytes) -> int:
    """The length of the longest tail of ``data`` that is a proper prefix of ``secret``."""
    first = secret[:1]
    start = max(len(data) - len(secret) + 1, 0)
    at = data.find(first, start)
    while at != -1:
        if secret.startswith(data[at:]):
            return len(data) - at
        at = data.find(first, at + 1)
    return 0
