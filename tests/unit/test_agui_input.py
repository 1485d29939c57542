"""``streamrelay.agui.chat_body``: an AG-UI ``RunAgentInput`` as an OpenAI chat completion.

The inputs are built as a client builds them: ``ag_ui.core.RunAgentInput(...)`` objects
of the ``ag-ui-protocol`` package, serialized with ``by_alias`` (camelCase), which is
what ``HttpAgent`` POSTs. Every converted body is checked against openai-python's own
request types (``ChatCompletionMessageParam``, ``ChatCompletionFunctionToolParam``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from ag_ui.core import (
    AssistantMessage,
    AudioPart,
    BinaryInputContent,
    Context,
    DataSource,
    DeveloperMessage,
    DocumentPart,
    FileSource,
    FunctionCall,
    ImagePart,
    ReasoningMessage,
    RunAgentInput,
    SystemMessage,
    TextPart,
    Tool,
    ToolCall,
    ToolMessage,
    UrlSource,
    UserMessage,
    VideoPart,
)
from openai.types.chat import ChatCompletionFunctionToolParam, ChatCompletionMessageParam
from pydantic import TypeAdapter

from streamrelay.agui import chat_body
from streamrelay.errors import RequestRejected

MESSAGES: TypeAdapter[Any] = TypeAdapter(list[ChatCompletionMessageParam])
TOOLS: TypeAdapter[Any] = TypeAdapter(list[ChatCompletionFunctionToolParam])


def _materialize(value: Any) -> Any:
    """Consume pydantic's lazy ``Iterable`` validators, so that every item is checked."""
    if isinstance(value, dict):
        return {k: _materialize(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, Iterator)):
        return [_materialize(v) for v in value]
    return value


def wire(run_input: RunAgentInput) -> dict[str, Any]:
    """``run_input`` as it travels: camelCase JSON, parsed back."""
    parsed: dict[str, Any] = json.loads(run_input.model_dump_json(by_alias=True))
    return parsed


def convert(run_input: RunAgentInput | dict[str, Any]) -> tuple[dict[str, Any], str, str]:
    body, thread_id, run_id = chat_body(
        wire(run_input) if isinstance(run_input, RunAgentInput) else run_input
    )
    _materialize(MESSAGES.validate_python(body["messages"]))
    if "tools" in body:
        _materialize(TOOLS.validate_python(body["tools"]))
    json.dumps(body)  # plain JSON
    return body, thread_id, run_id


def make(**fields: Any) -> RunAgentInput:
    fields.setdefault("thread_id", "thread-1")
    fields.setdefault("run_id", "run-1")
    fields.setdefault("state", {})
    fields.setdefault("tools", [])
    fields.setdefault("context", [])
    fields.setdefault("forwarded_props", {})
    return RunAgentInput(**fields)


def rejected(run_input: Any, match: str) -> None:
    with pytest.raises(RequestRejected) as info:
        chat_body(run_input)
    assert info.value.status_code == 400
    assert info.value.code == "invalid_run_input"
    assert match in info.value.message


# --- the basics ------------------------------------------------------------------------------


