"""The ``ai-sdk`` format read by the real Vercel AI SDK, every pinned version of it.

The streams are the simulator's real chat completions streams (over a real socket),
re-framed by :class:`~streamrelay.transcoder.Transcoder` with the ``ai-sdk``
encoder and written to files. ``js/clients/ai-sdk-ui.mjs`` reads each file with one
pinned ``ai`` (ai 5.0.0, the strictest, and the newest 5.x, 6.x and 7.x, as npm
aliases in ``js/package.json``) through that version's own ``DefaultChatTransport``
(so every part passes that version's ``uiMessageChunkSchema``), then with
``readUIMessageStream`` and with ``AbstractChat``, the engine of ``useChat``. The
final messages must hold exactly what the simulator's oracle says: the text, the
reasoning, the tool calls with their parsed input, the error, every part in a final
state. The tool scenario goes on as ``useChat`` does: the tool outputs are added,
the SDK sends the follow-up request, :func:`streamrelay.uimessage.chat_body` turns it
into an OpenAI body, the simulator answers it, and the SDK appends that answer to
the same assistant message.

Without node or ``js/node_modules`` these tests skip; under ``CI=true`` that skip is a
failure (``@pytest.mark.real``).
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from client_oracle import JS, NODE_MODULES, node_modules, run_client
from streamrelay.events import Error
from streamrelay.formats import AISDKEncoder
from streamrelay.testing import Simulator
from streamrelay.transcoder import Transcoder
from streamrelay.uimessage import chat_body, continued_message_id

pytestmark = pytest.mark.real

SCRIPT = JS / "clients" / "ai-sdk-ui.mjs"
SCRIPT_TIMEOUT = 120
PROMPT = "What is the weather in Paris?"  # what the script's user message says
MODEL = "sim-1"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": name,
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
        },
    }
    for name in ("get_weather", "lookup")
]


def ai_packages() -> list[str]:
    """The pinned ``ai`` packages: ``ai`` itself and its ``npm:ai@`` aliases, oldest first."""
    deps: dict[str, str] = json.loads((JS / "package.json").read_text())["devDependencies"]
    versions = {"ai": deps["ai"]}
    versions |= {k: v.removeprefix("npm:ai@") for k, v in deps.items() if v.startswith("npm:ai@")}
    return sorted(versions, key=lambda k: tuple(int(n) for n in versions[k].split(".")))


PACKAGES = ai_packages()


# --- streams ----------------------------------------------------------------------------------


@dataclass
class Stream:
    """One ``ai-sdk`` response body, and what made it."""

    file: Path
    body: dict[str, Any]  # the upstream request body
    error: Error | None  # the terminal error the transcoder saw


_STREAMS: dict[str, Stream] = {}


@pytest.fixture(scope="module")
def stream_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ai-sdk-streams")


def transcode(
    upstream: str,
    body: dict[str, Any],
    path: Path,
    *,
    stop_after: int | None = None,
    message_id: str | None = None,
) -> Stream:
    """POST ``body`` to the simulator, re-frame its stream as ``ai-sdk``, write it to ``path``.

    The upstream's reads are fed as they came, with a heartbeat after each; with
    ``stop_after``, the stream is stopped (``Error(code="stopped")``, what a DELETE
    does) after that many upstream events.
    """
    with (
        httpx.Client(timeout=30) as client,
        client.stream("POST", f"{upstream}/chat/completions", json=body) as response,
    ):
        assert response.status_code == 200, response.read()
        reads = list(response.iter_raw())
    if stop_after is not None:  # one event per read, so that the stop lands mid-answer
        events = b"".join(reads).split(b"\n\n")
        reads = [event + b"\n\n" for event in events if event][:stop_after]
    encoder = AISDKEncoder(now=0.0, message_id=message_id)
    t = Transcoder(encoder)
    out = [encoder.preamble()]
    for data in reads:
        out.append(t.feed_bytes(data))
        out.append(t.heartbeat())  # comments between parts, as a slow stream has them
    out.append(t.fail(Error("stopped by the user", "stopped")) if stop_after else t.end())
    path.write_bytes(b"".join(out))
    return Stream(path, body, t.error)


def request(**extra: Any) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": PROMPT}],
        "stream": True,
        "stream_options": {"include_usage": True},
        **extra,
    }


SCENARIOS: dict[str, dict[str, Any]] = {
    "text": {"body": request()},
    "reasoning": {"body": request(simulator={"fault": "reasoning"})},
    "tools": {"body": request(tools=TOOLS, simulator={"fault": "tools", "tool_calls": 2})},
    "reasoning-tools": {
        "body": request(tools=TOOLS, simulator={"fault": ["reasoning", "tools"]}),
    },
    "mid_error": {"body": request(simulator={"fault": "mid_error", "after": 5})},
    "stop": {"body": request(simulator={"tokens": 40}), "stop_after": 6},
}


def bad_arguments_stream(path: Path) -> Stream:
    """A tool call whose arguments are not JSON (no simulator fault makes one)."""
    head = {"id": "chatcmpl-bad", "object": "chat.completion.chunk", "created": 1, "model": MODEL}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return b"data: " + json.dumps({**head, "choices": [choice]}).encode() + b"\n\n"

    def call(arguments: str, **first: Any) -> dict[str, Any]:
        return {"tool_calls": [{"index": 0, **first, "function": {"arguments": arguments}}]}

    upstream = [
        chunk({"role": "assistant", "content": "Let me look."}),
        chunk(call('{"q": "Par', id="call_bad", type="function")),
        chunk({"tool_calls": [{"index": 0, "function": {"name": "lookup"}}]}),
        chunk(call("is}")),
        chunk({}, "tool_calls"),
        b"data: [DONE]\n\n",
    ]
    encoder = AISDKEncoder(now=0.0)
    t = Transcoder(encoder)
    data = encoder.preamble() + b"".join(t.feed_bytes(c) for c in upstream) + t.end()
    path.write_bytes(data)
    return Stream(path, {}, t.error)


def stream_for(name: str, upstream: str, directory: Path) -> Stream:
    """The ``ai-sdk`` stream of scenario ``name`` (made once, then shared)."""
    if name not in _STREAMS:
        path = directory / f"{name}.txt"
        if name == "bad_arguments":
            _STREAMS[name] = bad_arguments_stream(path)
        else:
            scenario = SCENARIOS[name]
            _STREAMS[name] = transcode(
                upstream, scenario["body"], path, stop_after=scenario.get("stop_after")
            )
    return _STREAMS[name]


# --- the node client --------------------------------------------------------------------------

_RUNS: dict[tuple[str, tuple[Path, ...]], dict[str, Any]] = {}


def run_ui(package: str, *files: Path) -> dict[str, Any]:
    """``node js/clients/ai-sdk-ui.mjs <package> <files>``: what that ``ai`` made of them."""
    node_modules(package)
    key = (package, files)
    if key not in _RUNS:
        _RUNS[key] = run_client(SCRIPT.name, package, *map(str, files), timeout=SCRIPT_TIMEOUT)
    return _RUNS[key]


@pytest.fixture(params=PACKAGES)
def package(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def streams(
    streamrelay_simulator: str, streamrelay_simulator_app: Simulator, stream_dir: Path
) -> tuple[str, Simulator, Path]:
    """The simulator's URL, the simulator (the oracle), and where the streams go."""
    return streamrelay_simulator, streamrelay_simulator_app, stream_dir


