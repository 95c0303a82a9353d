"""Loop overhead: forgetless's naive epoch time / a minimal hand-written PyTorch loop.

Same process, same model, same data (one task), batch size, optimizer (``make_optimizer``: the fused
kernel both sides) and device; alternating repeats, the median of each. The minimal loop is what
anyone would write by hand: float32 images resident on the device, randperm, index, forward,
cross-entropy, backward, step. forgetless keeps its images as uint8 and scales each batch, calls
its seven hooks, masks by scenario and reads the losses every 50 steps.

    python benchmarks/loop_overhead.py                                  # homework MLP, Permuted Fashion-MNIST
    python benchmarks/loop_overhead.py --benchmark split-cifar10 --data-dir DIR --model resnet18 --tasks 5
    python benchmarks/loop_overhead.py --device cuda --optimizer adam --lr 0.001

``--torch-default`` adds a third loop: the minimal one with torch's default optimizer implementation
(what a user gets from ``torch.optim.Adam(params)``), to show what the fused kernel is worth.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import forgetless as fl
from forgetless import devices
from forgetless.loop import train_task
from forgetless.models import build_model
from forgetless.run import make_optimizer
from forgetless.strategies import Context, Strategy


def minimal_epoch(model, opt, x, y, batch_size, g, device):
    """The reference: what anyone would write by hand (data already on the device, float32)."""
    perm = torch.randperm(len(y), generator=g).to(device)
    for i in range(0, len(y), batch_size):
        idx = perm[i : i + batch_size]
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--benchmark", default="permuted-fashion-mnist")
    ap.add_argument("--tasks", type=int, default=None)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--model", default="mlp:1024,512,256")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--optimizer", default="sgd")
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--torch-default", action="store_true", help="also the minimal loop with torch's default optimizer")
    a = ap.parse_args()
    device = devices.resolve(a.device)
    bench = fl.build(
        a.benchmark,
        scenario="domain" if a.benchmark.startswith("permuted") else "task",
        tasks=a.tasks,
        seed=0,
        data_dir=a.data_dir,
    ).to(device)
    task = bench.tasks[0]
    xf = task.train.x  # float32 copy for the minimal loop
    loops = ["minimal", "forgetless"] + (["minimal, torch default optimizer"] if a.torch_default else [])
    times = {k: [] for k in loops}
    for r in range(a.repeats):
        for which in loops:
            torch.manual_seed(r)
            model = build_model(a.model, bench.input_shape, bench.n_outputs).to(device)
            if which.endswith("default optimizer"):
                opt = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}[a.optimizer](model.parameters(), lr=a.lr)
            else:
                opt = make_optimizer(a.optimizer, model.parameters(), a.lr, device=device)
            g = torch.Generator().manual_seed(r)
            devices.synchronize(device)
            t0 = time.perf_counter()
            if which.startswith("minimal"):
                minimal_epoch(model, opt, xf, task.train.y, a.batch_size, g, device)
            else:
                ctx = Context(
                    model=model, optimizer=opt, benchmark=bench, batch_size=a.batch_size, generator=g, device=device
                )
                train_task(ctx, Strategy(), task, epochs=1)
            devices.synchronize(device)
            times[which].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    n_params = sum(p.numel() for p in build_model(a.model, bench.input_shape, bench.n_outputs).parameters())
    print(
        f"{a.benchmark} task 1 ({len(task.train)} images {tuple(bench.input_shape)}), model {a.model} "
        f"({n_params:,} parameters), batch {a.batch_size}, {a.optimizer} lr {a.lr}, "
        f"{devices.describe(device)}, {a.repeats} repeats"
    )
    for k in loops:
        print(f"{k:>34}: {med[k]:.3f} s/epoch (runs: {', '.join(f'{t:.3f}' for t in times[k])})")
    print(f"ratio forgetless / minimal: {med['forgetless'] / med['minimal']:.3f}")
    if a.torch_default:
        print(
            f"ratio minimal with torch's default optimizer / minimal with the fused one: "
            f"{med[loops[2]] / med['minimal']:.3f}"
        )


if __name__ == "__main__":
    main()
