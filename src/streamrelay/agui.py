"""AG-UI's ``RunAgentInput`` as an OpenAI chat completion request, for ``POST <mount>/ag-ui``.

``@ag-ui/client``'s ``HttpAgent`` POSTs a ``RunAgentInput``: ``threadId``, ``runId``,
``messages``, ``tools``, ``context``, ``state``, ``forwardedProps`` (camelCase, the
protocol's wire names). :func:`chat_body` turns it into the body of a streaming
``/chat/completions`` request, and returns the ``threadId`` and ``runId`` that the
``ag-ui`` format echoes on ``RUN_STARTED`` and ``RUN_FINISHED``. It is pure: no I/O,
nothing third-party.

=======================================  =============================================
AG-UI                                    OpenAI chat completions
=======================================  =============================================
``user`` message, text                   ``{"role": "user", "content": "..."}``
``user`` message, parts                  text parts (only text: one string, as
                                         AG-UI's ``contentToText`` joins them);
                                         ``image`` → ``image_url`` (data: or https:
                                         URL), ``audio`` (wav, mp3 data) →
                                         ``input_audio``, ``document`` → ``file``
                                         (inline data or a provider file id); the
                                         pre-1.0 ``binary`` part likewise
``assistant`` message                    ``content``; ``toolCalls`` → ``tool_calls``
                                         ``[{id, type: "function", function: {name,
                                         arguments}}]``
``tool`` message                         ``{"role": "tool", "tool_call_id",
                                         "content"}`` (its ``error`` when it has no
                                         content)
``system``, ``developer`` message        ``system`` (most OpenAI-compatible servers
                                         know no ``developer`` role; OpenAI reads
                                         ``system`` as ``developer`` for its
                                         reasoning models)
``activity``, ``reasoning`` message      dropped: UI state, not conversation
``tools`` ``[{name, description,         ``tools`` ``[{type: "function", function:
parameters}]``                           {name, description, parameters}}]``
                                         (left out when empty: OpenAI refuses ``[]``)
``context`` ``[{description, value}]``   one ``system`` message after the leading
                                         system messages
``forwardedProps.model``                 ``model`` (the route applies
                                         ``allowed_models``, and ``default_model``
                                         when there is none)
``state``, ``resume``, other props       not sent upstream
=======================================  =============================================

The body always streams and asks for usage (``stream_options.include_usage``), which
``RUN_FINISHED`` carries. A message's ``name`` is kept. Input that is not a valid
``RunAgentInput``, or that OpenAI's chat completions cannot express (a video part, a
tool result with an image), raises :class:`~streamrelay.errors.RequestRejected`
(400, code ``invalid_run_input``) naming the offending field.

>>> body, thread_id, run_id = chat_body({
...     "threadId": "t1", "runId": "r1", "state": {}, "tools": [], "context": [],
...     "forwardedProps": {"model": "gpt-4o-mini"},
...     "messages": [{"id": "m1", "role": "user", "content": "Hi"}],
... })
>>> body["model"], body["messages"], thread_id, run_id
('gpt-4o-mini', [{'role': 'user', 'content': 'Hi'}], 't1', 'r1')
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from .errors import RequestRejected

__all__ = ["chat_body"]

_AUDIO_FORMATS = {
    "audio/wav": "wav",
    "audio/x-wav": "wav",
    "audio/wave": "wav",
    "audio/mpeg": "mp3",
    "audio/mp3": "mp3",
}
"""The audio types chat completions' ``input_audio`` takes, and its name for each."""


def chat_body(run_input: Mapping[str, Any]) -> tuple[dict[str, Any], str, str]:
    """The chat completion body for ``run_input`` (a parsed ``RunAgentInput``), its
    ``threadId`` and its ``runId``.

    The body has ``messages``, ``stream: true`` and ``stream_options``, plus
    ``tools`` when there are any and ``model`` when ``forwardedProps.model`` names
    one. Raises :class:`~streamrelay.errors.RequestRejected` (400,
    ``invalid_run_input``) for input that is not a valid ``RunAgentInput``.
    """
    if not isinstance(run_input, Mapping):
        _reject("the body must be a RunAgentInput object")
    thread_id = _id(run_input, "threadId")
    run_id = _id(run_input, "runId")

    raw_messages = run_input.get("messages")
    if not isinstance(raw_messages, list):
        _reject("messages must be an array of messages")
    messages: list[dict[str, Any]] = []
    for i, message in enumerate(raw_messages):
        converted = _message(message, f"messages[{i}]")
        if converted is not None:
            messages.append(converted)

    context = _context(run_input.get("context"))
    if context is not None:
        at = 0
        while at < len(messages) and messages[at]["role"] == "system":
            at += 1
        messages.insert(at, context)

    body: dict[str, Any] = {}
    model = _model(run_input.get("forwardedProps"))
    if model is not None:
        body["model"] = model
    body["messages"] = messages
    tools = _tools(run_input.get("tools"))
    if tools:
        body["tools"] = tools
    body["stream"] = True
    body["stream_options"] = {"include_usage": True}
    return body, thread_id, run_id


