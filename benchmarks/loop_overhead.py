"""Loop overhead: forgetless's naive epoch time / a minimal hand-written PyTorch loop.

Same process, same model (784-1024-512-256-10 MLP), same data (one task of Permuted
Fashion-MNIST, 60,000 images), batch size and optimizer; the median over repeats.
Also prints the end-to-end naive run on Permuted Fashion-MNIST (5 tasks x 1 epoch).

    python benchmarks/loop_overhead.py [--repeats 3] [--batch-size 128] [--optimizer sgd]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import forgetless as fl
from forgetless.loop import train_task
from forgetless.run import make_optimizer
from forgetless.models import build_model
from forgetless.strategies import Context, Strategy


def minimal_epoch(model, opt, x, y, batch_size, g):
    """The reference: what anyone would write by hand."""
    perm = torch.randperm(len(y), generator=g)
    for i in range(0, len(y), batch_size):
        idx = perm[i:i + batch_size]
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--optimizer", default="sgd")
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--end-to-end", action="store_true", help="also run 5 tasks x 1 epoch through fl.run")
    a = ap.parse_args()
    bench = fl.build("permuted-fashion-mnist", scenario="domain", tasks=1, seed=0)
    task = bench.tasks[0]
    times = {"minimal": [], "forgetless": []}
    for r in range(a.repeats):
        for which in ("minimal", "forgetless"):
            torch.manual_seed(r)
            model = build_model("mlp:1024,512,256", bench.input_shape, bench.n_outputs)
            opt = make_optimizer(a.optimizer, model.parameters(), a.lr)
            g = torch.Generator().manual_seed(r)
            t0 = time.perf_counter()
            if which == "minimal":
                minimal_epoch(model, opt, task.train.x, task.train.y, a.batch_size, g)
            else:
                ctx = Context(model=model, optimizer=opt, benchmark=bench, batch_size=a.batch_size, generator=g)
                train_task(ctx, Strategy(), task, epochs=1)
            times[which].append(time.perf_counter() - t0)
    m, f = statistics.median(times["minimal"]), statistics.median(times["forgetless"])
    print(f"threads {torch.get_num_threads()}, batch {a.batch_size}, {a.optimizer}, {a.repeats} repeats")
    print(f"minimal hand-written loop: {m:.2f} s/epoch (runs: {', '.join(f'{t:.2f}' for t in times['minimal'])})")
    print(f"forgetless naive loop:     {f:.2f} s/epoch (runs: {', '.join(f'{t:.2f}' for t in times['forgetless'])})")
    print(f"ratio forgetless / minimal: {f / m:.3f}")
    if a.end_to_end:
        t0 = time.perf_counter()
        res = fl.run(fl.RunConfig(benchmark="permuted-fashion-mnist", tasks=5, epochs=1, batch_size=a.batch_size,
                                  optimizer=a.optimizer, lr=a.lr))
        print(f"permuted-fashion-mnist 5 tasks x 1 epoch, naive: {time.perf_counter() - t0:.1f} s end to end, "
              f"{res.timing['train_seconds']:.1f} s training; average accuracy "
              f"{res.metrics['average_accuracy']:.3f}, BWT {res.metrics['bwt']:+.3f}")
        print("diagonal:", [round(v, 3) for v in fl.metrics.learning_accuracy(res.accuracy_matrix)])
        print("final row:", [round(v, 3) for v in res.accuracy_matrix[-1]])


if __name__ == "__main__":
    main()
