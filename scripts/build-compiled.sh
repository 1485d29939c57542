#!/usr/bin/env bash
# The compiled build: a wheel with the sans-I/O hot path compiled by mypyc (the `mypyc`
# build hook in pyproject.toml), unpacked into build/compiled/site for the tests and the
# benchmark to import from (PYTHONPATH=build/compiled/site).
#
# It builds from a copy of the tree, because hatch-mypyc writes its extension modules next
# to the sources: built in place, they would shadow the pure package of the editable
# install. Needs a C compiler and the Python headers; pip fetches hatch-mypyc and mypy
# into the isolated build environment. Exits 3 when this machine cannot compile.
# Usage: scripts/build-compiled.sh [PYTHON] [--check]  (--check: only whether it can)
set -euo pipefail
cd "$(dirname "$0")/.."
python="${1:-.venv/bin/python}"
out=build/compiled
if ! command -v cc >/dev/null 2>&1 && ! command -v gcc >/dev/null 2>&1; then
  echo "no C compiler (cc or gcc): the compiled build cannot be made here" >&2
  exit 3
fi
if ! "$python" -c 'import os, sysconfig, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'; then
  echo "no Python headers (Python.h) for $python: the compiled build cannot be made here" >&2
  exit 3
fi
if [ "${2:-}" = --check ]; then exit 0; fi
rm -rf "$out"
mkdir -p "$out/tree" "$out/dist"
cp -r pyproject.toml README.md LICENSE src "$out/tree/"
find "$out/tree" \( -name __pycache__ -o -name '*.so' \) -prune -exec rm -rf {} +
HATCH_BUILD_HOOK_ENABLE_MYPYC=true "$python" -m pip wheel -q --no-deps -w "$out/dist" "$out/tree"
"$python" -m pip install -q --no-deps --target "$out/site" "$out"/dist/*.whl
# Every module the hook lists must have come out compiled.
"$python" - "$out/site" <<'PY'
import pathlib, re, sys
site = pathlib.Path(sys.argv[1])
text = pathlib.Path("pyproject.toml").read_text()
hook = text[text.index("[tool.hatch.build.targets.wheel.hooks.mypyc]"):]
modules = re.findall(r'"(src/[^"]+\.py)"', hook[hook.index("include = ["):hook.index("]", hook.index("include = ["))])
missing = []
for source in modules:
    rel = pathlib.Path(source).relative_to("src")
    if not list((site / rel.parent).glob(rel.stem + ".*.so")) and not list((site / rel.parent).glob(rel.stem + ".*.pyd")):
        missing.append(source)
if missing:
    sys.exit(f"not compiled: {', '.join(missing)}")
print(f"compiled build: {len(modules)} modules in {site}")
PY
touch "$out/.built"
