"""Where a strategy's training step spends its time: torch.profiler over one epoch of task 2.

Permuted Fashion-MNIST (domain-IL), MLP 784-1024-512-256-10, batch 128, Adam 1e-3 (or ``--optimizer sgd``), one thread,
the first ``--samples`` images of each task; task 1 is trained unprofiled (so that penalties and
memories are active), then one epoch of task 2 runs under ``torch.profiler``. Prints the operators
by self CPU time, and the share of the step spent in matrix products (addmm/mm) against
everything else (element-wise optimizer and strategy kernels).

    python benchmarks/profile_steps.py --strategies naive,si,rwalk
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

import forgetless as fl
from forgetless.loop import train_task
from forgetless.models import build_model
from forgetless.run import make_optimizer
from forgetless.strategies import Context, make_strategy

MATMUL = {"aten::addmm", "aten::mm", "aten::bmm", "aten::matmul"}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--strategies", default="naive,si,rwalk")
    ap.add_argument("--samples", type=int, default=10000)
    ap.add_argument("--rows", type=int, default=12)
    ap.add_argument("--optimizer", default="adam", choices=["adam", "sgd"])
    ap.add_argument("--lr", type=float, default=1e-3)
    a = ap.parse_args()
    torch.set_num_threads(1)
    import dataclasses

    bench = fl.build("permuted-fashion-mnist", scenario="domain", tasks=2, seed=0)
    bench = dataclasses.replace(
        bench,
        tasks=[
            dataclasses.replace(t, train=t.train.subset(torch.arange(min(a.samples, len(t.train)))))
            for t in bench.tasks
        ],
    )
    for name in a.strategies.split(","):
        torch.manual_seed(0)
        model = build_model("mlp:1024,512,256", bench.input_shape, bench.n_outputs)
        ctx = Context(
            model=model,
            optimizer=make_optimizer(a.optimizer, model.parameters(), a.lr),
            benchmark=bench,
            batch_size=128,
            generator=torch.Generator().manual_seed(0),
        )
        strategy = make_strategy(name, {}, bench.scenario)
        for task in bench.tasks:
            ctx.task_id = task.id
            strategy.before_task(ctx, task)
            if task.id == 0:
                train_task(ctx, strategy, task, epochs=1)
            else:
                t0 = time.perf_counter()
                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    stats = train_task(ctx, strategy, task, epochs=1)
                wall = time.perf_counter() - t0
            strategy.after_task(ctx, task)
        events = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in events)
        mm = sum(e.self_cpu_time_total for e in events if e.key in MATMUL)
        print(
            f"\n== {name}: task 2, {stats['steps']} steps, {1000 * wall / stats['steps']:.2f} ms/step under the "
            f"profiler; matrix products {100 * mm / total:.0f} % of self CPU time, "
            f"the rest {100 - 100 * mm / total:.0f} %"
        )
        print(events.table(sort_by="self_cpu_time_total", row_limit=a.rows))


if __name__ == "__main__":
    main()
