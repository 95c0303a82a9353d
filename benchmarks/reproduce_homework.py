"""The lecture's homework protocol (NTU ML 2021 HW14) for the regularization family (issue 12, section 6).

Permuted MNIST, 5 tasks (the first unpermuted), MLP 784-1024-512-256-10, Adam lr 1e-4, batch 128,
10 epochs per task, domain-incremental (one shared head), and a NEW Adam at the start of every task
(``reset_optimizer=True``: the homework's sample code creates a fresh optimizer after each task; one
optimizer for the whole run is not the protocol). For every method, lam is chosen on a validation
split (10 % of each task's training data, seed 0; the test split is never read) over a x10 grid
that is widened while the best value is at its edge (``select_defaults.py``, protocol step 2;
windows in ``select_defaults.GRIDS["HW"]``); then naive and every method at its chosen lam run on
the test data for seeds 0, 1, 2 (mean +- std).

    PYTHONPATH=$PWD/src python benchmarks/reproduce_homework.py --dataset mnist           # the MNIST subset
    PYTHONPATH=$PWD/src python benchmarks/reproduce_homework.py --dataset fashion-mnist   # = benchmark B2

The MNIST-subset runs are benchmark "HW" of select_defaults.py, the Fashion-MNIST ones its "B2" (the
same runs: nothing is trained twice). Runs go to OUT/<HW|B2>/..., results are copied to
benchmarks/results/defaults/<HW|B2>/... as they finish, and the table to OUT/homework-<dataset>.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

PROTOCOL = dict(
    tasks=5,
    first_unpermuted=True,
    model="mlp:1024,512,256",
    optimizer="adam",
    lr=1e-4,
    batch_size=128,
    epochs=10,
    scenario="domain",
    reset_optimizer=True,
    seed=0,
)
METHODS = ["naive", "l2", "ewc", "online-ewc", "si", "mas", "rwalk", "scp"]


def main():
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import select_defaults as sd

    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="mnist", choices=["mnist", "fashion-mnist"])
    ap.add_argument("--out", default="runs/defaults")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--stage", default="all", choices=["all", "select", "test", "table"])
    a = ap.parse_args()
    bench = "HW" if a.dataset == "mnist" else "B2"
    regs = [m for m in a.methods.split(",") if m != "naive"]
    common = dict(
        bench=bench,
        out=a.out,
        json=str(Path(a.out) / f"selection-{bench}.json"),
        lwf=False,
        rule_benchmarks=bench,
        lams="own",
        seeds=a.seeds,
        refs=("naive",) if bench == "HW" else ("naive", "joint"),
    )
    ns = argparse.Namespace
    if a.stage in ("all", "select"):
        sd.select(ns(**common, methods=",".join(regs)))
        sd.rule(ns(**common))
    if a.stage in ("all", "test"):
        sd.test(ns(**common, methods=a.methods))
    if a.stage in ("all", "table", "test"):
        sd.table(ns(**common))
        text = (Path(a.out) / "tables.md").read_text()
        part = text.split(f"### {bench}, test-own")[1].split("### ")[0] if f"### {bench}, test-own" in text else ""
        (Path(a.out) / f"homework-{a.dataset}.md").write_text(
            f"Homework protocol on {a.dataset} ({'MNIST subset' if bench == 'HW' else 'full'}), fresh Adam per task; "
            f"lam chosen on validation for this protocol.\n{part}"
        )
        print(part)


if __name__ == "__main__":
    main()
