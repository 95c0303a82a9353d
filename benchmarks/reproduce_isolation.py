"""Issue 15, reproduction 3: parameter isolation on task-incremental Split MNIST and Split Fashion-MNIST.

PNN (Rusu et al. 2016), PackNet (Mallya & Lazebnik 2018) and HAT (Serra et al. 2018) against naive
fine-tuning and joint training; 5 tasks of 2 classes, task-incremental (each task's two outputs
compete, the task id is given at test time); MLP 784-400-400 (PNN: one such column per task with
lateral connections), Adam 1e-3, batch 128, ITERATIONS steps per task (the B3 protocol of
select_defaults.py; joint: as many steps in total); every method at the library's defaults (PackNet
prune 0.5 and 2 retraining epochs, HAT smax 400 and c 0.75); seeds 0, 1, 2.

    python benchmarks/reproduce_isolation.py --dataset mnist           # the MNIST subset in tests/data
    python benchmarks/reproduce_isolation.py --dataset fashion-mnist   # Debian's full copy

Writes OUT/isolation-<dataset>.md (final average accuracy, BWT, parameters, training seconds).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from repro_common import cell, finished_results, run_configs

from forgetless.config import RunConfig
from forgetless.experiment import run_dir

ROOT = Path(__file__).resolve().parent.parent
METHODS = ["naive", "joint", "pnn", "packnet", "hat"]


def config(dataset: str, method: str, seed: int, iterations: int) -> RunConfig:
    d = dict(
        benchmark=f"split-{dataset}",
        scenario="task",
        model="mlp:400,400",
        optimizer="adam",
        lr=1e-3,
        batch_size=128,
        iterations=iterations,
        strategy=method,
        seed=seed,
    )
    if dataset == "mnist":
        d["data_dir"] = str(ROOT / "tests" / "data" / "mnist-subset")
    return RunConfig.from_dict(d)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="mnist", choices=["mnist", "fashion-mnist"])
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--iterations", type=int, default=500)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--out", default="runs/isolation")
    a = ap.parse_args()
    out = Path(a.out) / a.dataset
    methods = a.methods.split(",")
    jobs = [
        (c, run_dir(out / m, c))
        for s in a.seeds.split(",")
        for m in methods
        if (c := config(a.dataset, m, int(s), a.iterations))
    ]
    run_configs(jobs, a.workers)
    lines = [
        f"Task-incremental Split {a.dataset} ({'subset' if a.dataset == 'mnist' else 'full'}), 5 × 2 classes, "
        f"MLP 400-400, Adam 1e-3, batch 128, {a.iterations} iterations per task, seeds {a.seeds}.",
        "",
        "| method | final average accuracy % | BWT % | training s/run |",
        "|---|---|---|---|",
    ]
    for m in methods:  # only this protocol's runs (another data_dir spelling is another run folder)
        rs = finished_results([(c, d) for c, d in jobs if c.strategy == m])
        if not rs:
            continue
        acc = [100 * r["metrics"]["average_accuracy"] for r in rs]
        bwt = [100 * r["metrics"]["bwt"] for r in rs]
        secs = sum(r["timing"]["train_seconds"] for r in rs) / len(rs)
        lines.append(f"| {m} | {cell(acc)} | {cell(bwt)} | {secs:.0f} |")
    text = "\n".join(lines) + "\n"
    (Path(a.out) / f"isolation-{a.dataset}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