def test_minimal_input_as_http_agent_sends_it() -> None:
    body, thread_id, run_id = convert(make(messages=[UserMessage(id="u1", content="Hello")]))
    assert (thread_id, run_id) == ("thread-1", "run-1")
    assert body == {
        "messages": [{"role": "user", "content": "Hello"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def test_the_model_comes_from_forwarded_props() -> None:
    body, _, _ = convert(
        make(
            messages=[UserMessage(id="u", content="x")],
            forwarded_props={"model": "gpt-4o-mini", "temperature": 2},
        )
    )
    assert body["model"] == "gpt-4o-mini"
    assert "temperature" not in body  # only the model is taken from the client
    assert "model" not in convert(make(messages=[], forwarded_props=None))[0]


def test_a_whole_conversation() -> None:
    run_input = make(
        messages=[
            SystemMessage(id="s", content="Be brief."),
            DeveloperMessage(id="d", content="Use metric units."),
            UserMessage(id="u1", content="Weather in Paris?", name="ada"),
            AssistantMessage(
                id="a1",
                content="Let me check.",
                tool_calls=[
                    ToolCall(
                        id="call_1",
                        function=FunctionCall(name="get_weather", arguments='{"city":"Paris"}'),
                    ),
                    ToolCall(
                        id="call_2",
                        function=FunctionCall(name="get_time", arguments="{}"),
                    ),
                ],
            ),
            ToolMessage(id="t1", tool_call_id="call_1", content="18 C, cloudy"),
            ToolMessage(id="t2", tool_call_id="call_2", content="", error="clock unavailable"),
            ReasoningMessage(id="r1", content="they want a summary"),
            AssistantMessage(id="a2", content="18 C and cloudy."),
            UserMessage(id="u2", content="Thanks"),
        ]
    )
    body, _, _ = convert(run_input)
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "system", "content": "Use metric units."},
        {"role": "user", "content": "Weather in Paris?", "name": "ada"},
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "get_time", "arguments": "{}"},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18 C, cloudy"},
        {"role": "tool", "tool_call_id": "call_2", "content": "clock unavailable"},
        {"role": "assistant", "content": "18 C and cloudy."},
        {"role": "user", "content": "Thanks"},
    ]


def test_assistant_with_only_tool_calls_has_null_content() -> None:
    body, _, _ = convert(
        make(
            messages=[
                AssistantMessage(
                    id="a",
                    tool_calls=[ToolCall(id="c", function=FunctionCall(name="f", arguments="{}"))],
                ),
                AssistantMessage(id="b"),
                AssistantMessage(id="e", content="", tool_calls=[]),
            ]
        )
    )
    assert body["messages"][0]["content"] is None
    assert body["messages"][1:] == [
        {"role": "assistant", "content": ""},
        {"role": "assistant", "content": ""},
    ]


def test_tools_become_function_tools() -> None:
    parameters = {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    }
    body, _, _ = convert(
        make(
            messages=[UserMessage(id="u", content="x")],
            tools=[
                Tool(name="get_weather", description="The weather now", parameters=parameters),
                Tool(name="ping", description=""),
            ],
        )
    )
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "The weather now",
                "parameters": parameters,
            },
        },
        {"type": "function", "function": {"name": "ping"}},
    ]


def test_no_tools_means_no_tools_key() -> None:
    # HttpAgent always sends "tools": [], which OpenAI would refuse upstream
    body, _, _ = convert(make(messages=[UserMessage(id="u", content="x")], tools=[]))
    assert "tools" not in body


def test_context_is_one_system_message_after_the_leading_system_messages() -> None:
    body, _, _ = convert(
        make(
            messages=[
                SystemMessage(id="s", content="You are helpful."),
                UserMessage(id="u", content="What's on my page?"),
            ],
            context=[
                Context(description="The page the user is on", value="/settings/billing"),
                Context(description="User's plan", value='{"plan": "pro"}'),
            ],
        )
    )
    assert body["messages"] == [
        {"role": "system", "content": "You are helpful."},
        {
            "role": "system",
            "content": "Context from the application:\n\n"
            "## The page the user is on\n/settings/billing\n\n"
            '## User\'s plan\n{"plan": "pro"}',
        },
        {"role": "user", "content": "What's on my page?"},
    ]
    body, _, _ = convert(make(messages=[], context=[Context(description="", value="v")]))
    assert body["messages"] == [{"role": "system", "content": "Context from the application:\n\nv"}]


def test_state_resume_and_other_fields_do_not_go_upstream() -> None:
    body, _, _ = convert(
        make(
            messages=[UserMessage(id="u", content="x")],
            state={"secret": "kept in the UI"},
            parent_run_id="run-0",
            protocol_version="1.0",
        )
    )
    assert "secret" not in json.dumps(body)


