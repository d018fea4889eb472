#!/usr/bin/env python3
"""The embedded model's speed and memory.

1. tokens/s of the ``local`` provider against llama-cpp-python called directly with the same
   settings (same loaded model, same prompt, greedy) — aim: ratio >= 0.95;
2. peak memory of a whole ``agent run`` process — aim: < 500 MB;
3. time to first token of a run through ``agent serve`` (model in the supervised host process)
   against the same run in-process — aim: <= 1.2x;
4. memory of a 4-worker ``agent serve`` after a run: every process of the server summed (PSS, so
   shared pages count once), and how many processes hold the model file — aim: one model copy,
   < 700 MB in all.

    python benchmarks/local_model.py [--tokens 200] [--pairs 9] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
from _common import machine, temporary_home

from agentstage.core.messages import Message
from agentstage.core.model import ModelRequest, TextDelta
from agentstage.providers.llama_engine import load_llama
from agentstage.providers.local import LocalModel, default_model_path
from agentstage.runtime.requests import RunRequest
from agentstage.runtime.wiring import build_service
from agentstage.settings import load_settings

PROMPT = [
    Message.system("You are a helpful assistant."),
    Message.user("Write a short story about a lighthouse keeper who finds a message in a bottle."),
]
PARAMS = {"temperature": 0.0, "seed": 7}
STORY = {"input": "Write a short story about a lighthouse keeper.", "mode": "chat"}
AGENT = str(Path(sys.executable).parent / "agent")


def direct(tokens: int) -> tuple[int, float]:
    """llama-cpp-python's own chat completion on the model the provider uses (same load settings)."""
    loaded = load_llama(LocalModel().spec())
    messages = [{"role": m.role, "content": m.content} for m in PROMPT]
    with loaded.lock:
        started = time.perf_counter()
        count = 0
        for chunk in loaded.llama.create_chat_completion(
            messages=messages, stream=True, max_tokens=tokens, repeat_penalty=1.1, **PARAMS
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
    subprocess.run(
        [AGENT, "run", "What is the capital of France?", "--mode", "chat"],
        env=env, capture_output=True, check=True,
    )  # fmt: skip
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


async def first_token_in_process() -> float:
    settings = load_settings(environ={"AGENT_HOME": str(temporary_home())})
    async with build_service(settings) as service:
        await service.run(RunRequest(input="Say hi.", mode="chat"))  # load the model first
        started = time.perf_counter()
        record = await service.start(RunRequest.parse(STORY))
        async for event in service.stream(record.id):
            if event.type == "message.delta":
                elapsed = time.perf_counter() - started
                await service.cancel(record.id)
                return elapsed
    raise RuntimeError("no token")


class Served:
    """``agent serve`` with auth off on a free port, in a temporary home."""

    def __init__(self, workers: int):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        home = temporary_home()
        (home / "config.json").write_text(json.dumps({"http": {"auth": "off"}}), encoding="utf-8")
        env = {**os.environ, "AGENT_HOME": str(home)}
        command = [AGENT, "serve", "--port", str(self.port), "--workers", str(workers)]
        self.process = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{self.url}/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.stop()
                raise RuntimeError("agent serve did not become ready")
            time.sleep(0.2)

    def first_token(self) -> float:
        """Like the in-process side: the story is cancelled at its first token (the stream asks for
        it with ``on_disconnect: cancel``) and the run's end awaited, so the model is free for the
        next measurement instead of still telling the last story."""
        started = time.perf_counter()
        body = {**STORY, "on_disconnect": "cancel"}
        run_id = None
        with httpx.stream("POST", f"{self.url}/api/v1/agent/run/stream", json=body, timeout=120) as response:
            for line in response.iter_lines():
                if run_id is None and line.startswith("data:"):
                    run_id = json.loads(line[5:])["run_id"]
                if line == "event: message.delta":
                    elapsed = time.perf_counter() - started
                    break
            else:
                raise RuntimeError("no token")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            status = httpx.get(f"{self.url}/api/v1/agent/status/{run_id}", timeout=10).json()["status"]
            if status in ("completed", "failed", "cancelled"):
                return elapsed
            time.sleep(0.05)
        raise RuntimeError(f"run {run_id} did not end after its stream was closed")

    def tree(self) -> list[int]:
        pids, frontier = [self.process.pid], [self.process.pid]
        while frontier:
            parent = frontier.pop()
            for entry in Path("/proc").iterdir():
                try:
                    if (
                        entry.name.isdigit()
                        and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == parent
                    ):
                        pids.append(int(entry.name))
                        frontier.append(int(entry.name))
                except (OSError, ValueError):
                    continue
        return pids

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def _proc_kb(pid: int, field: str, name: str = "status") -> int:
    for line in Path(f"/proc/{pid}/{name}").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    return 0


def server_memory(served: Served) -> tuple[float, float, int, int]:
    """(PSS MB, RSS MB, processes, processes that map the model file) for the whole server."""
    model = str(default_model_path())
    pss = rss = holders = 0
    pids = served.tree()
    for pid in pids:
        pss += _proc_kb(pid, "Pss:", "smaps_rollup")
        rss += _proc_kb(pid, "VmRSS:")
        if model in Path(f"/proc/{pid}/maps").read_text():
            holders += 1
    return pss / 1024, rss / 1024, len(pids), holders


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3, help="time-to-first-token measurements")
    parser.add_argument("--pairs", type=int, default=9, help="direct/provider tokens/s pairs")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(
        f"model: {default_model_path().name} · repack (use_extra_bufts): {LocalModel().spec().use_extra_bufts}"
    )
    direct(8)  # load the model once; both paths share it
    direct_rates, provider_rates, ratios = [], [], []
    for _ in range(args.pairs):  # each pair back to back: a neighbour's load hits both alike
        count, seconds = direct(args.tokens)
        direct_rates.append(count / seconds)
        count_p, seconds_p = asyncio.run(through_provider(args.tokens))
        provider_rates.append(count_p / seconds_p)
        ratios.append(provider_rates[-1] / direct_rates[-1])
    d, p = statistics.median(direct_rates), statistics.median(provider_rates)
    print(f"{args.tokens} tokens, {args.pairs} pairs: llama-cpp-python direct {d:.1f} tok/s · local provider "
          f"{p:.1f} tok/s (medians) · ratio, median of the pairs {statistics.median(ratios):.2f} "
          f"[{min(ratios):.2f}, {max(ratios):.2f}]")  # fmt: skip
    print(f"peak memory of `agent run` (whole process, RSS): {peak_memory_of_agent_run():.0f} MB")
    local = statistics.median(asyncio.run(first_token_in_process()) for _ in range(args.repeats))
    served = Served(workers=1)
    try:
        served.first_token()  # warm
        remote = statistics.median(served.first_token() for _ in range(args.repeats))
    finally:
        served.stop()
    print(f"time to first token, median of {args.repeats}: in-process {local * 1000:.0f} ms · "
          f"agent serve + model host {remote * 1000:.0f} ms · ratio {remote / local:.2f}")  # fmt: skip
    four = Served(workers=4)
    try:
        four.first_token()
        pss, rss, processes, holders = server_memory(four)
    finally:
        four.stop()
    print(f"agent serve --workers 4 after a run: {processes} processes, {holders} holding the model file, "
          f"{pss:.0f} MB PSS in all ({rss:.0f} MB summed RSS)")  # fmt: skip


if __name__ == "__main__":
    main()