# --- helpers ---------------------------------------------------------------------------------


def _reject(message: str) -> NoReturn:
    """Refuse the input: 400 ``invalid_run_input``."""
    raise RequestRejected(400, f"invalid RunAgentInput: {message}", code="invalid_run_input")


def _id(run_input: Mapping[str, Any], key: str) -> str:
    value = run_input.get(key)
    if not isinstance(value, str) or not value:
        _reject(f"{key} must be a non-empty string")
    return value


def _string(obj: Mapping[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        _reject(f"{where}.{key} must be a string")
    return value


def _optional(obj: Mapping[str, Any], key: str, where: str) -> str | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        _reject(f"{where}.{key} must be a string")
    return value


def _object(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        _reject(f"{where} must be an object")
    return value


def _message(value: Any, where: str) -> dict[str, Any] | None:
    message = _object(value, where)
    role = message.get("role")
    out: dict[str, Any]
    if role == "user":
        out = {"role": "user", "content": _user_content(message.get("content"), where)}
    elif role == "assistant":
        out = _assistant(message, where)
    elif role in ("system", "developer"):
        out = {"role": "system", "content": _string(message, "content", where)}
    elif role == "tool":
        return _tool_message(message, where)
    elif role in ("activity", "reasoning"):
        return None
    else:
        _reject(
            f"{where}.role must be user, assistant, system, developer, tool, activity "
            f"or reasoning, not {role!r}"
        )
    name = message.get("name")
    if name is not None:
        if not isinstance(name, str):
            _reject(f"{where}.name must be a string")
        if name:
            out["name"] = name
    return out


def _assistant(message: Mapping[str, Any], where: str) -> dict[str, Any]:
    content = _optional(message, "content", where)
    calls = message.get("toolCalls")
    out: dict[str, Any] = {"role": "assistant"}
    if calls is None or calls == []:
        out["content"] = content or ""
        return out
    if not isinstance(calls, list):
        _reject(f"{where}.toolCalls must be an array")
    out["content"] = content or None  # null content beside tool calls, as OpenAI sends it
    tool_calls = []
    for i, call in enumerate(calls):
        at = f"{where}.toolCalls[{i}]"
        call = _object(call, at)
        function = _object(call.get("function"), f"{at}.function")
        if call.get("type", "function") != "function":
            _reject(f"{at}.type must be 'function'")
        tool_calls.append(
            {
                "id": _string(call, "id", at),
                "type": "function",
                "function": {
                    "name": _string(function, "name", f"{at}.function"),
                    "arguments": _string(function, "arguments", f"{at}.function"),
                },
            }
        )
    out["tool_calls"] = tool_calls
    return out


def _tool_message(message: Mapping[str, Any], where: str) -> dict[str, Any]:
    call_id = message.get("toolCallId")
    if not isinstance(call_id, str) or not call_id:
        _reject(f"{where}.toolCallId must be a non-empty string")
    content = message.get("content")
    if isinstance(content, list):
        content = _text_only(content, f"{where}.content")
    elif not isinstance(content, str):
        _reject(f"{where}.content must be a string or an array of parts")
    error = _optional(message, "error", where)
    if not content and error:
        content = error
    return {"role": "tool", "tool_call_id": call_id, "content": content}


def _text_only(parts: Sequence[Any], where: str) -> str:
    texts = []
    for i, part in enumerate(parts):
        part = _object(part, f"{where}[{i}]")
        if part.get("type") != "text":
            _reject(f"{where}[{i}]: a tool result can only be text in chat completions")
        texts.append(_string(part, "text", f"{where}[{i}]"))
    return "".join(texts)


def _user_content(content: Any, where: str) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        _reject(f"{where}.content must be a string or an array of parts")
    at = f"{where}.content"
    parts = [_part(part, f"{at}[{i}]") for i, part in enumerate(content)]
    if all(part["type"] == "text" for part in parts):
        return "".join(part["text"] for part in parts)  # AG-UI's contentToText
    return parts


def _part(value: Any, where: str) -> dict[str, Any]:
    part = _object(value, where)
    kind = part.get("type")
    if kind == "text":
        return {"type": "text", "text": _string(part, "text", where)}
    if kind == "binary":  # the pre-1.0 shape: {mimeType, data | url | id, filename?}
        return _binary(part, where)
    if kind not in ("image", "audio", "video", "document"):
        _reject(f"{where}.type {kind!r} is not a content part type")
    source = _object(part.get("source"), f"{where}.source")
    origin = source.get("type")
    if origin not in ("data", "url", "file"):
        _reject(f"{where}.source.type must be data, url or file, not {origin!r}")
    value_ = _string(source, "value", f"{where}.source")
    if origin == "data":
        mime = _string(source, "mimeType", f"{where}.source")
    else:
        mime = _optional(source, "mimeType", f"{where}.source") or ""
    if kind == "image" and origin in ("data", "url"):
        url = f"data:{mime};base64,{value_}" if origin == "data" else value_
        return {"type": "image_url", "image_url": {"url": url}}
    if kind == "audio" and origin == "data" and mime.lower() in _AUDIO_FORMATS:
        audio = {"data": value_, "format": _AUDIO_FORMATS[mime.lower()]}
        return {"type": "input_audio", "input_audio": audio}
    if kind == "document" and origin == "data":
        return {"type": "file", "file": {"file_data": f"data:{mime};base64,{value_}"}}
    if kind == "document" and origin == "file":
        return {"type": "file", "file": {"file_id": value_}}
    _reject(
        f"{where}: chat completions cannot take a {kind} part from a {origin} source"
        + (f" ({mime})" if mime else "")
    )


def _binary(part: Mapping[str, Any], where: str) -> dict[str, Any]:
    mime = _string(part, "mimeType", where)
    data = _optional(part, "data", where)
    url = _optional(part, "url", where)
    file_id = _optional(part, "id", where)
    if mime.startswith("image/") and (data or url):
        return {
            "type": "image_url",
            "image_url": {"url": f"data:{mime};base64,{data}" if data else url},
        }
    if mime.lower() in _AUDIO_FORMATS and data:
        return {
            "type": "input_audio",
            "input_audio": {"data": data, "format": _AUDIO_FORMATS[mime.lower()]},
        }
    if not mime.startswith(("image/", "audio/", "video/")) and (data or file_id):
        file: dict[str, Any] = (
            {"file_data": f"data:{mime};base64,{data}"} if data else {"file_id": file_id}
        )
        filename = _optional(part, "filename", where)
        if filename and data:
            file["filename"] = filename
        return {"type": "file", "file": file}
    _reject(f"{where}: chat completions cannot take this {mime} binary part")


def _tools(value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        _reject("tools must be an array")
    tools = []
    for i, tool in enumerate(value):
        where = f"tools[{i}]"
        tool = _object(tool, where)
        name = _string(tool, "name", where)
        if not name:
            _reject(f"{where}.name must not be empty")
        function: dict[str, Any] = {"name": name}
        description = _optional(tool, "description", where)
        if description:
            function["description"] = description
        parameters = tool.get("parameters")
        if parameters is not None:
            function["parameters"] = _object(parameters, f"{where}.parameters")
        tools.append({"type": "function", "function": function})
    return tools


def _context(value: Any) -> dict[str, Any] | None:
    """``context`` as one system message: each item's description, then its value."""
    if value is None:
        return None
    if not isinstance(value, list):
        _reject("context must be an array")
    sections = []
    for i, item in enumerate(value):
        where = f"context[{i}]"
        item = _object(item, where)
        description = _string(item, "description", where)
        text = _string(item, "value", where)
        sections.append(f"## {description}\n{text}" if description else text)
    if not sections:
        return None
    document = "Context from the application:\n\n" + "\n\n".join(sections)
    return {"role": "system", "content": document}


def _model(props: Any) -> str | None:
    if not isinstance(props, Mapping) or props.get("model") is None:
        return None
    model = props["model"]
    if not isinstance(model, str) or not model:
        _reject("forwardedProps.model must be a non-empty string")
    return model