def client_for(
    name: str, package: str, streams: tuple[str, Simulator, Path]
) -> tuple[dict[str, Any], Stream, Simulator]:
    upstream, sim, directory = streams
    stream = stream_for(name, upstream, directory)
    return run_ui(package, stream.file), stream, sim


# --- what every stream must give --------------------------------------------------------------

FINAL_TOOL_STATES = {"input-available", "output-available", "output-error"}


def assert_final(message: dict[str, Any]) -> None:
    """Every part of ``message`` is in a final state: nothing left streaming."""
    for part in message["parts"]:
        if part["type"] in ("text", "reasoning"):
            assert part["state"] == "done", part
        elif part["type"].startswith("tool-"):
            assert part["state"] in FINAL_TOOL_STATES, part


def assert_clean_read(result: dict[str, Any]) -> dict[str, Any]:
    """The ``read`` half of a run passed the schema and reported no error; its message."""
    read = result["read"]
    assert read["streamError"] is None, read["streamError"]
    assert read["errors"] == [], read["errors"]
    message: dict[str, Any] = read["message"]
    assert_final(message)
    return message


def kinds(message: dict[str, Any]) -> list[str]:
    return [part["type"] for part in message["parts"]]


def text_of(message: dict[str, Any], kind: str = "text") -> str:
    return "".join(part["text"] for part in message["parts"] if part["type"] == kind)


