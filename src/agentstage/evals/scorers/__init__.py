"""The scorers, registered by name. Importing this package registers the built-in ones; other
packages add theirs through the ``agentstage.scorers`` entry point group (a Scorer subclass each)."""

from __future__ import annotations

import logging
from importlib.metadata import entry_points

from agentstage.evals.scorers import constraints, judge, overlap, structured, text, trajectory
from agentstage.evals.scorers.base import SCORERS, Judge, JudgeVerdict, Sample, Score, Scorer, register

log = logging.getLogger("agentstage.evals")
_plugins_loaded = False


def load_plugins() -> None:
    """Register scorers from installed packages once; a broken plugin is logged, never fatal."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for entry in entry_points(group="agentstage.scorers"):
        try:
            cls = entry.load()
            if not (isinstance(cls, type) and issubclass(cls, Scorer)):
                raise TypeError(f"{entry.value!r} is not a Scorer subclass")
            register(cls)
        except Exception as error:  # a third-party plugin may fail in any way
            log.warning("scorer plugin %r not loaded: %s", entry.name, error)


def scorer_names() -> list[str]:
    load_plugins()
    return sorted(SCORERS)


__all__ = [
    "SCORERS",
    "Judge",
    "JudgeVerdict",
    "Sample",
    "Score",
    "Scorer",
    "constraints",
    "judge",
    "load_plugins",
    "overlap",
    "register",
    "scorer_names",
    "structured",
    "text",
    "trajectory",
]
