"""The pytest plugin (``streamrelay.testing.plugin``, the ``pytest11`` entry point).

The fixtures are exercised in seconds through ``pytester`` (a pytest run inside
this one), and once for real from a fresh virtualenv with the package installed
from this checkout, the way a user's test suite gets them.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
import venv
from pathlib import Path
from urllib.parse import urlsplit

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[1]


def run(pytester: pytest.Pytester, source: str, *args: str) -> pytest.RunResult:
    pytester.makepyfile(textwrap.dedent(source))
    return pytester.runpytest_inprocess("--strict-markers", "-p", "no:cacheprovider", *args)


# The fixtures, in process -------------------------------------------------------------------


def test_simulator_fixture_serves_openai_and_starts_clean(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        import openai
        from streamrelay.testing import Simulator

        BODY = {"model": "sim-1", "messages": [{"role": "user", "content": "Hi"}]}

        def test_streams(streamrelay_simulator, streamrelay_simulator_app):
            assert isinstance(streamrelay_simulator, str)
            assert streamrelay_simulator.startswith("http://127.0.0.1:")
            assert streamrelay_simulator.endswith("/v1")
            assert isinstance(streamrelay_simulator_app, Simulator)
            client = openai.OpenAI(base_url=streamrelay_simulator, api_key="x")
            stream = client.chat.completions.create(**BODY, stream=True)
            text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
            assert text == streamrelay_simulator_app.expected_text(BODY)
            assert streamrelay_simulator_app.stats.wait(finished=1)
            assert streamrelay_simulator_app.requests[-1].authorization == "Bearer x"

        def test_next_test_starts_clean(streamrelay_simulator_app):
            assert streamrelay_simulator_app.requests == []
            assert streamrelay_simulator_app.stats.started == 0
            assert streamrelay_simulator_app.config.delay == 0  # fast by default

        URLS = []

        def test_one_server(streamrelay_simulator):
            URLS.append(streamrelay_simulator)

        def test_for_the_session(streamrelay_simulator):
            assert URLS == [streamrelay_simulator]
        """,
    )
    result.assert_outcomes(passed=4)


def test_simulator_marker_configures_one_test(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        import httpx
        import openai
        import pytest

        pytestmark = pytest.mark.streamrelay_simulator(tokens=3, model="module-model")
        BODY = {"messages": [{"role": "user", "content": "Hi"}], "stream": True}

        @pytest.mark.streamrelay_simulator(fault="mid_error", after=2)
        def test_marker(streamrelay_simulator, streamrelay_simulator_app):
            config = streamrelay_simulator_app.config
            assert (config.tokens, config.model, config.faults) == (3, "module-model", ("mid_error",))
            client = openai.OpenAI(base_url=streamrelay_simulator, api_key="x")
            stream = client.chat.completions.create(model="sim-1", messages=BODY["messages"], stream=True)
            with pytest.raises(openai.APIError):
                for _ in stream:
                    pass

        @pytest.mark.streamrelay_simulator(tokens=5)
        def test_closest_wins(streamrelay_simulator):
            models = httpx.get(streamrelay_simulator + "/models").json()
            assert [m["id"] for m in models["data"]][0] == "module-model"
            answer = httpx.post(streamrelay_simulator + "/chat/completions", json=BODY)
            deltas = [line for line in answer.text.splitlines() if '"content":" ' in line]
            assert len(deltas) == 5

        def test_module_marker_only(streamrelay_simulator_app):
            assert streamrelay_simulator_app.config.tokens == 3
            assert streamrelay_simulator_app.config.faults == ()

        @pytest.mark.streamrelay_simulator(nonsense=1)
        def test_unknown_option(streamrelay_simulator):
            pass
        """,
        "-rE",
    )
    result.assert_outcomes(passed=3, errors=1)
    result.stdout.fnmatch_lines(["*unknown simulator option(s) nonsense*"])


def test_relay_fixture_relays_to_the_simulator(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        import httpx
        import openai
        import pytest
        from streamrelay.testing.plugin import RELAY_API_KEY

        BODY = {"model": "sim-1", "messages": [{"role": "user", "content": "Hi"}]}

        @pytest.mark.streamrelay_simulator(tokens=4)
        def test_relay(streamrelay_relay, streamrelay_simulator, streamrelay_simulator_app):
            assert isinstance(streamrelay_relay, str) and streamrelay_relay.endswith("/v1")
            assert streamrelay_relay != streamrelay_simulator
            client = openai.OpenAI(base_url=streamrelay_relay, api_key="the client's")
            stream = client.chat.completions.create(**BODY, stream=True)
            text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
            assert text == streamrelay_simulator_app.expected_text(BODY)
            assert len(text.split()) == 4
            (upstream_request,) = streamrelay_simulator_app.requests
            assert upstream_request.authorization == f"Bearer {RELAY_API_KEY}"

        @pytest.mark.streamrelay_relay(allowed_models=["another-model"])
        def test_relay_marker(streamrelay_relay, streamrelay_simulator_app):
            answer = httpx.post(streamrelay_relay + "/chat/completions", json=BODY)
            assert answer.status_code == 403
            assert streamrelay_simulator_app.requests == []

        def test_session_relay_again(streamrelay_relay):
            answer = httpx.post(streamrelay_relay + "/chat/completions?format=text", json=BODY)
            assert answer.status_code == 200 and answer.text.strip()

        @pytest.mark.streamrelay_relay(upstream="http://elsewhere/v1")
        def test_relay_marker_cannot_move_the_upstream(streamrelay_relay):
            pass
        """,
        "-rE",
    )
    result.assert_outcomes(passed=3, errors=1)
    result.stdout.fnmatch_lines(["*cannot set upstream*"])


