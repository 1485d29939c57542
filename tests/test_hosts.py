"""The relay inside every host framework: each example in ``examples/``, run as documented.

Every example runs under ``uvicorn`` in a subprocess, twice: as is, and with
``--root-path /api`` (behind a proxy that strips ``/api``). The upstream is a
simulator in this process. In each host the relay is at ``/ai`` next to the
host's own routes, and each test states one promise of issue 5:

* a stream arrives incrementally: the client holds the first token while the
  simulator has yet to generate the last one (ordering, not timing);
* every format delivers the whole answer, also with a trailing slash;
* a client disconnect cancels the upstream generation, and the host's own routes
  answer meanwhile;
* the host's compression middleware (Starlette, Litestar, Django) leaves the
  streams alone but still compresses the host's own pages.

The second half runs in-process: nested mounts of every kind, under a server
``root_path``, and the ``mount_asgi`` dispatcher itself (routing and lifespan).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any

import anyio
import httpx
import pytest
from fastapi import FastAPI
from fastapi.middleware.gzip import GZipMiddleware
from litestar import Litestar, Router, asgi, get, post
from litestar.config.compression import CompressionConfig
from litestar.params import Body
from litestar.response import Stream
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Mount, Route

from apps.procs import MESSAGES, ROOT, Proc, chat, free_port, read_stream, server_command, start_all
from streamrelay import StreamRelay, StreamRelayMiddleware, StreamSettings, Upstream
from streamrelay.dispatch import PrefixDispatcher, mount_asgi
from streamrelay.testing import ServerThread, Simulator

FORMATS = ("text", "ndjson", "sse", "openai")
MEDIA_TYPES = {
    "text": "text/plain",
    "ndjson": "application/x-ndjson",
    "sse": "text/event-stream",
    "openai": "text/event-stream",
}
ROOTS = {"plain": "", "root-path": "/api"}


@dataclass(frozen=True)
class Host:
    target: str
    """``module:app`` as in the example's header."""
    relay: str = "/ai"
    page: str = "/health"
    """One of the host's own routes, and what its body contains."""
    marker: bytes = b'"ok"'
    gzip_page: str | None = None
    """A host page its compression middleware compresses, if it has one."""


HOSTS = {
    "bare": Host("examples.bare_asgi:app", page="/", marker=b"host app"),
    "starlette": Host("examples.starlette_mount:app", page="/", marker=b"host app"),
    "fastapi": Host("examples.fastapi_mount:app"),
    "litestar": Host("examples.litestar_mount:app", gzip_page="/about"),
    "django": Host("examples.django_asgi:application", gzip_page="/about"),
    "quart": Host("examples.quart_app:app"),
}


@pytest.fixture(scope="module")
def sim() -> Iterator[tuple[Simulator, str]]:
    simulator = Simulator(delay=0.0)
    with ServerThread(simulator) as server:
        yield simulator, server.url + "/v1"


@pytest.fixture(scope="module")
def servers(
    sim: tuple[Simulator, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[tuple[str, str], Proc]]:
    """Every example under uvicorn, with and without ``--root-path``, started together."""
    logs = tmp_path_factory.mktemp("hosts")
    env = {"STREAMRELAY_UPSTREAM": sim[1], "OPENAI_API_KEY": "sk-host-test"}
    procs: dict[tuple[str, str], Proc] = {}
    for name, host in HOSTS.items():
        for root_name, root in ROOTS.items():
            port = free_port()
            extra = ["--root-path", root] if root else []
            argv = server_command("uvicorn", host.target, port, *extra)
            procs[name, root_name] = Proc(
                argv, port, logs / f"{name}-{root_name}.log", env, cwd=ROOT
            )
    # The other two examples have no /ai mount: they show the middleware and the helper.
    for name, target in (
        ("middleware", "examples.middleware_reframe:app"),
        ("handler", "examples.handler_helper:app"),
    ):
        port = free_port()
        argv = server_command("uvicorn", target, port)
        procs[name, "plain"] = Proc(argv, port, logs / f"{name}.log", env, cwd=ROOT)
    start_all(list(procs.values()))
    try:
        yield procs
    finally:
        for proc in procs.values():
            proc.stop()


@pytest.fixture(params=[(h, r) for h in HOSTS for r in ROOTS], ids=lambda p: f"{p[0]}-{p[1]}")
def host(
    request: pytest.FixtureRequest, servers: dict[tuple[str, str], Proc], sim: tuple[Simulator, str]
) -> tuple[str, str, Host, str]:
    """``(name, root variant, host, base URL)``; the simulator is reset."""
    name, root = request.param
    sim[0].reset()
    return name, root, HOSTS[name], servers[name, root].url


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=httpx.Timeout(20.0)) as http:
        yield http


