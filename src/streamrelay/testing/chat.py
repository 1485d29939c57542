"""``POST /v1/chat/completions``: the ``chat.completion`` object and its chunks.

Besides OpenAI's own shape, the chunks take the shapes other OpenAI-compatible
servers give them: DeepSeek's ``delta.reasoning_content`` (``reasoning``),
Mistral's typed content parts (``parts``), Azure's content filter results
(``azure``), and tool calls whose indices collide (``tool_index_collision``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from .plan import _FILTER_SAFE, _include_usage, _Pause, _Piece, _Plan, _positive_int, _read_n, _Step


class _ChatPlan(_Plan):
    """A chat completion request: ``messages``, ``n``, ``max_tokens``, ``tools``, ..."""

    route = "chat"
    id_prefix = "chatcmpl-"

    def _read(self, body: Mapping[str, Any]) -> None:
        self.conversation = body.get("messages", [])
        self.n = _read_n(body)
        self.max_tokens = _positive_int(body, "max_completion_tokens", "max_tokens")
        self.include_usage = _include_usage(body)
        self.tool_names = [
            tool["function"]["name"]
            for tool in body.get("tools") or []
            if isinstance(tool, Mapping)
            and isinstance(tool.get("function"), Mapping)
            and isinstance(tool["function"].get("name"), str)
        ]

    def usage(self) -> dict[str, Any]:
        usage: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }
        if self.thinking:
            usage["completion_tokens_details"] = {"reasoning_tokens": self.reasoning_tokens}
        return usage

    # Non-streaming.

    def answer(self) -> dict[str, Any]:
        return self.completion()

    def completion(self) -> dict[str, Any]:
        choices = []
        for index in range(self.n):
            message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None}
            if self.tool_calls:
                message["tool_calls"] = [
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": call.arguments},
                    }
                    for call in self.tool_calls
                ]
            elif "refusal" in self.faults:
                message["refusal"] = self.text(index, "refusal")
            else:
                message["content"] = self.text(index)
            reasoning = self.text(index, "reasoning")
            if "parts" in self.faults:
                parts: list[dict[str, Any]] = []
                if reasoning:
                    parts.append(_thinking_part(reasoning))
                if message["content"] is not None:
                    parts.append({"type": "text", "text": message["content"]})
                message["content"] = parts or None
            elif "reasoning" in self.faults:
                message["reasoning_content"] = reasoning
            choices.append(
                {
                    "index": index,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": self.finish_reason,
                }
            )
        return self.completion_object("chat.completion", choices, usage=self.usage())

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
        return self.chunk_of("chat.completion.chunk", choice)

    def delta(self, piece: _Piece) -> dict[str, Any]:
        faults = self.faults
        if piece.kind in ("call", "arguments"):
            index = 0 if "tool_index_collision" in faults else piece.call
            if piece.kind == "arguments":
                return {"tool_calls": [{"index": index, "function": {"arguments": piece.text}}]}
            call = self.tool_calls[piece.call]
            first = {"index": index, "id": call.id, "type": "function"}
            first["function"] = {"name": call.name, "arguments": ""}
            return {"tool_calls": [first]}
        text = self.content_text(piece)
        if piece.kind == "refusal":
            return {"refusal": text}
        if "parts" in faults:
            if piece.kind == "reasoning":
                return {"content": [_thinking_part(text)]}
            return {"content": [{"type": "text", "text": text}]}
        if "reasoning" in faults:  # DeepSeek's deltas carry both fields, one of them null
            if piece.kind == "reasoning":
                return {"content": None, "reasoning_content": text}
            return {"content": text, "reasoning_content": None}
        return {"content": text}

    def content_event(self, text: str) -> dict[str, Any]:
        return self.chunk(0, {"content": text})

    def events(self) -> Iterator[_Step]:
        config = self.config
        if config.first_delay:
            yield _Pause(config.first_delay)
        if "azure" in self.faults:
            yield self.azure_prompt_filter()
        role: dict[str, Any] = {"role": "assistant", "content": None if self.tool_calls else ""}
        for index in range(self.n):
            yield self.chunk(index, dict(role))
        if (yield from self.token_steps(lambda index, piece: self.chunk(index, self.delta(piece)))):
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


def _thinking_part(text: str) -> dict[str, Any]:
    return {"type": "thinking", "thinking": [{"type": "text", "text": text}]}
