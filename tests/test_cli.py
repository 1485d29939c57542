"""The ``streamrelay`` command line (``demo`` and ``serve``), run as the real console script.

Every test starts ``.venv/bin/streamrelay`` in a subprocess on a free local port,
with an environment cleared of keys, upstreams and proxies. Where a test needs a
"real" upstream it runs a :class:`~streamrelay.testing.Simulator` in this process,
which records each request it receives. Subprocesses always end (SIGTERM, then
SIGKILL to their whole session), so a failing test leaves nothing running.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

import streamrelay.cli
from streamrelay.testing import ServerThread, Simulator

STREAMRELAY = str(Path(sys.executable).parent / "streamrelay")
MESSAGES = [{"role": "user", "content": "Hello"}]
_SCRUBBED = {
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "STREAMRELAY_UPSTREAM",
    "FORWARDED_ALLOW_IPS",
    "STREAMRELAY_CLI_SERVE",
    "STREAMRELAY_CLI_API_KEY",
}
CLEAN_ENV = {
    k: v
    for k, v in os.environ.items()
    if k.upper() not in _SCRUBBED and not k.lower().endswith("_proxy")
}
_counter = itertools.count()


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[Simulator, str]]:
    """A simulator in this process, as the "real" upstream: (simulator, base URL ending in /v1)."""
    simulator = Simulator(delay=0.0)
    with ServerThread(simulator, timeout_graceful_shutdown=0.2) as server:
        yield simulator, server.url + "/v1"


@pytest.fixture
def sim(upstream: tuple[Simulator, str]) -> Simulator:
    upstream[0].reset()
    return upstream[0]


@pytest.fixture
def base_url(upstream: tuple[Simulator, str]) -> str:
    return upstream[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@dataclass
class Running:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_output(self, text: str, count: int = 1, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while (output := self.output()).count(text) < count:
            assert self.process.poll() is None, f"exited {self.process.returncode}:\n{output}"
            assert time.monotonic() < deadline, f"{text!r} x{count} not seen in:\n{output}"
            time.sleep(0.05)
        return output


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)  # its workers too, whatever happened
    process.wait(10)


@contextlib.contextmanager
def streamrelay_cli(
    tmp_path: Path, *argv: str, env: dict[str, str] | None = None
) -> Iterator[Running]:
    """``streamrelay <argv> --port <free>``, running until the block ends; its stdout and
    stderr go to one log file (``Running.output()``)."""
    port = free_port()
    log = tmp_path / f"streamrelay-{next(_counter)}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [STREAMRELAY, *argv, "--port", str(port)],
            env={**CLEAN_ENV, **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    running = Running(process, port, log)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert process.poll() is None, running.output()
                assert time.monotonic() < deadline, f"did not start:\n{running.output()}"
                time.sleep(0.05)
        yield running
    finally:
        _stop(process)


def run_cli(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``streamrelay <argv>`` to completion (it must not serve)."""
    try:
        return subprocess.run(
            [STREAMRELAY, *argv],
            env={**CLEAN_ENV, **(env or {})},
            capture_output=True,
            text=True,
            timeout=20,
            start_new_session=True,
        )
    except subprocess.TimeoutExpired as exc:  # it served: the mistake was not caught
        pytest.fail(f"streamrelay {' '.join(argv)} did not exit: {exc.stderr!r}")


def client() -> httpx.Client:
    return httpx.Client(trust_env=False, timeout=20)


def chat(url: str, body: dict[str, Any], fmt: str = "text") -> httpx.Response:
    with client() as http:
        return http.post(f"{url}/chat/completions?format={fmt}", json=body)


def page_model(page: str) -> str:
    match = re.search(r'<input id="model"[^>]*\bvalue="([^"]*)"', page)
    assert match, page[:2000]
    return match.group(1)


