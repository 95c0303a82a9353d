"""Issues 3 (reproduction 4) and 4 (reproduction 1): Split MNIST in the three scenarios.

Five tasks of two digits (0/1, 2/3, ..., 8/9); task-, domain- and class-incremental (van de Ven et
al. 2019); MLP 784-400-400, Adam 1e-3, batch 128, ITERATIONS optimizer steps per task; memory
1000 examples in total (100 per class at the end) for every method that keeps data (ER class-balanced,
A-GEM, GEM, iCaRL, BiC); every other hyperparameter at the library's default (recorded in each
run's result.json). iCaRL and BiC are class-incremental methods and run only there.

    python benchmarks/reproduce_split.py --dataset mnist --data-dir tests/data/mnist-subset --out runs/split-mnist
    python benchmarks/reproduce_split.py --dataset fashion-mnist --seeds 0 --out runs/split-fashion

Writes OUT/split.md (final average accuracy, mean ± std over seeds, per scenario) and OUT/*/summary.*.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

REGULARIZATION = ["naive", "joint", "l2", "ewc", "online-ewc", "si", "mas", "rwalk", "scp"]
REPLAY = ["lwf", "er", "agem", "gem", "dgr", "dgr+distill", "er+ewc"]
CLASS_ONLY = ["icarl", "bic"]
# the most expensive first, so two workers finish together
ORDER = ["gem", "dgr", "dgr+distill", "er+ewc", "agem", "er", "icarl", "bic", "rwalk", "lwf", "si", "joint"]


def protocol(dataset: str, data_dir: str | None, iterations: int) -> dict:
    """The run options shared by every method (also used by select_split.py)."""
    base = dict(
        benchmark=f"split-{dataset}",
        model="mlp:400,400",
        optimizer="adam",
        lr=1e-3,
        batch_size=128,
        iterations=iterations,
    )
    if data_dir:
        base["data_dir"] = data_dir
    return base


def strategy_and_params(method: str) -> tuple[str, dict]:
    if method == "dgr+distill":
        return "dgr", {"distill": True}
    if method == "er":
        return "er", {"memory": 1000, "sampling": "balanced"}
    if method == "er+ewc":
        return "er+ewc", {"memory": 1000, "sampling": "balanced"}
    if method in ("agem", "gem", "icarl", "bic"):
        return method, {"memory": 1000}
    return method, {}


def configs(methods, scenarios, base):
    out = []
    for m in sorted(methods, key=lambda m: ORDER.index(m) if m in ORDER else len(ORDER)):
        s, p = strategy_and_params(m)
        for scenario in scenarios:
            if m in CLASS_ONLY and scenario != "class":
                continue
            out.append((m, scenario, dict(base, strategy=s, scenario=scenario, params=p)))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", required=True)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--iterations", type=int, default=2000)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--methods", default=",".join(REGULARIZATION + REPLAY + CLASS_ONLY))
    ap.add_argument("--scenarios", default="task,domain,class")
    a = ap.parse_args()
    out = Path(a.out)
    seeds = [int(s) for s in a.seeds.split(",")]
    base = protocol(a.dataset, a.data_dir, a.iterations)
    t0 = time.perf_counter()
    todo = configs(a.methods.split(","), a.scenarios.split(","), base)
    # one grid over every (method, scenario, seed): the workers stay busy across methods
    from forgetless.config import RunConfig
    from forgetless.experiment import execute, finished, run_dir, summarize, write_summary

    jobs = []
    for m, _scenario, d in todo:
        for seed in seeds:
            cfg = RunConfig.from_dict(dict(d, seed=seed))
            cfg.resolved()
            jobs.append((m, cfg, run_dir(out / m.replace("+", "-"), cfg)))
    for m in {m for m, _, _ in jobs}:
        (out / m.replace("+", "-")).mkdir(parents=True, exist_ok=True)
    execute([(c, d) for _, c, d in jobs], a.workers, "local", None, print)
    wall = time.perf_counter() - t0
    table: dict[str, dict[str, dict]] = {}
    for m in dict.fromkeys(m for m, _, _ in jobs):
        results = [r for mm, _, d in jobs if mm == m and (r := finished(d))]
        rows = summarize(results)
        write_summary(rows, out / m.replace("+", "-"))
        for row in rows:
            table.setdefault(m, {})[row["scenario"]] = row
    scen = a.scenarios.split(",")
    lines = [
        f"Split {a.dataset} ({a.data_dir or 'full'}), 5 tasks of 2 classes, MLP 400-400 "
        "(input size: the dataset's), Adam 1e-3, batch 128, "
        f"{a.iterations} iterations per task, memory 1000 in total, seeds {a.seeds}. "
        f"Wall time {wall:.0f} s on 2 workers x 1 thread.",
        "",
        "Final average accuracy (%), mean ± std over seeds; in brackets: forgetting (%).",
        "",
        "| method | " + " | ".join(f"{s}-incremental" for s in scen) + " | training s/run (class) |",
        "|---|" + "---|" * len(scen) + "---|",
    ]
    for m, by in table.items():
        cells = []
        for s in scen:
            r = by.get(s)
            if r is None:
                cells.append("-")
                continue
            acc, fg = r["average_accuracy"], r.get("forgetting")
            cells.append(
                f"{100 * acc['mean']:.2f} ± {100 * acc['std']:.2f}" + (f" ({100 * fg['mean']:.1f})" if fg else "")
            )
        secs = by.get("class", next(iter(by.values())))["train_seconds"]
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {secs:.0f} |")
    (out / "split.md").write_text("\n".join(lines) + "\n")
    (out / "table.json").write_text(
        json.dumps(
            {
                m: {
                    s: {k: r[k] for k in ("average_accuracy", "forgetting", "bwt", "n") if k in r}
                    for s, r in by.items()
                }
                for m, by in table.items()
            },
            indent=1,
        )
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