def check_stream_headers(response: httpx.Response | Any) -> None:
    headers = response.headers
    assert headers["cache-control"] == "no-cache, no-transform"
    assert headers["x-accel-buffering"] == "no"
    assert headers.get("content-encoding", "identity") == "identity"
    assert "content-length" not in headers


def test_stream_arrives_incrementally(
    host: tuple[str, str, Host, str], client: httpx.Client
) -> None:
    *_, spec, url = host
    received = read_stream(
        client,
        url + spec.relay + "/chat/completions",
        chat(fault="timestamps", tokens=6, delay=0.1),
        fmt="ndjson",
    )
    assert received.status == 200, received.body[:300]
    check_stream_headers(received)
    stamps = received.stamps()
    assert len(stamps) == 6
    # The first token reached us before the upstream generated the last one.
    assert received.first_token_at() < stamps[-1]
    assert received.body.endswith(b'{"type":"done"}\n')


def test_every_format_delivers_the_answer(
    host: tuple[str, str, Host, str],
    sim: tuple[Simulator, str],
    client: httpx.Client,
) -> None:
    *_, spec, url = host
    for fmt, slash in zip(FORMATS, ("", "/", "", "/"), strict=True):
        received = read_stream(
            client, url + spec.relay + "/chat/completions" + slash, chat(tokens=5), fmt=fmt
        )
        assert received.status == 200, (fmt, received.body[:300])
        check_stream_headers(received)
        upstream_body = sim[0].requests[-1].json()  # as the relay sent it (hooks may edit it)
        assert received.content() == sim[0].expected_text(upstream_body), fmt


def test_disconnect_cancels_upstream_while_host_routes_work(
    host: tuple[str, str, Host, str],
    sim: tuple[Simulator, str],
    client: httpx.Client,
) -> None:
    *_, spec, url = host
    stats = sim[0].stats
    body = chat(fault="stall", after=2, tokens=6)  # then silent until the client leaves
    with client.stream(
        "POST", url + spec.relay + "/chat/completions?format=sse", json=body
    ) as response:
        assert response.status_code == 200
        seen = b""
        pieces = response.iter_bytes()  # kept referenced: a dropped iterator closes the stream
        for piece in pieces:
            seen += piece
            if seen.count(b"event: delta") >= 2:
                break
        # The host keeps serving its own routes beside an open stream.
        page = client.get(url + spec.page)
        assert page.status_code == 200
        assert spec.marker in page.content
        assert stats.cancelled == 0 and stats.active == 1
    # Leaving the block closed the connection; the relay must close its upstream.
    stats.wait(cancelled=1, timeout=10)
    assert stats.finished == 0


def test_browser_client_is_served(host: tuple[str, str, Host, str], client: httpx.Client) -> None:
    *_, spec, url = host
    response = client.get(url + spec.relay + "/streamrelay.js")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")


