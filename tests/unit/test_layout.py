"""The package layout's promises: the sans-I/O core imports nothing third-party,
``streamrelay`` re-exports lazily, and the documented import paths keep working."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

import streamrelay

CORE = [
    "streamrelay",
    "streamrelay.errors",
    "streamrelay.events",
    "streamrelay.sse",
    "streamrelay.openai",
    "streamrelay.formats",
    "streamrelay.transcoder",
    "streamrelay.token_template",
    "streamrelay.alarms",
    "streamrelay.negotiation",
    "streamrelay.config",
    "streamrelay.timing",
    "streamrelay.outcome",
    "streamrelay.upstream.http1",
]
"""Modules that must load with nothing outside the standard library (orjson aside)."""

THIRD_PARTY = ("starlette", "httpx", "anyio", "uvicorn", "aiohttp", "sniffio", "h11")


@pytest.mark.parametrize("module", CORE)
def test_the_core_imports_nothing_third_party(module: str) -> None:
    code = (
        f"import json, sys; import {module}; "
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    loaded = set(json.loads(out))
    assert not loaded & set(THIRD_PARTY), f"{module} pulls in {sorted(loaded & set(THIRD_PARTY))}"


def test_the_core_really_works_without_the_third_party_packages() -> None:
    """Not only unimported: the core runs with those packages made unimportable."""
    code = (
        f"BLOCKED = {THIRD_PARTY!r}\n"
        + """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
from streamrelay.formats import encoder_for
from streamrelay.transcoder import Transcoder
t = Transcoder(encoder_for("ndjson", now=0.0))
out = t.feed_bytes(b'data: {"id":"1","model":"m","choices":[{"index":0,"delta":{"content":"Hi"}}]}\\n\\n')
assert b'"text":"Hi"' in out, out
print("ok")
"""
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == "ok", result.stderr


@pytest.mark.parametrize("name", streamrelay.__all__)
def test_every_public_name_resolves(name: str) -> None:
    assert getattr(streamrelay, name) is not None


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'StreamRelais'"):
        streamrelay.StreamRelais  # noqa: B018


@pytest.mark.parametrize(
    ("module", "names"),
    [
        ("streamrelay", ["StreamRelay", "StreamRelayMiddleware", "relay_response", "Upstream"]),
        ("streamrelay", ["StreamSettings", "RequestLimits", "Outcome", "Ending"]),
        ("streamrelay.upstream", ["Upstream", "resolve_upstream", "DEFAULT_UPSTREAM"]),
        ("streamrelay.formats", ["FORMATS", "Encoder", "encoder_for", "register"]),
        ("streamrelay.testing", ["Simulator", "SimulatorConfig", "ServerThread", "run_simulator"]),
        ("streamrelay.dispatch", ["mount_asgi"]),
        ("streamrelay.pipeline", ["run_stream", "StreamAborted", "STREAM_HEADERS"]),
    ],
)
def test_documented_import_paths(module: str, names: list[str]) -> None:
    loaded = importlib.import_module(module)
    for name in names:
        assert hasattr(loaded, name), f"{module}.{name}"