# --- content parts ---------------------------------------------------------------------------


def test_text_parts_are_joined_like_content_to_text() -> None:
    body, _, _ = convert(
        make(
            messages=[
                UserMessage(id="u", content=[TextPart(text="Hello "), TextPart(text="world")])
            ]
        )
    )
    assert body["messages"] == [{"role": "user", "content": "Hello world"}]


def test_media_parts_become_openai_content_parts() -> None:
    body, _, _ = convert(
        make(
            messages=[
                UserMessage(
                    id="u",
                    content=[
                        TextPart(text="What is this?"),
                        ImagePart(source=DataSource(value="iVBORw0KGgo=", mime_type="image/png")),
                        ImagePart(source=UrlSource(value="https://example.com/cat.jpg")),
                        AudioPart(source=DataSource(value="UklGRg==", mime_type="audio/wav")),
                        AudioPart(source=DataSource(value="SUQz", mime_type="audio/mpeg")),
                        DocumentPart(
                            source=DataSource(value="JVBERi0=", mime_type="application/pdf")
                        ),
                        DocumentPart(source=FileSource(value="file-abc123")),
                    ],
                )
            ]
        )
    )
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
        {"type": "input_audio", "input_audio": {"data": "SUQz", "format": "mp3"}},
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0="}},
        {"type": "file", "file": {"file_id": "file-abc123"}},
    ]


