"""``POST /v1/completions``: legacy completions, ``prompt`` in, ``choices[].text`` out.

The ``text_completion`` object, and its stream: one chunk per token (no role
chunk), a chunk per choice with its ``finish_reason`` and empty text, the usage
chunk when ``stream_options.include_usage`` asks for it, then ``data: [DONE]``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from .plan import _FILTER_SAFE, _include_usage, _Pause, _Plan, _positive_int, _read_n, _Step
from .text import _prompt_text


class _CompletionsPlan(_Plan):
    """A legacy completion request: ``prompt``, ``n``, ``max_tokens``, ``stream_options``."""

    route = "completions"
    id_prefix = "cmpl-"

    def _read(self, body: Mapping[str, Any]) -> None:
        prompt = body.get("prompt", "")
        if prompt is None:
            prompt = ""
        if not isinstance(prompt, (str, list)) or (
            isinstance(prompt, list)
            and not all(
                isinstance(item, (str, int, list)) and not isinstance(item, bool) for item in prompt
            )
        ):
            raise ValueError("prompt must be a string, a list of strings or a list of tokens.")
        self.conversation = prompt
        self.n = _read_n(body)
        self.max_tokens = _positive_int(body, "max_tokens")
        self.include_usage = _include_usage(body)

    def _count_prompt_tokens(self) -> int:
        prompt = self.conversation
        if isinstance(prompt, list) and prompt and not any(isinstance(p, str) for p in prompt):
            tokens = [p for p in prompt if isinstance(p, int)] or [
                t for p in prompt if isinstance(p, list) for t in p
            ]
            return max(1, len(tokens))
        return max(1, len(_prompt_text(prompt).split()))

    def usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }

    def answer(self) -> dict[str, Any]:
        return self.text_completion()

    def text_completion(self) -> dict[str, Any]:
        choices = [
            {
                "text": self.text(index),
                "index": index,
                "logprobs": None,
                "finish_reason": self.finish_reason,
            }
            for index in range(self.n)
        ]
        return self.completion_object("text_completion", choices, usage=self.usage())

    def chunk(self, index: int, text: str, finish_reason: str | None = None) -> dict[str, Any]:
        choice: dict[str, Any] = {
            "text": text,
            "index": index,
            "logprobs": None,
            "finish_reason": finish_reason,
        }
        if "azure" in self.faults:
            choice["content_filter_results"] = _FILTER_SAFE if text else {}
        return self.chunk_of("text_completion", choice)

    def content_event(self, text: str) -> dict[str, Any]:
        return self.chunk(0, text)

    def events(self) -> Iterator[_Step]:
        config = self.config
        if config.first_delay:
            yield _Pause(config.first_delay)
        if "azure" in self.faults:
            yield self.azure_prompt_filter()
        if (
            yield from self.token_steps(
                lambda index, piece: self.chunk(index, self.content_text(piece))
            )
        ):
            return
        for index in range(self.n):
            yield self.chunk(index, "", self.finish_reason)
        if self.include_usage:
            yield {**self.chunk(0, ""), "choices": [], "usage": self.usage()}
        if "no_done" not in self.faults:
            yield b"[DONE]"
