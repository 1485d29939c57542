"""Where an open stream's memory goes: ``python -m bench.allocations``.

Runs the fast upstream in a subprocess and one streamrelay relay (as the benchmark
mounts it) in this process under uvicorn, opens ``--warm`` slow streams, starts
``tracemalloc``, opens ``--streams`` more, and prints the Python memory they hold,
per stream, grouped by the streamrelay line that caused it (or by the library, for
memory the host and server allocate on their own). The benchmark's memory phase
measures RSS from outside; this says what the RSS is made of.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import re
import socket
import subprocess
import sys
import tracemalloc
from collections import Counter
from typing import Any

import uvicorn

from bench.common import raise_fd_limit, run_async
from bench.relays import build_app, find, streamrelay_app

_BODY = json.dumps(
    {
        "model": "bench:tokens=2:rate=0:hold=120",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
    }
).encode()


async def _open_stream(port: int, target: str, held: list[Any]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST %s HTTP/1.1\r\nhost: bench\r\n"
        b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
        % (target.encode(), len(_BODY), _BODY)
    )
    await reader.readuntil(b"\r\n\r\n")
    await reader.read(100)  # the first token: the stream is open and holding
    held.append((reader, writer))


def _where(frame: tracemalloc.Frame) -> str:
    name = re.sub(r".*/(site-packages|src|lib/python3\.\d+)/", "", frame.filename)
    return f"{name}:{frame.lineno}"


async def _main(args: argparse.Namespace, upstream_port: int) -> None:
    upstream = f"http://127.0.0.1:{upstream_port}/v1"
    if args.relay is None:
        app = streamrelay_app(upstream, args.transport)
        target = f"/v1/chat/completions?format={args.format}"
        what = f"{args.transport} transport, {args.format}"
    else:
        relay = find(args.relay)
        app, target, what = build_app(relay.factory, upstream), relay.target, relay.name
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", lifespan="off", http="httptools")
    )
    sock = socket.create_server(("127.0.0.1", 0), backlog=4096)  # connects queue until served
    relay_port = sock.getsockname()[1]
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    held: list[Any] = []
    await asyncio.gather(*(_open_stream(relay_port, target, held) for _ in range(args.warm)))
    await asyncio.sleep(0.5)
    gc.collect()
    tracemalloc.start(40)
    before = tracemalloc.take_snapshot()
    await asyncio.gather(*(_open_stream(relay_port, target, held) for _ in range(args.streams)))
    await asyncio.sleep(0.5)
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    ignore = [tracemalloc.Filter(False, __file__), tracemalloc.Filter(False, "*/streams.py")]
    sizes: Counter[str] = Counter()
    for stat in after.filter_traces(ignore).compare_to(before.filter_traces(ignore), "traceback"):
        frames = list(stat.traceback)  # oldest first
        ours = [f for f in frames if "/streamrelay/" in f.filename]
        if ours:
            key = _where(ours[-1])
        elif args.host_lines:
            key = _where(frames[-1]) + " (host/server)"
        else:
            key = _where(frames[-1]).split("/")[0] + " (host/server)"
        sizes[key] += stat.size_diff
    total = sum(sizes.values())
    print(
        f"{what}: {total / args.streams / 1024:.1f} KiB "
        f"of Python memory per open stream ({args.streams} streams)"
    )
    for key, size in sizes.most_common(args.top):
        print(f"{size / args.streams:8.0f} B  {key}")
    server.should_exit = True
    await serving


def main() -> None:
    """Entry point of ``python -m bench.allocations``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--warm", type=int, default=100)
    parser.add_argument("--format", default="ndjson")
    parser.add_argument(
        "--transport", default="auto", choices=["auto", "native", "aiohttp", "httpx"]
    )
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument(
        "--host-lines",
        action="store_true",
        help="group the server's and host framework's memory by line, not by library",
    )
    parser.add_argument(
        "--relay",
        help="measure this benchmark relay instead (floor, sse-starlette, ...: "
        "python -m bench --help lists them); --format and --transport are then ignored",
    )
    args = parser.parse_args()
    raise_fd_limit()
    upstream = subprocess.Popen(
        [sys.executable, "-m", "bench.upstream"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert upstream.stdout is not None
        run_async(_main(args, int(upstream.stdout.readline().split()[1])))
    finally:
        upstream.kill()


if __name__ == "__main__":
    main()
