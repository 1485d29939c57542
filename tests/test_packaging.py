"""What a new user meets first: the distribution's name and metadata, and `make demo`."""

from __future__ import annotations

import re
import subprocess
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_distribution_name_is_ours() -> None:
    """``streamrelay`` on PyPI is another project (a WebSocket relay for HPC executors):
    ``pip install streamrelay`` would install it. Ours is ``streamrelay-asgi``."""
    dist = metadata.distribution("streamrelay-asgi")
    assert dist.metadata["Name"] == "streamrelay-asgi"
    assert dist.read_text("top_level.txt") in (None, "streamrelay\n")
    assert {ep.name for ep in dist.entry_points if ep.group == "console_scripts"} == {"streamrelay"}
    assert {ep.value for ep in dist.entry_points if ep.group == "pytest11"} == {
        "streamrelay.testing.plugin"
    }
    urls = dict(item.split(", ", 1) for item in dist.metadata.get_all("Project-URL") or [])
    assert {"Homepage", "Documentation", "Source", "Issues", "Changelog"} <= set(urls)
    # the extras refer to themselves by the new name, never the old one
    assert not any(re.match(r"streamrelay\[", dep) for dep in dist.requires or [])


def test_the_readme_installs_the_right_distribution() -> None:
    readme = (ROOT / "README.md").read_text()
    # the commands a reader copies (lines that start with it), not the prose warning
    installs = re.findall(r"^pip install ([\w\-\[\]'\.]+)", readme, re.MULTILINE)
    assert installs and all(name.startswith("streamrelay-asgi") for name in installs), installs
    assert (ROOT / "CHANGELOG.md").read_text().startswith("# Changelog")


def test_make_demo_installs_only_the_package(tmp_path: Path) -> None:
    """The first command a new user types must not install the test and lint tools."""
    plan = subprocess.run(
        ["make", "-n", "demo", f"VENV={tmp_path / 'venv'}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    installs = [line for line in plan.splitlines() if " pip install " in line]
    assert installs, plan
    assert all(line.rstrip().endswith("-e .") for line in installs), installs
    assert "[dev]" not in plan and "[test]" not in plan
