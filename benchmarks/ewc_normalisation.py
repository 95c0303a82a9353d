"""Issue 12, section 4: EWC's lam does not transfer between benchmarks; does RWalk's min-max
normalization of the Fisher (``normalize=minmax``) make one lam work on all of them?

The raw empirical Fisher's scale follows the model's confidence: on task-IL Split MNIST (B3) the
validation-best raw lam is >= 10^5, on Permuted Fashion-MNIST (B1) 10. This script runs EWC and
online EWC with ``normalize=minmax`` over a x10 lam grid on the validation split (seed 0) of the
benchmarks of ``select_defaults.py`` (same protocol, same configs otherwise), widened at an edge, and
prints the validation table next to naive's.

    PYTHONPATH=$PWD/src python benchmarks/ewc_normalisation.py --bench B3,B1,HW

Runs: OUT/<bench>/val/<method>-minmax/...; results exported like select_defaults.py's.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import select_defaults as sd

from forgetless.experiment import finished, run_dir

GRID = [1.0, 10.0, 100.0, 1000.0]


def folder(out: Path, bench: str, m: str) -> Path:
    return out / bench / "val" / f"{m}-minmax"


def cfg(bench: str, m: str, lam: float):
    return sd.val_config(bench, m, {"lam": lam, "normalize": "minmax"})


def acc(out: Path, bench: str, m: str, lam: float):
    r = finished(run_dir(folder(out, bench, m), cfg(bench, m, lam)))
    return None if r is None else r["metrics"]["average_accuracy"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", default="B3,B1")
    ap.add_argument("--methods", default="ewc,online-ewc")
    ap.add_argument("--out", default="runs/defaults")
    a = ap.parse_args()
    out = Path(a.out)
    for bench in a.bench.split(","):
        sd.run_all(
            [
                (
                    sd.val_config(bench, "naive", {}),
                    run_dir(out / bench / "val" / "naive", sd.val_config(bench, "naive", {})),
                )
            ],
            out,
        )
        for m in a.methods.split(","):
            grid = list(GRID)
            sd.run_all([(cfg(bench, m, v), run_dir(folder(out, bench, m), cfg(bench, m, v))) for v in grid], out)
            for _ in range(2 * sd.MAX_EXTEND):
                scores = {v: acc(out, bench, m, v) for v in grid}
                best = max(grid, key=lambda v: scores[v])
                if best not in (grid[0], grid[-1]):
                    break
                new = grid[0] / 10 if best == grid[0] else grid[-1] * 10
                grid = sorted(grid + [new])
                sd.run_all([(cfg(bench, m, new), run_dir(folder(out, bench, m), cfg(bench, m, new)))], out)
    print("| benchmark | naive | method | validation final average accuracy % by lam (normalize=minmax) |")
    print("|---|---|---|---|")
    for bench in a.bench.split(","):
        n = finished(run_dir(out / bench / "val" / "naive", sd.val_config(bench, "naive", {})))
        for m in a.methods.split(","):
            rows = sd.tried(out, bench, f"{m}-minmax")
            cells = "; ".join(f"{t['lam']:g}: {100 * t['validation_average_accuracy']:.2f}" for t in rows)
            print(f"| {bench} | {100 * n['metrics']['average_accuracy']:.2f} | {m} | {cells} |")


if __name__ == "__main__":
    main()
