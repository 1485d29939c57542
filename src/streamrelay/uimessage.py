"""The AI SDK's chat request (``UIMessage[]``) as an OpenAI chat.completions body, pure.

``useChat``'s ``DefaultChatTransport`` POSTs ``{id, messages, trigger, messageId,
...body}``, where each message is a ``UIMessage`` ``{id, role, parts, metadata?}``.
:func:`chat_body` turns it into ``{"model"?, "messages"}`` for ``/chat/completions``:

>>> chat_body({"id": "c1", "trigger": "submit-message", "messages": [
...     {"id": "m1", "role": "user", "parts": [{"type": "text", "text": "Hi"}]}]})
{'messages': [{'role': 'user', 'content': 'Hi'}]}

How parts become OpenAI messages:

- ``text`` parts become ``content``: a message's text parts joined, as the AI SDK's
  own OpenAI provider joins them.
- ``file`` parts whose ``mediaType`` is ``image/*`` (a user's) become
  ``image_url`` content parts; the content is then a list of ``text`` and
  ``image_url`` parts, in the message's order. Other files (PDFs, audio, ...) are
  skipped: OpenAI-compatible servers disagree on how to take them. Files in an
  assistant message are skipped too (OpenAI takes none there).
- Tool parts (``tool-<name>``, and ``dynamic-tool`` with its ``toolName``) with an
  output become the assistant message's ``tool_calls`` (``id``: the ``toolCallId``,
  ``arguments``: the input as JSON) plus one ``tool`` message each: the output
  (a string as it is, anything else as JSON) for ``output-available``, the
  ``errorText`` for ``output-error``, and a denial (with its reason) for
  ``output-denied`` (ai 6's approvals). Tool parts without an output
  (``input-streaming``, ``input-available``, awaiting approval) are dropped.
- An assistant message is split at its ``step-start`` parts, as the AI SDK's
  ``convertToModelMessages`` does: each step is one assistant message followed by
  its tool results, so a text written after a tool ran comes after that tool's
  result.
- ``reasoning``, ``step-start``, ``source-*`` and ``data-*`` parts are dropped, and
  so are part types this module does not know (newer SDKs add some).
- ``system`` messages become ``system`` messages (their text).

``trigger: "regenerate-message"``: the SDK has already cut the history after the
message to regenerate; if the messages still end with an assistant message, that
one (never an earlier one) is dropped.

Of the body's other fields only ``model`` is taken (a front end may send one with
``useChat``'s ``body``); sampling options, tools and system prompts are for the
relay's ``prepare`` hook to add, not for the browser to choose.

Malformed input raises :class:`~streamrelay.errors.RequestRejected` with status 400
and code ``invalid_messages``, saying which message or part is wrong.

The answer's message id: a request that ends with an assistant message (tool results
added in the browser) continues that message, so its answer must carry that
message's id (:func:`continued_message_id`); any other answer is a new message.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from .errors import RequestRejected

__all__ = ["ROLES", "chat_body", "continued_message_id", "openai_messages"]

ROLES = frozenset({"system", "user", "assistant"})
"""The roles a ``UIMessage`` may have."""


def chat_body(body: Any) -> dict[str, Any]:
    """The OpenAI chat.completions body (``model`` if the body has one, ``messages``) for
    ``DefaultChatTransport``'s request body ``{id, messages, trigger, messageId, ...}``.

    Raises :class:`~streamrelay.errors.RequestRejected` (400, ``invalid_messages``)
    when the body is not such a request or the messages convert to nothing.
    """
    if not isinstance(body, Mapping):
        raise _invalid("the request body must be a JSON object with a messages list")
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise _invalid("messages must be a list of UIMessage objects")
    if not messages:
        raise _invalid("messages is empty: there is nothing to answer")
    if (
        body.get("trigger") == "regenerate-message"
        and isinstance(messages[-1], Mapping)
        and messages[-1].get("role") == "assistant"
    ):
        messages = messages[:-1]  # the message to regenerate
    out: dict[str, Any] = {}
    if "model" in body and body["model"] is not None:
        model = body["model"]
        if not isinstance(model, str) or not model:
            raise _invalid("model must be a non-empty string")
        out["model"] = model
    out["messages"] = openai_messages(messages)
    if not out["messages"]:
        raise _invalid("the messages have no text, image or tool result to send")
    return out


def continued_message_id(body: Any) -> str | None:
    """The ``messageId`` the answer must carry: the last message's id when the request
    ends with an assistant message, else ``None`` (the stream's own id will do).

    Such a request continues that message (``useChat`` after ``addToolResult``): the
    SDK appends the answer's parts to it, and a ``start`` part with another
    ``messageId`` would show that message twice. Pass it to
    :class:`~streamrelay.formats.AISDKEncoder` as ``message_id``. A regeneration
    answers with a new message: ``None``.

    >>> continued_message_id({"messages": [{"id": "a1", "role": "assistant", "parts": []}]})
    'a1'
    """
    if not isinstance(body, Mapping) or body.get("trigger") == "regenerate-message":
        return None
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not isinstance(messages[-1], Mapping):
        return None
    last = messages[-1]
    message_id = last.get("id")
    if last.get("role") == "assistant" and isinstance(message_id, str) and message_id:
        return message_id
    return None


def openai_messages(messages: Sequence[Any]) -> list[dict[str, Any]]:
    """OpenAI chat messages for a list of ``UIMessage`` objects (see the module's rules)."""
    out: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, Mapping):
            raise _invalid(f"{where} must be an object with a role and parts")
        role = message.get("role")
        if not isinstance(role, str) or role not in ROLES:
            raise _invalid(f"{where}.role must be one of system, user, assistant, not {role!r}")
        parts = message.get("parts")
        if not isinstance(parts, list):
            raise _invalid(f"{where}.parts must be a list of parts")
        for j, part in enumerate(parts):
            if not isinstance(part, Mapping) or not isinstance(part.get("type"), str):
                raise _invalid(f"{where}.parts[{j}] must be an object with a type")
        if role == "assistant":
            out.extend(_assistant(where, parts))
        else:
            content = _content(where, parts, images=role == "user")
            if content:
                out.append({"role": role, "content": content})
    return out


def _content(where: str, parts: Sequence[Mapping[str, Any]], *, images: bool) -> Any:
    """A user or system message's content: a string, or a list of text and image parts."""
    pieces: list[dict[str, Any]] = []
    for j, part in enumerate(parts):
        kind = part["type"]
        if kind == "text":
            pieces.append({"type": "text", "text": _text(where, j, part)})
        elif kind == "file" and images and _is_image(part):
            url = part.get("url")
            if not isinstance(url, str) or not url:
                raise _invalid(f"{where}.parts[{j}].url must be a non-empty string")
            pieces.append({"type": "image_url", "image_url": {"url": url}})
    if all(piece["type"] == "text" for piece in pieces):
        return "".join(piece["text"] for piece in pieces)
    return pieces


def _assistant(where: str, parts: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """An assistant message: per step, the assistant's text and tool calls, then the results."""
    out: list[dict[str, Any]] = []
    text: list[str] = []
    calls: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []

    def flush() -> None:
        if text or calls:
            message: dict[str, Any] = {"role": "assistant", "content": "".join(text)}
            if calls:
                message["tool_calls"] = list(calls)
            out.append(message)
        out.extend(results)
        text.clear()
        calls.clear()
        results.clear()

    for j, part in enumerate(parts):
        kind = part["type"]
        if kind == "text":
            text.append(_text(where, j, part))
        elif kind == "step-start":
            flush()
        elif kind == "dynamic-tool" or kind.startswith("tool-"):
            converted = _tool(where, j, part)
            if converted is not None:
                calls.append(converted[0])
                results.append(converted[1])
    flush()
    return out


def _tool(
    where: str, j: int, part: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The tool call and the ``tool`` message of a tool part with an output, else ``None``."""
    state = part.get("state")
    if state == "output-available":
        output = part.get("output")
        result = output if isinstance(output, str) else _dumps(output)
    elif state == "output-error":
        error = part.get("errorText")
        result = error if isinstance(error, str) and error else "the tool failed"
    elif state == "output-denied":
        approval = part.get("approval")
        reason = approval.get("reason") if isinstance(approval, Mapping) else None
        result = "the user denied this tool call"
        if isinstance(reason, str) and reason:
            result += f": {reason}"
    else:  # no output yet (input-streaming, input-available, approval-*)
        return None
    kind: str = part["type"]
    name = part.get("toolName") if kind == "dynamic-tool" else kind[len("tool-") :]
    if not isinstance(name, str) or not name:
        raise _invalid(f"{where}.parts[{j}] is a tool part without a tool name")
    call_id = part.get("toolCallId")
    if not isinstance(call_id, str) or not call_id:
        raise _invalid(f"{where}.parts[{j}].toolCallId must be a non-empty string")
    raw = part.get("rawInput")  # the model's own text (later 5.x and on)
    if state == "output-error" and isinstance(raw, str) and raw:
        arguments = raw  # arguments that did not parse: what the model wrote
    elif part.get("input") is not None:
        arguments = _dumps(part["input"])
    else:
        arguments = "{}"
    call = {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }
    return call, {"role": "tool", "tool_call_id": call_id, "content": result}


def _text(where: str, j: int, part: Mapping[str, Any]) -> str:
    text = part.get("text")
    if not isinstance(text, str):
        raise _invalid(f"{where}.parts[{j}].text must be a string")
    return text


def _is_image(part: Mapping[str, Any]) -> bool:
    media_type = part.get("mediaType")
    return isinstance(media_type, str) and media_type.lower().startswith("image/")


def _dumps(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (ValueError, RecursionError) as exc:  # NaN, Infinity, nesting
        raise _invalid(f"a tool input or output cannot be sent as JSON: {exc}") from None


def _invalid(message: str) -> RequestRejected:
    return RequestRejected(400, message, code="invalid_messages")
