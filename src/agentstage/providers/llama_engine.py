"""llama.cpp in this process: loading a GGUF safely, and one generation as a blocking iterator.

This is the only module that touches ``llama_cpp``. It is used by ``agent run`` (the model in
the CLI's own process) and by the model host that ``agent serve`` supervises; both generate
through :func:`generate`, so a request behaves the same wherever the model lives.

Three things here exist because llama.cpp can take the whole process down:

- weight repacking into "extra" buffer types (AMX on recent Xeons) crashes in
  ``ggml_backend_amx_mul_mat`` on some CPUs; :func:`load_llama` sets ``use_extra_bufts`` from
  the ``repack`` option, in one place (``Llama`` does not take it as an argument);
- a grammar llama.cpp cannot parse makes its sampler NULL and the next token a segfault, so
  every grammar is parsed once by llama.cpp itself before it is used (:func:`check_grammar`);
- freeing a model while a thread still decodes with it is a use-after-free, and so is the C
  library's own teardown at process exit (its thread pool and buffer types are destroyed under a
  running decode), so at exit every generation is stopped — a decode in progress is aborted
  through llama.cpp's abort callback, since one prompt batch can take many seconds on a busy
  machine — and models are closed only after every generation thread has left (:func:`close_all`).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from agentstage.errors import LimitExceededError, ModelError

MIN_ANSWER_TOKENS = 16
SHUTDOWN_GRACE_SECONDS = 30.0


@dataclass(frozen=True)
class ModelSpec:
    """Everything that identifies one loaded model: two specs that are equal share one copy."""

    path: str
    n_ctx: int = 4096
    n_threads: int = 0
    use_extra_bufts: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "n_ctx": self.n_ctx,
            "n_threads": self.n_threads,
            "use_extra_bufts": self.use_extra_bufts,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        return cls(
            path=str(data["path"]),
            n_ctx=int(data.get("n_ctx", 4096)),
            n_threads=int(data.get("n_threads", 0)),
            use_extra_bufts=bool(data.get("use_extra_bufts", False)),
        )


@dataclass
class Loaded:
    """A loaded model, the lock that serialises its single llama.cpp context, and its chat format."""

    llama: Any
    lock: threading.Lock
    formatter: Any
    checked_grammars: set[str] = field(default_factory=set)


_models: dict[ModelSpec, Loaded] = {}
_registry_lock = threading.Lock()
_active: set[threading.Event] = set()
_active_lock = threading.Lock()
_closing = threading.Event()


def load_llama(spec: ModelSpec) -> Loaded:
    """Load a GGUF once per process (later calls with an equal spec share it)."""
    with _registry_lock:
        if _closing.is_set():
            raise ModelError("the process is shutting down", code="cancelled", provider="local")
        loaded = _models.get(spec)
        if loaded is None:
            llama = _load(spec)
            _watch_abort_flag(llama)
            loaded = _models[spec] = Loaded(llama, threading.Lock(), _formatter(llama))
        return loaded


@contextlib.contextmanager
def extra_buffers(use_extra_bufts: bool) -> Iterator[None]:
    """Make ``Llama`` build its ``llama_model_params`` with our ``use_extra_bufts``.

    ``Llama.__init__`` takes the defaults from ``llama_model_default_params()`` and hands them to
    llama.cpp without exposing this field; wrapping that one function for the duration of the load
    (under the registry lock, so no other load can see it) is the narrowest way to set it. Also for
    starting llama.cpp's own OpenAI-compatible server safely on a CPU with AMX.
    """
    import llama_cpp.llama_cpp as bindings

    original = bindings.llama_model_default_params

    def with_our_choice() -> Any:
        params = original()
        params.use_extra_bufts = use_extra_bufts
        return params

    bindings.llama_model_default_params = with_our_choice
    try:
        yield
    finally:
        bindings.llama_model_default_params = original


def _load(spec: ModelSpec) -> Any:
    try:
        from llama_cpp import Llama
    except ImportError as error:
        raise ModelError(
            f"llama-cpp-python is not importable ({error}); install it with "
            "pip install 'llama-cpp-python==0.3.36' (it compiles llama.cpp, about 3 minutes)",
            code="model_unavailable",
            provider="local",
        ) from None
    try:
        with extra_buffers(spec.use_extra_bufts):
            return Llama(
                model_path=spec.path, n_ctx=spec.n_ctx, n_threads=spec.n_threads or None, verbose=False
            )
    except (ValueError, RuntimeError) as error:
        raise ModelError(
            f"llama.cpp could not load {spec.path!r}: {error}; point providers.local.model_path at a "
            "valid GGUF model, or remove it to use the embedded SmolLM2 model",
            code="model_unavailable",
            provider="local",
        ) from None


def _formatter(llama: Any) -> Any:
    """The model's own chat template, so prompts can be counted exactly before they are sent."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    template = llama.metadata.get("tokenizer.chat_template")
    if not template:
        return None
    eos = llama._model.token_get_text(llama.token_eos()) if llama.token_eos() != -1 else ""
    bos = llama._model.token_get_text(llama.token_bos()) if llama.token_bos() != -1 else ""
    return Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)


