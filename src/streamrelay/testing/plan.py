"""One request's answer, resolved before the first byte: the plan.

:meth:`_Plan.from_body` merges the simulator's :class:`.SimulatorConfig` with the
request's ``"simulator"`` overrides and its standard fields (``n``,
``max_tokens``, ``stream_options``, ``tools``, ``model``) into everything the
response will carry. The plan then answers in one of three ways: a JSON
``chat.completion`` (also the oracle behind ``Simulator.completion``), an HTTP
error (the ``status`` fault), or a stream, which :meth:`_Plan.events` yields
step by step (a pause, an abort, or one event's data) so that pacing and
mid-stream faults live in one readable generator.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Generator, Iterator, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, TypeAlias

import anyio
import anyio.lowlevel
from starlette.types import Send

from .config import SimulatorConfig
from .recording import RecordedRequest
from .text import _CITIES, _REFUSAL, _TOOL_NAMES, _cut, _digest, _generate, _prompt_text
from .wire import _dumps, _Framer, _headers, _send_json, _split_writer, _writer

_INVALID_UTF8 = b"\xc3\x28\xff\xfe"
_FILTER_SAFE = {
    name: {"filtered": False, "severity": "safe"}
    for name in ("hate", "self_harm", "sexual", "violence")
}
_ERROR_DEFAULTS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request (simulated)."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided (simulated)."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Forbidden."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist (simulated)."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached (simulated)."),
}


@dataclass
class _Exchange:
    """What one response has done so far, shared with its disconnect watcher."""

    record: RecordedRequest
    disconnected: bool = False
    complete: bool = False
    abort: bool = False


def _without(mapping: Mapping[str, Any], key: str) -> dict[str, Any]:
    return {name: value for name, value in mapping.items() if name != key}


@dataclass(frozen=True)
class _Pause:
    seconds: float | None  # None: until cancelled


class _Abort:
    pass


_Step: TypeAlias = "_Pause | _Abort | dict[str, Any] | bytes"
"""What the stream does next: wait, drop the connection, or send one event's data."""


