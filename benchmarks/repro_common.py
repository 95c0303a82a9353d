"""Shared by the reproduction scripts of issue 15: run a list of configs (finished runs are kept),
collect their results, and format mean ± std cells."""

from __future__ import annotations

import statistics
from pathlib import Path

from forgetless.config import RunConfig
from forgetless.experiment import execute, finished


def run_configs(configs: list[tuple[RunConfig, Path]], workers: int = 1) -> None:
    """Run every (config, folder) not finished yet; one torch thread per run."""
    for _, d in configs:
        d.parent.mkdir(parents=True, exist_ok=True)
    todo = [(c, d) for c, d in configs if finished(d) is None]
    if todo:
        execute(todo, workers, "local", None, print, threads=1)


def cell(xs: list[float], digits: int = 2) -> str:
    """'m ± s (n=k)' of percentages; '-' when there is none."""
    if not xs:
        return "-"
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.mean(xs):.{digits}f} ± {sd:.{digits}f}" + ("" if len(xs) == 3 else f" (n={len(xs)})")


def finished_results(jobs: list[tuple[RunConfig, Path]]) -> list[dict]:
    """The results of those (config, folder) jobs that finished (only these: a folder may also hold
    runs of another protocol, e.g. another spelling of the data directory)."""
    return [r for _, d in jobs if (r := finished(d))]
