"""The simulator's deterministic content: generated words, reasoning, refusals, tool arguments.

The same request (conversation, seed, index) always gets the same tokens, so a test
can compute what a stream will carry before it runs. The conversation is a chat
request's ``messages``, a Responses request's ``input`` as messages (so that
``input=[{"role": "user", "content": "Hi"}]`` gets what the same chat gets), or a
legacy completion's ``prompt``. Some words are multi-byte
in UTF-8 so that every default stream exercises a decoder's split characters.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Mapping

from .config import SimulatorConfig

# Some words are multi-byte in UTF-8 so that every default stream exercises decoders.
_VOCABULARY = (
    "lorem",
    "ipsum",
    "dolor",
    "sit",
    "amet",
    "consectetur",
    "adipiscing",
    "elit",
    "sed",
    "do",
    "eiusmod",
    "tempor",
    "incididunt",
    "ut",
    "labore",
    "et",
    "dolore",
    "magna",
    "aliqua",
    "enim",
    "ad",
    "minim",
    "veniam",
    "quis",
    "nostrud",
    "exercitation",
    "ullamco",
    "laboris",
    "nisi",
    "aliquip",
    "ex",
    "ea",
    "commodo",
    "consequat",
    "duis",
    "aute",
    "irure",
    "in",
    "reprehenderit",
    "voluptate",
    "velit",
    "esse",
    "cillum",
    "eu",
    "fugiat",
    "nulla",
    "pariatur",
    "excepteur",
    "sint",
    "occaecat",
    "cupidatat",
    "non",
    "proident",
    "sunt",
    "culpa",
    "qui",
    "officia",
    "deserunt",
    "mollit",
    "anim",
    "id",
    "est",
    "laborum",
    "café",
    "naïve",
    "über",
    "façade",
    "smörgåsbord",
    "東京",
    "🚀",
)
_REFUSAL = "I'm sorry, but I can't help with that."
_CITIES = ("Paris", "Tokyo", "Lima", "Oslo", "Nairobi", "Montréal", "Zürich", "São Paulo")
_TOOL_NAMES = ("get_weather", "get_time", "search")


def _digest(*parts: object) -> str:
    material = json.dumps(parts, sort_keys=True, default=repr, ensure_ascii=True)
    return hashlib.sha256(material.encode()).hexdigest()


def _prompt_text(messages: object) -> str:
    if isinstance(messages, str):
        return messages
    if not isinstance(messages, list):
        return ""
    texts: list[str] = []
    for message in messages:
        if isinstance(message, str):  # a legacy completion's list of prompts
            texts.append(message)
            continue
        content = message.get("content") if isinstance(message, Mapping) else None
        if content is None and isinstance(message, Mapping):
            content = message.get("output")  # a Responses function_call_output item
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts.extend(
                part["text"]
                for part in content
                if isinstance(part, Mapping) and isinstance(part.get("text"), str)
            )
    return "\n".join(texts)


def _generate(config: SimulatorConfig, messages: object, index: int) -> list[str]:
    rng = random.Random(_digest("text", config.seed, messages, index))
    return [" " + rng.choice(_VOCABULARY) for _ in range(config.tokens)]


def _generate_reasoning(config: SimulatorConfig, messages: object, index: int) -> list[str]:
    if config.reasoning_text is not None:
        return _cut(config, config.reasoning_text)
    rng = random.Random(_digest("reasoning", config.seed, messages, index))
    words = [rng.choice(_VOCABULARY) for _ in range(config.reasoning_tokens)]
    return [(" " if position else "") + word for position, word in enumerate(words)]


def _cut(config: SimulatorConfig, text: str) -> list[str]:
    size = config.chunk_size
    return [text[i : i + size] for i in range(0, len(text), size)]
