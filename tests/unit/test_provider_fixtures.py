"""Real captured streams from many providers, decoded end to end.

Each file in tests/fixtures/providers/ is a stream a real provider sent (origin and
license in that folder's README.md). Every test here reads the raw JSON itself, with
plain dictionary lookups written for that provider's shape, and checks that what the
relay decodes says the same: the content text, the reasoning, the tool calls, the
finish reasons, the usage with its details, and how the stream ended. Nothing is
compared against strings copied from the relay's own output.

The bytes go through ``SSEDecoder`` and ``ChunkDecoder`` whole, byte by byte and at
random cuts, and through ``Transcoder`` into the ``ndjson`` and ``text`` formats.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from splits import bytewise, random_splits, split_at
from streamrelay.events import (
    Delta,
    Done,
    Error,
    Event,
    Finish,
    Reasoning,
    Start,
    ToolCall,
    Usage,
)
from streamrelay.formats import encoder_for
from streamrelay.openai import ChunkDecoder
from streamrelay.sse import SSEDecoder
from streamrelay.transcoder import Transcoder

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "providers"


# Reading the raw captures, without the relay's code ------------------------------------------


def raw(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def payloads(name: str) -> list[str]:
    """The ``data:`` payloads, by plain line splitting (no capture has multi-line data)."""
    return [
        line[len("data: ") :]
        for line in raw(name).decode("utf-8").split("\n")
        if line.startswith("data: ")
    ]


def objects(name: str) -> list[dict[str, Any]]:
    return [json.loads(p) for p in payloads(name) if p != "[DONE]"]


def deltas(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Choice 0's deltas (every capture here has one choice)."""
    out = []
    for chunk in chunks:
        for choice in chunk.get("choices") or []:
            assert choice.get("index", 0) == 0
            if isinstance(choice.get("delta"), dict):
                out.append(choice["delta"])
    return out


def joined(values: Iterable[object]) -> str:
    return "".join(v for v in values if isinstance(v, str))


def finish_reasons(chunks: list[dict[str, Any]]) -> list[str]:
    return [
        choice["finish_reason"]
        for chunk in chunks
        for choice in chunk.get("choices") or []
        if choice.get("finish_reason")
    ]


def chat_usage(usage: dict[str, Any]) -> Usage:
    return Usage(
        usage["prompt_tokens"],
        usage["completion_tokens"],
        usage["total_tokens"],
        usage.get("prompt_tokens_details"),
        usage.get("completion_tokens_details"),
    )


def last_usage(chunks: list[dict[str, Any]]) -> Usage | None:
    usages = [chunk["usage"] for chunk in chunks if chunk.get("usage")]
    return chat_usage(usages[-1]) if usages else None