def usage_of(sim: Simulator, body: dict[str, Any]) -> dict[str, int]:
    usage = sim.completion(body)["usage"]
    return {
        "inputTokens": usage["prompt_tokens"],
        "outputTokens": usage["completion_tokens"],
        "totalTokens": usage["total_tokens"],
    }


# --- tests ------------------------------------------------------------------------------------


def test_the_pinned_versions() -> None:
    node_modules(*PACKAGES)
    versions = [
        json.loads((NODE_MODULES / p / "package.json").read_text())["version"] for p in PACKAGES
    ]
    assert versions[0] == "5.0.0"
    assert [v.split(".")[0] for v in versions] == ["5", "5", "6", "7"]


def test_the_schema_table_is_ai_5_0_0s() -> None:
    """The unit tests' table of part types and keys is ai 5.0.0's ``uiMessageChunkSchema``,
    read from the installed package's source."""
    node_modules("ai-5.0.0")
    source = (NODE_MODULES / "ai-5.0.0" / "dist" / "index.mjs").read_text()
    block = source[source.index("var uiMessageChunkSchema = ") :]
    block = block[: block.index("\n]);")]
    found: dict[str, tuple[dict[str, str], dict[str, str]]] = {}
    for obj in block.split(".strictObject({")[1:]:
        body = obj[: obj.index("\n  })")]
        kind = re.search(r'type: z\d*\.literal\("([^"]+)"\)', body)
        name = kind.group(1) if kind else "data-*"
        if kind is None:
            assert 'startsWith("data-")' in body
        required: dict[str, str] = {}
        optional: dict[str, str] = {}
        for key, expr in re.findall(r"^\s+(\w+): (.+?),?$", body, re.MULTILINE):
            if key == "type":
                continue
            kind_of = (
                "string"
                if re.match(r"z\d*\.string\(\)", expr)
                else "boolean"
                if re.match(r"z\d*\.boolean\(\)", expr)
                else "unknown"
            )
            (optional if expr.endswith(".optional()") else required)[key] = kind_of
        found[name] = (required, optional)
    assert found == _unit_schema()


