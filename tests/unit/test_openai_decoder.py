"""ChunkDecoder on chunks shaped like real upstream captures.

The fixtures follow what OpenAI, Azure OpenAI, vLLM, OpenRouter, DeepSeek, xAI,
Mistral, Groq and the Responses API actually send (field order, nulls, extra fields
and all). Every test checks the exact list of normalized events. Whole captured
streams live in tests/fixtures/providers/ and are checked by test_provider_fixtures.py.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import sys
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from splits import every_split, random_splits
from streamrelay import _json
from streamrelay import openai as openai_module
from streamrelay.errors import ProtocolError
from streamrelay.events import (
    Delta,
    Done,
    Error,
    Event,
    Finish,
    Reasoning,
    Refusal,
    Start,
    ToolCall,
    Usage,
)
from streamrelay.openai import ChunkDecoder
from streamrelay.sse import SSEDecoder

TRUNCATED = Error(
    "the upstream stream ended before the response was complete", code="upstream_truncated"
)


def decode(payloads: list[Any], *, close: bool = True) -> list[Event]:
    """Feed each payload (dicts are serialized as an upstream would), then close."""
    decoder = ChunkDecoder()
    events: list[Event] = []
    for payload in payloads:
        events += decoder.feed(payload if isinstance(payload, str) else json.dumps(payload))
    if close:
        events += decoder.close()
    return events


# --- OpenAI chat.completions ------------------------------------------------------

_CHAT_HEAD = {
    "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
    "object": "chat.completion.chunk",
    "created": 1741569952,
    "model": "gpt-4o-2024-08-06",
    "service_tier": "default",
    "system_fingerprint": "fp_eb9dce56a8",
}


def chat(
    delta: dict[str, Any] | None = None, finish: str | None = None, index: int = 0, **extra: Any
) -> dict[str, Any]:
    chunk: dict[str, Any] = dict(_CHAT_HEAD)
    chunk["choices"] = [
        {"index": index, "delta": delta or {}, "logprobs": None, "finish_reason": finish}
    ]
    chunk.update(extra)
    return chunk


START = Start("chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT", "gpt-4o-2024-08-06")
PROMPT_DETAILS = {"cached_tokens": 0, "audio_tokens": 0}
COMPLETION_DETAILS = {
    "reasoning_tokens": 0,
    "audio_tokens": 0,
    "accepted_prediction_tokens": 0,
    "rejected_prediction_tokens": 0,
}

CHAT_TEXT = [
    chat({"role": "assistant", "content": "", "refusal": None}, usage=None),
    chat({"content": "Hello"}, usage=None),
    chat({"content": "!"}, usage=None),
    chat({"content": " How can I\nhelp?"}, usage=None),
    chat({}, "stop", usage=None),
    {
        **_CHAT_HEAD,
        "choices": [],
        "usage": {
            "prompt_tokens": 19,
            "completion_tokens": 10,
            "total_tokens": 29,
            "prompt_tokens_details": PROMPT_DETAILS,
            "completion_tokens_details": COMPLETION_DETAILS,
        },
    },
    "[DONE]",
]


def test_chat_text_stream_with_usage() -> None:
    assert decode(CHAT_TEXT) == [
        START,
        Delta(0, "Hello"),
        Delta(0, "!"),
        Delta(0, " How can I\nhelp?"),
        Finish(0, "stop"),
        Usage(19, 10, 29, PROMPT_DETAILS, COMPLETION_DETAILS),
        Done(),
    ]


def test_role_only_first_delta_gives_only_start() -> None:
    decoder = ChunkDecoder()
    assert decoder.feed(json.dumps(CHAT_TEXT[0])) == [START]
    # "content": null, as some servers send it, is no delta either.
    assert decoder.feed(json.dumps(chat({"role": "assistant", "content": None}))) == []


def test_start_comes_once_with_the_first_chunk() -> None:
    events = decode(CHAT_TEXT)
    assert [e for e in events if isinstance(e, Start)] == [START]
    assert events[0] == START


CHAT_TOOLS = [
    chat({"role": "assistant", "content": None, "refusal": None}),
    chat(
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_DdmO9pD3xa9XTPNJ32zg2hcA",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ""},
                }
            ]
        }
    ),
    chat({"tool_calls": [{"index": 0, "function": {"arguments": '{"loc'}}]}),
    chat({"tool_calls": [{"index": 0, "function": {"arguments": 'ation": "Paris"}'}}]}),
    chat(
        {
            "tool_calls": [
                {
                    "index": 1,
                    "id": "call_ABHd03eEqtwq5vP3P7eL0Jpz",
                    "type": "function",
                    "function": {"name": "get_time", "arguments": ""},
                }
            ]
        }
    ),
    chat({"tool_calls": [{"index": 1, "function": {"arguments": '{"tz": "CET"}'}}]}),
    chat({}, "tool_calls"),
    "[DONE]",
]


def test_parallel_tool_calls() -> None:
    assert decode(CHAT_TOOLS) == [
        START,
        ToolCall(0, 0, "", id="call_DdmO9pD3xa9XTPNJ32zg2hcA", name="get_weather"),
        ToolCall(0, 0, '{"loc'),
        ToolCall(0, 0, 'ation": "Paris"}'),
        ToolCall(0, 1, "", id="call_ABHd03eEqtwq5vP3P7eL0Jpz", name="get_time"),
        ToolCall(0, 1, '{"tz": "CET"}'),
        Finish(0, "tool_calls"),
        Done(),
    ]


def test_several_tool_call_fragments_in_one_chunk() -> None:
    # Some servers (vLLM, llama.cpp) send a whole call, or several, in one delta.
    chunk = chat(
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "c0",
                    "type": "function",
                    "function": {"name": "a", "arguments": "{}"},
                },
                {"id": "c1", "type": "function", "function": {"name": "b", "arguments": "{}"}},
            ]
        }
    )
    assert decode([chunk], close=False) == [
        START,
        ToolCall(0, 0, "{}", id="c0", name="a"),
        ToolCall(0, 1, "{}", id="c1", name="b"),  # no "index": its position
    ]


def test_legacy_function_call_delta() -> None:
    events = decode(
        [
            chat(
                {
                    "role": "assistant",
                    "content": None,
                    "function_call": {"name": "f", "arguments": ""},
                }
            ),
            chat({"function_call": {"arguments": '{"x": 1}'}}),
            chat({}, "function_call"),
        ]
    )
    assert events == [
        START,
        ToolCall(0, 0, "", name="f"),
        ToolCall(0, 0, '{"x": 1}'),
        Finish(0, "function_call"),
        Done(),
    ]


def test_content_and_tool_calls_in_the_same_delta_keep_order() -> None:
    chunk = chat(
        {"content": "Let me check.", "tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}
    )
    assert decode([chunk], close=False) == [START, Delta(0, "Let me check."), ToolCall(0, 0, "{}")]


def test_refusal() -> None:
    events = decode(
        [
            chat({"role": "assistant", "content": None, "refusal": ""}),
            chat({"refusal": "I'm sorry, "}),
            chat({"refusal": "I can't help with that."}),
            chat({}, "stop"),
            "[DONE]",
        ]
    )
    assert events == [
        START,
        Refusal(0, "I'm sorry, "),
        Refusal(0, "I can't help with that."),
        Finish(0, "stop"),
        Done(),
    ]


def test_finish_in_the_same_chunk_as_content() -> None:
    # vLLM, Ollama and llama.cpp often put the last text and the reason together.
    assert decode([chat({"content": "end"}, "length")]) == [
        START,
        Delta(0, "end"),
        Finish(0, "length"),
        Done(),
    ]


CHAT_N2 = [
    chat({"role": "assistant", "content": ""}, index=0),
    chat({"role": "assistant", "content": ""}, index=1),
    chat({"content": "Red"}, index=0),
    chat({"content": "Blue"}, index=1),
    chat({"content": " apple"}, index=0),
    chat({}, "stop", index=1),
    chat({"content": "."}, index=0),
    chat({}, "length", index=0),
    "[DONE]",
]


def test_n2_interleaved_choices() -> None:
    assert decode(CHAT_N2) == [
        START,
        Delta(0, "Red"),
        Delta(1, "Blue"),
        Delta(0, " apple"),
        Finish(1, "stop"),
        Delta(0, "."),
        Finish(0, "length"),
        Done(),
    ]


def test_two_choices_in_one_chunk() -> None:
    chunk = dict(_CHAT_HEAD)
    chunk["choices"] = [
        {"index": 1, "delta": {"content": "b"}, "finish_reason": None},
        {"index": 0, "delta": {"content": "a"}, "finish_reason": "stop"},
    ]
    assert decode([chunk], close=False) == [START, Delta(1, "b"), Delta(0, "a"), Finish(0, "stop")]


def test_usage_only_chunk_before_anything_else_starts_the_stream() -> None:
    chunk = {
        **_CHAT_HEAD,
        "choices": [],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
    }
    assert decode([chunk], close=False) == [START, Usage(1, 2, 3)]


def test_usage_with_missing_or_odd_numbers_is_zero() -> None:
    chunk = {
        **_CHAT_HEAD,
        "choices": [],
        "usage": {"prompt_tokens": 5, "completion_tokens": None, "total_tokens": 5.0},
    }
    assert decode([chunk], close=False) == [START, Usage(5, 0, 0)]


def test_usage_null_on_every_chunk_is_no_event() -> None:
    assert decode([chat({"content": "x"}, usage=None)], close=False) == [START, Delta(0, "x")]


# --- Azure OpenAI -----------------------------------------------------------------

_FILTER_OK = {
    "hate": {"filtered": False, "severity": "safe"},
    "self_harm": {"filtered": False, "severity": "safe"},
    "sexual": {"filtered": False, "severity": "safe"},
    "violence": {"filtered": False, "severity": "safe"},
}
_AZURE_HEAD = {
    "created": 1717000000,
    "id": "chatcmpl-9UjYs8yWkqHGFBiQ0Uc3jbJJd2Ow1",
    "model": "gpt-4o-2024-05-13",
    "object": "chat.completion.chunk",
    "system_fingerprint": "fp_5f4bad809a",
}
AZURE_FILTER_CHUNK = {
    "choices": [],
    "created": 0,
    "id": "",
    "model": "",
    "object": "",
    "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": _FILTER_OK}],
}


def azure(delta: dict[str, Any], finish: str | None = None, filters: Any = None) -> dict[str, Any]:
    return {
        "choices": [
            {
                "content_filter_results": _FILTER_OK if filters is None else filters,
                "delta": delta,
                "finish_reason": finish,
                "index": 0,
                "logprobs": None,
            }
        ],
        **_AZURE_HEAD,
    }


AZURE_STREAM = [
    AZURE_FILTER_CHUNK,
    azure({"content": "", "role": "assistant"}, filters={}),
    azure({"content": "Hi"}),
    azure({"content": " there"}),
    azure({}, "stop", filters={}),
    # Asynchronous filter: a late chunk with offsets and no delta at all.
    {
        "choices": [
            {
                "content_filter_offsets": {"check_offset": 0, "start_offset": 0, "end_offset": 8},
                "content_filter_results": _FILTER_OK,
                "finish_reason": None,
                "index": 0,
            }
        ],
        "created": 0,
        "id": "",
        "model": "",
        "object": "",
    },
    "[DONE]",
]


def test_azure_stream_with_prompt_filter_results() -> None:
    assert decode(AZURE_STREAM) == [
        Start("chatcmpl-9UjYs8yWkqHGFBiQ0Uc3jbJJd2Ow1", "gpt-4o-2024-05-13"),
        Delta(0, "Hi"),
        Delta(0, " there"),
        Finish(0, "stop"),
        Done(),
    ]


def test_azure_prompt_filter_chunk_alone_produces_nothing() -> None:
    decoder = ChunkDecoder()
    assert decoder.feed(json.dumps(AZURE_FILTER_CHUNK)) == []
    assert decoder.close() == [TRUNCATED]


def test_azure_content_filter_finish() -> None:
    filtered = {**_FILTER_OK, "violence": {"filtered": True, "severity": "medium"}}
    events = decode(
        [AZURE_FILTER_CHUNK, azure({"content": "Once"}), azure({}, "content_filter", filtered)]
    )
    assert events[-2:] == [Finish(0, "content_filter"), Done()]


# --- errors -------------------------------------------------------------------------


def test_openai_mid_stream_error() -> None:
    payloads = [
        chat({"role": "assistant", "content": ""}),
        chat({"content": "Partial"}),
        {
            "error": {
                "message": "The server had an error while processing your request. Sorry about that!",
                "type": "server_error",
                "param": None,
                "code": None,
            }
        },
        chat({"content": "ignored after the error"}),
        "[DONE]",
    ]
    assert decode(payloads) == [
        START,
        Delta(0, "Partial"),
        Error(
            "The server had an error while processing your request. Sorry about that!",
            "server_error",
        ),
    ]


def test_error_code_wins_over_type() -> None:
    err = {
        "error": {
            "message": "Rate limit reached",
            "type": "requests",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }
    assert decode([err]) == [Error("Rate limit reached", "rate_limit_exceeded")]


def test_vllm_legacy_error_object() -> None:
    err = {
        "object": "error",
        "message": "This model's maximum context length is 4096 tokens. However, you requested 5000 tokens.",
        "type": "BadRequestError",
        "param": None,
        "code": 400,
    }
    # Regression: the integer code is vLLM's HTTP status, not a code string.
    assert decode([err]) == [Error(err["message"], "BadRequestError", 400)]


def test_vllm_new_error_shape_with_integer_code() -> None:
    err = {"error": {"message": "boom", "type": "InternalServerError", "param": None, "code": 500}}
    assert decode([err]) == [Error("boom", "InternalServerError", 500)]


def test_openrouter_mid_stream_error() -> None:
    chunk = {
        "id": "gen-1747",
        "object": "chat.completion.chunk",
        "created": 1747,
        "model": "openai/gpt-4o",
        "provider": "OpenAI",
        "error": {"code": 502, "message": "Provider disconnected"},
        "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}],
    }
    assert decode([chat({"content": "a"}), chunk]) == [
        START,
        Delta(0, "a"),
        Error("Provider disconnected", "upstream_error", 502),
    ]


def test_error_with_explicit_status() -> None:
    assert decode([{"error": {"message": "m", "code": "x", "status": 429}}]) == [
        Error("m", "x", 429)
    ]


def test_error_that_is_a_string() -> None:
    assert decode([{"error": "upstream exploded"}]) == [
        Error("upstream exploded", "upstream_error")
    ]


def test_error_without_message_or_code() -> None:
    assert decode([{"error": {"param": None}}]) == [Error("upstream error", "upstream_error")]


def test_empty_or_null_error_fields_are_not_errors() -> None:
    for value in (None, {}, "", 0, False):
        assert decode([chat({"content": "x"}, error=value)], close=False) == [START, Delta(0, "x")]


def test_error_is_terminal() -> None:
    decoder = ChunkDecoder()
    assert decoder.feed('{"error": {"message": "m"}}') == [Error("m", "upstream_error")]
    assert decoder.terminated
    assert decoder.feed(json.dumps(chat({"content": "x"}))) == []
    assert decoder.feed("[DONE]") == []
    assert decoder.feed("not json at all") == []  # ignored, not even a ProtocolError
    assert decoder.close() == []


# --- legacy completions ------------------------------------------------------------


def legacy(text: str, finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "cmpl-8pxGG1CFDb8e7ZxM7P0tuGfYFYn31",
        "object": "text_completion",
        "created": 1707000000,
        "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}],
        "model": "gpt-3.5-turbo-instruct",
    }


def test_legacy_completions() -> None:
    events = decode([legacy("\n\nThis"), legacy(" is"), legacy(" a test", "length"), "[DONE]"])
    assert events == [
        Start("cmpl-8pxGG1CFDb8e7ZxM7P0tuGfYFYn31", "gpt-3.5-turbo-instruct"),
        Delta(0, "\n\nThis"),
        Delta(0, " is"),
        Delta(0, " a test"),
        Finish(0, "length"),
        Done(),
    ]


# --- Responses API -----------------------------------------------------------------

RESP_ID = "resp_67c9fdcecf488190bdd9a0409de3a1ec07b8b0ad4e5eb654"
MSG_ID = "msg_67c9fdcf37fc8190ba82116e33fb28c507b8b0ad4e5eb654"


def response_object(status: str, **extra: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "id": RESP_ID,
        "object": "response",
        "created_at": 1741290958,
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "max_output_tokens": None,
        "model": "gpt-4.1-2025-04-14",
        "output": [],
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": None,
        "user": None,
        "metadata": {},
    }
    obj.update(extra)
    return obj


USAGE = {
    "input_tokens": 37,
    "input_tokens_details": {"cached_tokens": 0},
    "output_tokens": 11,
    "output_tokens_details": {"reasoning_tokens": 0},
    "total_tokens": 48,
}


def text_delta(seq: int, delta: str) -> dict[str, Any]:
    return {
        "type": "response.output_text.delta",
        "sequence_number": seq,
        "item_id": MSG_ID,
        "output_index": 0,
        "content_index": 0,
        "delta": delta,
        "logprobs": [],
    }


RESPONSES_HEAD = [
    {"type": "response.created", "sequence_number": 0, "response": response_object("in_progress")},
    {
        "type": "response.in_progress",
        "sequence_number": 1,
        "response": response_object("in_progress"),
    },
    {
        "type": "response.output_item.added",
        "sequence_number": 2,
        "output_index": 0,
        "item": {
            "id": MSG_ID,
            "type": "message",
            "status": "in_progress",
            "content": [],
            "role": "assistant",
        },
    },
    {
        "type": "response.content_part.added",
        "sequence_number": 3,
        "item_id": MSG_ID,
        "output_index": 0,
        "content_index": 0,
        "part": {"type": "output_text", "annotations": [], "logprobs": [], "text": ""},
    },
    text_delta(4, "Hi"),
    text_delta(5, " there"),
    {
        "type": "response.output_text.done",
        "sequence_number": 6,
        "item_id": MSG_ID,
        "output_index": 0,
        "content_index": 0,
        "text": "Hi there",
        "logprobs": [],
    },
    {
        "type": "response.output_item.done",
        "sequence_number": 7,
        "output_index": 0,
        "item": {
            "id": MSG_ID,
            "type": "message",
            "status": "completed",
            "role": "assistant",
            "content": [],
        },
    },
]
RESPONSES_TOOL = [
    {
        "type": "response.output_item.added",
        "sequence_number": 8,
        "output_index": 1,
        "item": {
            "type": "function_call",
            "id": "fc_12345xyz",
            "call_id": "call_12345xyz",
            "name": "get_weather",
            "arguments": "",
            "status": "in_progress",
        },
    },
    {
        "type": "response.function_call_arguments.delta",
        "sequence_number": 9,
        "item_id": "fc_12345xyz",
        "output_index": 1,
        "delta": '{"location":',
    },
    {
        "type": "response.function_call_arguments.delta",
        "sequence_number": 10,
        "item_id": "fc_12345xyz",
        "output_index": 1,
        "delta": '"Paris"}',
    },
    {
        "type": "response.function_call_arguments.done",
        "sequence_number": 11,
        "item_id": "fc_12345xyz",
        "output_index": 1,
        "arguments": '{"location":"Paris"}',
    },
]
RESP_START = Start(RESP_ID, "gpt-4.1-2025-04-14")
RESP_USAGE = Usage(37, 11, 48, {"cached_tokens": 0}, {"reasoning_tokens": 0})


def completed(seq: int = 12) -> dict[str, Any]:
    return {
        "type": "response.completed",
        "sequence_number": seq,
        "response": response_object("completed", usage=USAGE),
    }


def test_responses_text() -> None:
    assert decode([*RESPONSES_HEAD, completed()]) == [
        RESP_START,
        Delta(0, "Hi"),
        Delta(0, " there"),
        Finish(0, "stop"),
        RESP_USAGE,
        Done(),
    ]


def test_responses_function_call() -> None:
    assert decode([*RESPONSES_HEAD, *RESPONSES_TOOL, completed()]) == [
        RESP_START,
        Delta(0, "Hi"),
        Delta(0, " there"),
        ToolCall(0, 0, "", id="call_12345xyz", name="get_weather"),
        ToolCall(0, 0, '{"location":'),
        ToolCall(0, 0, '"Paris"}'),
        Finish(0, "tool_calls"),
        RESP_USAGE,
        Done(),
    ]


def test_responses_two_function_calls_are_numbered_in_order() -> None:
    def added(output_index: int, call_id: str) -> dict[str, Any]:
        item = {
            "type": "function_call",
            "id": "fc_" + call_id,
            "call_id": call_id,
            "name": "f",
            "arguments": "",
        }
        return {"type": "response.output_item.added", "output_index": output_index, "item": item}

    def args(output_index: int, delta: str) -> dict[str, Any]:
        return {
            "type": "response.function_call_arguments.delta",
            "output_index": output_index,
            "delta": delta,
        }

    events = decode([added(3, "a"), added(5, "b"), args(5, "{}"), args(3, "{}")], close=False)
    assert events == [
        Start("", ""),
        ToolCall(0, 0, "", id="a", name="f"),
        ToolCall(0, 1, "", id="b", name="f"),
        ToolCall(0, 1, "{}"),
        ToolCall(0, 0, "{}"),
    ]


def test_responses_refusal() -> None:
    refusal = {
        "type": "response.refusal.delta",
        "item_id": MSG_ID,
        "output_index": 0,
        "content_index": 0,
        "delta": "No.",
    }
    assert decode([RESPONSES_HEAD[0], refusal], close=False) == [RESP_START, Refusal(0, "No.")]


def test_responses_incomplete() -> None:
    incomplete = {
        "type": "response.incomplete",
        "sequence_number": 9,
        "response": response_object(
            "incomplete", incomplete_details={"reason": "max_output_tokens"}, usage=USAGE
        ),
    }
    assert decode([*RESPONSES_HEAD, incomplete]) == [
        RESP_START,
        Delta(0, "Hi"),
        Delta(0, " there"),
        Finish(0, "length"),
        RESP_USAGE,
        Done(),
    ]


@pytest.mark.parametrize(
    ("details", "reason"),
    [
        ({"reason": "content_filter"}, "content_filter"),
        ({"reason": "something_new"}, "something_new"),
        (None, "length"),
    ],
)
def test_responses_incomplete_reasons(details: Any, reason: str) -> None:
    incomplete = {
        "type": "response.incomplete",
        "response": response_object("incomplete", incomplete_details=details),
    }
    assert decode([RESPONSES_HEAD[0], incomplete])[-2:] == [Finish(0, reason), Done()]


def test_responses_failed() -> None:
    failed = {
        "type": "response.failed",
        "sequence_number": 6,
        "response": response_object(
            "failed",
            error={"code": "server_error", "message": "The model failed to generate a response."},
        ),
    }
    assert decode([*RESPONSES_HEAD[:5], failed, completed()]) == [
        RESP_START,
        Delta(0, "Hi"),
        Error("The model failed to generate a response.", "server_error"),
    ]


def test_responses_failed_without_error_details() -> None:
    failed = {"type": "response.failed", "response": response_object("failed")}
    assert decode([failed]) == [Error("the upstream response failed", "upstream_error")]


def test_responses_error_event() -> None:
    error = {
        "type": "error",
        "sequence_number": 3,
        "code": "ERR_SOMETHING",
        "message": "Something went wrong",
        "param": None,
    }
    assert decode([RESPONSES_HEAD[0], error]) == [
        RESP_START,
        Error("Something went wrong", "ERR_SOMETHING"),
    ]


def test_responses_error_event_without_code() -> None:
    # "type": "error" is the event's name, not an error code.
    error = {"type": "error", "code": None, "message": "Something went wrong", "param": None}
    assert decode([error]) == [Error("Something went wrong", "upstream_error")]


def test_responses_completed_alone_takes_id_and_model_from_the_response() -> None:
    assert decode([completed()]) == [RESP_START, Finish(0, "stop"), RESP_USAGE, Done()]


def test_responses_delta_before_created_starts_with_empty_ids() -> None:
    assert decode([text_delta(0, "x")], close=False) == [Start("", ""), Delta(0, "x")]


def test_responses_end_without_completed_is_truncated() -> None:
    assert decode(RESPONSES_HEAD) == [RESP_START, Delta(0, "Hi"), Delta(0, " there"), TRUNCATED]


def test_responses_completed_is_terminal() -> None:
    decoder = ChunkDecoder()
    decoder.feed(json.dumps(completed()))
    assert decoder.terminated
    assert decoder.feed(json.dumps(text_delta(1, "late"))) == []
    assert decoder.close() == []


def test_unknown_responses_events_are_ignored() -> None:
    unknown = [
        {"type": "response.reasoning_summary_text.done", "text": "thinking"},
        {"type": "response.reasoning_summary_part.added", "part": {"type": "summary_text"}},
        {"type": "response.web_search_call.in_progress", "output_index": 0},
        {
            "type": "response.output_item.added",
            "output_index": 0,
            "item": {"type": "reasoning", "id": "rs_1"},
        },
        {"type": "response.something_new", "delta": "x"},
    ]
    assert decode(unknown, close=False) == []


# --- reasoning ---------------------------------------------------------------------

_DEEPSEEK_HEAD = {
    "id": "33be18fc-3842-486c-8c29-dd8e578f7f20",
    "object": "chat.completion.chunk",
    "created": 1752169304,
    "model": "deepseek-reasoner",
    "system_fingerprint": "fp_393bca965e_prod0623_fp8_kvcache",
}


def deepseek(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        **_DEEPSEEK_HEAD,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        "usage": None,
        **extra,
    }


DEEPSEEK_STREAM = [
    deepseek({"role": "assistant", "content": None, "reasoning_content": ""}),
    deepseek({"content": None, "reasoning_content": "H"}),
    deepseek({"content": None, "reasoning_content": "mm, a greeting."}),
    deepseek({"content": "Hello", "reasoning_content": None}),
    deepseek({"content": " there!", "reasoning_content": None}),
    deepseek(
        {"content": "", "reasoning_content": None},
        "stop",
        usage={
            "prompt_tokens": 6,
            "completion_tokens": 212,
            "total_tokens": 218,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 198},
            "prompt_cache_hit_tokens": 0,
            "prompt_cache_miss_tokens": 6,
        },
    ),
    "[DONE]",
]
DEEPSEEK_START = Start("33be18fc-3842-486c-8c29-dd8e578f7f20", "deepseek-reasoner")


def test_deepseek_reasoning_content() -> None:
    assert decode(DEEPSEEK_STREAM) == [
        DEEPSEEK_START,
        Reasoning(0, "H"),
        Reasoning(0, "mm, a greeting."),
        Delta(0, "Hello"),
        Delta(0, " there!"),
        Finish(0, "stop"),
        Usage(6, 212, 218, {"cached_tokens": 0}, {"reasoning_tokens": 198}),
        Done(),
    ]


def test_xai_reasoning_content_before_role() -> None:
    # Grok sends the first reasoning token and the role in one delta, reasoning first.
    chunk = {
        "id": "7327b9f5-1c2f-0a15-3fef-c14a71c460d3",
        "object": "chat.completion.chunk",
        "created": 1770774058,
        "model": "grok-3-mini",
        "choices": [{"index": 0, "delta": {"reasoning_content": "First", "role": "assistant"}}],
        "system_fingerprint": "fp_2a885414fb",
    }
    assert decode([chunk], close=False) == [
        Start("7327b9f5-1c2f-0a15-3fef-c14a71c460d3", "grok-3-mini"),
        Reasoning(0, "First"),
    ]


def test_reasoning_before_content_in_one_delta() -> None:
    # vLLM and llama.cpp may close the reasoning and open the answer in one chunk,
    # in either key order; the reasoning always comes first.
    for delta in (
        {"reasoning_content": "so 4.", "content": "4"},
        {"content": "4", "reasoning_content": "so 4."},
        {"content": "4", "reasoning": "so 4."},
    ):
        assert decode([chat(delta)], close=False) == [START, Reasoning(0, "so 4."), Delta(0, "4")]


def test_reasoning_then_tool_call_in_one_delta() -> None:
    delta = {
        "reasoning_content": "I need the weather.",
        "tool_calls": [
            {"index": 0, "id": "c1", "type": "function", "function": {"name": "w", "arguments": ""}}
        ],
    }
    assert decode([chat(delta)], close=False) == [
        START,
        Reasoning(0, "I need the weather."),
        ToolCall(0, 0, "", id="c1", name="w"),
    ]


def test_vllm_mirrored_reasoning_fields_are_emitted_once() -> None:
    # Some vLLM versions send the same text as both reasoning_content and reasoning.
    delta = {"reasoning_content": "Let me think", "reasoning": "Let me think", "content": None}
    assert decode([chat(delta)], close=False) == [START, Reasoning(0, "Let me think")]


_OPENROUTER_HEAD = {
    "id": "gen-1765226419-AGrwjunAftQIAgweibL8",
    "provider": "Google",
    "model": "anthropic/claude-sonnet-4.5",
    "object": "chat.completion.chunk",
    "created": 1765226419,
}


def openrouter(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        **_OPENROUTER_HEAD,
        "choices": [
            {
                "index": 0,
                "delta": {"role": "assistant", "content": "", **delta},
                "finish_reason": finish,
                "native_finish_reason": finish,
                "logprobs": None,
            }
        ],
        **extra,
    }


def text_detail(text: str) -> dict[str, Any]:
    return {"type": "reasoning.text", "text": text, "format": "anthropic-claude-v1", "index": 0}


OPENROUTER_REASONING = [
    openrouter({"reasoning": None, "reasoning_details": []}),
    openrouter(
        {
            "reasoning": None,
            "reasoning_details": [
                {
                    "type": "reasoning.text",
                    "text": "",
                    "signature": "",
                    "format": "anthropic-claude-v1",
                    "index": 0,
                }
            ],
        }
    ),
    openrouter({"reasoning": "This", "reasoning_details": [text_detail("This")]}),
    openrouter(
        {
            "reasoning": " is a simple arithmetic question. ",
            "reasoning_details": [text_detail(" is a simple arithmetic question. ")],
        }
    ),
    openrouter(
        {
            "reasoning": None,
            "reasoning_details": [
                {
                    "type": "reasoning.text",
                    "signature": "Et0BCkgIChACGAIqQA2s7h7tA7IG35fbwVkou9PM2hANVJNUw==",
                    "format": "anthropic-claude-v1",
                    "index": 0,
                }
            ],
        }
    ),
    openrouter({"content": "2 + 2 = 4", "reasoning": None, "reasoning_details": []}),
    openrouter({"reasoning": None, "reasoning_details": []}, "stop"),
    openrouter(
        {},
        usage={
            "prompt_tokens": 43,
            "completion_tokens": 36,
            "total_tokens": 79,
            "cost": 0.000669,
            "is_byok": False,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0, "video_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 28, "image_tokens": 0},
        },
    ),
    "[DONE]",
]


def test_openrouter_reasoning_and_its_details_mirror_are_emitted_once() -> None:
    assert decode(OPENROUTER_REASONING) == [
        Start("gen-1765226419-AGrwjunAftQIAgweibL8", "anthropic/claude-sonnet-4.5"),
        Reasoning(0, "This"),
        Reasoning(0, " is a simple arithmetic question. "),
        Delta(0, "2 + 2 = 4"),
        Finish(0, "stop"),
        Usage(
            43,
            36,
            79,
            {"cached_tokens": 0, "audio_tokens": 0, "video_tokens": 0},
            {"reasoning_tokens": 28, "image_tokens": 0},
        ),
        Done(),
    ]


def test_openrouter_reasoning_details_alone() -> None:
    delta = {
        "reasoning": None,
        "reasoning_details": [
            {"type": "reasoning.summary", "summary": "**Greeting** the user. ", "index": 0},
            {"type": "reasoning.text", "text": "They said hi.", "index": 1},
        ],
    }
    assert decode([openrouter(delta)], close=False)[1:] == [
        Reasoning(0, "**Greeting** the user. They said hi.")
    ]


def test_openrouter_encrypted_reasoning_carries_no_text() -> None:
    delta = {
        "reasoning": None,
        "reasoning_details": [
            {
                "type": "reasoning.encrypted",
                "data": "gAAAAABpCCSIBxdevbk-8QtJuf4C6mgqDwXaUXZGqXqKQRX62aYMAYCg7DbFt3",
                "id": "rs_0b1b3b9c",
                "format": "openai-responses-v1",
                "index": 0,
            }
        ],
    }
    assert decode([openrouter(delta)], close=False)[1:] == []


def test_openrouter_reasoning_and_details_that_differ_are_both_kept() -> None:
    # Never the case in the captures, but nothing may be dropped if it happens.
    delta = {"reasoning": "A", "reasoning_details": [{"type": "reasoning.text", "text": "B"}]}
    assert decode([openrouter(delta)], close=False)[1:] == [Reasoning(0, "A"), Reasoning(0, "B")]


def test_groq_reasoning_field() -> None:
    chunk = {
        "id": "chatcmpl-e35442a8-12c0-4fb4-8be4-0e51727ce7b7",
        "object": "chat.completion.chunk",
        "created": 1771434740,
        "model": "openai/gpt-oss-120b",
        "system_fingerprint": "fp_caa2017b29",
        "choices": [
            {
                "index": 0,
                "delta": {"reasoning": "We", "channel": "analysis"},
                "logprobs": None,
                "finish_reason": None,
            }
        ],
    }
    assert decode([chunk], close=False)[1:] == [Reasoning(0, "We")]


@pytest.mark.parametrize(
    "delta",
    [
        {"reasoning_content": None, "reasoning": None, "reasoning_details": None},
        {"reasoning_content": "", "reasoning": "", "reasoning_details": []},
        {"reasoning_content": 3, "reasoning": {"effort": "high"}, "reasoning_details": {}},
        {"reasoning_details": [None, 1, "x", [], {"type": "reasoning.text", "text": None}]},
        {"reasoning_details": [{"type": "reasoning.summary", "summary": ["a"]}]},
        {"reasoning_details": [{"type": "something.new", "text": "hidden"}]},
    ],
)
def test_empty_or_odd_reasoning_fields_are_no_event(delta: dict[str, Any]) -> None:
    assert decode([chat(delta)], close=False) == [START]


# --- content parts -------------------------------------------------------------------

_MISTRAL_HEAD = {
    "id": "9f9d90210f194076abeee223863eaaf0",
    "object": "chat.completion.chunk",
    "created": 1764296393,
    "model": "magistral-medium-latest",
}


def mistral(content: Any, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        **_MISTRAL_HEAD,
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish}],
        **extra,
    }


def thinking(text: str, **extra: Any) -> dict[str, Any]:
    return {"type": "thinking", "thinking": [{"type": "text", "text": text}], **extra}


MISTRAL_STREAM = [
    mistral(""),
    mistral([thinking("Okay")]),
    mistral([thinking(", the user"), thinking(" asks", closed=True)]),
    mistral([thinking(" 17*23."), {"type": "text", "text": "3"}]),
    mistral("91"),
    mistral("", "stop", usage={"prompt_tokens": 10, "total_tokens": 242, "completion_tokens": 232}),
    "[DONE]",
]


def test_mistral_thinking_parts() -> None:
    assert decode(MISTRAL_STREAM) == [
        Start("9f9d90210f194076abeee223863eaaf0", "magistral-medium-latest"),
        Reasoning(0, "Okay"),
        Reasoning(0, ", the user"),
        Reasoning(0, " asks"),
        Reasoning(0, " 17*23."),
        Delta(0, "3"),
        Delta(0, "91"),
        Finish(0, "stop"),
        Usage(10, 232, 242),
        Done(),
    ]


def test_content_parts_keep_their_order() -> None:
    parts = [
        {"type": "text", "text": "a"},
        thinking("b"),
        {"type": "text", "text": "c"},
        {"type": "refusal", "refusal": "d"},
        {"type": "reasoning", "text": "e"},
    ]
    assert decode([chat({"content": parts})], close=False) == [
        START,
        Delta(0, "a"),
        Reasoning(0, "b"),
        Delta(0, "c"),
        Refusal(0, "d"),
        Reasoning(0, "e"),
    ]


def test_unknown_and_odd_content_parts_are_skipped() -> None:
    parts = [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "redacted_thinking", "data": "opaque"},
        {"type": "text", "text": None},
        {"type": "text"},
        {"type": "thinking", "thinking": None},
        {"type": "thinking", "thinking": [None, 3, {"type": "image"}, {"text": 5}]},
        {"text": "no type"},
        None,
        "bare string",
        7,
        [],
        {"type": "text", "text": "kept"},
    ]
    assert decode([chat({"content": parts})], close=False) == [START, Delta(0, "kept")]


def test_thinking_part_text_forms() -> None:
    parts = [
        {"type": "thinking", "thinking": "plain string"},
        {"type": "thinking", "thinking": ["a", {"type": "text", "text": "b"}, {"text": "c"}]},
    ]
    assert decode([chat({"content": parts})], close=False)[1:] == [
        Reasoning(0, "plain string"),
        Reasoning(0, "abc"),
    ]


def test_content_that_is_neither_string_nor_parts_is_no_event() -> None:
    for content in ({"type": "text", "text": "x"}, 5, True, [None]):
        assert decode([chat({"content": content})], close=False) == [START]


# --- Responses API reasoning -----------------------------------------------------------


def summary_delta(seq: int, delta: str, summary_index: int = 0) -> dict[str, Any]:
    return {
        "type": "response.reasoning_summary_text.delta",
        "sequence_number": seq,
        "item_id": "rs_6876ca9e4a0c819d8a5b1c1f62e1d2d40ab9ce10b4d8c9a3",
        "output_index": 0,
        "summary_index": summary_index,
        "delta": delta,
        "obfuscation": "AbCdEf",
    }


def test_responses_reasoning_summary_and_reasoning_text() -> None:
    events = decode(
        [
            RESPONSES_HEAD[0],
            {
                "type": "response.output_item.added",
                "sequence_number": 1,
                "output_index": 0,
                "item": {"id": "rs_1", "type": "reasoning", "summary": []},
            },
            summary_delta(2, "**Plan"),
            summary_delta(3, "ning**"),
            {
                "type": "response.reasoning_text.delta",
                "content_index": 0,
                "delta": "raw thought",
                "item_id": "rs_1",
                "output_index": 0,
                "sequence_number": 4,
            },
            {"type": "response.reasoning_summary_text.done", "text": "**Planning**"},
            text_delta(5, "Hi"),
            completed(),
        ]
    )
    assert events == [
        RESP_START,
        Reasoning(0, "**Plan"),
        Reasoning(0, "ning**"),
        Reasoning(0, "raw thought"),
        Delta(0, "Hi"),
        Finish(0, "stop"),
        RESP_USAGE,
        Done(),
    ]


def test_responses_reasoning_delta_before_created_starts_the_stream() -> None:
    assert decode([summary_delta(0, "x")], close=False) == [Start("", ""), Reasoning(0, "x")]


@pytest.mark.parametrize("delta", ["", None, 5, ["x"], {"text": "x"}])
def test_responses_empty_or_odd_reasoning_delta_is_no_event(delta: Any) -> None:
    event = {"type": "response.reasoning_text.delta", "delta": delta}
    assert decode([RESPONSES_HEAD[0], event], close=False) == [RESP_START]


def test_responses_usage_details_are_mapped_to_chat_names() -> None:
    usage = {
        "input_tokens": 12,
        "input_tokens_details": {"cached_tokens": 4},
        "output_tokens": 140,
        "output_tokens_details": {"reasoning_tokens": 128},
        "total_tokens": 152,
    }
    done = {"type": "response.completed", "response": response_object("completed", usage=usage)}
    decoder = ChunkDecoder()
    events = decoder.feed(json.dumps(done))
    expected = Usage(12, 140, 152, {"cached_tokens": 4}, {"reasoning_tokens": 128})
    assert events[-2:] == [expected, Done()]
    assert decoder.usage == expected
    assert expected.to_dict() == {
        "type": "usage",
        "prompt_tokens": 12,
        "completion_tokens": 140,
        "total_tokens": 152,
        "prompt_tokens_details": {"cached_tokens": 4},
        "completion_tokens_details": {"reasoning_tokens": 128},
    }


# --- tool calls told apart by id -------------------------------------------------------

# Constructed after the shape a Claude model sent through an OpenAI-compatible
# gateway: two calls in one turn, both with "index": 0, told apart only by their ids.
CLAUDE_COLLIDING_TOOLS = [
    chat({"role": "assistant", "content": "I'll read both files."}),
    chat(
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "toolu_01A",
                    "type": "function",
                    "function": {"name": "read_file", "arguments": ""},
                }
            ]
        }
    ),
    chat({"tool_calls": [{"index": 0, "function": {"arguments": '{"path": "a.txt"}'}}]}),
    chat(
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "toolu_01B",
                    "type": "function",
                    "function": {"name": "read_file", "arguments": ""},
                }
            ]
        }
    ),
    chat({"tool_calls": [{"index": 0, "function": {"arguments": '{"path": '}}]}),
    chat({"tool_calls": [{"index": 0, "function": {"arguments": '"b.txt"}'}}]}),
    chat({}, "tool_calls"),
    "[DONE]",
]


def test_two_calls_under_one_index_are_told_apart_by_id() -> None:
    assert decode(CLAUDE_COLLIDING_TOOLS) == [
        START,
        Delta(0, "I'll read both files."),
        ToolCall(0, 0, "", id="toolu_01A", name="read_file"),
        ToolCall(0, 0, '{"path": "a.txt"}'),
        ToolCall(0, 1, "", id="toolu_01B", name="read_file"),
        ToolCall(0, 1, '{"path": '),
        ToolCall(0, 1, '"b.txt"}'),
        Finish(0, "tool_calls"),
        Done(),
    ]


def call(index: int | None, call_id: str | None = None, args: str = "") -> dict[str, Any]:
    fragment: dict[str, Any] = {"function": {"arguments": args}}
    if index is not None:
        fragment["index"] = index
    if call_id is not None:
        fragment["id"] = call_id
        fragment["type"] = "function"
        fragment["function"]["name"] = "f"
    return fragment


def numbers(*deltas: list[dict[str, Any]]) -> list[int]:
    events = decode([chat({"tool_calls": d}) for d in deltas], close=False)
    return [e.call for e in events if isinstance(e, ToolCall)]


def test_a_renumbered_call_never_takes_a_later_index_s_number() -> None:
    # 0/A, 0/B (renumbered 1), then a real index 1: it must not merge with B.
    assert numbers([call(0, "A")], [call(0, "B")], [call(1, "C")], [call(1)], [call(0)]) == [
        0,
        1,
        2,
        2,
        1,
    ]


def test_three_calls_under_one_index() -> None:
    assert numbers([call(0, "A")], [call(0)], [call(0, "B")], [call(0, "C")], [call(0)]) == [
        0,
        0,
        1,
        2,
        2,
    ]


def test_an_id_repeated_on_every_fragment_is_one_call() -> None:
    # vLLM and some gateways repeat the id on every fragment of a call.
    assert numbers([call(0, "A")], [call(0, "A", "{}")], [call(1, "B")], [call(1, "B")]) == [
        0,
        0,
        1,
        1,
    ]


def test_an_id_after_the_first_fragment_is_the_same_call() -> None:
    assert numbers([call(0)], [call(0, "A")], [call(0)]) == [0, 0, 0]


def test_sparse_indices_keep_their_numbers() -> None:
    # A gateway in front of Claude numbered its only call 1 (tests/fixtures/providers).
    assert numbers([call(1, "toolu_x")], [call(1)], [call(1)]) == [1, 1, 1]


def test_calls_without_index_in_separate_chunks_are_told_apart() -> None:
    # llama.cpp / Ollama style: each whole call in its own delta, no index.
    assert numbers([call(None, "a", "{}")], [call(None, "b", "{}")]) == [0, 1]


def test_call_numbers_are_per_choice() -> None:
    chunk = dict(_CHAT_HEAD)
    chunk["choices"] = [
        {"index": 0, "delta": {"tool_calls": [call(0, "A")]}},
        {"index": 1, "delta": {"tool_calls": [call(0, "B")]}},
    ]
    later = dict(_CHAT_HEAD)
    later["choices"] = [{"index": 1, "delta": {"tool_calls": [call(0, "C")]}}]
    events = decode([chunk, later], close=False)
    assert [(e.index, e.call, e.id) for e in events if isinstance(e, ToolCall)] == [
        (0, 0, "A"),
        (1, 0, "B"),
        (1, 1, "C"),
    ]


_fragment = st.tuples(st.integers(0, 3), st.one_of(st.none(), st.sampled_from("ABCDEF")))


@settings(max_examples=300, deadline=None)
@given(st.lists(_fragment, max_size=14))
def test_call_numbers_are_distinct_and_stable(fragments: list[tuple[int, str | None]]) -> None:
    """Each call (an index and the id it last carried) keeps one number, and no two
    calls share one; fragments without an id continue their index's latest call."""
    got = numbers(*[[call(i, c)] for i, c in fragments])
    latest: dict[int, str | None] = {}  # index -> id of its latest call
    generation: dict[int, int] = {}  # index -> how many calls it started after its first
    number_of: dict[tuple[int, int], int] = {}  # (index, generation) -> number
    for (i, c), number in zip(fragments, got, strict=True):
        if c is not None and latest.get(i) is not None and c != latest[i]:
            generation[i] = generation.get(i, 0) + 1  # a new call under index i
        if c is not None or i not in latest:
            latest[i] = c
        key = (i, generation.get(i, 0))
        assert number_of.setdefault(key, number) == number, (fragments, got)  # stable
    assert len(set(number_of.values())) == len(number_of), (fragments, got)  # distinct


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 6), min_size=1, max_size=8, unique=True))
def test_openai_shaped_calls_keep_their_index_as_number(indices: list[int]) -> None:
    """Distinct indices, the id on a call's first fragment only: today's numbering."""
    deltas = []
    for i in indices:
        deltas += [[call(i, f"call_{i}")], [call(i, None, "{")], [call(i, None, "}")]]
    assert numbers(*deltas) == [i for i in indices for _ in range(3)]


