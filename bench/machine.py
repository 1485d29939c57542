"""A description of the machine and software a run used, for the report."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from importlib import metadata
from typing import Any

__all__ = ["describe"]

_PACKAGES = (
    "streamrelay-asgi",  # streamrelay's distribution
    "uvicorn",
    "uvloop",
    "httptools",
    "starlette",
    "httpx",
    "httpcore",
    "aiohttp",
    "openai",
    "sse-starlette",
    "httpx-sse",
    "orjson",
)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _lscpu() -> dict[str, str]:
    if shutil.which("lscpu") is None:
        return {}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    wanted = (
        "Model name",
        "CPU(s)",
        "Thread(s) per core",
        "Hypervisor vendor",
        "L2 cache",
        "L3 cache",
    )
    fields = {}
    for line in out.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in wanted:
            fields[key.strip()] = value.strip()
    return fields


def _memory_gib() -> float | None:
    try:
        import psutil

        return round(psutil.virtual_memory().total / 2**30, 1)
    except Exception:
        return None


def _versions() -> dict[str, str]:
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def describe() -> dict[str, Any]:
    """CPU, cores, memory, OS, Python and the relevant package versions."""
    return {
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "lscpu": _lscpu(),
        "memory_gib": _memory_gib(),
        "os": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "taskset": shutil.which("taskset") is not None,
        "load_average": [round(x, 2) for x in os.getloadavg()]
        if hasattr(os, "getloadavg")
        else None,
        "packages": _versions(),
    }
