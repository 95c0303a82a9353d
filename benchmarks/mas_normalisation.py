"""Issue 12, section 6: how large is our MAS importance next to the homework sample code's?

The NTU ML 2021 HW14 sample code computes MAS's Omega from mini-batches: for each batch of the
loaders it is given (the TEST loaders of every task seen so far, batch 8192), the gradient of the
batch MEAN of ||f(x)||^2 (logits, no softmax), its absolute value, summed over batches and divided
by the number of batches; penalty ``lam * sum Omega (theta - theta*)^2`` with lam = 0.1.
forgetless's ``mas_importance`` takes the absolute value PER SAMPLE, then the mean over the task's
training samples (Aljundi et al.'s eq. 2-4). |mean g| <= mean |g|, so ours is larger, and the lam of
one is not the lam of the other. This script trains the homework MLP on the first task of the
homework protocol (MNIST subset, Adam 1e-4, batch 128, 10 epochs, seed 0), computes both Omegas on
the same model, and prints their ratio: the lam that makes our penalty as large as the homework's
lam = 0.1 is 0.1 * sum(Omega_hw) / sum(Omega_ours).

    PYTHONPATH=$PWD/src python benchmarks/mas_normalisation.py > benchmarks/results/mas_normalisation.txt
    PYTHONPATH=$PWD/src python benchmarks/mas_normalisation.py --check benchmarks/results/mas_normalisation.txt

``--check FILE``: the cheap experiment: the whole homework protocol (MNIST subset, fresh Adam per
task, test split, seed 0) with MAS at the lam equivalent to the homework's 0.1 (read from FILE) and
beside naive (runs in runs/defaults/HW/..., results copied to
benchmarks/results/defaults/HW/...).
"""

from __future__ import annotations

import torch

import forgetless as fl
from forgetless.benchmarks import build
from forgetless.models import build_model
from forgetless.strategies.mas import mas_importance

SUBSET = str(__import__("pathlib").Path(__file__).resolve().parents[1] / "tests" / "data" / "mnist-subset")


def homework_mas(model, x, batch):
    """The sample code's Omega: mean over batches of |d mean_batch ||f(x)||^2 / d theta|."""
    params = list(model.parameters())
    acc = [torch.zeros_like(p) for p in params]
    chunks = list(x.split(batch))
    model.eval()
    for xb in chunks:
        loss = model(xb).pow(2).sum(1).mean()
        for a, g in zip(acc, torch.autograd.grad(loss, params)):
            a += g.abs()
    return [a / len(chunks) for a in acc]


def main():
    torch.set_num_threads(1)
    cfg = fl.RunConfig(
        benchmark="permuted-mnist",
        tasks=5,
        first_unpermuted=True,
        data_dir=SUBSET,
        model="mlp:1024,512,256",
        optimizer="adam",
        lr=1e-4,
        batch_size=128,
        epochs=10,
        scenario="domain",
        seed=0,
        first_tasks=1,
    )
    bench = build(cfg.benchmark, scenario="domain", tasks=5, seed=0, data_dir=SUBSET, first_unpermuted=True)
    torch.manual_seed(0)
    model = build_model(cfg.model, bench.input_shape, bench.n_outputs)
    fl.run(cfg, model=model)  # trains `model` in place on task 1
    task = bench.tasks[0]
    print(
        f"inputs: min {float(task.train.x.min()):.3f} max {float(task.train.x.max()):.3f} "
        f"(the homework standardises: (x - 0.1307) / 0.3081)"
    )
    ours = mas_importance(model, task.train.x)
    variants = {
        "homework: test data, batch 8192 (the sample code)": homework_mas(model, task.test.x, 8192),
        "homework formula, training data, batch 128": homework_mas(model, task.train.x, 128),
        "homework formula, training data, batch 1 (= ours)": homework_mas(model, task.train.x[:2000], 1),
    }
    s_ours = sum(float(o.sum()) for o in ours)
    print(f"forgetless mas_importance (per sample |g|, training data): sum Omega = {s_ours:.4g}")
    for name, om in variants.items():
        s = sum(float(o.sum()) for o in om)
        print(
            f"{name}: sum Omega = {s:.4g}; ratio to ours {s / s_ours:.4g}; "
            f"homework lam 0.1 corresponds to our lam {0.1 * s / s_ours:.3g}"
        )
    names = [n for n, _ in model.named_parameters()]
    hw = variants["homework: test data, batch 8192 (the sample code)"]
    for n, o, h in zip(names, ours, hw):
        print(
            f"  {n:>12}: ours mean {float(o.mean()):.3e}  homework mean {float(h.mean()):.3e}  "
            f"ratio {float(h.sum() / o.sum()):.3g}"
        )


def check(path: str) -> None:
    import re
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import select_defaults as sd

    from forgetless.experiment import finished, run_dir

    line = next(ln for ln in Path(path).read_text().splitlines() if ln.startswith("homework: test data"))
    lam = float(re.search(r"our lam ([0-9.e+-]+)", line).group(1))
    lam = float(f"{10 ** round(__import__('math').log10(lam)):.0e}")  # the nearest decade
    out = Path("runs/defaults")
    jobs = [(sd.test_config("HW", "naive", {}, 0), None)]
    jobs[0] = (jobs[0][0], run_dir(out / "HW" / "test-own" / "naive", jobs[0][0]))
    for v in (lam,):
        c = sd.test_config("HW", "mas", {"lam": v}, 0)
        jobs.append((c, run_dir(out / "HW" / "mas-check" / "mas", c)))
    sd.run_all(jobs, out)
    for c, d in jobs:
        r = finished(d)
        if r:
            print(
                f"{c.strategy} lam {c.params.get('lam', '-')}: final average accuracy "
                f"{100 * r['metrics']['average_accuracy']:.2f} % (BWT {100 * r['metrics']['bwt']:+.2f})"
            )


if __name__ == "__main__":
    import sys as _sys

    if len(_sys.argv) > 2 and _sys.argv[1] == "--check":
        check(_sys.argv[2])
    else:
        main()