@pytest.mark.parametrize("root", ROOTS)
@pytest.mark.parametrize("name", ["starlette", "litestar", "django"])
def test_host_compression_spares_the_stream(
    name: str, root: str, servers: dict[tuple[str, str], Proc], client: httpx.Client
) -> None:
    """Starlette's GZipMiddleware, Litestar's compression and Django's GZipMiddleware."""
    spec, url = HOSTS[name], servers[name, root].url
    if spec.gzip_page is not None:
        page = client.get(url + spec.gzip_page, headers={"accept-encoding": "gzip"})
        assert page.status_code == 200
        assert page.headers["content-encoding"] == "gzip"  # the middleware is live
    for fmt in ("text", "ndjson"):  # the compressible types (SSE is exempt by type)
        received = read_stream(
            client,
            url + spec.relay + "/chat/completions",
            chat(fault="timestamps", tokens=4, delay=0.1),
            fmt=fmt,
            headers={"accept-encoding": "gzip"},
        )
        assert received.status == 200
        check_stream_headers(received)  # ...but not on the stream
        assert received.first_token_at() < received.stamps()[-1]


def test_middleware_example_reframes(
    servers: dict[tuple[str, str], Proc], sim: tuple[Simulator, str], client: httpx.Client
) -> None:
    """examples/middleware_reframe.py: the host's raw OpenAI SSE route, in every format."""
    url = servers["middleware", "plain"].url
    for fmt in FORMATS:
        received = read_stream(client, url + "/chat", chat(tokens=5), fmt=fmt)
        assert received.status == 200, received.body[:300]
        check_stream_headers(received)
        assert received.headers["content-type"].startswith(MEDIA_TYPES[fmt])
        assert received.content() == sim[0].expected_text(chat(tokens=5)), fmt
    received = read_stream(
        client, url + "/chat", chat(fault="timestamps", tokens=5, delay=0.1), fmt="sse"
    )
    assert received.first_token_at() < received.stamps()[-1]


def test_handler_example(
    servers: dict[tuple[str, str], Proc], sim: tuple[Simulator, str], client: httpx.Client
) -> None:
    """examples/handler_helper.py: an ``Upstream`` call, an httpx response, an openai SDK
    stream, a text generator."""
    url = servers["handler", "plain"].url
    routes = (("/chat/upstream", "text"), ("/chat/httpx", "ndjson"), ("/chat/sdk", "sse"))
    for route, fmt in routes:
        received = read_stream(client, url + route, {"messages": MESSAGES}, fmt=fmt)
        assert received.status == 200, (route, received.body[:300])
        check_stream_headers(received)
        assert received.content() == sim[0].expected_text({"messages": MESSAGES}), route
        assert sim[0].requests[-1].authorization == "Bearer sk-host-test", route
    pieces = []
    with client.stream("GET", url + "/countdown?format=text") as response:
        check_stream_headers(response)
        pieces = list(response.iter_bytes())
    # Each piece was read before the generator produced the next (0.5 s apart).
    assert pieces[0] == "5…\n".encode()
    assert b"".join(pieces) == "5…\n4…\n3…\n2…\n1…\nliftoff\n".encode()


# In-process: nested mounts, root_path, and the dispatcher ---------------------------------


def quiet_relay(upstream: str) -> StreamRelay:
    """A relay to ``upstream`` without heartbeats."""
    return StreamRelay(Upstream(upstream, api_key="sk-test"), stream=StreamSettings(heartbeat=None))


async def not_found(scope: Any, receive: Any, send: Any) -> None:
    await PlainTextResponse("host 404", status_code=404)(scope, receive, send)


def nested_app(relay: StreamRelay) -> Starlette:
    """The relay mounted at ``/ai`` below another mount, in every style we support."""
    fastapi_outer = FastAPI()
    fastapi_inner = FastAPI()
    fastapi_inner.mount("/ai", relay)
    fastapi_outer.mount("/v2", fastapi_inner)

    @asgi("/ai", is_mount=True, copy_scope=True)
    async def litestar_mount(scope: Any, receive: Any, send: Any) -> None:
        await relay(scope, receive, send)

    litestar = Litestar(route_handlers=[Router("/v1", route_handlers=[litestar_mount])])
    starlette = Starlette(
        routes=[
            Mount("/v1", routes=[Mount("/ai", relay)]),
            Mount("/fastapi", app=fastapi_outer),
            Mount("/dispatch", app=mount_asgi(not_found, {"/ai": relay})),
            Mount("/litestar", app=litestar),
            Route("/page", lambda request: PlainTextResponse("page")),
        ]
    )
    return starlette


