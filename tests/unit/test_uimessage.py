"""The AI SDK's chat request (``DefaultChatTransport``'s body of ``UIMessage``s) as an
OpenAI chat.completions body: :func:`streamrelay.uimessage.chat_body`."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamrelay.errors import RequestRejected
from streamrelay.uimessage import chat_body


def user(*parts: dict[str, Any], id: str = "u1") -> dict[str, Any]:
    return {"id": id, "role": "user", "parts": list(parts)}


def assistant(*parts: dict[str, Any], id: str = "a1") -> dict[str, Any]:
    return {"id": id, "role": "assistant", "parts": list(parts)}


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


def request(*messages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """What ``DefaultChatTransport.sendMessages`` POSTs."""
    return {
        "id": "chat-1",
        "messages": list(messages),
        "trigger": "submit-message",
        "messageId": None,
        **extra,
    }


def test_a_first_message() -> None:
    body = request(user(text("Hello")))
    assert chat_body(body) == {"messages": [{"role": "user", "content": "Hello"}]}


def test_the_model_is_taken_and_nothing_else() -> None:
    body = request(user(text("Hi")), model="sim-2", temperature=2, tools=[{"x": 1}])
    assert chat_body(body) == {"model": "sim-2", "messages": [{"role": "user", "content": "Hi"}]}
    assert "model" not in chat_body(request(user(text("Hi")), model=None))


def test_a_conversation_with_system_user_and_assistant() -> None:
    body = request(
        {"id": "s", "role": "system", "parts": [text("Be brief.")]},
        user(text("Hi"), id="u1"),
        assistant(
            {"type": "step-start"},
            {"type": "reasoning", "text": "they greet me", "state": "done"},
            text("Hello!"),
            id="a1",
        ),
        user(text("How are "), text("you?"), id="u2"),
    )
    assert chat_body(body)["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "How are you?"},
    ]


def test_images_become_image_url_parts_in_order() -> None:
    body = request(
        user(
            text("What is"),
            {"type": "file", "mediaType": "image/png", "url": "data:image/png;base64,AAA"},
            text(" in these?"),
            {"type": "file", "mediaType": "IMAGE/JPEG", "url": "https://x/y.jpg", "filename": "y"},
            {"type": "file", "mediaType": "application/pdf", "url": "data:application/pdf;base64,"},
        )
    )
    assert chat_body(body)["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA"}},
                {"type": "text", "text": " in these?"},
                {"type": "image_url", "image_url": {"url": "https://x/y.jpg"}},
            ],
        }
    ]


def test_other_files_are_skipped() -> None:
    body = request(
        user(text("Read this"), {"type": "file", "mediaType": "application/pdf", "url": "d:"})
    )
    assert chat_body(body)["messages"] == [{"role": "user", "content": "Read this"}]
    # A file in an assistant's message: OpenAI takes none there.
    body = request(
        user(text("Draw")),
        assistant(text("Here:"), {"type": "file", "mediaType": "image/png", "url": "d:"}),
        user(text("Thanks")),
    )
    assert chat_body(body)["messages"][1] == {"role": "assistant", "content": "Here:"}


def weather(state: str, **fields: Any) -> dict[str, Any]:
    return {
        "type": "tool-get_weather",
        "toolCallId": "call_1",
        "state": state,
        "input": {"city": "Paris"},
        **fields,
    }


def test_a_tool_call_with_its_output() -> None:
    body = request(
        user(text("Weather in Paris?")),
        assistant(
            {"type": "step-start"},
            text("Let me check."),
            weather("output-available", output={"temp": 21, "sky": "☀"}),
            {"type": "step-start"},
            text("It is 21 degrees."),
        ),
        user(text("Thanks"), id="u2"),
    )
    assert chat_body(body)["messages"] == [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp":21,"sky":"☀"}'},
        {"role": "assistant", "content": "It is 21 degrees."},
        {"role": "user", "content": "Thanks"},
    ]


def test_a_conversation_that_ends_with_a_tool_result() -> None:
    # useChat after addToolResult: the last message is the assistant's, with the output.
    body = request(
        user(text("Weather?")),
        assistant({"type": "step-start"}, weather("output-available", output="sunny")),
    )
    assert chat_body(body)["messages"][1:] == [
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},  # a string as it is
    ]


def test_parallel_calls_then_their_results() -> None:
    body = request(
        user(text("Both")),
        assistant(
            {"type": "step-start"},
            {**weather("output-available", output=1), "toolCallId": "a"},
            {
                "type": "dynamic-tool",
                "toolName": "lookup",
                "toolCallId": "b",
                "state": "output-available",
                "input": {"id": 3},
                "output": [1, 2],
            },
        ),
    )
    messages = chat_body(body)["messages"]
    assert [c["function"]["name"] for c in messages[1]["tool_calls"]] == ["get_weather", "lookup"]
    assert messages[2:] == [
        {"role": "tool", "tool_call_id": "a", "content": "1"},
        {"role": "tool", "tool_call_id": "b", "content": "[1,2]"},
    ]


def test_a_tool_error_becomes_the_tool_message() -> None:
    body = request(
        user(text("Weather?")),
        assistant(weather("output-error", errorText="the service is down")),
    )
    assert chat_body(body)["messages"][2] == {
        "role": "tool",
        "tool_call_id": "call_1",
        "content": "the service is down",
    }


def test_arguments_that_did_not_parse_go_back_as_the_model_wrote_them() -> None:
    part = {
        "type": "tool-f",
        "toolCallId": "c",
        "state": "output-error",
        "input": {"city": "Par"},  # the SDK's partial parse
        "rawInput": '{"city": "Par',
        "errorText": "the arguments of f are not valid JSON",
    }
    messages = chat_body(request(user(text("x")), assistant(part)))["messages"]
    assert messages[1]["tool_calls"][0]["function"]["arguments"] == '{"city": "Par'
    del part["rawInput"], part["input"]
    messages = chat_body(request(user(text("x")), assistant(part)))["messages"]
    assert messages[1]["tool_calls"][0]["function"]["arguments"] == "{}"


def test_a_denied_tool_call() -> None:
    part = weather("output-denied", approval={"id": "ap1", "approved": False, "reason": "no"})
    messages = chat_body(request(user(text("x")), assistant(part)))["messages"]
    assert messages[2]["content"] == "the user denied this tool call: no"


@pytest.mark.parametrize(
    "state", ["input-streaming", "input-available", "approval-requested", "approval-responded"]
)
def test_tool_parts_without_an_output_are_dropped(state: str) -> None:
    body = request(user(text("x")), assistant(text("Calling"), weather(state)))
    assert chat_body(body)["messages"][1] == {"role": "assistant", "content": "Calling"}


def test_parts_that_carry_nothing_for_the_model_are_dropped() -> None:
    body = request(
        user(text("x"), {"type": "data-weather", "data": {"a": 1}}),
        assistant(
            {"type": "step-start"},
            {"type": "reasoning", "text": "r"},
            {"type": "source-url", "sourceId": "s", "url": "https://x"},
            {"type": "source-document", "sourceId": "d", "mediaType": "t", "title": "t"},
            {"type": "data-status", "data": "ok"},
            {"type": "some-future-part", "whatever": True},
            text("answer"),
        ),
    )
    assert chat_body(body)["messages"] == [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": "answer"},
    ]


def test_an_assistant_message_of_only_reasoning_is_dropped() -> None:
    body = request(user(text("x")), assistant({"type": "reasoning", "text": "r"}), user(text("y")))
    assert [m["role"] for m in chat_body(body)["messages"]] == ["user", "user"]


# --- regenerate ----------------------------------------------------------------------------


def test_regenerate_drops_the_last_assistant_message_only() -> None:
    history = [
        user(text("1"), id="u1"),
        assistant(text("one"), id="a1"),
        user(text("2"), id="u2"),
        assistant(text("two"), id="a2"),
    ]
    body = request(*history, trigger="regenerate-message", messageId="a2")
    assert [m["content"] for m in chat_body(body)["messages"]] == ["1", "one", "2"]


def test_regenerate_when_the_sdk_already_cut_the_history() -> None:
    history = [user(text("1"), id="u1"), assistant(text("one"), id="a1"), user(text("2"))]
    body = request(*history, trigger="regenerate-message", messageId="a2")
    assert [m["content"] for m in chat_body(body)["messages"]] == ["1", "one", "2"]


def test_submit_keeps_a_last_assistant_message() -> None:
    body = request(user(text("1")), assistant(text("one")))
    assert [m["content"] for m in chat_body(body)["messages"]] == ["1", "one"]


# --- malformed input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ([], "must be a JSON object"),
        ("hi", "must be a JSON object"),
        ({}, "messages must be a list"),
        ({"messages": {"role": "user"}}, "messages must be a list"),
        ({"messages": []}, "messages is empty"),
        ({"messages": ["hi"]}, "messages[0] must be an object"),
        ({"messages": [{"parts": [text("x")]}]}, "messages[0].role must be one of"),
        ({"messages": [{"role": "tool", "parts": []}]}, "messages[0].role must be one of"),
        ({"messages": [{"role": "user"}]}, "messages[0].parts must be a list"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "messages[0].parts must be a list"),
        ({"messages": [user("x")]}, "messages[0].parts[0] must be an object with a type"),
        ({"messages": [user({"text": "x"})]}, "messages[0].parts[0] must be an object with a type"),
        ({"messages": [user({"type": "text"})]}, "messages[0].parts[0].text must be a string"),
        (
            {"messages": [user({"type": "file", "mediaType": "image/png"})]},
            "messages[0].parts[0].url must be a non-empty string",
        ),
        (
            {"messages": [user(text("x")), assistant(weather("output-available", toolCallId=1))]},
            "messages[1].parts[0].toolCallId must be a non-empty string",
        ),
        (
            {
                "messages": [
                    user(text("x")),
                    assistant({"type": "dynamic-tool", "state": "output-error", "toolCallId": "c"}),
                ]
            },
            "messages[1].parts[0] is a tool part without a tool name",
        ),
        (
            {"messages": [user(text("x")), assistant(weather("output-available", output=1e999))]},
            "cannot be sent as JSON",
        ),
        ({"messages": [user(text("x"))], "model": 3}, "model must be a non-empty string"),
        ({"messages": [user(text(""))]}, "no text, image or tool result"),
        ({"messages": [assistant(text("x"))], "trigger": "regenerate-message"}, "no text"),
    ],
)
def test_malformed_input_is_a_400(body: Any, says: str) -> None:
    with pytest.raises(RequestRejected) as info:
        chat_body(body)
    assert info.value.status_code == 400
    assert info.value.code == "invalid_messages"
    assert says in info.value.message


# --- properties ----------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=6,
)
any_part = st.dictionaries(
    st.sampled_from(["type", "text", "state", "toolCallId", "toolName", "input", "output"]),
    json_values
    | st.sampled_from(["text", "tool-x", "dynamic-tool", "output-available", "step-start", "file"]),
)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries(
            {"role": st.sampled_from(["user", "assistant", "system"]), "parts": st.lists(any_part)}
        ),
        max_size=4,
    ),
    st.sampled_from(["submit-message", "regenerate-message", None]),
)
def test_any_input_converts_or_is_a_400(messages: list[Any], trigger: str | None) -> None:
    try:
        out = chat_body({"messages": messages, "trigger": trigger})
    except RequestRejected as exc:
        assert exc.status_code == 400 and exc.code == "invalid_messages"
        return
    json.dumps(out, allow_nan=False)  # always sendable
    calls: set[str] = set()
    for message in out["messages"]:
        assert message["role"] in ("system", "user", "assistant", "tool")
        if message["role"] == "assistant":
            for call in message.get("tool_calls", []):
                calls.add(call["id"])
                json.loads(call["function"]["arguments"])  # no rawInput here: valid JSON
        if message["role"] == "tool":
            assert message["tool_call_id"] in calls  # a result follows its call