def chat_tool_calls(chunks: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(id, name, arguments) per call, calls keyed by their upstream index."""
    calls: dict[int, list[str]] = {}
    for delta in deltas(chunks):
        for fragment in delta.get("tool_calls") or []:
            call = calls.setdefault(fragment["index"], ["", "", ""])
            call[0] = call[0] or fragment.get("id") or ""
            call[1] = call[1] or fragment["function"].get("name") or ""
            call[2] += fragment["function"].get("arguments") or ""
    return [(c[0], c[1], c[2]) for c in calls.values()]


def first_model(chunks: list[dict[str, Any]]) -> str:
    for chunk in chunks:
        model = chunk.get("model") or (chunk.get("response") or {}).get("model")
        if model:
            return str(model)
    raise AssertionError("no model in the capture")


def events_of_type(chunks: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [c for c in chunks if c.get("type") == kind]


# What each capture says ---------------------------------------------------------------------


@dataclass
class Expected:
    text: str
    reasoning: str = ""
    tool_calls: list[tuple[str, str, str]] = field(default_factory=list)
    finishes: list[str] = field(default_factory=list)
    usage: Usage | None = None
    ending: Event = field(default_factory=Done)
    has_reasoning: bool = False  # the provider sent reasoning text


def plain_chat(name: str, *, reasoning_field: str | None = None) -> Expected:
    """A chat stream with string content, and reasoning in one string field if any."""
    chunks = objects(name)
    ds = deltas(chunks)
    reasoning = joined(d.get(reasoning_field) for d in ds) if reasoning_field else ""
    return Expected(
        text=joined(d.get("content") for d in ds),
        reasoning=reasoning,
        tool_calls=chat_tool_calls(chunks),
        finishes=finish_reasons(chunks),
        usage=last_usage(chunks),
        has_reasoning=reasoning_field is not None,
    )


def openai_chat(name: str) -> Expected:
    expected = plain_chat(name)
    assert not any("reasoning_content" in d or "reasoning" in d for d in deltas(objects(name)))
    assert expected.usage is not None and expected.usage.completion_tokens_details is not None
    return expected


def mistral_magistral() -> Expected:
    name = "mistral-magistral-thinking-parts.sse"
    text, reasoning = [], []
    for delta in deltas(objects(name)):
        content = delta.get("content")
        if isinstance(content, str):
            text.append(content)
            continue
        for part in content:
            if part["type"] == "text":
                text.append(part["text"])
            elif part["type"] == "thinking":
                reasoning += [t["text"] for t in part["thinking"] if t["type"] == "text"]
    chunks = objects(name)
    return Expected(
        text="".join(text),
        reasoning="".join(reasoning),
        finishes=finish_reasons(chunks),
        usage=last_usage(chunks),
        has_reasoning=True,
    )


def openrouter(name: str, *, details_are_encrypted: bool = False) -> Expected:
    chunks = objects(name)
    ds = deltas(chunks)
    reasoning = joined(d.get("reasoning") for d in ds)
    details = [x for d in ds for x in d.get("reasoning_details") or []]
    if details_are_encrypted:
        assert details and all(x["type"] == "reasoning.encrypted" for x in details)
        assert reasoning == ""
    else:  # OpenRouter mirrors the text of reasoning_details into reasoning
        assert reasoning == joined(x.get("text") for x in details if x["type"] == "reasoning.text")
    expected = plain_chat(name, reasoning_field="reasoning")
    expected.has_reasoning = not details_are_encrypted
    return expected


def openrouter_error() -> Expected:
    name = "openrouter-minimax-reasoning-error-usage.sse"
    expected = openrouter(name)
    last = objects(name)[-1]
    error = last["error"]
    assert isinstance(error["code"], int)  # OpenRouter's HTTP status, not a code string
    expected.usage = chat_usage(last["usage"])
    expected.ending = Error(error["message"], "upstream_error", error["code"])
    return expected


def groq_error() -> Expected:
    name = "groq-gpt-oss-tool-use-failed-error.sse"
    expected = plain_chat(name, reasoning_field="reasoning")
    error = objects(name)[-1]["error"]
    expected.ending = Error(error["message"], error["code"], error["status_code"])
    assert b"\nevent: error\n" in raw(name)
    return expected


def responses(name: str) -> Expected:
    """A Responses API stream: text, reasoning and function calls from their own events."""
    chunks = objects(name)
    text = joined(e["delta"] for e in events_of_type(chunks, "response.output_text.delta"))
    reasoning = joined(
        e["delta"]
        for e in chunks
        if e.get("type")
        in ("response.reasoning_summary_text.delta", "response.reasoning_text.delta")
    )
    # The same texts, as the stream's own ".done" events state them.
    assert text == joined(e["text"] for e in events_of_type(chunks, "response.output_text.done"))
    assert reasoning == joined(
        e["text"]
        for e in chunks
        if e.get("type") in ("response.reasoning_summary_text.done", "response.reasoning_text.done")
    )
    calls: dict[int, list[str]] = {}
    for e in events_of_type(chunks, "response.output_item.added"):
        if e["item"]["type"] == "function_call":
            calls[e["output_index"]] = [e["item"]["call_id"], e["item"]["name"], ""]
    for e in events_of_type(chunks, "response.function_call_arguments.delta"):
        calls[e["output_index"]][2] += e["delta"]
    for e in events_of_type(chunks, "response.function_call_arguments.done"):
        assert calls[e["output_index"]][2] == e["arguments"]
    (completed,) = events_of_type(chunks, "response.completed")
    usage = completed["response"]["usage"]
    return Expected(
        text=text,
        reasoning=reasoning,
        tool_calls=[(c[0], c[1], c[2]) for c in calls.values()],
        finishes=["tool_calls" if calls else "stop"],
        usage=Usage(
            usage["input_tokens"],
            usage["output_tokens"],
            usage["total_tokens"],
            usage["input_tokens_details"],
            usage["output_tokens_details"],
        ),
        has_reasoning=True,
    )


def anthropic_gateway() -> Expected:
    expected = plain_chat("anthropic-claude-haiku-gateway-tool-call.sse")
    assert expected.usage is None  # the gateway sent none
    return expected


CAPTURES: dict[str, Callable[[], Expected]] = {
    "openai-gpt-4o-mini-text.sse": lambda: openai_chat("openai-gpt-4o-mini-text.sse"),
    "openai-gpt-5-moderation.sse": lambda: openai_chat("openai-gpt-5-moderation.sse"),
    "azure-gpt-5-nano-model-router.sse": lambda: openai_chat("azure-gpt-5-nano-model-router.sse"),
    "deepseek-reasoner-reasoning-content.sse": lambda: plain_chat(
        "deepseek-reasoner-reasoning-content.sse", reasoning_field="reasoning_content"
    ),
    "xai-grok-3-mini-reasoning-content.sse": lambda: plain_chat(
        "xai-grok-3-mini-reasoning-content.sse", reasoning_field="reasoning_content"
    ),
    "xai-grok-3-mini-tool-call.sse": lambda: plain_chat(
        "xai-grok-3-mini-tool-call.sse", reasoning_field="reasoning_content"
    ),
    "zai-glm-4.7-reasoning-content.sse": lambda: plain_chat(
        "zai-glm-4.7-reasoning-content.sse", reasoning_field="reasoning_content"
    ),
    "mistral-magistral-thinking-parts.sse": mistral_magistral,
    "groq-gpt-oss-reasoning-tool-call.sse": lambda: plain_chat(
        "groq-gpt-oss-reasoning-tool-call.sse", reasoning_field="reasoning"
    ),
    "groq-gpt-oss-tool-use-failed-error.sse": groq_error,
    "openrouter-claude-reasoning-details.sse": lambda: openrouter(
        "openrouter-claude-reasoning-details.sse"
    ),
    "openrouter-o3-encrypted-reasoning.sse": lambda: openrouter(
        "openrouter-o3-encrypted-reasoning.sse", details_are_encrypted=True
    ),
    "openrouter-minimax-reasoning-error-usage.sse": openrouter_error,
    "perplexity-sonar-citations.sse": lambda: plain_chat("perplexity-sonar-citations.sse"),
    "anthropic-claude-haiku-gateway-tool-call.sse": anthropic_gateway,
    "openai-responses-reasoning-summary-tool-call.sse": lambda: responses(
        "openai-responses-reasoning-summary-tool-call.sse"
    ),
    "openrouter-responses-gpt-oss-reasoning-text.sse": lambda: responses(
        "openrouter-responses-gpt-oss-reasoning-text.sse"
    ),
    "deepseek-responses-reasoning-tool-call.sse": lambda: responses(
        "deepseek-responses-reasoning-tool-call.sse"
    ),
}


# Decoding -------------------------------------------------------------------------------------


def decode(pieces: Iterable[bytes]) -> tuple[list[Event], ChunkDecoder]:
    sse, chunks = SSEDecoder(), ChunkDecoder()
    events: list[Event] = []
    for piece in pieces:
        for message in sse.feed(piece):
            events += chunks.feed(message.data)
    sse.close()
    events += chunks.close()
    return events, chunks


def tool_calls_of(events: list[Event]) -> list[tuple[str, str, str]]:
    calls: dict[int, list[str]] = {}
    for event in events:
        if isinstance(event, ToolCall):
            assert event.index == 0
            call = calls.setdefault(event.call, ["", "", ""])
            call[0] = call[0] or event.id or ""
            call[1] = call[1] or event.name or ""
            call[2] += event.arguments
    return [(c[0], c[1], c[2]) for c in calls.values()]


def test_every_fixture_file_is_covered_and_listed_in_the_readme() -> None:
    files = sorted(p.name for p in FIXTURES.glob("*.sse"))
    assert files == sorted(CAPTURES)
    readme = (FIXTURES / "README.md").read_text(encoding="utf-8")
    for name in files:
        assert f"`{name}`" in readme, name


def test_at_least_five_providers() -> None:
    providers = {name.split("-")[0] for name in CAPTURES}
    assert len(providers) >= 5, providers


@pytest.mark.parametrize("name", list(CAPTURES))
def test_capture_decodes_to_what_it_says(name: str) -> None:
    expected = CAPTURES[name]()
    events, decoder = decode([raw(name)])

    assert isinstance(events[0], Start) and events[0].model == first_model(objects(name))
    assert sum(isinstance(e, Start) for e in events) == 1
    assert all(getattr(e, "index", 0) == 0 for e in events)
    assert "".join(e.text for e in events if isinstance(e, Delta)) == expected.text
    reasoning = "".join(e.text for e in events if isinstance(e, Reasoning))
    assert reasoning == expected.reasoning
    if expected.has_reasoning:
        assert reasoning.strip(), "the provider sent reasoning"
    assert tool_calls_of(events) == expected.tool_calls
    for _, _, arguments in expected.tool_calls:
        json.loads(arguments)  # whole JSON once joined
    assert [e.reason for e in events if isinstance(e, Finish)] == expected.finishes
    usages = [e for e in events if isinstance(e, Usage)]
    assert (usages[-1] if usages else None) == expected.usage
    assert decoder.usage == expected.usage
    assert events[-1] == expected.ending
    assert sum(isinstance(e, (Done, Error)) for e in events) == 1
    if isinstance(expected.ending, Error) and expected.usage is not None:
        assert events[-2] == expected.usage  # the cost of a failed call is reported first


@pytest.mark.parametrize("name", list(CAPTURES))
def test_capture_decodes_the_same_byte_by_byte(name: str) -> None:
    assert decode(bytewise(raw(name)))[0] == decode([raw(name)])[0]


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_capture_decodes_the_same_at_random_cuts(data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(sorted(CAPTURES)))
    pieces = data.draw(random_splits(raw(name), max_cuts=40))
    assert decode(pieces)[0] == decode([raw(name)])[0]


def transcode(fmt: str, pieces: Iterable[bytes]) -> tuple[bytes, Transcoder]:
    transcoder = Transcoder(encoder_for(fmt, now=0.0))
    out = b"".join(transcoder.feed_bytes(piece) for piece in pieces) + transcoder.end()
    return out, transcoder


def cuts(data: bytes, every: int) -> list[bytes]:
    return split_at(data, range(every, len(data), every))


@pytest.mark.parametrize("name", list(CAPTURES))
@pytest.mark.parametrize("every", [0, 1, 97, 4096])
def test_capture_through_the_transcoder(name: str, every: int) -> None:
    data = raw(name)
    pieces = cuts(data, every) if every else [data]
    events, decoder = decode([data])

    ndjson, transcoder = transcode("ndjson", pieces)
    lines = [json.loads(line) for line in ndjson.decode("utf-8").splitlines()]
    assert lines == [e.to_dict() for e in events]
    assert transcoder.usage == decoder.usage
    assert transcoder.error == (events[-1] if isinstance(events[-1], Error) else None)

    text, _ = transcode("text", pieces)
    assert text.decode("utf-8") == CAPTURES[name]().text  # content only, never reasoning


def test_reasoning_streams_start_with_reasoning_before_the_answer() -> None:
    """Where a provider thinks first, the first reasoning piece precedes the first
    piece of the answer, as in the capture."""
    for name in (
        "deepseek-reasoner-reasoning-content.sse",
        "mistral-magistral-thinking-parts.sse",
        "openrouter-claude-reasoning-details.sse",
        "xai-grok-3-mini-reasoning-content.sse",
        "zai-glm-4.7-reasoning-content.sse",
    ):
        kinds = [type(e) for e in decode([raw(name)])[0] if isinstance(e, (Delta, Reasoning))]
        assert kinds[0] is Reasoning and Delta in kinds, name
        assert kinds.index(Delta) > kinds.index(Reasoning)


def test_the_gateway_s_sparse_tool_call_index_is_kept() -> None:
    """The Claude gateway numbered its only call 1; the relay passes that number on."""
    name = "anthropic-claude-haiku-gateway-tool-call.sse"
    indices = {
        fragment["index"] for d in deltas(objects(name)) for fragment in d.get("tool_calls") or []
    }
    calls = {e.call for e in decode([raw(name)])[0] if isinstance(e, ToolCall)}
    assert calls == indices == {1}
