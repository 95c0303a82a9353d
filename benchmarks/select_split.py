"""Split MNIST with each regularizer's lam chosen on validation data, per scenario.

The protocol of ``reproduce_split.py`` (MLP 784-400-400, Adam 1e-3, batch 128, ITERATIONS steps per
task); for every regularization method and scenario, lam is chosen among its default x FACTORS on a
validation split (10 % of each task's training data, seed 0; the test split is not read), then the
chosen value runs on the test data with every seed. Writes OUT/selected.md and, per method,
OUT/METHOD/selection.json (every value tried with its validation accuracy).

    python benchmarks/select_split.py --data-dir tests/data/mnist-subset --iterations 500 --out runs/split-mnist-sel
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from reproduce_split import protocol  # the same protocol (benchmarks/ is on sys.path when run as a script)

from forgetless import STRATEGIES
from forgetless.config import RunConfig
from forgetless.experiment import execute, finished, run_dir, summarize

METHODS = ["l2", "ewc", "online-ewc", "si", "mas", "rwalk", "scp"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", required=True)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--iterations", type=int, default=2000)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--factors", default="1,100,10000")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--scenarios", default="task,domain,class")
    a = ap.parse_args()
    out = Path(a.out)
    seeds = [int(s) for s in a.seeds.split(",")]
    factors = [float(f) for f in a.factors.split(",")]
    methods, scenarios = a.methods.split(","), a.scenarios.split(",")
    base = protocol(a.dataset, a.data_dir, a.iterations)
    t0 = time.perf_counter()
    # 1. validation runs (first seed) for every method x scenario x lam, in one pool
    trials = {}
    for m in methods:
        default = STRATEGIES[m].params["lam"]
        for s in scenarios:
            for f in factors:
                lam = float(f"{default * f:.6g}")
                cfg = RunConfig.from_dict(
                    dict(
                        base,
                        strategy=m,
                        scenario=s,
                        params={"lam": lam},
                        seed=seeds[0],
                        val_fraction=0.1,
                        eval_split="val",
                    )
                )
                trials[(m, s, lam)] = (cfg, run_dir(out / m / "selection", cfg))
    execute(list(trials.values()), a.workers, "local", None, print)
    chosen, records = {}, {}
    for (m, s, lam), (_, d) in trials.items():
        r = finished(d)
        acc = None if r is None else r["metrics"]["average_accuracy"]
        records.setdefault(m, []).append({"scenario": s, "lam": lam, "validation_average_accuracy": acc})
        if acc is not None and (chosen.get((m, s)) is None or acc > chosen[(m, s)][1]):
            chosen[(m, s)] = (lam, acc)
    for m, rec in records.items():
        (out / m).mkdir(parents=True, exist_ok=True)
        (out / m / "selection.json").write_text(
            json.dumps(
                {
                    "split": f"validation: 0.1 of each task's training data, seed {seeds[0]}; "
                    "the test split is not read",
                    "tried": rec,
                    "chosen": {s: chosen[(mm, s)][0] for (mm, s) in chosen if mm == m},
                },
                indent=1,
            )
        )
    # 2. the chosen values on the test data, every seed
    finals = []
    for (m, s), (lam, _) in chosen.items():
        for seed in seeds:
            cfg = RunConfig.from_dict(dict(base, strategy=m, scenario=s, params={"lam": lam}, seed=seed))
            finals.append(((m, s), cfg, run_dir(out / m, cfg)))
    execute([(c, d) for _, c, d in finals], a.workers, "local", None, print)
    wall = time.perf_counter() - t0
    lines = [
        f"Split {a.dataset}, lam chosen on validation per method and scenario among the default x "
        f"{{{a.factors}}}; {a.iterations} iterations per task; seeds {a.seeds}. Wall time {wall:.0f} s.",
        "",
        "| method | " + " | ".join(f"{s}-incremental: lam, accuracy %" for s in scenarios) + " |",
        "|---|" + "---|" * len(scenarios),
    ]
    for m in methods:
        cells = []
        for s in scenarios:
            if (m, s) not in chosen:
                cells.append("-")
                continue
            rows = summarize([r for key, _, d in finals if key == (m, s) and (r := finished(d))])
            acc = rows[0]["average_accuracy"]
            cells.append(f"{chosen[(m, s)][0]:g}: {100 * acc['mean']:.2f} ± {100 * acc['std']:.2f}")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    (out / "selected.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
