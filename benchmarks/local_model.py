#!/usr/bin/env python3
"""The embedded model: tokens/s of the ``local`` provider against llama-cpp-python called directly
on the same prompt and the same loaded model (aim: ratio >= 0.95), and the peak memory of a whole
``agent run`` process (aim: < 500 MB).

    python benchmarks/local_model.py [--tokens 200] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import machine, temporary_home

from agentstage.core.messages import Message
from agentstage.core.model import ModelRequest, TextDelta
from agentstage.providers.local import LocalModel, default_model_path, load_llama

PROMPT = [
    Message.system("You are a helpful assistant."),
    Message.user("Write a short story about a lighthouse keeper who finds a message in a bottle."),
]
PARAMS = {"temperature": 0.0, "seed": 7}


def direct(tokens: int) -> tuple[int, float]:
    llama, lock = load_llama(default_model_path(), 4096, 0)
    messages = [{"role": m.role, "content": m.content} for m in PROMPT]
    with lock:
        started = time.perf_counter()
        count = 0
        for chunk in llama.create_chat_completion(
            messages=messages, stream=True, max_tokens=tokens, **PARAMS
        ):
            if chunk["choices"][0].get("delta", {}).get("content"):
                count += 1
        return count, time.perf_counter() - started


async def through_provider(tokens: int) -> tuple[int, float]:
    model = LocalModel(params={**PARAMS, "max_tokens": tokens})
    started = time.perf_counter()
    count = 0
    async for chunk in model.stream(ModelRequest(messages=PROMPT)):
        if isinstance(chunk, TextDelta):
            count += 1
    return count, time.perf_counter() - started


def peak_memory_of_agent_run() -> float:
    env = {**os.environ, "AGENT_HOME": str(temporary_home())}
    agent = str(Path(sys.executable).parent / "agent")
    subprocess.run(
        [agent, "run", "What is the capital of France?", "--mode", "chat"],
        env=env, capture_output=True, check=True,
    )  # fmt: skip
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    direct(8)  # load the model once; both paths share it
    direct_rates, provider_rates = [], []
    for _ in range(args.repeats):
        count, seconds = direct(args.tokens)
        direct_rates.append(count / seconds)
        count_p, seconds_p = asyncio.run(through_provider(args.tokens))
        provider_rates.append(count_p / seconds_p)
        assert count_p == count, f"same greedy prompt, different lengths: {count_p} vs {count}"
    d, p = statistics.median(direct_rates), statistics.median(provider_rates)
    print(f"{args.tokens} tokens, median of {args.repeats}: llama-cpp-python direct {d:.1f} tok/s · "
          f"local provider {p:.1f} tok/s · ratio {p / d:.2f}")  # fmt: skip
    print(f"peak memory of `agent run` (whole process, RSS): {peak_memory_of_agent_run():.0f} MB")


if __name__ == "__main__":
    main()
