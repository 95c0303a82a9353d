"""Few-shot class-incremental learning (issue 14): accuracy per session, AVG, PD, base/novel accuracy.

Split Fashion-MNIST (Debian's full copy, or the repository's slice with ``--slice``) and the MNIST
subset: 6 base classes + 4 sessions of 1-way 5-shot (and ``--ways 2`` for 2-way: 6 + 2 sessions),
the CNN of ``--model cnn`` (two conv blocks, 256 features; ``--model`` changes it), Adam 1e-3, batch 64,
``--epochs`` per session (5 on the MNIST subset; 2 on Fashion-MNIST, whose base session is 6x larger:
machine time), seeds 0, 1, 2. The shots are
drawn from the training split with the run's seed (recorded in result.json). Methods: whatever of
naive, joint, prototype, icarl (memory 200), topic, cec is registered.

    PYTHONPATH=$PWD/src python benchmarks/reproduce_fscil.py --dataset fashion-mnist --epochs 2
    PYTHONPATH=$PWD/src python benchmarks/reproduce_fscil.py --dataset mnist --data-dir tests/data/mnist-subset

``--extra topic-plain`` adds TOPIC with both losses off (lam_al = lam_mml = 0: the neural gas and
nearest-node prediction alone, fine-tuned by the cross-entropy of the shots), the ablation of its losses.

Every run's result.json goes to OUT/<dataset>-<ways>way-<model>/<method>/<stamp>/ (finished runs are skipped);
the table is printed (Markdown) and written to OUT/<dataset>-<ways>way-<model>.md.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

import torch

from forgetless.config import RunConfig
from forgetless.experiment import execute, finished, run_dir
from forgetless.strategies import STRATEGIES

METHODS = ["naive", "joint", "prototype", "icarl", "topic", "cec"]
PARAMS = {"icarl": {"memory": 200}}
EXTRA = {"topic-plain": ("topic", {"lam_al": 0.0, "lam_mml": 0.0})}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="fashion-mnist", choices=["fashion-mnist", "mnist", "digits"])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--base-classes", type=int, default=6)
    ap.add_argument("--ways", type=int, default=1)
    ap.add_argument("--shots", type=int, default=5)
    ap.add_argument("--model", default="cnn")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--extra", default="", help="also these variants: " + ", ".join(EXTRA))
    ap.add_argument("--out", default="runs/fscil")
    a = ap.parse_args()
    torch.set_num_threads(1)
    methods = [m for m in a.methods.split(",") if m in STRATEGIES] + [e for e in a.extra.split(",") if e in EXTRA]
    name = f"{a.dataset}-{a.ways}way-{a.model.replace(':', '').replace(',', '-')}"
    root = Path(a.out) / name
    jobs = []
    for seed in (int(s) for s in a.seeds.split(",")):
        for m in methods:
            strategy, params = EXTRA.get(m, (m, PARAMS.get(m, {})))
            cfg = RunConfig(
                benchmark=f"split-{a.dataset}",
                scenario="fscil",
                base_classes=a.base_classes,
                ways=a.ways,
                shots=a.shots,
                strategy=strategy,
                params=params,
                model=a.model,
                epochs=a.epochs,
                batch_size=64,
                optimizer="adam",
                lr=1e-3,
                seed=seed,
                data_dir=a.data_dir,
            )
            jobs.append((m, cfg, run_dir(root / m, cfg)))
    for _m, cfg, d in jobs:
        d.parent.mkdir(parents=True, exist_ok=True)
        execute([(cfg, d)], 1, "local", None, lambda msg: None, threads=1)
        print(f"done: {d.relative_to(root)}", file=sys.stderr, flush=True)

    def ms(xs):
        m = statistics.mean(xs)
        return f"{100 * m:.1f} ± {100 * (statistics.stdev(xs) if len(xs) > 1 else 0.0):.1f}"

    lines = [
        f"FSCIL, split {a.dataset}: {a.base_classes} base classes + sessions of {a.ways}-way {a.shots}-shot, "
        f"{a.model}, {a.epochs} epochs per session, Adam 1e-3, batch 64; mean ± std over seeds {a.seeds} (%)",
        "",
        "| method | accuracy per session (pooled, mean over seeds) | AVG | PD | base | novel | harmonic mean |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in methods:
        rs = [r for mm, _, d in jobs if mm == m and (r := finished(d))]
        if not rs:
            continue
        M = [r["metrics"] for r in rs]
        curve = [statistics.mean(v) for v in zip(*(x["session_accuracy"] for x in M))]
        hm = [x["harmonic_mean"] for x in M if x["harmonic_mean"] is not None and math.isfinite(x["harmonic_mean"])]
        lines.append(
            f"| {m} | {' → '.join(f'{100 * v:.1f}' for v in curve)} | {ms([x['avg'] for x in M])} | "
            f"{ms([x['pd'] for x in M])} | {ms([x['base_accuracy'] for x in M])} | "
            f"{ms([x['novel_accuracy'] for x in M])} | {ms(hm) if hm else '-'} |"
        )
    text = "\n".join(lines) + "\n"
    (Path(a.out) / f"{name}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