def test_pre_1_0_binary_parts() -> None:
    parts = [
        BinaryInputContent(mime_type="image/jpeg", url="https://example.com/a.jpg"),
        BinaryInputContent(mime_type="image/png", data="AAAA"),
        BinaryInputContent(mime_type="application/pdf", data="JVBE", filename="a.pdf"),
        BinaryInputContent(mime_type="text/plain", id="file-1"),
    ]
    run_input = wire(make(messages=[UserMessage(id="u", content="x")]))
    run_input["messages"][0]["content"] = [
        json.loads(p.model_dump_json(by_alias=True, exclude_none=True)) for p in parts
    ]
    body, _, _ = convert(run_input)
    assert body["messages"][0]["content"] == [
        {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {
            "type": "file",
            "file": {"file_data": "data:application/pdf;base64,JVBE", "filename": "a.pdf"},
        },
        {"type": "file", "file": {"file_id": "file-1"}},
    ]


@pytest.mark.parametrize(
    ("part", "match"),
    [
        (VideoPart(source=UrlSource(value="https://example.com/v.mp4")), "video part"),
        (AudioPart(source=DataSource(value="x", mime_type="audio/ogg")), "audio part"),
        (ImagePart(source=FileSource(value="file-1")), "image part from a file source"),
        (DocumentPart(source=UrlSource(value="https://example.com/a.pdf")), "document part"),
    ],
)
def test_parts_chat_completions_cannot_take_are_refused(part: Any, match: str) -> None:
    run_input = wire(make(messages=[UserMessage(id="u", content=[part])]))
    rejected(run_input, match)


def test_tool_results_with_parts() -> None:
    body, _, _ = convert(
        make(
            messages=[
                ToolMessage(
                    id="t", tool_call_id="c", content=[TextPart(text="a"), TextPart(text="b")]
                )
            ]
        )
    )
    assert body["messages"] == [{"role": "tool", "tool_call_id": "c", "content": "ab"}]
    run_input = wire(
        make(
            messages=[
                ToolMessage(
                    id="t",
                    tool_call_id="c",
                    content=[ImagePart(source=UrlSource(value="https://example.com/x.png"))],
                )
            ]
        )
    )
    rejected(run_input, "a tool result can only be text")


def test_activity_messages_are_dropped() -> None:
    run_input = wire(make(messages=[UserMessage(id="u", content="x")]))
    run_input["messages"].append(
        {"id": "a", "role": "activity", "activityType": "progress", "content": {"pct": 50}}
    )
    body, _, _ = convert(run_input)
    assert body["messages"] == [{"role": "user", "content": "x"}]


# --- malformed input -------------------------------------------------------------------------


def _valid() -> dict[str, Any]:
    return wire(
        make(
            messages=[
                UserMessage(id="u", content="x"),
                AssistantMessage(
                    id="a",
                    tool_calls=[ToolCall(id="c", function=FunctionCall(name="f", arguments="{}"))],
                ),
                ToolMessage(id="t", tool_call_id="c", content="r"),
            ],
            tools=[Tool(name="f", description="d", parameters={"type": "object"})],
            context=[Context(description="d", value="v")],
            forwarded_props={"model": "m"},
        )
    )


def _set(obj: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    *keys, last = path.split(".")
    target: Any = obj
    for key in keys:
        target = target[int(key)] if isinstance(target, list) else target[key]
    if value is _DELETE:
        del target[int(last) if isinstance(target, list) else last]
    elif isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value
    return obj


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "match"),
    [
        ("threadId", _DELETE, "threadId must be a non-empty string"),
        ("threadId", "", "threadId must be a non-empty string"),
        ("runId", 7, "runId must be a non-empty string"),
        ("messages", _DELETE, "messages must be an array"),
        ("messages", {"role": "user"}, "messages must be an array"),
        ("messages.0", "hello", "messages[0] must be an object"),
        ("messages.0.role", "robot", "messages[0].role must be"),
        ("messages.0.content", 5, "messages[0].content must be a string or an array"),
        ("messages.0.content", [{"type": "emoji"}], "messages[0].content[0].type"),
        ("messages.0.content", [{"type": "text"}], "messages[0].content[0].text"),
        ("messages.0.name", 1, "messages[0].name must be a string"),
        ("messages.1.toolCalls", {}, "messages[1].toolCalls must be an array"),
        ("messages.1.toolCalls.0.function", _DELETE, "messages[1].toolCalls[0].function"),
        ("messages.1.toolCalls.0.function.arguments", {}, "toolCalls[0].function.arguments"),
        ("messages.1.toolCalls.0.type", "custom", "toolCalls[0].type"),
        ("messages.1.content", ["x"], "messages[1].content must be a string"),
        ("messages.2.toolCallId", _DELETE, "messages[2].toolCallId"),
        ("messages.2.content", None, "messages[2].content must be a string or an array"),
        ("tools", {}, "tools must be an array"),
        ("tools.0.name", "", "tools[0].name must not be empty"),
        ("tools.0.name", _DELETE, "tools[0].name must be a string"),
        ("tools.0.description", 3, "tools[0].description must be a string"),
        ("tools.0.parameters", "object", "tools[0].parameters must be an object"),
        ("context", "all of it", "context must be an array"),
        ("context.0.value", _DELETE, "context[0].value must be a string"),
        ("forwardedProps.model", 4, "forwardedProps.model must be a non-empty string"),
        ("forwardedProps.model", "", "forwardedProps.model must be a non-empty string"),
    ],
)
def test_malformed_input_is_a_400(path: str, value: Any, match: str) -> None:
    convert(_valid())  # the untouched input converts
    rejected(_set(_valid(), path, value), match)


@pytest.mark.parametrize("run_input", [None, [], "RunAgentInput", 42])
def test_a_body_that_is_not_an_object_is_a_400(run_input: Any) -> None:
    rejected(run_input, "must be a RunAgentInput object")


def test_the_untouched_malformed_inputs_are_really_invalid_for_ag_ui_too() -> None:
    """The refusals above are not stricter than the protocol where it matters: the
    package's own model refuses the same shapes (a sample)."""
    from pydantic import ValidationError

    for path, value in [
        ("threadId", _DELETE),
        ("messages.0.role", "robot"),
        ("messages.2.toolCallId", _DELETE),
        ("tools.0.name", _DELETE),
        ("context.0.value", _DELETE),
    ]:
        with pytest.raises(ValidationError):
            RunAgentInput.model_validate(_set(_valid(), path, value))
