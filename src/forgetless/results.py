"""Helpers for working with a result from Python (attached to ``Result`` as methods).

``to_frame(result)``: the accuracy matrix as a long-format pandas DataFrame;
``plot(result, kind)``: a matplotlib figure of it. Both accept a ``Result``, a result dict (the
content of result.json) or a run directory. pandas and matplotlib are optional
(``pip install 'forgetless[report]'``): they are imported only here, when called.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UsageError

KINDS = ("curves", "matrix", "average_accuracy")
RESULT_KEYS = (
    "accuracy_matrix",
    "initial_accuracy",
    "metrics",
    "config",
    "timing",
    "versions",
    "curves",
    "benchmark",
    "task_aware_accuracy_matrix",
)


@dataclass
class Result:
    """What a run produces; ``to_dict`` is the content of result.json.

    ``task_aware_accuracy_matrix`` (class-IL only, else None and left out of result.json): the same
    evaluation with each task's own classes alone competing, as task-IL would score it."""

    accuracy_matrix: list[list[float]]
    initial_accuracy: list[float]
    metrics: dict[str, Any]
    config: dict[str, Any]
    timing: dict[str, Any]
    versions: dict[str, str]
    curves: list[dict[str, Any]] = field(default_factory=list)
    benchmark: dict[str, Any] = field(default_factory=dict)
    task_aware_accuracy_matrix: list[list[float]] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The result as the plain dict written to result.json."""
        return {
            k: getattr(self, k)
            for k in RESULT_KEYS
            if k != "task_aware_accuracy_matrix" or self.task_aware_accuracy_matrix is not None
        }

    def plot(self, kind: str = "curves") -> Any:
        """A matplotlib Figure: ``curves`` (accuracy of every task during training) or ``matrix``."""
        return plot(self.to_dict(), kind)

    def to_frame(self) -> Any:
        """The accuracy matrix as a long pandas DataFrame (after_task, task, accuracy)."""
        return to_frame(self.to_dict())


def save_result(result: Result, out: str | Path) -> Path:
    """Write OUT/result.json atomically; returns its path."""
    from .data.cache import atomic_write_text

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a directory; choose another path")
    out.mkdir(parents=True, exist_ok=True)
    path = out / "result.json"
    atomic_write_text(path, json.dumps(result.to_dict(), indent=1))
    return path


def to_frame(result: Any) -> Any:
    """The accuracy matrix as a long DataFrame, one row per (after_task, task) pair.

    Columns: ``after_task`` (the last task trained, 0-based like ``accuracy_matrix`` rows and
    accuracy.csv), ``task`` (the task evaluated, 0-based) and ``accuracy`` (a fraction).
    ``df.pivot(index="after_task", columns="task", values="accuracy")`` gives the matrix back.
    """
    try:
        import pandas as pd
    except ImportError:
        raise UsageError("to_frame needs pandas: pip install 'forgetless[report]' (or pip install pandas)") from None
    from .plots import as_dict

    R = as_dict(result)["accuracy_matrix"]
    rows = [(i, j, float(a)) for i, row in enumerate(R) for j, a in enumerate(row)]
    return pd.DataFrame(rows, columns=["after_task", "task", "accuracy"])


def plot(result: Any, kind: str = "curves") -> Any:
    """A matplotlib Figure of the result: ``"curves"`` (accuracy of every task during training),
    ``"matrix"`` (the accuracy matrix heatmap) or ``"average_accuracy"`` (A_k after each task)."""
    from . import plots

    r = plots.as_dict(result)
    if kind == "curves":
        return plots.plot_curves(r)
    if kind == "matrix":
        return plots.plot_matrix(r)
    if kind == "average_accuracy":
        return plots.plot_average_accuracy({r.get("config", {}).get("strategy", "run"): [r]})
    from .errors import closest

    raise UsageError(f"unknown plot kind {kind!r}{closest(str(kind), KINDS)}; choose one of: {', '.join(KINDS)}")


__all__ = ["KINDS", "Result", "plot", "save_result", "to_frame"]
