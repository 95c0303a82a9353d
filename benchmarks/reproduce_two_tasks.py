"""Issue 3, reproductions 2 and 3: two-task protocols, naive vs L2 vs EWC.

2. The Keras tutorial: task A = digits {0,2,4,6,8}, task B = {1,3,5,7,9}, labels mapped to 5
   shared outputs (label // 2: forgetless's domain-incremental scenario with these two class
   groups), MLP 784-128-5, Adam 1e-3, batch 128, 5 epochs per task.
3. MNIST then Fashion-MNIST, 10 shared outputs (domain-incremental), MLP 784-100-100-10,
   Adam 1e-3, batch 128, 4 epochs each.

lam is chosen on a validation split (10 % of each task's training data, seed 0; the test split is
never read) by final average accuracy, then runs on the test data for seeds 0, 1, 2.

    python benchmarks/reproduce_two_tasks.py keras --mnist tests/data/mnist-subset --out runs/keras
    python benchmarks/reproduce_two_tasks.py mnist-fashion --mnist tests/data/mnist-subset --out runs/mf
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from forgetless.experiment import Grid, compare, finished

PROTOCOLS = {
    "keras": dict(
        benchmark="split-mnist",
        scenario="domain",
        classes="0,2,4,6,8|1,3,5,7,9",
        model="mlp:128",
        optimizer="adam",
        lr=1e-3,
        batch_size=128,
        epochs=5,
    ),
    "mnist-fashion": dict(
        benchmark="mnist-fashion-mnist",
        scenario="domain",
        model="mlp:100,100",
        optimizer="adam",
        lr=1e-3,
        batch_size=128,
        epochs=4,
    ),
}
LAMS = {"l2": [0.01, 0.1, 1, 10], "ewc": [10, 100, 1000, 10000, 100000]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("protocol", choices=sorted(PROTOCOLS))
    ap.add_argument("--mnist", required=True, help="directory of MNIST's four IDX files")
    ap.add_argument("--out", required=True)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    out = Path(a.out)
    base = dict(PROTOCOLS[a.protocol])
    base["data_dir"] = {"mnist": a.mnist} if a.protocol == "mnist-fashion" else a.mnist
    t0 = time.perf_counter()
    seeds = {"seed": [0, 1, 2]}
    compare(Grid(base=dict(base, strategy="naive"), axes=seeds), out / "naive", workers=a.workers, say=print)
    for method, lams in LAMS.items():
        compare(
            Grid(base=dict(base, strategy=method), axes={**seeds, "params.lam": lams}),
            out / method,
            workers=a.workers,
            select_on="validation",
            say=print,
        )
    lines = [
        f"Protocol {a.protocol}: {json.dumps({k: v for k, v in base.items() if k != 'data_dir'})}; "
        f"MNIST = the 8,500/1,500 subset. Wall time {time.perf_counter() - t0:.0f} s on 2 cores.",
        "",
        "| method | lam (chosen on validation) | accuracy on task A after B | accuracy on task B | "
        "average | A right after A |",
        "|---|---|---|---|---|---|",
    ]
    for method in ["naive", *LAMS]:
        runs = [r for d in sorted((out / method).glob("*")) if d.is_dir() and (r := finished(d))]
        chosen = "-"
        if (out / method / "selection.json").exists():
            chosen = json.loads((out / method / "selection.json").read_text())[0]["chosen"]["lam"]
        cell = lambda f: "{:.1f} ± {:.1f}".format(*_mean_std([100 * f(r["accuracy_matrix"]) for r in runs]))  # noqa: E731
        lines.append(
            f"| {method} | {chosen} | {cell(lambda R: R[1][0])} | {cell(lambda R: R[1][1])} | "
            f"{cell(lambda R: (R[1][0] + R[1][1]) / 2)} | {cell(lambda R: R[0][0])} |"
        )
    lines.append("")
    lines.append(f"(percent, mean ± std over seeds 0, 1, 2; {len(runs)} seeds each)")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _mean_std(values):
    m = sum(values) / len(values)
    sd = (sum((v - m) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else 0.0
    return m, sd


if __name__ == "__main__":
    main()