# --- usage and errors --------------------------------------------------------------------


def test_usage_details_that_are_not_objects_are_left_out() -> None:
    chunk = {
        **_CHAT_HEAD,
        "choices": [],
        "usage": {
            "prompt_tokens": 1,
            "completion_tokens": 2,
            "total_tokens": 3,
            "prompt_tokens_details": None,
            "completion_tokens_details": [1],
        },
    }
    assert decode([chunk], close=False) == [START, Usage(1, 2, 3)]


OPENROUTER_ERROR_USAGE = {
    "prompt_tokens": 43,
    "completion_tokens": 10,
    "total_tokens": 53,
    "cost": 0,
    "is_byok": False,
    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
    "cost_details": {"upstream_inference_cost": None},
    "completion_tokens_details": {"reasoning_tokens": 11, "image_tokens": 0},
}
ERROR_USAGE = Usage(
    43, 10, 53, {"cached_tokens": 0, "audio_tokens": 0}, {"reasoning_tokens": 11, "image_tokens": 0}
)


def test_openrouter_error_chunk_with_choices_and_usage() -> None:
    head = {
        "id": "gen-1762179802-UN8pkJI4AGZvryk0kFnb",
        "provider": "Minimax",
        "model": "minimax/minimax-m2:free",
        "object": "chat.completion.chunk",
        "created": 1762179802,
    }
    reasoning = {
        **head,
        "choices": [
            {
                "index": 0,
                "delta": {
                    "role": "assistant",
                    "content": "",
                    "reasoning": "We need",
                    "reasoning_details": [
                        {"type": "reasoning.text", "text": "We need", "index": 0, "format": None}
                    ],
                },
                "finish_reason": "length",
                "native_finish_reason": "length",
                "logprobs": None,
            }
        ],
    }
    error = {
        "id": head["id"],
        "provider": "Minimax",
        "error": {"code": 400, "message": "Token limit reached"},
        "model": head["model"],
        "object": "chat.completion.chunk",
        "created": 1762179802,
        "choices": [
            {
                "index": 0,
                "delta": {"role": "assistant", "content": ""},
                "finish_reason": None,
                "native_finish_reason": None,
                "logprobs": None,
            }
        ],
        "usage": OPENROUTER_ERROR_USAGE,
    }
    decoder = ChunkDecoder()
    events = decoder.feed(json.dumps(reasoning)) + decoder.feed(json.dumps(error))
    events += decoder.feed("[DONE]") + decoder.close()
    assert events == [
        Start("gen-1762179802-UN8pkJI4AGZvryk0kFnb", "minimax/minimax-m2:free"),
        Reasoning(0, "We need"),
        Finish(0, "length"),
        ERROR_USAGE,
        Error("Token limit reached", "upstream_error", 400),
    ]
    assert decoder.usage == ERROR_USAGE
    assert decoder.terminated


