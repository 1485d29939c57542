"""The relay alone, as the whole ASGI app, for tests/test_load.py (``uvicorn load_app:app``).

The upstream is the test process's simulator (``STREAMRELAY_UPSTREAM``);
``STREAMRELAY_TEST_SEND_TIMEOUT`` (seconds) tunes the relay. The file
descriptor limit is raised to the hard limit so that a thousand streams (a
client socket and an upstream socket each) fit.
"""

from __future__ import annotations

import os
import resource

from streamrelay import StreamRelay, StreamSettings, Upstream

_soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if _soft < _hard:
    resource.setrlimit(resource.RLIMIT_NOFILE, (_hard, _hard))

app = StreamRelay(
    Upstream(os.environ["STREAMRELAY_UPSTREAM"], api_key="sk-load-test"),
    stream=StreamSettings(
        heartbeat=None,
        send_timeout=float(os.environ.get("STREAMRELAY_TEST_SEND_TIMEOUT", "30")),
    ),
)
