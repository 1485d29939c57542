"""``mount_asgi``: serve ASGI apps under path prefixes, in front of any ASGI app.

For hosts that cannot mount an ASGI app themselves (Django, Quart, a bare ASGI
app), one line in ``asgi.py`` puts the relay at ``/ai``::

    from django.core.asgi import get_asgi_application
    from streamrelay import StreamRelay
    from streamrelay.dispatch import mount_asgi

    application = mount_asgi(get_asgi_application(), {"/ai": StreamRelay()})

A request whose path is a prefix or lies below it goes to that prefix's app,
longest prefix first; everything else goes to the host. The mounted app sees the
scope the way Starlette's ``Mount`` and the ASGI spec express it: ``path`` whole
and ``root_path`` extended by the prefix (so ``root_path`` from the server, e.g.
uvicorn's ``--root-path``, is kept). The ``lifespan`` events go to the host and to
every mounted app; an app that does not speak lifespan (Django raises on it) is
left out, as servers do in their ``auto`` mode.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["PrefixDispatcher", "mount_asgi"]

logger = logging.getLogger("streamrelay")


def mount_asgi(app: ASGIApp, mounts: Mapping[str, ASGIApp]) -> PrefixDispatcher:
    """``app`` with each of ``mounts`` (``{"/prefix": asgi_app}``) served under its prefix."""
    return PrefixDispatcher(app, mounts)


class PrefixDispatcher:
    """The ASGI app returned by :func:`mount_asgi`."""

    def __init__(self, app: ASGIApp, mounts: Mapping[str, ASGIApp]) -> None:
        self.app = app
        prefixes: dict[str, ASGIApp] = {}
        for prefix, mounted in mounts.items():
            clean = prefix.rstrip("/")
            if not clean.startswith("/"):
                raise ValueError(f"a mount prefix must start with '/' and not be '/': {prefix!r}")
            prefixes[clean] = mounted
        # Longest first, so that "/ai/v2" wins over "/ai".
        self.mounts = sorted(prefixes.items(), key=lambda item: len(item[0]), reverse=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _fan_out_lifespan(
                [self.app, *(app for _, app in self.mounts)], scope, receive, send
            )
            return
        if scope["type"] in ("http", "websocket"):
            root: str = scope.get("root_path", "")
            path: str = scope["path"]
            # Servers following the ASGI spec include root_path in path; some do not.
            route = path[len(root) :] if root and _below(path, root) else path
            for prefix, mounted in self.mounts:
                if _below(route, prefix):
                    child = {**scope, "root_path": root + prefix, "path": root + route}
                    await mounted(child, receive, send)
                    return
        await self.app(scope, receive, send)


def _below(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


async def _fan_out_lifespan(
    apps: list[ASGIApp], scope: Scope, receive: Receive, send: Send
) -> None:
    """Relay each lifespan event to every app that speaks the protocol, in order."""
    unique = list({id(app): app for app in apps}.values())
    async with anyio.create_task_group() as tg:
        members = [_LifespanMember(app) for app in unique]
        for member in members:
            tg.start_soon(member.run, scope)
        while True:
            message = await receive()
            kind = message["type"]  # "lifespan.startup" or "lifespan.shutdown"
            order = members if kind == "lifespan.startup" else members[::-1]
            failures = [reply for m in order if (reply := await m.ask(message)) is not None]
            if failures:
                await send({"type": kind + ".failed", "message": failures[0]})
            else:
                await send({"type": kind + ".complete"})
            if kind != "lifespan.startup" or failures:
                tg.cancel_scope.cancel()
                return


class _LifespanMember:
    """One app's lifespan conversation, driven one event at a time."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.inbox_in, self.inbox_out = anyio.create_memory_object_stream[Message](1)
        self.answered = anyio.Event()
        self.answer: Message | None = None
        self.spoke = False
        self.gone = False

    async def run(self, scope: Scope) -> None:
        try:
            await self.app(scope, self.inbox_out.receive, self._send)
        except Exception as exc:
            if not self.spoke:  # raised before its first answer: no lifespan support
                logger.debug("%r does not support lifespan: %r", self.app, exc)
            else:
                logger.exception("lifespan of %r failed", self.app)
        finally:
            self.gone = True
            self.answered.set()

    async def _send(self, message: Message) -> None:
        self.answer = message
        self.spoke = True
        self.answered.set()

    async def ask(self, message: Message) -> str | None:
        """Deliver ``message``; returns a failure message, or ``None`` on success/no support."""
        if self.gone:
            return None
        self.answered = anyio.Event()
        self.answer = None
        await self.inbox_in.send(message)
        await self.answered.wait()
        if self.answer is not None and self.answer["type"].endswith(".failed"):
            return str(self.answer.get("message", "") or f"{self.app!r} failed")
        return None
