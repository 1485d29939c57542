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

.PHONY: demo test test-fast test-real test-compiled test-compiled-tier compiled lint bench bench-quick setup system-deps node-deps clean

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

## Run the whole test suite (unit, real-server, real-component and JS tests), and its
## compiled tier against the mypyc build.
test: setup system-deps node-deps
	$(BIN)/python -m pytest
	@$(MAKE) -s --no-print-directory test-compiled-tier
	@if command -v node >/dev/null; then node --test js/test/; else echo "node not found: JS client tests skipped"; fi

## The fast tier: the sans-I/O core and the engine without sockets, in seconds.
test-fast: setup
	$(BIN)/python -m pytest tests/unit -q

# The compiled build: the sans-I/O hot path compiled by mypyc, from a copy of the tree,
# into build/compiled/site (scripts/build-compiled.sh). Rebuilt when a source changes.
COMPILED := build/compiled/.built
COMPILED_RUN := STREAMRELAY_TEST_COMPILED=1 PYTHONPATH=build/compiled/site $(BIN)/python -m pytest
# What `make test` runs against the compiled build: the sans-I/O core and the engine
# (tests/unit: every split of every input, the hypothesis tests), and every format
# streamed through a real server to real clients.
COMPILED_TESTS := tests/unit tests/test_relay_formats.py tests/test_relay_streaming.py \
	tests/test_relay_faults.py tests/test_openai_sdk.py

$(COMPILED): $(STAMP) pyproject.toml scripts/build-compiled.sh $(shell find src -name '*.py')
	bash scripts/build-compiled.sh $(BIN)/python

## Build the compiled (mypyc) package into build/compiled/site; needs a C compiler.
compiled: $(COMPILED)

## The whole suite against the compiled build.
test-compiled: $(COMPILED) system-deps node-deps
	$(COMPILED_RUN)

# The compiled tier of `make test`. Without a C compiler it is skipped, except in CI.
test-compiled-tier: setup
	@status=0; bash scripts/build-compiled.sh $(BIN)/python --check || status=$$?; \
	if [ $$status = 3 ]; then \
		if [ "$$CI" = true ]; then echo "CI=true: the compiled build cannot be made" >&2; exit 1; fi; \
		echo "the compiled tier is skipped"; exit 0; \
	elif [ $$status != 0 ]; then exit $$status; fi; \
	$(MAKE) -s --no-print-directory $(COMPILED) && $(COMPILED_RUN) -q $(COMPILED_TESTS)

## The real-component tier alone: nginx, Chromium, fresh virtualenvs.
test-real: setup system-deps node-deps
	$(BIN)/python -m pytest -m real

lint: setup
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/mypy

## Benchmarks against peers and the raw-socket floor; see docs/performance.md.
# Both first make the compiled build for its row, where a C compiler is.
bench: $(BENCH_STAMP)
	@$(MAKE) -s --no-print-directory compiled || echo "no compiled build: its row is skipped"
	$(BIN)/python -m bench

bench-quick: $(BENCH_STAMP)
	@$(MAKE) -s --no-print-directory compiled || echo "no compiled build: its row is skipped"
	$(BIN)/python -m bench --quick

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