def prompt_tokens(loaded: Loaded, messages: list[dict[str, str]]) -> tuple[list[int], list[str]]:
    """The exact tokens the model will read for these messages, and the template's stop strings."""
    llama = loaded.llama
    if loaded.formatter is None:
        text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "
        return llama.tokenize(text.encode("utf-8"), add_bos=True, special=True), []
    result = loaded.formatter(messages=messages)
    tokens = llama.tokenize(result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True)
    stop = result.stop if isinstance(result.stop, list) else [result.stop] if result.stop else []
    return tokens, stop


def count_tokens(spec: ModelSpec, messages: list[dict[str, str]]) -> int:
    """Tokenizing reads only the vocabulary, so it needs no lock and can run beside a generation."""
    return len(prompt_tokens(load_llama(spec), messages)[0])


def check_grammar(loaded: Loaded, grammar: str) -> None:
    """Let llama.cpp parse the grammar once; a grammar it rejects would crash the sampler."""
    if grammar in loaded.checked_grammars:
        return
    import llama_cpp.llama_cpp as bindings

    sampler = bindings.llama_sampler_init_grammar(loaded.llama._model.vocab, grammar.encode("utf-8"), b"root")
    if not sampler:
        raise ModelError(
            f"llama.cpp rejected the output grammar (first line: {grammar.splitlines()[0][:120]!r})",
            code="invalid_grammar",
            provider="local",
        )
    bindings.llama_sampler_free(sampler)
    loaded.checked_grammars.add(grammar)


def context_overflow(needed: int, window: int, what: str = "the prompt") -> LimitExceededError:
    return LimitExceededError(
        f"{what} needs {needed} tokens but the model's context window is {window} tokens "
        f"(plus at least {MIN_ANSWER_TOKENS} for the answer); shorten the input, raise "
        "providers.<name>.n_ctx, or use a profile with a larger model",
        code="context_overflow",
        details={"context_window": window, "input_tokens": needed},
    )


