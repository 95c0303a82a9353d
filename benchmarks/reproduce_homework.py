"""Issue 3, reproduction 1: the lecture's homework protocol for the regularization family.

Permuted MNIST, 5 tasks (the first unpermuted), MLP 784-1024-512-256-10, Adam lr 1e-4, batch 128,
10 epochs per task, domain-incremental (one shared head, as in the homework). For every method,
lam is chosen on a validation split (10 % of each task's training data, seed 0; the test split is
never read) among the default x {0.1, 1, 10}, then the chosen value runs on the test data.

    python benchmarks/reproduce_homework.py --dataset mnist --data-dir ../shared/data/mnist-subset --out runs/hw-mnist
    python benchmarks/reproduce_homework.py --dataset fashion-mnist --out runs/hw-fashion [--lam-from runs/hw-mnist]

``--lam-from DIR`` reuses the values chosen in an earlier run's selection.json instead of selecting
again (to save time on the larger dataset; say so when reporting). Writes DIR/homework-PRECISION.md (``--precision bf16``: CPU autocast).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from forgetless import STRATEGIES
from forgetless.config import RunConfig
from forgetless.experiment import Grid, compare, execute, finished, run_dir

METHODS = ["naive", "l2", "ewc", "online-ewc", "si", "mas", "rwalk", "scp"]
PROTOCOL = dict(tasks=5, first_unpermuted=True, model="mlp:1024,512,256", optimizer="adam", lr=1e-4,
                batch_size=128, epochs=10, scenario="domain", reset_optimizer=True, seed=0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", required=True)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--lam-from", default=None, help="reuse the lam values selected in this earlier output")
    ap.add_argument("--epochs", type=int, default=PROTOCOL["epochs"])
    ap.add_argument("--precision", default="float32", choices=["float32", "bf16"])
    a = ap.parse_args()
    out = Path(a.out)
    base = dict(PROTOCOL, benchmark=f"permuted-{a.dataset}", epochs=a.epochs, precision=a.precision)
    if a.data_dir:
        base["data_dir"] = a.data_dir
    reused = {}
    if a.lam_from:
        for rec in json.loads((Path(a.lam_from) / "selection.json").read_text()):
            reused[rec["strategy"]] = rec["chosen"]["lam"]
    t0 = time.perf_counter()
    selections, chosen_runs = [], []
    for method in a.methods.split(","):
        if method == "naive":
            chosen_runs.append(dict(base, strategy="naive"))
        elif method in reused:
            chosen_runs.append(dict(base, strategy=method, params={"lam": reused[method]}))
            selections.append({"strategy": method, "chosen": {"lam": reused[method]}, "from": a.lam_from})
        else:
            default = STRATEGIES[method].params["lam"]
            grid = Grid(base=dict(base, strategy=method), axes={"params.lam": [float(f"{default * f:.6g}") for f in (0.1, 1, 10)]})
            compare(grid, out / method, workers=a.workers, select_on="validation", say=print)
            selections += json.loads((out / method / "selection.json").read_text())
    # the runs whose lam is already known go through one grid, so the workers stay busy
    jobs = [(c, run_dir(out / c.strategy, c)) for c in (RunConfig.from_dict(d) for d in chosen_runs)]
    for _, d in jobs:
        d.parent.mkdir(parents=True, exist_ok=True)
    execute(jobs, a.workers, "local", None, print)
    wall = time.perf_counter() - t0
    old = out / "selection.json"
    if old.exists():  # keep the choices of methods run in an earlier invocation
        known = {s["strategy"] for s in selections}
        selections += [s for s in json.loads(old.read_text()) if s["strategy"] not in known]
    (out / "selection.json").write_text(json.dumps(selections, indent=1))
    lines = [f"Permuted {a.dataset} ({a.data_dir or 'full'}), 5 tasks (first unpermuted), MLP 784-1024-512-256-10, "
             f"Adam 1e-4, batch 128, {a.epochs} epochs per task, domain-incremental, seed 0. "
             f"{a.precision}. Wall time of this invocation ({a.methods}): {wall:.0f} s on 2 cores "
             f"({a.workers} workers).", "",
             "| method | lam (chosen on validation) | final average accuracy | BWT | forgetting | accuracy matrix (%, row i: after task i) |",
             "|---|---|---|---|---|---|"]
    chosen = {s["strategy"]: s["chosen"].get("lam") for s in selections}
    for method in METHODS:
        runs = [r for d in sorted((out / method).glob("*")) if d.is_dir() and (r := finished(d))
                and r["config"].get("precision", "float32") == a.precision and r["config"].get("eval_split") == "test"
                and (method not in chosen or r["config"]["params"].get("lam") == chosen[method])]
        if not runs:
            continue
        r = runs[0]
        m = r["metrics"]
        R = "<br>".join(" ".join(f"{100 * v:.1f}" for v in row) for row in r["accuracy_matrix"])
        lines.append(f"| {method} | {chosen[method]:g} |" if method in chosen else f"| {method} | - |")
        lines[-1] += (f" {100 * m['average_accuracy']:.2f} | "
                     f"{100 * m['bwt']:+.2f} | {100 * m['forgetting']:.2f} | {R} |")
    (out / f"homework-{a.precision}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
