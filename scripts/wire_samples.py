"""Print a real sample of each wire format, as docs/formats.md shows them.

    .venv/bin/python scripts/wire_samples.py

Runs the simulator and a relay under uvicorn on 127.0.0.1 and prints the raw
HTTP bodies each format produces for the same short answer.
"""

from __future__ import annotations

import httpx
from starlette.applications import Starlette
from starlette.routing import Mount

from streamrelay import StreamRelay, Upstream
from streamrelay.testing import ServerThread, run_simulator

BODY = {
    "model": "sim-1",
    "messages": [{"role": "user", "content": "Say hi"}],
    "stream_options": {"include_usage": True},
    "simulator": {"pieces": ["Hello", ",\nworld", " 👋"], "delay": 0},
}


def main() -> None:
    with run_simulator(delay=0) as (_, upstream):
        relay = StreamRelay(Upstream(upstream, api_key="sk-demo"))
        with ServerThread(Starlette(routes=[Mount("/v1", relay)])) as server:
            for fmt in ("text", "ndjson", "sse", "openai"):
                url = f"{server.url}/v1/chat/completions?format={fmt}"
                with httpx.stream("POST", url, json=BODY) as response:
                    body = response.read().decode()
                print(f"=== {fmt}: {response.headers['content-type']}")
                print(body)


if __name__ == "__main__":
    main()