NESTED = {
    "starlette-in-starlette": "/v1/ai",
    "fastapi-in-fastapi-in-starlette": "/fastapi/v2/ai",
    "mount_asgi-in-starlette": "/dispatch/ai",
    "litestar-router-in-starlette": "/litestar/v1/ai",
    "mount_asgi-in-mount_asgi": "/deep/ai",
}


@pytest.fixture(scope="module")
def nested(sim: tuple[Simulator, str]) -> Iterator[dict[str, str]]:
    """The nested app under uvicorn without and with ``root_path="/api"``."""
    relay = quiet_relay(sim[1])
    app = mount_asgi(nested_app(relay), {"/deep": mount_asgi(not_found, {"/ai": relay})})
    with ServerThread(app) as plain, ServerThread(app, root_path="/api") as rooted:
        yield {"plain": plain.url, "root-path": rooted.url}


@pytest.mark.parametrize("root", ROOTS)
@pytest.mark.parametrize("mount", NESTED)
def test_nested_mounts(
    nested: dict[str, str], mount: str, root: str, sim: tuple[Simulator, str], client: httpx.Client
) -> None:
    base = nested[root] + NESTED[mount]
    for fmt, slash in (("text", ""), ("ndjson", "/")):
        received = read_stream(client, base + "/chat/completions" + slash, chat(tokens=3), fmt=fmt)
        assert received.status == 200, received.body[:300]
        assert received.content() == sim[0].expected_text(chat(tokens=3))
    # Paths that only look like the mount stay with the host.
    assert (
        client.post(nested[root] + NESTED[mount] + "x/chat/completions", json=chat()).status_code
        == 404
    )


def test_fastapi_root_path_parameter(sim: tuple[Simulator, str], client: httpx.Client) -> None:
    """``FastAPI(root_path=...)`` behind a proxy that keeps the prefix: the full path works.

    (Behind a proxy that strips it, Starlette gives mounted apps a ``root_path``
    that is not a prefix of ``path``, which breaks every mounted app alike; use the
    server's ``--root-path`` then, as FastAPI itself now recommends.)
    """
    with pytest.warns(Warning) if _fastapi_warns_on_root_path() else _nothing():
        app = FastAPI(root_path="/api")
    relay = quiet_relay(sim[1])
    app.mount("/ai", relay)
    with ServerThread(app) as server:
        received = read_stream(
            client, server.url + "/api/ai/chat/completions", chat(tokens=3), fmt="text"
        )
    assert received.status == 200
    assert received.content() == sim[0].expected_text(chat(tokens=3))


def _fastapi_warns_on_root_path() -> bool:
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        FastAPI(root_path="/x")
    return bool(caught)


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def compressing_hosts(relay: StreamRelay, upstream: str) -> dict[str, Any]:
    """Hosts whose compression middleware wraps everything, the relay included.

    Each has the relay at ``/ai``, a compressible page at ``/page`` and, under
    ``StreamRelayMiddleware(paths=["/chat"])``, its own route ``/chat`` that returns
    the upstream's raw OpenAI SSE.
    """
    page_text = "a page of the host, long enough to be compressed " * 20

    def raw_sse_proxy() -> Any:
        # One client per app: each app runs on its own server thread and event
        # loop, and a pooled connection belongs to the loop that opened it.
        proxy = httpx.AsyncClient(base_url=upstream)

        async def raw_sse(body: dict[str, Any]) -> Any:
            request = proxy.build_request(
                "POST", "/chat/completions", json={**body, "stream": True}
            )
            return (await proxy.send(request, stream=True)).aiter_raw()

        return raw_sse

    fastapi_sse, litestar_sse = raw_sse_proxy(), raw_sse_proxy()

    fastapi = FastAPI()
    fastapi.mount("/ai", relay)

    @fastapi.get("/page")
    async def fastapi_page() -> PlainTextResponse:
        return PlainTextResponse(page_text)

    @fastapi.post("/chat")
    async def fastapi_chat(body: dict[str, Any]) -> Any:
        return StreamingResponse(await fastapi_sse(body), media_type="text/event-stream")

    fastapi.add_middleware(GZipMiddleware, minimum_size=10)
    fastapi.add_middleware(StreamRelayMiddleware, paths=["/chat"])

    @asgi("/ai", is_mount=True, copy_scope=True)
    async def litestar_relay(scope: Any, receive: Any, send: Any) -> None:
        await relay(scope, receive, send)

    @get("/page")
    async def litestar_page() -> str:
        return page_text

    @post("/chat", status_code=200)  # Litestar answers POST with 201 by default
    async def litestar_chat(data: Annotated[dict[str, Any], Body()]) -> Stream:
        return Stream(await litestar_sse(data), media_type="text/event-stream")

    litestar = StreamRelayMiddleware(
        Litestar(
            route_handlers=[litestar_relay, litestar_page, litestar_chat],
            compression_config=CompressionConfig(backend="gzip", minimum_size=10),
        ),
        paths=["/chat"],
    )
    return {"fastapi-gzip": fastapi, "litestar-compression": litestar}


