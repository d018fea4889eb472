#!/usr/bin/env python3
"""Wall time of the CLI as a user feels it: ``agent --help`` (aim < 0.3 s; heavy modules load
lazily) and ``agent run "What is the capital of France?" --mode chat`` end to end with the
embedded model (aim < 2 s), each the median of several runs in a fresh process.

    python benchmarks/cli_latency.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import machine, temporary_home

AGENT = str(Path(sys.executable).parent / "agent")


def wall_time(args: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    # stdin closed: a piped stdin would become part of the question
    subprocess.run([AGENT, *args], env=env, capture_output=True, check=True, stdin=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    env = {**os.environ, "AGENT_HOME": str(temporary_home())}
    print(f"machine: {machine()}")
    wall_time(["--help"], env)  # warm the file cache
    wall_time(["run", "hi", "--mode", "chat"], env)  # create and migrate the store once
    floor = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        floor.append(time.perf_counter() - started)
    helps = [wall_time(["--help"], env) for _ in range(args.repeats)]
    runs = [
        wall_time(["run", "What is the capital of France?", "--mode", "chat"], env)
        for _ in range(args.repeats)
    ]
    print(f"python -c pass (the floor): median {statistics.median(floor):.3f} s")
    print(f"agent --help: median {statistics.median(helps):.3f} s (min {min(helps):.3f})")
    print(f"agent run ... --mode chat: median {statistics.median(runs):.3f} s (min {min(runs):.3f})")


if __name__ == "__main__":
    main()