def _unit_schema() -> Any:
    spec = importlib.util.spec_from_file_location(
        "ai_sdk_format_unit", Path(__file__).parent / "unit" / "test_ai_sdk_format.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module.SCHEMA_5_0_0


def test_a_strict_version_really_rejects_an_extra_key(tmp_path: Path) -> None:
    """The harness sees a schema failure: ai 5.0.0 fails on ``finish.finishReason``,
    which later versions accept (why the encoder never sends it)."""
    bad = tmp_path / "bad.txt"
    bad.write_bytes(
        b'data: {"type":"start"}\n\ndata: {"type":"finish","finishReason":"stop"}\n\n'
        b"data: [DONE]\n\n"
    )
    result = run_ui("ai-5.0.0", bad)
    assert "finishReason" in (result["read"]["streamError"] or "")
    assert result["chat"]["status"] == "error"


def test_plain_text(package: str, streams: tuple[str, Simulator, Path]) -> None:
    result, stream, sim = client_for("text", package, streams)
    message = assert_clean_read(result)
    expected = sim.expected_text(stream.body)
    assert expected
    assert kinds(message) == ["step-start", "text"]
    assert text_of(message) == expected
    assert message["id"] == sim.completion(stream.body)["id"]
    assert message["metadata"] == {
        "model": MODEL,
        "finishReason": "stop",
        "usage": usage_of(sim, stream.body),
    }
    chunks = [c["type"] for c in result["read"]["chunks"]]
    assert chunks[:3] == ["start", "start-step", "text-start"]
    assert chunks[-3:] == ["text-end", "finish-step", "finish"]
    assert chunks.count("text-delta") > 1  # streamed, not one piece
    # useChat's engine: the same message, and the request it sent converts as expected.
    chat = result["chat"]
    assert chat["status"] == "ready" and chat["error"] is None
    assert chat["messages"][-1] == message
    (sent,) = chat["requests"]
    assert sent["method"] == "POST"
    assert chat_body(sent["body"]) == {"messages": [{"role": "user", "content": PROMPT}]}


def test_reasoning(package: str, streams: tuple[str, Simulator, Path]) -> None:
    result, stream, sim = client_for("reasoning", package, streams)
    message = assert_clean_read(result)
    reasoning = sim.expected_reasoning(stream.body)
    assert reasoning
    assert kinds(message) == ["step-start", "reasoning", "text"]
    assert text_of(message, "reasoning") == reasoning
    assert text_of(message) == sim.expected_text(stream.body)
    assert result["chat"]["status"] == "ready"


def expected_tool_parts(sim: Simulator, body: dict[str, Any]) -> list[dict[str, Any]]:
    calls = sim.expected_tool_calls(body)
    assert len(calls) >= 1
    return [
        {
            "type": f"tool-{call['name']}",
            "toolCallId": call["id"],
            "state": "input-available",
            "input": json.loads(call["arguments"]),
        }
        for call in calls
    ]


def tool_parts(message: dict[str, Any]) -> list[dict[str, Any]]:
    keys = ("type", "toolCallId", "state", "input")
    return [
        {k: part[k] for k in keys if k in part}
        for part in message["parts"]
        if part["type"].startswith("tool-")
    ]


@pytest.mark.parametrize("name", ["tools", "reasoning-tools"])
def test_tool_calls(package: str, streams: tuple[str, Simulator, Path], name: str) -> None:
    result, stream, sim = client_for(name, package, streams)
    message = assert_clean_read(result)
    assert tool_parts(message) == expected_tool_parts(sim, stream.body)
    assert message["metadata"]["finishReason"] == "tool-calls"
    if name == "reasoning-tools":
        assert kinds(message)[:2] == ["step-start", "reasoning"]
        assert text_of(message, "reasoning") == sim.expected_reasoning(stream.body)


def test_tool_call_then_the_follow_up_with_the_outputs(
    package: str, streams: tuple[str, Simulator, Path]
) -> None:
    """useChat's round trip: the outputs are added, the SDK sends them, the relay's
    conversion makes an OpenAI body the simulator answers, and the answer continues
    the same assistant message."""
    upstream, sim, directory = streams
    result, stream, _ = client_for("tools", package, streams)
    calls = sim.expected_tool_calls(stream.body)
    # The first run had no second file: the follow-up request was sent (and failed).
    _, follow_up = result["chat"]["requests"]
    converted = chat_body(follow_up["body"])
    assistant_id = result["read"]["message"]["id"]
    assert converted["messages"] == [
        {"role": "user", "content": PROMPT},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": call["id"],
                    "type": "function",
                    "function": {
                        "name": call["name"],
                        "arguments": json.dumps(
                            json.loads(call["arguments"]), ensure_ascii=False, separators=(",", ":")
                        ),
                    },
                }
                for call in calls
            ],
        },
        *(
            {
                "role": "tool",
                "tool_call_id": call["id"],
                "content": json.dumps({"ok": True, "tool": call["name"]}, separators=(",", ":")),
            }
            for call in calls
        ),
    ]
    assert continued_message_id(follow_up["body"]) == assistant_id
    # The relay answers it: the simulator (a model) gets the converted body.
    answer_body = {**converted, "model": MODEL, "stream": True, "tools": TOOLS}
    second = transcode(
        upstream,
        answer_body,
        directory / f"tools-answer-{package}.txt",
        message_id=continued_message_id(follow_up["body"]),
    )
    final = run_ui(package, stream.file, second.file)["chat"]
    assert final["status"] == "ready", final["error"]
    assert len(final["requests"]) == 2
    user, assistant = final["messages"]  # one assistant message: the answer continued it
    assert user["role"] == "user" and assistant["id"] == assistant_id
    assert_final(assistant)
    assert kinds(assistant) == [
        "step-start",
        *(f"tool-{call['name']}" for call in calls),
        "step-start",
        "text",
    ]
    assert [p["state"] for p in assistant["parts"] if p["type"].startswith("tool-")] == [
        "output-available"
    ] * len(calls)
    expected = sim.expected_text(answer_body)
    assert expected and text_of(assistant) == expected