@pytest.fixture(scope="module")
def compressing(sim: tuple[Simulator, str]) -> Iterator[dict[str, str]]:
    relay = quiet_relay(sim[1])
    apps = compressing_hosts(relay, sim[1])
    with (
        ServerThread(apps["fastapi-gzip"]) as fastapi,
        ServerThread(apps["litestar-compression"]) as litestar,
    ):
        yield {"fastapi-gzip": fastapi.url, "litestar-compression": litestar.url}


@pytest.mark.parametrize("name", ["fastapi-gzip", "litestar-compression"])
def test_compression_wrapping_the_relay(
    name: str, compressing: dict[str, str], client: httpx.Client
) -> None:
    """FastAPI's GZipMiddleware skips the stream (``Content-Encoding: identity``).
    Litestar's compression overrides that header and gzips the stream, but flushes
    after every message, so each token still arrives before the next is generated."""
    url = compressing[name]
    page = client.get(url + "/page", headers={"accept-encoding": "gzip"})
    assert page.headers["content-encoding"] == "gzip"
    for fmt in FORMATS:
        received = read_stream(
            client,
            url + "/ai/chat/completions",
            chat(fault="timestamps", tokens=4, delay=0.1),
            fmt=fmt,
            headers={"accept-encoding": "gzip"},
        )
        assert received.status == 200
        assert received.headers["x-accel-buffering"] == "no"
        expected = "gzip" if name.startswith("litestar") else "identity"
        assert received.headers["content-encoding"] == expected, fmt
        stamps = received.stamps()
        assert len(stamps) == 4
        assert received.first_token_at() < stamps[-1], fmt


@pytest.mark.parametrize("name", ["fastapi-gzip", "litestar-compression"])
def test_middleware_reframes_under_host_compression(
    name: str,
    compressing: dict[str, str],
    sim: tuple[Simulator, str],
    client: httpx.Client,
) -> None:
    """The host's raw SSE route behind its own compression, re-framed by the middleware."""
    for fmt in ("ndjson", "sse"):
        received = read_stream(
            client,
            compressing[name] + "/chat",
            chat(tokens=4),
            fmt=fmt,
            headers={"accept-encoding": "gzip"},
        )
        assert received.status == 200
        assert received.content() == sim[0].expected_text(chat(tokens=4)), received.body[:300]


# mount_asgi on its own (plain ASGI calls: routing and lifespan, no streaming) --------------


def _recorder(name: str, seen: list[tuple[str, str, str]]) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append((name, scope["path"], scope.get("root_path", "")))

    return app


