"""Shared by the reproduction scripts of issue 15: run a list of configs (finished runs are kept),
and format mean ± std cells."""
from __future__ import annotations

import statistics
from pathlib import Path

from forgetless.config import RunConfig
from forgetless.experiment import execute, finished, run_dir


def run_configs(configs: list[tuple[RunConfig, Path]], workers: int = 1) -> None:
    """Run every (config, folder) not finished yet; one torch thread per run."""
    for _, d in configs:
        d.parent.mkdir(parents=True, exist_ok=True)
    todo = [(c, d) for c, d in configs if finished(d) is None]
    if todo:
        execute(todo, workers, "local", None, print, threads=1)


def where(root: Path, cfg: RunConfig) -> Path:
    return run_dir(root, cfg)


def cell(xs: list[float], digits: int = 2) -> str:
    """'m ± s (n=k)' of percentages; '-' when there is none."""
    if not xs:
        return "-"
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.mean(xs):.{digits}f} ± {sd:.{digits}f}" + ("" if len(xs) == 3 else f" (n={len(xs)})")


def results(folder: Path) -> list[dict]:
    """The finished results under ``folder`` (one level of run folders)."""
    return [r for d in sorted(folder.iterdir()) if d.is_dir() and (r := finished(d))] if folder.is_dir() else []
