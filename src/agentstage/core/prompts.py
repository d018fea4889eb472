"""Prompt templates: Jinja2 files shipped under ``core/templates``, rendered in a sandbox.

Templates are named by their path (``plan/agent-plan.j2``) and that name, with a hash of the
text, goes into the run record so a run says exactly which prompt it used.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import FileSystemLoader, StrictUndefined, TemplateNotFound
from jinja2.sandbox import ImmutableSandboxedEnvironment

from agentstage.errors import ConfigError

TEMPLATE_DIR = Path(__file__).parent / "templates"


class PromptLibrary:
    """Loads and renders templates from one or more directories (the user's first, then built-ins)."""

    def __init__(self, *directories: Path):
        self.directories = [*directories, TEMPLATE_DIR]
        self._env = ImmutableSandboxedEnvironment(
            loader=FileSystemLoader([str(d) for d in self.directories]),
            undefined=StrictUndefined,
            keep_trailing_newline=False,
            trim_blocks=True,
            lstrip_blocks=True,
            autoescape=False,
            auto_reload=False,  # read once per process, like source_hash: a run's snapshot names what it used
        )
        self._env.filters["tojson_compact"] = _tojson_compact
        self._hashes: dict[str, str] = {}

    def render(self, name: str, **variables: Any) -> str:
        try:
            template = self._env.get_template(name)
        except TemplateNotFound:
            raise ConfigError(f"prompt template {name!r} not found in {self.directories}") from None
        return template.render(**variables).strip()

    def source_hash(self, name: str) -> str:
        """A short hash of the template's text (templates are read once per process)."""
        known = self._hashes.get(name)
        if known is not None:
            return known
        for directory in self.directories:
            path = directory / name
            if path.is_file():
                self._hashes[name] = _hash_file(path)
                return self._hashes[name]
        raise ConfigError(f"prompt template {name!r} not found in {self.directories}")


@lru_cache(maxsize=64)
def _hash_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _tojson_compact(value: Any) -> str:
    import json

    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