def test_error_chunk_with_usage_and_no_choices() -> None:
    decoder = ChunkDecoder()
    chunk = {"error": {"message": "boom", "code": 502}, "usage": OPENROUTER_ERROR_USAGE}
    assert decoder.feed(json.dumps(chunk)) == [ERROR_USAGE, Error("boom", "upstream_error", 502)]
    assert decoder.usage == ERROR_USAGE


@pytest.mark.parametrize("usage", [None, [], "53", 53])
def test_error_chunk_with_odd_usage_is_only_the_error(usage: Any) -> None:
    decoder = ChunkDecoder()
    assert decoder.feed(json.dumps({"error": {"message": "m"}, "usage": usage})) == [
        Error("m", "upstream_error")
    ]
    assert decoder.usage is None


# --- the new streams, as SSE bytes, on every split --------------------------------------------

REASONING_FIXTURES = {
    "deepseek": DEEPSEEK_STREAM,
    "openrouter": OPENROUTER_REASONING,
    "mistral": MISTRAL_STREAM,
    "claude-tools": CLAUDE_COLLIDING_TOOLS,
}


def sse_bytes(payloads: list[Any]) -> bytes:
    return b"".join(
        b"data: " + (p if isinstance(p, str) else json.dumps(p)).encode() + b"\n\n"
        for p in payloads
    )


