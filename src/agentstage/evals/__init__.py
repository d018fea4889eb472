"""The evaluation harness: datasets of cases, scorers, reports and regression gates.

A client of the runtime like any door: every case is a normal run through the RunService, so it
has events, a trace and a snapshot, and its run id is in the result.
"""

from agentstage.evals.dataset import Dataset, EvalCase, LoadedCase, load_dataset
from agentstage.evals.harness import EvalHarness, EvalOptions, RecordedAttempt
from agentstage.evals.results import AttemptResult, CaseResult
from agentstage.evals.scorers import SCORERS, Sample, Score, Scorer, register
from agentstage.evals.sources import Problem

__all__ = [
    "SCORERS",
    "AttemptResult",
    "CaseResult",
    "Dataset",
    "EvalCase",
    "EvalHarness",
    "EvalOptions",
    "LoadedCase",
    "Problem",
    "RecordedAttempt",
    "Sample",
    "Score",
    "Scorer",
    "load_dataset",
    "register",
]