@dataclass
class _Plan:
    """Everything one chat completion request will get, resolved from config and body."""

    config: SimulatorConfig
    body: Mapping[str, Any]
    faults: tuple[str, ...]
    stream: bool
    n: int
    include_usage: bool
    max_tokens: int | None
    model: str
    id: str
    created: int
    fingerprint: str
    prompt_tokens: int
    choice_tokens: list[list[str]] = field(default_factory=list)
    tool_deltas: list[dict[str, Any]] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    finish_reason: str = "stop"
    after: int = 0

    @classmethod
    def from_body(cls, base: SimulatorConfig, body: object) -> _Plan:
        """Resolve a request body; raises :exc:`ValueError` with a client-facing message."""
        if not isinstance(body, Mapping):
            raise ValueError("The body must be a JSON object.")
        overrides = body.get("simulator", {})
        if not isinstance(overrides, Mapping):
            raise ValueError('"simulator" must be an object.')
        config = base.replace(**overrides)
        messages = body.get("messages", [])
        n = body.get("n", 1)
        if n is None:
            n = 1
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 128:
            raise ValueError("n must be an integer from 1 to 128.")
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        if max_tokens is not None and (
            not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1
        ):
            raise ValueError("max_tokens must be a positive integer.")
        options = body.get("stream_options") or {}
        model = body.get("model")
        plan = cls(
            config=config,
            body=body,
            faults=config.faults,
            stream=body.get("stream") is True,
            n=n,
            include_usage=isinstance(options, Mapping) and options.get("include_usage") is True,
            max_tokens=max_tokens,
            model=model if isinstance(model, str) and model else config.model,
            # Not from the "simulator" options: a faulty stream keeps the clean one's id.
            id="chatcmpl-" + _digest("id", config.seed, _without(body, "simulator"))[:29],
            created=config.created if config.created is not None else int(time.time()),
            fingerprint="fp_" + _digest("fp", config.model)[:10],
            prompt_tokens=max(1, len(_prompt_text(messages).split())),
        )
        plan._resolve_content(messages)
        return plan

    def _resolve_content(self, messages: object) -> None:
        config = self.config
        if "tools" in self.faults:
            self._resolve_tools(messages)
            return
        if config.pieces is not None:
            given: list[str] | None = list(config.pieces)
        elif config.text is not None:
            given = _cut(config, config.text)
        elif "refusal" in self.faults:
            given = [_REFUSAL.split(" ")[0], *(" " + w for w in _REFUSAL.split(" ")[1:])]
        else:
            given = None
        self.choice_tokens = [
            list(given) if given is not None else _generate(config, messages, index)
            for index in range(self.n)
        ]
        count = len(self.choice_tokens[0])
        self.after = min(count // 2 if config.after is None else config.after, count)
        if "big_line" in self.faults:
            filler = ("lorem ipsum dolor sit amet " * (config.size // 27 + 1))[: config.size]
            for tokens in self.choice_tokens:
                tokens.insert(self.after, filler)
        if self.max_tokens is not None and self.max_tokens < len(self.choice_tokens[0]):
            self.choice_tokens = [tokens[: self.max_tokens] for tokens in self.choice_tokens]
            self.finish_reason = "length"
            self.after = min(self.after, self.max_tokens)

    def _resolve_tools(self, messages: object) -> None:
        names = [
            tool["function"]["name"]
            for tool in self.body.get("tools") or []
            if isinstance(tool, Mapping)
            and isinstance(tool.get("function"), Mapping)
            and isinstance(tool["function"].get("name"), str)
        ] or list(_TOOL_NAMES)
        rng = random.Random(_digest("tools", self.config.seed, messages))
        for k in range(self.config.tool_calls):
            call_id = "call_" + _digest("call", self.config.seed, messages, k)[:24]
            name = names[k % len(names)]
            arguments = json.dumps(
                {"location": rng.choice(_CITIES), "unit": "celsius"}, ensure_ascii=False
            )
            self.tool_calls.append(
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": name, "arguments": arguments},
                }
            )
            first = {"index": k, "id": call_id, "type": "function"}
            first["function"] = {"name": name, "arguments": ""}
            self.tool_deltas.append({"tool_calls": [first]})
            for piece in _cut(self.config, arguments):
                fragment = {"index": k, "function": {"arguments": piece}}
                self.tool_deltas.append({"tool_calls": [fragment]})
        self.finish_reason = "tool_calls"
        count = len(self.tool_deltas)
        self.after = min(count // 2 if self.config.after is None else self.config.after, count)

    @property
    def steps(self) -> int:
        """Chunks per choice between the role chunk and the finish chunk."""
        return len(self.tool_deltas) if self.tool_deltas else len(self.choice_tokens[0])

    def usage(self) -> dict[str, int]:
        completion = self.steps * self.n
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
        }

    # Non-streaming.

    def completion(self) -> dict[str, Any]:
        choices = []
        for index in range(self.n):
            message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None}
            if self.tool_calls:
                message["tool_calls"] = self.tool_calls
            elif "refusal" in self.faults:
                message["refusal"] = "".join(self.choice_tokens[index])
            else:
                message["content"] = "".join(self.choice_tokens[index])
            choices.append(
                {
                    "index": index,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": self.finish_reason,
                }
            )
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": self.fingerprint,
            "choices": choices,
            "usage": self.usage(),
        }

    # Streaming.

    def chunk(
        self, index: int, delta: dict[str, Any], finish_reason: str | None = None
    ) -> dict[str, Any]:
        choice: dict[str, Any] = {
            "index": index,
            "delta": delta,
            "logprobs": None,
            "finish_reason": finish_reason,
        }
        if "azure" in self.faults:
            filtered = bool(delta.get("content") or delta.get("refusal"))
            choice["content_filter_results"] = _FILTER_SAFE if filtered else {}
        chunk: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": self.fingerprint,
            "choices": [choice],
        }
        if self.include_usage:
            chunk["usage"] = None
        return chunk

    def delta(self, step: int, index: int) -> dict[str, Any]:
        if self.tool_deltas:
            return self.tool_deltas[step]
        if "timestamps" in self.faults:
            return {"content": f"t={time.time_ns()} "}
        key = "refusal" if "refusal" in self.faults else "content"
        return {key: self.choice_tokens[index][step]}

    def events(self) -> Iterator[_Step]:
        """The stream, lazily: each step is built right before it is sent."""
        config = self.config
        if config.first_delay:
            yield _Pause(config.first_delay)
        if "azure" in self.faults:
            yield {
                "choices": [],
                "created": 0,
                "id": "",
                "model": "",
                "object": "",
                "prompt_filter_results": [
                    {"prompt_index": 0, "content_filter_results": _FILTER_SAFE}
                ],
            }
        role: dict[str, Any] = {"role": "assistant", "content": None if self.tool_deltas else ""}
        for index in range(self.n):
            yield self.chunk(index, dict(role))
        for step in range(self.steps):
            if step == self.after and (yield from self.mid_stream_faults()):
                return
            if step:
                yield _Pause(config.delay)
            for index in range(self.n):
                yield self.chunk(index, self.delta(step, index))
        if self.after >= self.steps and (yield from self.mid_stream_faults()):
            return
        for index in range(self.n):
            yield self.chunk(index, {}, self.finish_reason)
        if "azure" in self.faults:
            yield {
                "choices": [
                    {
                        "content_filter_offsets": {
                            "check_offset": 0,
                            "start_offset": 0,
                            "end_offset": 1,
                        },
                        "content_filter_results": _FILTER_SAFE,
                        "delta": {},
                        "finish_reason": None,
                        "index": 0,
                    }
                ],
                "created": 0,
                "id": "",
                "model": "",
                "object": "",
            }
        if self.include_usage:
            yield {**self.chunk(0, {}), "choices": [], "usage": self.usage()}
        if "no_done" not in self.faults:
            yield b"[DONE]"

    def mid_stream_faults(self) -> Generator[_Step, None, bool]:
        """Faults that fire after ``after`` tokens; returns ``True`` if the stream ends."""
        config, faults = self.config, self.faults
        if "invalid_utf8" in faults:
            placeholder = "@@INVALID@@"
            chunk = _dumps(self.chunk(0, {"content": placeholder}))
            yield chunk.replace(placeholder.encode(), _INVALID_UTF8)
        if "non_json" in faults:
            yield b"hello"
        if "stall" in faults:
            yield _Pause(config.stall)
        if "mid_error" in faults:
            error = {
                "message": config.message
                or "The server had an error while processing your request.",
                "type": config.error_type or "server_error",
                "param": None,
                "code": config.code if config.code is not None else "server_error",
            }
            yield {"error": error}
            return True
        if "mid_error_legacy" in faults:
            yield {
                "object": "error",
                "message": config.message
                or "The server had an error while processing your request.",
                "type": config.error_type or "InternalServerError",
                "param": None,
                "code": config.code if config.code is not None else 500,
            }
            return True
        if "abrupt_close" in faults:
            yield _Abort()
            return True
        return "truncate" in faults

    async def respond(self, send: Send, state: _Exchange) -> None:
        """Send the whole response; sets ``state.complete`` right before the last send."""
        record = state.record
        if "stall_headers" in self.faults:
            await _sleep(self.config.stall)
        if "status" in self.faults:
            await self.send_status_error(send, state)
            return
        if not self.stream:
            await _send_json(send, record, 200, self.completion())
            state.complete = True
            return
        record.status = 200
        headers = _headers(record, "text/event-stream; charset=utf-8", cache_control="no-cache")
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        framer = _Framer(self.faults)
        write = _split_writer(send) if "split" in self.faults else _writer(send)
        for step in self.events():
            if isinstance(step, _Pause):
                await _sleep(step.seconds)
            elif isinstance(step, _Abort):
                state.abort = state.complete = True
                return
            else:
                await write(framer.frame(step))
                await anyio.lowlevel.checkpoint()
        if state.disconnected:
            return
        state.complete = True
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def send_status_error(self, send: Send, state: _Exchange) -> None:
        config, status = self.config, self.config.status
        default_type, default_code, default_message = _ERROR_DEFAULTS.get(
            status,
            ("server_error" if status >= 500 else "invalid_request_error", None, ""),
        )
        phrase = _status_phrase(status)
        headers = {}
        if config.retry_after is not None:
            headers["retry-after"] = str(math.ceil(config.retry_after))
            headers["retry-after-ms"] = str(round(config.retry_after * 1000))
        if config.body == "html":
            page = (
                f"<html>\r\n<head><title>{status} {phrase}</title></head>\r\n<body>\r\n"
                f"<center><h1>{status} {phrase}</h1></center>\r\n<hr><center>nginx</center>\r\n"
                "</body>\r\n</html>\r\n"
            ).encode()
            state.record.status = status
            content_length = str(len(page))
            start = _headers(state.record, "text/html", content_length=content_length, **headers)
            await send({"type": "http.response.start", "status": status, "headers": start})
            state.complete = True
            await send({"type": "http.response.body", "body": page})
            return
        error = {
            "message": config.message or default_message or f"{status} {phrase} (simulated).",
            "type": config.error_type or default_type,
            "param": None,
            "code": config.code if config.code is not None else default_code,
        }
        state.complete = True
        await _send_json(send, state.record, status, {"error": error}, **headers)


def _status_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


async def _sleep(seconds: float | None) -> None:
    if seconds is None:
        await anyio.sleep_forever()
    else:
        await anyio.sleep(seconds)