def decode_pieces(pieces: list[bytes]) -> list[Event]:
    sse, decoder = SSEDecoder(), ChunkDecoder()
    events: list[Event] = []
    for piece in pieces:
        for message in sse.feed(piece):
            events += decoder.feed(message.data)
    sse.close()
    return events + decoder.close()


@pytest.mark.parametrize("name", list(REASONING_FIXTURES))
def test_new_streams_decode_the_same_on_every_split(name: str) -> None:
    payloads = REASONING_FIXTURES[name]
    data = sse_bytes(payloads)
    expected = decode(payloads)
    for pieces in every_split(data, step=7):
        assert decode_pieces(pieces) == expected


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_new_streams_decode_the_same_on_random_splits(data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(list(REASONING_FIXTURES)))
    payloads = REASONING_FIXTURES[name]
    pieces = data.draw(random_splits(sse_bytes(payloads), max_cuts=24))
    assert decode_pieces(pieces) == decode(payloads)


# --- end of stream -----------------------------------------------------------------


def test_done_marker() -> None:
    decoder = ChunkDecoder()
    assert decoder.feed("[DONE]") == [Done()]
    assert decoder.terminated
    assert decoder.close() == []


def test_end_after_finish_without_done_marker_is_clean() -> None:
    assert decode(CHAT_TEXT[:-1])[-1] == Done()
    assert decode(CHAT_N2[:-1])[-1] == Done()


