"""The ``openai`` format's ``hide_usage``: the usage-only chunk the relay asked for on its
own account is left out; everything else passes through unchanged."""

from __future__ import annotations

from streamrelay.formats.openai import OpenAIEncoder
from streamrelay.transcoder import Transcoder

CONTENT = b'data: {"id":"c","choices":[{"index":0,"delta":{"content":"Hi"}}],"usage":null}\n\n'
USAGE_ONLY = (
    b'data: {"id":"c","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1,'
    b'"total_tokens":4}}\n\n'
)
FINAL_WITH_USAGE = (
    b'data: {"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}\n\n'
)
DONE = b"data: [DONE]\n\n"


def relay(hide: bool, *reads: bytes) -> tuple[bytes, Transcoder]:
    encoder = OpenAIEncoder(now=0)
    if hide:
        encoder.hide_usage()
    t = Transcoder(encoder)
    return b"".join(t.feed_bytes(read) for read in reads) + t.end(), t


def test_the_usage_only_chunk_is_hidden_but_still_counted() -> None:
    shown, _ = relay(False, CONTENT, USAGE_ONLY, DONE)
    hidden, t = relay(True, CONTENT, USAGE_ONLY, DONE)
    assert shown == CONTENT + USAGE_ONLY + DONE
    assert hidden == CONTENT + DONE
    assert t.usage is not None and t.usage.total_tokens == 4  # the outcome still has it


def test_usage_on_a_chunk_with_choices_passes_through() -> None:
    out, t = relay(True, CONTENT, FINAL_WITH_USAGE, DONE)
    assert out == CONTENT + FINAL_WITH_USAGE + DONE
    assert t.usage is not None
