"""Issue 15, reproduction 4: online class-incremental streams, disjoint and blurry.

Split MNIST (the subset in tests/data) and Split Fashion-MNIST (Debian's full copy), 5 tasks of 2
classes, class-incremental; one pass over the stream in batches of 10 (``--online``), task-free
(``--task-free``: the strategy is never told where a task starts or ends), replay buffer of 500
examples; MLP 784-400-400 (as MIR's MNIST experiments), plain SGD. Two streams: disjoint (each
task's classes only) and i-Blurry-50-10 (Koh et al., ICLR 2022: half of the classes stay in their
own task, 10 % of every other class's samples are spread over the other tasks; ``--blurry 10``).
The model is evaluated every 1,000 training samples on every task's test data of the classes seen
so far; A_AUC (``anytime_accuracy``) is the mean of that curve, next to the final average accuracy.

Methods: ER (reservoir), ER-ACE, MIR, DER++, GDumb, and naive fine-tuning. The learning rate of each
method is chosen on validation (10 % of each task's training data, seed 0, the disjoint stream) from
LRS; then seeds 0, 1, 2 on the test split, both streams.

    python benchmarks/reproduce_streams.py select --dataset mnist
    python benchmarks/reproduce_streams.py test --dataset mnist
    python benchmarks/reproduce_streams.py table --dataset mnist     # -> OUT/streams-<dataset>.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from repro_common import cell, finished_results, run_configs

from forgetless.config import RunConfig
from forgetless.experiment import finished, run_dir

ROOT = Path(__file__).resolve().parent.parent
METHODS = ["naive", "er", "er-ace", "mir", "derpp", "gdumb"]
STREAMS = {"disjoint": 0.0, "blurry10": 10.0}
LRS = [0.03, 0.1]
MEMORY = 500


def config(dataset, method, lr, seed, blurry, val=False) -> RunConfig:
    d = dict(
        benchmark=f"split-{dataset}",
        scenario="class",
        model="mlp:400,400",
        optimizer="sgd",
        lr=lr,
        batch_size=10,
        online=True,
        task_free=True,
        blurry=blurry,
        strategy=method,
        seed=seed,
        params={} if method == "naive" else {"memory": MEMORY},
    )
    if dataset == "mnist":
        d["data_dir"] = str(ROOT / "tests" / "data" / "mnist-subset")
    if val:
        d.update(val_fraction=0.1, eval_split="val")
    return RunConfig.from_dict(d)


def choice_path(out: Path, dataset: str) -> Path:
    return out / f"selection-streams-{dataset}.json"


def select(a, out: Path) -> None:
    methods = a.methods.split(",")
    jobs = {
        (m, lr): (c, run_dir(out / a.dataset / "val" / m, c))
        for m in methods
        for lr in LRS
        if (c := config(a.dataset, m, lr, 0, 0.0, val=True))
    }
    run_configs(list(jobs.values()), a.workers)
    record = {}
    for m in methods:
        tried = {lr: r["metrics"]["average_accuracy"] for lr in LRS if (r := finished(jobs[(m, lr)][1]))}
        if tried:
            record[m] = {"lr": max(tried, key=lambda lr: (tried[lr], -lr)), "tried": tried}
    choice_path(out, a.dataset).write_text(json.dumps(record, indent=1))
    print(json.dumps(record, indent=1))


def test_jobs(a, out: Path, record: dict) -> list[tuple[str, str, RunConfig, Path]]:
    """(stream, method, config, folder) of the test stage, seed-major."""
    jobs = []
    for seed in a.seeds.split(","):
        for stream, blurry in STREAMS.items():
            for m in a.methods.split(","):
                if m in record:
                    c = config(a.dataset, m, record[m]["lr"], int(seed), blurry)
                    jobs.append((stream, m, c, run_dir(out / a.dataset / stream / m, c)))
    return jobs


def test(a, out: Path) -> None:
    record = json.loads(choice_path(out, a.dataset).read_text())
    run_configs([(c, d) for _, _, c, d in test_jobs(a, out, record)], a.workers)


def table(a, out: Path) -> None:
    record = json.loads(choice_path(out, a.dataset).read_text())
    lines = [
        f"Online class-IL Split {a.dataset} ({'subset' if a.dataset == 'mnist' else 'full'}), batch 10, one pass, "
        f"task-free, buffer {MEMORY}, MLP 400-400, SGD (lr chosen on validation); "
        "mean ± std over seeds 0, 1, 2.",
        "",
        "| method | lr | disjoint: A_AUC % | disjoint: final % | blurry-10: A_AUC % | blurry-10: final % |",
        "|---|---|---|---|---|---|",
    ]
    jobs = test_jobs(a, out, record)
    for m in a.methods.split(","):
        if m not in record:
            continue
        cells = []
        for stream in STREAMS:
            rs = finished_results([(c, d) for s, mm, c, d in jobs if (s, mm) == (stream, m)])
            cells += [
                cell([100 * r["metrics"]["anytime_accuracy"] for r in rs if "anytime_accuracy" in r["metrics"]]),
                cell([100 * r["metrics"]["average_accuracy"] for r in rs]),
            ]
        lines.append(f"| {m} | {record[m]['lr']:g} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    (out / f"streams-{a.dataset}.md").write_text(text)
    print(text)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stage", choices=["select", "test", "table"])
    ap.add_argument("--dataset", default="mnist", choices=["mnist", "fashion-mnist"])
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--out", default="runs/streams")
    a = ap.parse_args()
    {"select": select, "test": test, "table": table}[a.stage](a, Path(a.out))


if __name__ == "__main__":
    main()