def test_end_before_finish_is_truncated() -> None:
    assert decode(CHAT_TEXT[:4]) == [
        START,
        Delta(0, "Hello"),
        Delta(0, "!"),
        Delta(0, " How can I\nhelp?"),
        TRUNCATED,
    ]


def test_n2_where_only_one_choice_finished_is_truncated() -> None:
    events = decode(CHAT_N2[:-3])  # choice 1 finished; choice 0 did not
    assert Finish(1, "stop") in events
    assert events[-1] == TRUNCATED


def test_empty_stream_is_truncated() -> None:
    assert decode([]) == [TRUNCATED]


def test_usage_only_is_truncated() -> None:
    assert decode([CHAT_TEXT[5]])[-1] == TRUNCATED


def test_close_is_idempotent() -> None:
    decoder = ChunkDecoder()
    assert decoder.close() == [TRUNCATED]
    assert decoder.close() == []
    assert decoder.feed(json.dumps(chat({"content": "x"}))) == []


# --- malformed input ------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    ["hello", "", " ", "{", '{"id": 1', "[DONE", "[done]", "NaN}", "data: {}", "{'a': 1}"],
)
def test_non_json_is_a_protocol_error(data: str) -> None:
    with pytest.raises(ProtocolError) as info:
        ChunkDecoder().feed(data)
    assert info.value.code == "upstream_invalid"


