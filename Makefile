# Every target sets up what it needs from a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench
DEMO_STAMP := $(VENV)/.installed-demo
# The npm clients the tests drive (openai-node, the AI SDK, eventsource-parser,
# fetch-event-source), exactly as js/package-lock.json pins them.
NODE_STAMP := js/node_modules/.installed

.PHONY: demo test test-fast test-real lint bench bench-quick setup system-deps node-deps clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# (the distribution was once named streamrelay: an old editable install would register
	# the pytest plugin twice)
	$(BIN)/python -m pip uninstall -q -y streamrelay 2>/dev/null || true
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

# The demo needs only the package itself (Starlette, httpx, anyio, uvicorn): a fresh
# machine runs it in seconds, without the test and lint tools.
$(DEMO_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip uninstall -q -y streamrelay 2>/dev/null || true
	$(BIN)/python -m pip install -q -e .
	touch $(DEMO_STAMP)

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	touch $(BENCH_STAMP)

setup: $(STAMP)

$(NODE_STAMP): js/package.json js/package-lock.json
	npm ci --prefix js --no-audit --no-fund --loglevel=error
	touch $(NODE_STAMP)

## Install the npm clients of tests/test_clients_node.py and test_clients_browser.py, when
## node and npm are there (without them those tests skip, and fail under CI=true).
node-deps:
	@if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then \
		$(MAKE) -s --no-print-directory $(NODE_STAMP); \
	else echo "node/npm not found: the npm client tests will skip"; fi

## Run the demo: the relay at http://127.0.0.1:8000/v1 on the embedded simulator (no key, no network).
demo: $(DEMO_STAMP)
	$(BIN)/streamrelay demo

## Install the real components the tests drive (nginx, chromium) where we may.
system-deps:
	bash scripts/install-system-deps.sh

## Run the whole test suite (unit, real-server, real-component and JS tests).
test: setup system-deps node-deps
	$(BIN)/python -m pytest
	@if command -v node >/dev/null; then node --test js/test/; else echo "node not found: JS client tests skipped"; fi

## The fast tier: the sans-I/O core and the engine without sockets, in seconds.
test-fast: setup
	$(BIN)/python -m pytest tests/unit -q

## The real-component tier alone: nginx, Chromium, fresh virtualenvs.
test-real: setup system-deps node-deps
	$(BIN)/python -m pytest -m real

lint: setup
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/mypy

## Benchmarks against peers and the raw-socket floor; see docs/performance.md.
bench: $(BENCH_STAMP)
	$(BIN)/python -m bench

bench-quick: $(BENCH_STAMP)
	$(BIN)/python -m bench --quick

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