def test_arguments_that_do_not_parse(package: str, streams: tuple[str, Simulator, Path]) -> None:
    result, _, _ = client_for("bad_arguments", package, streams)
    message = assert_clean_read(result)
    assert kinds(message) == ["step-start", "text", "tool-lookup"]
    (tool,) = [p for p in message["parts"] if p["type"] == "tool-lookup"]
    assert tool["toolCallId"] == "call_bad"
    assert tool["state"] == "output-error"
    assert tool["errorText"].startswith("the arguments of lookup are not valid JSON: ")
    chat = result["chat"]
    assert chat["status"] == "ready"
    assert len(chat["requests"]) == 1  # no call awaits an output: nothing more is sent
    # Sent back later, the model learns what went wrong with the arguments it wrote.
    history = {"messages": [chat["requests"][0]["body"]["messages"][0], chat["messages"][-1]]}
    converted = chat_body(history)["messages"]
    assert converted[1]["tool_calls"][0]["function"]["name"] == "lookup"
    assert converted[2] == {
        "role": "tool",
        "tool_call_id": "call_bad",
        "content": tool["errorText"],
    }


def test_an_upstream_error_mid_stream(package: str, streams: tuple[str, Simulator, Path]) -> None:
    result, stream, sim = client_for("mid_error", package, streams)
    assert stream.error is not None
    read = result["read"]
    assert read["streamError"] is None
    error_text = f"{stream.error.message} ({stream.error.code})"
    assert read["errors"] == [f"Error: {error_text}"]
    message = read["message"]
    assert_final(message)
    assert kinds(message) == ["step-start", "text"]
    expected = sim.expected_text(stream.body)
    assert text_of(message) and expected.startswith(text_of(message))
    assert text_of(message) != expected
    assert result["read"]["chunks"][-1] == {"type": "error", "errorText": error_text}
    chat = result["chat"]
    assert chat["status"] == "error" and chat["error"] == f"Error: {error_text}"
    assert_final(chat["messages"][-1])


def test_a_stop(package: str, streams: tuple[str, Simulator, Path]) -> None:
    result, stream, sim = client_for("stop", package, streams)
    assert stream.error is not None and stream.error.code == "stopped"
    message = assert_clean_read(result)
    assert kinds(message) == ["step-start", "text"]
    expected = sim.expected_text(stream.body)
    assert text_of(message) and expected.startswith(text_of(message))
    assert text_of(message) != expected
    assert [c["type"] for c in result["read"]["chunks"]][-2:] == ["text-end", "abort"]
    assert result["read"]["chunks"][-1] == {"type": "abort"}
    assert result["chat"]["status"] == "ready"
    assert_final(result["chat"]["messages"][-1])