@pytest.mark.parametrize("data", ["[]", "[1, 2]", '"text"', "1", "null", "true"])
def test_json_that_is_not_an_object_is_a_protocol_error(data: str) -> None:
    with pytest.raises(ProtocolError, match="not an object"):
        ChunkDecoder().feed(data)


def test_deeply_nested_json_is_a_protocol_error() -> None:
    # Regression: the stdlib parser raised RecursionError, which escaped.
    for data in ("[" * 100_000, '{"a":' * 100_000, "[" * 100_000 + "]" * 100_000):
        with pytest.raises(ProtocolError):
            ChunkDecoder().feed(data)


def test_deeply_nested_json_without_orjson_is_a_protocol_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Without the fast extra the stdlib parser raises RecursionError, not ValueError.
    spec = importlib.util.spec_from_file_location("_json_without_orjson", _json.__file__)
    assert spec is not None and spec.loader is not None
    stdlib = importlib.util.module_from_spec(spec)
    with mock.patch.dict(sys.modules, {"orjson": None}):
        spec.loader.exec_module(stdlib)
    monkeypatch.setattr(openai_module, "_json", stdlib)
    for data in ("[" * 100_000, '{"a":' * 100_000):
        with pytest.raises(ProtocolError):
            ChunkDecoder().feed(data)
    assert ChunkDecoder().feed("[DONE]") == [Done()]


