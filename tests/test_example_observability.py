"""``examples/observability.py`` run as its header says (uvicorn, the simulator upstream):
a stream with the client's request id, then ``/metrics``, ``/spent`` and the JSON log line
on the server's output."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx

from apps.procs import MESSAGES, ROOT, Proc, free_port, server_command
from streamrelay.testing import Simulator


def test_the_observability_example(sim: Simulator, upstream: str, tmp_path: Path) -> None:
    port = free_port()
    env = {"STREAMRELAY_UPSTREAM": upstream, "OPENAI_API_KEY": "sk-example"}
    argv = server_command("uvicorn", "examples.observability:app", port)
    body = {
        "model": "sim-1",
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": MESSAGES,
    }
    with (
        Proc(argv, port, tmp_path / "server.log", env, cwd=ROOT) as server,
        httpx.Client(timeout=20) as client,
    ):
        with client.stream(
            "POST",
            server.url + "/ai/chat/completions",
            json=body,
            headers={"x-request-id": "my-req-1"},
        ) as response:
            assert response.status_code == 200
            assert response.headers["x-request-id"] == "my-req-1"
            raw = b"".join(response.iter_raw())
        usage = [
            json.loads(line[6:])["usage"]
            for line in raw.decode().splitlines()
            if line.startswith("data: {") and '"usage":{' in line
        ][-1]
        assert sim.requests[-1].headers["x-request-id"] == "my-req-1"

        deadline = time.monotonic() + 10
        while True:
            metrics = client.get(server.url + "/metrics").text
            spent = client.get(server.url + "/spent").json()
            if spent or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert spent == {"127.0.0.1": usage["total_tokens"]}
        assert (
            'streamrelay_streams_finished_total{format="openai",outcome="done",'
            'route="chat.completions"} 1.0' in metrics
        )
        assert (
            f'streamrelay_tokens_total{{type="output"}} {float(usage["completion_tokens"])}'
            in metrics
        )
        lines = [
            json.loads(line) for line in server.output().splitlines() if line.startswith('{"event"')
        ]
    (line,) = [line for line in lines if line["request_id"] == "my-req-1"]
    assert line["outcome"] == "done" and line["output_tokens"] == usage["completion_tokens"]