@pytest.mark.parametrize(
    ("path", "root_path", "expected"),
    [
        ("/ai/chat/completions", "", ("relay", "/ai/chat/completions", "/ai")),
        ("/ai", "", ("relay", "/ai", "/ai")),
        ("/ai/", "", ("relay", "/ai/", "/ai")),
        ("/aix/chat/completions", "", ("host", "/aix/chat/completions", "")),
        ("/ai/v2/chat/completions", "", ("v2", "/ai/v2/chat/completions", "/ai/v2")),
        # ASGI spec: path includes root_path (uvicorn --root-path)
        ("/api/ai/chat/completions", "/api", ("relay", "/api/ai/chat/completions", "/api/ai")),
        # servers that leave root_path out of path get it put in
        ("/ai/chat/completions", "/api", ("relay", "/api/ai/chat/completions", "/api/ai")),
        ("/apix/ai", "/api", ("host", "/apix/ai", "/api")),
    ],
)
def test_mount_asgi_routing(path: str, root_path: str, expected: tuple[str, str, str]) -> None:
    seen: list[tuple[str, str, str]] = []
    app = mount_asgi(
        _recorder("host", seen),
        {"/ai/": _recorder("relay", seen), "/ai/v2": _recorder("v2", seen)},
    )
    scope = {"type": "http", "path": path, "root_path": root_path}
    anyio.run(app, scope, None, None)
    assert seen == [expected]


def test_mount_asgi_rejects_bad_prefixes() -> None:
    for prefix in ("ai", "/", ""):
        with pytest.raises(ValueError, match="prefix"):
            mount_asgi(not_found, {prefix: not_found})
    assert isinstance(mount_asgi(not_found, {}), PrefixDispatcher)


def _lifespan_app(name: str, log: list[str], fail: str | None = None) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            return
        while True:
            message = await receive()
            kind = message["type"].rpartition(".")[2]
            log.append(f"{name}:{kind}")
            if fail == kind:
                await send({"type": message["type"] + ".failed", "message": f"{name} broke"})
                return
            await send({"type": message["type"] + ".complete"})
            if kind == "shutdown":
                return

    return app


async def _drive_lifespan(app: Any, events: list[str]) -> list[dict[str, Any]]:
    send_in, receive_out = anyio.create_memory_object_stream[dict[str, Any]](10)
    replies: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        replies.append(message)

    for kind in events:
        send_in.send_nowait({"type": f"lifespan.{kind}"})
    with anyio.fail_after(5):
        await app(
            {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive_out.receive, send
        )
    return replies


def test_mount_asgi_lifespan_reaches_host_and_mounts() -> None:
    log: list[str] = []

    async def django_like(scope: Any, receive: Any, send: Any) -> None:
        raise ValueError("Django can only handle ASGI/HTTP connections, not lifespan.")

    app = mount_asgi(
        _lifespan_app("host", log),
        {"/ai": _lifespan_app("relay", log), "/admin": django_like},
    )
    replies = anyio.run(_drive_lifespan, app, ["startup", "shutdown"])
    assert [r["type"] for r in replies] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]
    # Started in order, shut down in reverse; the app without lifespan is skipped.
    assert log == ["host:startup", "relay:startup", "relay:shutdown", "host:shutdown"]


def test_mount_asgi_lifespan_failure_is_reported() -> None:
    log: list[str] = []
    app = mount_asgi(
        _lifespan_app("host", log), {"/ai": _lifespan_app("relay", log, fail="startup")}
    )
    replies = anyio.run(_drive_lifespan, app, ["startup"])
    assert replies == [{"type": "lifespan.startup.failed", "message": "relay broke"}]


def test_mount_asgi_closes_the_relay_under_a_real_server(sim: tuple[Simulator, str]) -> None:
    """Under uvicorn, shutdown reaches the relay through the dispatcher (it closes its pools)."""
    closed: list[float] = []

    class Relay(StreamRelay):
        async def aclose(self) -> None:
            closed.append(time.monotonic())
            await super().aclose()

    relay = Relay(Upstream(sim[1], api_key="sk-test"))

    async def django_like(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise ValueError("Django can only handle ASGI/HTTP connections, not lifespan.")
        await PlainTextResponse("django")(scope, receive, send)

    with ServerThread(mount_asgi(django_like, {"/ai": relay}), lifespan="on") as server:
        assert httpx.get(server.url + "/admin").text == "django"
        assert (
            httpx.post(
                server.url + "/ai/chat/completions?format=text", json=chat(tokens=2)
            ).status_code
            == 200
        )
    assert len(closed) == 1