def test_escaped_lone_surrogate_is_accepted() -> None:
    # JavaScript upstreams cut text between UTF-16 code units and JSON.stringify
    # escapes the halves. orjson rejects them; the stdlib (and now the relay)
    # accepts them, so it behaves the same with and without the fast extra.
    decoder = ChunkDecoder()
    events = decoder.feed('{"id":"x","choices":[{"index":0,"delta":{"content":"a\\ud83d"}}]}')
    events += decoder.feed('{"id":"x","choices":[{"index":0,"delta":{"content":"\\ude00b"}}]}')
    assert events == [Start("x", ""), Delta(0, "a\ud83d"), Delta(0, "\ude00b")]


def test_feed_object_accepts_parsed_chunks() -> None:
    decoder = ChunkDecoder()
    assert decoder.feed_object(chat({"content": "x"})) == [START, Delta(0, "x")]


# --- unknown fields and odd types never crash ---------------------------------------------


_USAGE_DETAILS = {
    "prompt_tokens_details",
    "completion_tokens_details",
    "input_tokens_details",
    "output_tokens_details",
}


def with_unknown_fields(obj: Any, value: Any) -> Any:
    """A deep copy with an unknown field added to every object, at every depth,
    except inside the usage detail objects, which are passed on as they are."""
    if isinstance(obj, dict):
        out = {
            k: copy.deepcopy(v) if k in _USAGE_DETAILS else with_unknown_fields(v, value)
            for k, v in obj.items()
        }
        out["x_unknown_field"] = copy.deepcopy(value)
        return out
    if isinstance(obj, list):
        return [with_unknown_fields(v, value) for v in obj]
    return obj


ALL_FIXTURES = {
    "chat": CHAT_TEXT,
    "tools": CHAT_TOOLS,
    "n2": CHAT_N2,
    "azure": AZURE_STREAM,
    "legacy": [legacy("a"), legacy("b", "stop")],
    "responses": [*RESPONSES_HEAD, *RESPONSES_TOOL, completed()],
    "responses-reasoning": [
        RESPONSES_HEAD[0],
        summary_delta(1, "Think"),
        {"type": "response.reasoning_text.delta", "output_index": 0, "delta": "raw"},
        completed(),
    ],
    **REASONING_FIXTURES,
}

_json_value = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)


@pytest.mark.parametrize("name", list(ALL_FIXTURES))
def test_unknown_fields_everywhere_change_nothing(name: str) -> None:
    payloads = ALL_FIXTURES[name]
    noisy = [
        p if isinstance(p, str) else with_unknown_fields(p, {"nested": [1, {"deep": None}]})
        for p in payloads
    ]
    assert decode(noisy) == decode(payloads)


@settings(max_examples=60, deadline=None)
@given(_json_value)
def test_unknown_field_values_of_any_type_change_nothing(value: Any) -> None:
    for payloads in ALL_FIXTURES.values():
        noisy = [p if isinstance(p, str) else with_unknown_fields(p, value) for p in payloads]
        assert decode(noisy) == decode(payloads)