# Binding first ------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["serve", "demo"])
def test_a_busy_port_is_one_line_and_no_banner(command: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        local = ["--upstream", "http://127.0.0.1:9/v1"] if command == "serve" else []
        result = run_cli(command, "--port", str(port), *local)  # no missing-key warning
    assert result.returncode in (1, 2), result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("streamrelay: error:"), lines
    assert "already in use" in lines[0] and "--port" in lines[0] and str(port) in lines[0]
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_port_zero_binds_a_free_port_and_the_banner_names_it(tmp_path: Path) -> None:
    log = tmp_path / "out.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [STREAMRELAY, "demo", "--simulator", "--port", "0", "--delay", "0"],
            env=CLEAN_ENV,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 20
        while not (found := re.search(r"chat page:  http://127\.0\.0\.1:(\d+)/", log.read_text())):
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        url = f"http://127.0.0.1:{found.group(1)}"
        answer = chat(url + "/v1", {"model": "sim-1", "messages": MESSAGES})
        assert answer.status_code == 200 and answer.text == Simulator().expected_text(
            {"messages": MESSAGES}
        )
    finally:
        _stop(process)


# Configuration mistakes ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "env", "says"),
    [
        (["serve", "--upstream", "ftp://x"], {}, "ftp://x"),
        (["serve", "--heartbeat", "-1"], {}, "heartbeat"),
        (["serve", "--api-key-env", "STREAMRELAY_TEST_NO_SUCH_KEY"], {}, "not set"),
        (["serve", "--root-path", "api"], {}, "--root-path"),
        (["serve", "--graceful-timeout", "-1"], {}, "--graceful-timeout"),
        (["serve", "--workers", "0"], {}, "--workers"),
        (["demo"], {"STREAMRELAY_UPSTREAM": "ftp://y"}, "ftp://y"),
        (["demo", "--simulator", "--delay", "-1"], {}, "delay"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_a_configuration_mistake_is_one_line(
    argv: list[str], env: dict[str, str], says: str
) -> None:
    upstream = (
        [] if "--upstream" in argv or argv[0] == "demo" else ["--upstream", "http://127.0.0.1:9/v1"]
    )
    result = run_cli(*argv, *upstream, "--port", str(free_port()), env=env)
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert errors == [errors[0]] and errors[0].startswith("streamrelay: error:"), result.stderr
    assert says in errors[0]
    assert "relaying" not in result.stderr and result.stdout == ""


def test_a_bad_format_is_an_argparse_error() -> None:
    result = run_cli("serve", "--format", "xml")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("streamrelay serve: error:")


# demo ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "env"),
    [
        ([], {}),
        (
            ["--simulator"],
            {"OPENAI_API_KEY": "sk-test", "STREAMRELAY_UPSTREAM": "http://x.invalid/v1"},
        ),
    ],
    ids=["nothing set", "--simulator"],
)
def test_demo_streams_from_the_embedded_simulator(
    tmp_path: Path, argv: list[str], env: dict[str, str]
) -> None:
    with (
        streamrelay_cli(tmp_path, "demo", *argv, "--delay", "0", env=env) as demo,
        client() as http,
    ):
        page = http.get(demo.url + "/")
        model = page_model(page.text)
        body = {"model": model, "messages": MESSAGES}
        answer = http.post(demo.url + "/v1/chat/completions?format=text", json=body)
    assert page.status_code == 200 and "<html" in page.text.lower()
    assert model == "sim-1"
    assert "the embedded simulator" in page.text
    assert answer.status_code == 200, answer.text
    assert answer.text == Simulator().expected_text(body)
    assert "upstream:   the embedded simulator" in demo.output()


def test_demo_with_a_key_asks_a_real_upstream_for_a_real_model(
    tmp_path: Path, sim: Simulator, base_url: str
) -> None:
    env = {"OPENAI_API_KEY": "sk-demo-key-123", "STREAMRELAY_UPSTREAM": base_url}
    with streamrelay_cli(tmp_path, "demo", env=env) as demo, client() as http:
        page = http.get(demo.url + "/")
        model = page_model(page.text)
        body = {"model": model, "messages": MESSAGES}
        answer = http.post(demo.url + "/v1/chat/completions?format=ndjson", json=body)
        output = demo.output()
    assert model == "gpt-4o-mini"
    assert "127.0.0.1:" in page.text  # the page names the upstream's host
    assert answer.status_code == 200, answer.text
    events = [json.loads(line) for line in answer.text.splitlines()]
    assert events[-1] == {"type": "done", "seq": len(events)}, events[-3:]
    assert answer.headers["x-stream-id"]  # resumable: the demo's relay has a store
    text = "".join(e["text"] for e in events if e["type"] == "delta")
    assert text == sim.expected_text(body)
    recorded = sim.requests[-1]
    assert recorded.json()["model"] == "gpt-4o-mini"
    assert recorded.headers["authorization"] == "Bearer sk-demo-key-123"
    assert f"upstream:   {base_url}" in output and "sk-demo-key-123" not in output
    assert "gpt-4o-mini" in output


@pytest.mark.parametrize("model", [None, "llama3.2"])
def test_demo_honours_a_keyless_upstream(
    tmp_path: Path, sim: Simulator, base_url: str, model: str | None
) -> None:
    env = {"STREAMRELAY_UPSTREAM": base_url}  # a local server such as Ollama: no key
    argv = ["demo"] if model is None else ["demo", "--model", model]
    with streamrelay_cli(tmp_path, *argv, env=env) as demo, client() as http:
        page_default = page_model(http.get(demo.url + "/").text)
        body = {"model": page_default, "messages": MESSAGES}
        answer = http.post(demo.url + "/v1/chat/completions?format=text", json=body)
        output = demo.output()
    assert page_default == (model or "gpt-4o-mini")
    assert answer.status_code == 200, answer.text
    assert answer.text == sim.expected_text(body)
    assert len(sim.requests) == 1, "the demo relayed to its embedded simulator instead"
    assert sim.requests[0].json()["model"] == page_default
    assert sim.requests[0].headers.get("authorization") is None
    assert f"upstream:   {base_url} (no key)" in output


# serve --------------------------------------------------------------------------------------


def test_serve_relays_to_the_given_upstream(tmp_path: Path, sim: Simulator, base_url: str) -> None:
    argv = ["serve", "--upstream", base_url, "--mount", "/ai", "--heartbeat", "0"]
    with streamrelay_cli(tmp_path, *argv) as serve:
        answer = chat(serve.url + "/ai", {"messages": MESSAGES})
        output = serve.output()
    assert answer.status_code == 200, answer.text
    assert answer.text == sim.expected_text({"messages": MESSAGES})
    assert sim.requests[-1].path == "/v1/chat/completions"
    assert f"upstream: {base_url}" in output
    assert "heartbeat: off" in output


@pytest.mark.parametrize(
    ("option", "grace"), [(["--graceful-timeout", "1"], 1.0), ([], 5.0)], ids=["1s", "default"]
)
def test_ctrl_c_ends_open_streams_with_a_shutdown_event_promptly(
    tmp_path: Path, sim: Simulator, base_url: str, option: list[str], grace: float
) -> None:
    argv = ["serve", "--upstream", base_url, *option, "--heartbeat", "0.2"]
    body = {"messages": MESSAGES, "simulator": {"fault": "stall", "after": 1}}
    events: list[dict[str, Any]] = []
    with streamrelay_cli(tmp_path, *argv) as serve, client() as http:
        url = serve.url + "/v1/chat/completions?format=ndjson"
        with http.stream("POST", url, json=body) as response:
            assert response.status_code == 200
            signalled = 0.0
            for line in response.iter_lines():  # a ping every 0.2 s while stalled
                if not line:
                    continue
                events.append(json.loads(line))
                if events[-1]["type"] == "delta" and not signalled:
                    signalled = time.monotonic()
                    os.kill(serve.process.pid, signal.SIGINT)  # Ctrl-C
                if signalled and time.monotonic() - signalled > grace + 10:
                    break  # it hangs
        try:
            serve.process.wait(max(1.0, signalled + grace + 10 - time.monotonic()))
        except subprocess.TimeoutExpired:
            pytest.fail(f"the server did not exit after SIGINT:\n{serve.output()}")
        took = time.monotonic() - signalled
        output = serve.output()
    assert signalled, events
    assert grace - 0.1 < took < grace + 4, (took, output)
    assert events[-1]["type"] == "error", events[-3:]
    assert events[-1]["code"] == "shutdown", events[-1]
    assert "Traceback" not in output and "Exception in ASGI application" not in output
    sim.stats.wait(cancelled=1, timeout=10)  # the upstream generation was stopped


def test_serve_reads_the_key_from_the_named_variable_and_never_prints_it(
    tmp_path: Path, sim: Simulator, base_url: str
) -> None:
    env = {"MY_RELAY_KEY": "sk-from-env-456", "OPENAI_API_KEY": "sk-not-this-one"}
    argv = ["serve", "--upstream", base_url, "--api-key-env", "MY_RELAY_KEY"]
    with streamrelay_cli(tmp_path, *argv, env=env) as serve, client() as http:
        answer = http.post(
            serve.url + "/v1/chat/completions?format=text",
            json={"messages": MESSAGES},
            headers={"x-forwarded-for": "203.0.113.7"},
        )
        output = serve.wait_for_output("POST /v1/chat/completions")
    assert answer.status_code == 200, answer.text
    assert sim.requests[-1].headers["authorization"] == "Bearer sk-from-env-456"
    assert "sk-from-env-456" not in output and "sk-not-this-one" not in output
    assert "API key: from $MY_RELAY_KEY" in output
    # Proxy headers are off by default: the access log shows the real peer.
    access = [line for line in output.splitlines() if "POST /v1/chat/completions" in line]
    assert access and "127.0.0.1:" in access[0] and "203.0.113.7" not in output, output


def test_root_path_and_proxy_headers(tmp_path: Path, sim: Simulator, base_url: str) -> None:
    argv = ["serve", "--upstream", base_url, "--root-path", "/api/", "--proxy-headers"]
    with streamrelay_cli(tmp_path, *argv) as serve, client() as http:
        # A proxy that serves the relay at /api strips the prefix and says who asked.
        answer = http.post(
            serve.url + "/v1/chat/completions?format=text",
            json={"messages": MESSAGES},
            headers={"x-forwarded-for": "203.0.113.7", "x-forwarded-proto": "https"},
        )
        output = serve.wait_for_output('"POST /api/v1/chat/completions')
    assert answer.status_code == 200, answer.text
    assert answer.text == sim.expected_text({"messages": MESSAGES})
    access = [line for line in output.splitlines() if "POST /api/v1/chat/completions" in line]
    assert access and "203.0.113.7:" in access[0], output
    assert "behind a proxy at: /api/v1/chat/completions" in output
    assert "proxy headers: trusted from 127.0.0.1" in output


def _children(pid: int) -> dict[str, str]:
    """``pid``'s child processes: their command lines by process id."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ")
                found[stat.parent.name] = cmdline.decode(errors="replace")
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_workers(tmp_path: Path, sim: Simulator, base_url: str) -> None:
    argv = ["serve", "--upstream", base_url, "--workers", "2", "--api-key", "sk-literal-789"]
    with streamrelay_cli(tmp_path, *argv) as serve:
        output = serve.wait_for_output("Application startup complete", count=2, timeout=40)
        children = _children(serve.process.pid)
        answers = [chat(serve.url + "/v1", {"messages": MESSAGES}) for _ in range(4)]
        output = serve.output()
    workers = {pid for pid, cmd in children.items() if "spawn_main" in cmd}
    assert len(workers) == 2, children
    # Each worker is a uvicorn server of its own: they log their process ids.
    assert set(re.findall(r"Started server process \[(\d+)\]", output)) == workers, output
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    assert all(a.text == sim.expected_text({"messages": MESSAGES}) for a in answers)
    assert sim.requests[-1].headers["authorization"] == "Bearer sk-literal-789"
    assert "sk-literal-789" not in output
    assert "workers: 2" in output and "API key: given with --api-key" in output


# --help -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "example"),
    [
        ([], "streamrelay demo"),
        (["demo"], "streamrelay demo --model"),
        (["serve"], "streamrelay serve --upstream"),
        (["simulate"], "streamrelay simulate --fault mid_error"),
    ],
    ids=["streamrelay", "demo", "serve", "simulate"],
)
def test_help_shows_examples(
    argv: list[str], example: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        streamrelay.cli.main([*argv, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "examples:" in text and example in text, text


def test_help_of_the_console_script() -> None:
    result = run_cli("serve", "--help")
    assert result.returncode == 0
    for option in (
        "--api-key-env",
        "--workers",
        "--root-path",
        "--proxy-headers",
        "--graceful-timeout",
    ):
        assert option in result.stdout
    assert "examples:" in result.stdout