def test_markers_are_registered(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_inprocess("--markers")
    result.stdout.fnmatch_lines(
        [
            "@pytest.mark.streamrelay_simulator(**config)*",
            "@pytest.mark.streamrelay_relay(**options)*",
        ]
    )


def test_loading_the_plugin_loads_no_server() -> None:
    """Every pytest run of every user with streamrelay installed imports the plugin."""
    heavy = ("uvicorn", "starlette", "anyio", "httpx", "streamrelay.testing.simulator")
    code = (
        "import sys, streamrelay.testing.plugin, streamrelay.testing; "
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


# From a fresh virtualenv --------------------------------------------------------------------

USER_TESTS = """\
import openai
chat = lambda url: "".join(c.choices[0].delta.content or "" for c in openai.OpenAI(base_url=url, api_key="x").chat.completions.create(model="sim-1", messages=[{"role": "user", "content": "Hi"}], stream=True) if c.choices)
def test_simulator(streamrelay_simulator): assert chat(streamrelay_simulator).strip()
def test_relay(streamrelay_relay): assert chat(streamrelay_relay).strip()
"""


def _index_reachable() -> bool:
    index = os.environ.get("PIP_INDEX_URL") or "https://pypi.org/simple"
    parts = urlsplit(index)
    if parts.scheme == "file":
        return True
    try:
        port = parts.port or (80 if parts.scheme == "http" else 443)
        with socket.create_connection((parts.hostname or "pypi.org", port), timeout=5):
            return True
    except OSError:
        return False


@pytest.mark.real
def test_plugin_works_from_a_fresh_virtualenv(tmp_path: Path) -> None:
    """``pip install streamrelay-asgi`` (from this checkout) into a new venv; its pytest then has the fixtures."""
    assert not tmp_path.resolve().is_relative_to(ROOT)
    started = time.monotonic()
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("PYTEST_", "PYTHON", "VIRTUAL_ENV", "COV_"))
    }
    home = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(home)
    python = home / ("Scripts" if os.name == "nt" else "bin") / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", str(ROOT), "pytest", "openai"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=tmp_path,
    )
    if install.returncode != 0:
        if os.environ.get("CI") != "true" and not _index_reachable():
            pytest.skip(f"no network to the package index: {install.stderr[-500:]}")
        pytest.fail(f"pip install failed:\n{install.stdout}\n{install.stderr}")

    where = subprocess.run(
        [str(python), "-c", "import streamrelay; print(streamrelay.__file__)"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
        check=True,
    )
    assert Path(where.stdout.strip()).resolve().is_relative_to(home.resolve())

    project = tmp_path / "project"
    project.mkdir()
    (project / "test_with_streamrelay.py").write_text(USER_TESTS)
    result = subprocess.run(
        [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=project,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout, result.stdout
    assert time.monotonic() - started < 300