_known_keys = st.sampled_from(
    [
        "id", "model", "object", "type", "choices", "index", "delta", "content", "refusal",
        "tool_calls", "function_call", "function", "name", "arguments", "text", "finish_reason",
        "usage", "prompt_tokens", "completion_tokens", "total_tokens", "error", "message", "code",
        "status", "status_code", "response", "item", "output_index", "call_id", "incomplete_details",
        "reason", "input_tokens", "output_tokens", "reasoning_content", "reasoning",
        "reasoning_details", "summary", "thinking", "prompt_tokens_details",
        "completion_tokens_details", "input_tokens_details", "output_tokens_details",
    ]
)  # fmt: skip
_key = _known_keys | st.text(max_size=4)
_type = st.sampled_from(
    [
        "response.created", "response.output_text.delta", "response.refusal.delta",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.completed", "response.incomplete", "response.failed", "error", "function_call",
        "response.reasoning_summary_text.delta", "response.reasoning_text.delta", "text",
        "thinking", "reasoning", "refusal", "reasoning.text", "reasoning.summary",
        "reasoning.encrypted",
    ]
)  # fmt: skip
_chaos = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4) | _type,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_key, children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.dictionaries(_key, _chaos, max_size=5), max_size=3))
def test_objects_with_any_shape_never_crash(chunks: list[dict[str, Any]]) -> None:
    decoder = ChunkDecoder()
    events: list[Event] = []
    for chunk in chunks:
        events += decoder.feed_object(chunk)
    events += decoder.close()
    assert events and isinstance(events[-1], (Done, Error))
    assert sum(isinstance(e, (Done, Error)) for e in events) == 1
    assert sum(isinstance(e, Start) for e in events) <= 1
    for event in events:
        event.to_dict()


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_any_text_decodes_or_raises_protocol_error(data: str) -> None:
    try:
        ChunkDecoder().feed(data)
    except ProtocolError:
        pass


def _opt(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional=fields)


_leaf = (
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.integers()
    | st.floats()
    | st.text(max_size=3)
    | st.just([])
    | st.just({})
    | st.just([None])
)
_function = _opt(name=_leaf, arguments=_leaf) | _leaf
_tool_calls = st.lists(
    _opt(index=_leaf, id=_leaf, type=_leaf, function=_function) | _leaf, max_size=3
)
_part = _opt(
    type=st.sampled_from(["text", "thinking", "reasoning", "refusal", "image_url"]) | _leaf,
    text=_leaf,
    thinking=st.lists(_opt(type=st.just("text") | _leaf, text=_leaf) | _leaf, max_size=2) | _leaf,
    refusal=_leaf,
)
_detail = _opt(
    type=st.sampled_from(["reasoning.text", "reasoning.summary", "reasoning.encrypted"]) | _leaf,
    text=_leaf,
    summary=_leaf,
    data=_leaf,
)
_delta = _opt(
    role=_leaf,
    content=_leaf | st.lists(_part | _leaf, max_size=3),
    refusal=_leaf,
    reasoning_content=_leaf,
    reasoning=_leaf,
    reasoning_details=st.lists(_detail | _leaf, max_size=3) | _leaf,
    tool_calls=_tool_calls | _leaf,
    function_call=_function,
)
_choice = _opt(index=_leaf, delta=_delta | _leaf, text=_leaf, finish_reason=_leaf | st.just("stop"))
_usage = _opt(
    prompt_tokens=_leaf,
    completion_tokens=_leaf,
    total_tokens=_leaf,
    input_tokens=_leaf,
    prompt_tokens_details=_leaf,
    completion_tokens_details=_leaf,
    input_tokens_details=_leaf,
    output_tokens_details=_leaf,
)
_err = _opt(message=_leaf, code=_leaf, type=_leaf, status=_leaf, status_code=_leaf) | _leaf
_chat_shaped = _opt(
    id=_leaf, model=_leaf, object=_leaf | st.just("error"), choices=st.lists(_choice | _leaf, max_size=3) | _leaf,
    usage=_usage | _leaf, error=_err, message=_leaf, code=_leaf,
)  # fmt: skip
_response = _opt(
    id=_leaf,
    model=_leaf,
    usage=_usage | _leaf,
    error=_err,
    incomplete_details=_opt(reason=_leaf) | _leaf,
)
_responses_shaped = st.builds(
    lambda kind, rest: {"type": kind, **rest},
    _type,
    _opt(
        delta=_leaf, output_index=_leaf, response=_response | _leaf, code=_leaf, message=_leaf,
        item=_opt(type=_leaf | st.just("function_call"), call_id=_leaf, name=_leaf, arguments=_leaf) | _leaf,
    ),
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.lists(_chat_shaped | _responses_shaped, max_size=4))
def test_chunks_with_the_right_skeleton_and_any_leaves_never_crash(
    chunks: list[dict[str, Any]],
) -> None:
    decoder = ChunkDecoder()
    events: list[Event] = []
    for chunk in chunks:
        events += decoder.feed(json.dumps(chunk))
    events += decoder.close()
    assert isinstance(events[-1], (Done, Error))
    for event in events:
        event.to_dict()
        if isinstance(event, (Delta, Reasoning, Refusal)):
            assert isinstance(event.text, str)
            assert isinstance(event.index, int)
        if isinstance(event, Reasoning):
            assert event.text  # an empty piece of reasoning is no event
        if isinstance(event, ToolCall):
            assert isinstance(event.arguments, str) and isinstance(event.call, int)
            assert event.id is None or isinstance(event.id, str)
            assert event.name is None or isinstance(event.name, str)
        if isinstance(event, Error):
            assert isinstance(event.message, str) and isinstance(event.code, str)
            assert event.status is None or type(event.status) is int
        if isinstance(event, Usage):
            assert all(
                type(n) is int
                for n in (event.prompt_tokens, event.completion_tokens, event.total_tokens)
            )
            assert event.prompt_tokens_details is None or type(event.prompt_tokens_details) is dict
            assert (
                event.completion_tokens_details is None
                or type(event.completion_tokens_details) is dict
            )


# The token fast path ------------------------------------------------------------------------

_values = st.one_of(
    st.none(), st.booleans(), st.integers(-2, 3), st.text(max_size=5), st.just("error")
)
_delta = st.dictionaries(
    st.sampled_from(["content", "role", "refusal", "tool_calls", "reasoning_content", "reasoning"]),
    _values,
    max_size=3,
)
_choice = st.dictionaries(
    st.sampled_from(["index", "delta", "finish_reason", "text", "logprobs"]),
    st.one_of(_values, _delta),
    max_size=5,
)
_chunk = st.dictionaries(
    st.sampled_from(["id", "object", "model", "choices", "usage", "error", "type", "created"]),
    st.one_of(_values, st.lists(st.one_of(_choice, _values), max_size=2), _delta),
    max_size=6,
)


_token_delta = st.one_of(
    st.fixed_dictionaries({"content": st.text(min_size=1, max_size=5)}), _delta
)
_token_chunk = st.fixed_dictionaries(
    {
        "choices": st.lists(
            st.fixed_dictionaries(
                {"delta": _token_delta},
                optional={
                    "index": st.one_of(st.integers(0, 3), _values),
                    "finish_reason": _values,
                    "logprobs": _values,
                },
            ),
            min_size=1,
            max_size=2,
        )
    },
    optional={"id": _values, "object": _values, "usage": _values, "error": _values},
)


@given(st.lists(st.one_of(_chunk, _token_chunk), max_size=6))
def test_the_token_fast_path_decodes_as_feed_object_does(chunks: list[dict[str, Any]]) -> None:
    """Wherever ``token`` accepts a chunk, it gives what the general path gives, and
    leaves the decoder in the same state (so the stream ends the same way)."""
    fast, general = ChunkDecoder(), ChunkDecoder()
    start = {"id": "c", "choices": [{"index": 0, "delta": {"role": "assistant"}}]}
    assert fast.feed_object(start) == general.feed_object(start)
    for chunk in chunks:
        expected = [] if general.terminated else general._decode(copy.deepcopy(chunk))
        token = fast.token(chunk)
        if token is None:
            assert fast.feed_object(chunk) == expected
        else:
            assert [token] == expected
    assert fast.close() == general.close()


def test_the_token_fast_path_takes_the_usual_chunk() -> None:
    decoder = ChunkDecoder()
    decoder.feed_object({"id": "c", "choices": [{"index": 0, "delta": {"role": "assistant"}}]})
    chunk = {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "system_fingerprint": None,
        "choices": [
            {"index": 0, "delta": {"content": "Hi"}, "logprobs": None, "finish_reason": None}
        ],
    }
    assert decoder.token(chunk) == Delta(0, "Hi")
    assert decoder.token({**chunk, "usage": {"total_tokens": 1}}) is None
    assert (
        decoder.token(
            {**chunk, "choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": "stop"}]}
        )
        is None
    )
