"""Helpers shared by the benchmark scripts: a temporary AGENT_HOME and the machine's description."""

from __future__ import annotations

import os
import platform
import tempfile
from pathlib import Path


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}, {platform.system()}"


def temporary_home() -> Path:
    return Path(tempfile.mkdtemp(prefix="agentstage-bench-"))


def cpu_seconds(pid: int) -> float:
    """User + system CPU of one process so far, from /proc (Linux; 0 elsewhere or once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