@dataclass
class Job:
    """One generation: chat messages in, text out, optionally constrained by a GBNF grammar."""

    messages: list[dict[str, str]]
    max_tokens: int = 512
    temperature: float = 0.2
    grammar: str | None = None
    options: dict[str, Any] = field(default_factory=dict)  # top_p, top_k, seed, repeat_penalty, stop

    def as_dict(self) -> dict[str, Any]:
        return {
            "messages": self.messages,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "grammar": self.grammar,
            "options": self.options,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        return cls(
            messages=list(data["messages"]),
            max_tokens=int(data.get("max_tokens", 512)),
            temperature=float(data.get("temperature", 0.2)),
            grammar=data.get("grammar"),
            options=dict(data.get("options") or {}),
        )


def generate(spec: ModelSpec, job: Job, stop: threading.Event) -> Iterator[dict[str, Any]]:
    """Run one job, yielding ``{"text": ...}`` pieces then one ``{"done": {...}}`` summary.

    Blocking: call it from a worker thread. It holds the model's lock for the whole generation and
    checks ``stop`` between tokens, so a cancelled request frees the model within one token.
    """
    loaded = load_llama(spec)
    with _active_lock:
        _active.add(stop)
    try:
        with loaded.lock:
            if stop.is_set() or _closing.is_set():
                return
            yield from _generate_locked(spec, loaded, job, stop)
    finally:
        with _active_lock:
            _active.discard(stop)


def _generate_locked(
    spec: ModelSpec, loaded: Loaded, job: Job, stop: threading.Event
) -> Iterator[dict[str, Any]]:
    tokens, stop_strings = prompt_tokens(loaded, job.messages)
    room = spec.n_ctx - len(tokens)
    if room < MIN_ANSWER_TOKENS:
        raise context_overflow(len(tokens), spec.n_ctx)
    kwargs = _completion_kwargs(job, stop_strings, min(job.max_tokens, room))
    if job.grammar:
        from llama_cpp.llama_grammar import LlamaGrammar

        check_grammar(loaded, job.grammar)
        kwargs["grammar"] = LlamaGrammar.from_string(job.grammar, verbose=False)
    started = time.perf_counter()
    produced = 0
    finish_reason = "stop"
    iterator = loaded.llama.create_completion(prompt=tokens, stream=True, **kwargs)
    try:
        for chunk in iterator:
            if stop.is_set() or _closing.is_set():
                finish_reason = "cancelled"
                break
            choice = chunk["choices"][0]
            if choice.get("text"):
                produced += 1
                yield {"text": choice["text"]}
            if choice.get("finish_reason"):
                finish_reason = choice["finish_reason"]
    except RuntimeError:
        if not _closing.is_set():
            raise
        finish_reason = "cancelled"  # the decode was aborted because the process is exiting
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()
    yield {
        "done": {
            "finish_reason": finish_reason,
            "input_tokens": len(tokens),
            "output_tokens": produced,
            "max_tokens": kwargs["max_tokens"],
            "seconds": round(time.perf_counter() - started, 4),
        }
    }


def _completion_kwargs(job: Job, stop_strings: list[str], max_tokens: int) -> dict[str, Any]:
    options = job.options
    stops = list(stop_strings)
    extra = options.get("stop")
    if isinstance(extra, str):
        stops.append(extra)
    elif isinstance(extra, list):
        stops.extend(str(s) for s in extra)
    kwargs: dict[str, Any] = {
        "max_tokens": max_tokens,
        "temperature": job.temperature,
        "stop": stops,
        # Structured output repeats names by design; penalising repeats there only does harm.
        "repeat_penalty": float(options.get("repeat_penalty", 1.0 if job.grammar else 1.1)),
    }
    for name in ("top_p", "top_k", "min_p", "seed"):
        if name in options:
            kwargs[name] = options[name]
    return kwargs


def unload(spec: ModelSpec) -> None:
    """Free one model (after its running generation, if any) so its memory goes back."""
    with _registry_lock:
        loaded = _models.pop(spec, None)
    if loaded is not None:
        with loaded.lock:
            close = getattr(loaded.llama, "close", None)
            if close is not None:
                close()


def close_all() -> None:
    """Stop every generation, wait for its thread to leave llama.cpp, then free the models."""
    _closing.set()
    with _active_lock:
        pending = list(_active)
    for event in pending:
        event.set()
    with _registry_lock:
        loaded_models = list(_models.values())
    for loaded in loaded_models:
        _abort_decoding(loaded)
    deadline = time.monotonic() + SHUTDOWN_GRACE_SECONDS
    while time.monotonic() < deadline:
        with _active_lock:
            if not _active:
                break
        time.sleep(0.01)
    else:
        return  # a thread is still inside llama.cpp: leave the memory to the OS rather than crash
    with _registry_lock:
        for loaded in _models.values():
            with loaded.lock:
                close = getattr(loaded.llama, "close", None)
                if close is not None:
                    close()
        _models.clear()


def _abort_decoding(loaded: Loaded) -> None:
    """Make llama.cpp give up the decode in progress at its next graph node (``llama_decode``
    then fails and the generation ends ``cancelled``). Only used at exit: the model is not used
    again, so the flag is never cleared, and llama.cpp's note about the abandoned batch is not
    news to anyone."""
    logging.getLogger("llama-cpp-python").setLevel(logging.CRITICAL)
    ctypes.memset(_ABORT_FLAG, 1, 1)


def _watch_abort_flag(llama: Any) -> None:
    """Let llama.cpp check :data:`_ABORT_FLAG` between graph nodes, without calling into Python.

    The check must not take the GIL (llama.cpp asks hundreds of times per token, from a thread
    without it), so the callback is C's ``strlen`` on a one-byte buffer: 0 (go on) while the
    buffer is empty, 1 (abort) once :func:`_abort_decoding` writes a byte into it.
    """
    context = getattr(getattr(llama, "_ctx", None), "ctx", None)
    if context is None or _STRLEN is None:
        return
    import llama_cpp.llama_cpp as bindings

    callback = ctypes.cast(_STRLEN, bindings.ggml_abort_callback)
    bindings.llama_set_abort_callback(context, callback, ctypes.cast(_ABORT_FLAG, ctypes.c_void_p))


_ABORT_FLAG = ctypes.create_string_buffer(2)
_STRLEN = getattr(ctypes.CDLL(None), "strlen", None) if hasattr(ctypes, "CDLL") else None


atexit.register(close_all)
