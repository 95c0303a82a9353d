"""Per-strategy overhead: epoch time of a strategy / naive's, during tasks 2..5.

Permuted Fashion-MNIST (domain-IL, 5 tasks) with the 784-1024-512-256-10 MLP, batch 128, Adam 1e-3
(the library's default optimizer: the default lam values were chosen with it, and with SGD lr 0.01
EWC's default lam = 1000 diverges; ``--optimizer sgd`` is available); iCaRL
and BiC are class-incremental only, so they run on Split Fashion-MNIST (class-IL, 5 tasks of 2
classes, the same MLP with its 10 outputs) and are compared with naive on that benchmark. To bound
the time every task trains on the first ``--samples`` images of its training set (default 4,000;
the figures in docs/performance.md use 10,000).

For every strategy and repeat, the 5-task sequence is run with the strategy's default
hyperparameters. At each of tasks 2..5 (penalties and memories active) two epochs are timed back to
back, in alternating order: the strategy's ``train_task`` epoch, and a naive ``train_task`` epoch on a
copy of the current model (same task data, batch size and optimizer). Only ``train_task`` is inside
the epoch timer; ``before_task`` and ``after_task`` (importance estimation, memory update, BiC stage
2, DGR's generator training) are timed separately. The overhead of a repeat is (sum of the strategy's
4 epoch times) / (sum of the 4 naive ones); the table gives the median over repeats.

Every interval is measured with two clocks: the process's CPU time (``time.process_time``; one
thread, so it is the time the computation itself took, not the time the process waited for a core
while other programs ran) and the wall clock. On a loaded machine the CPU-time ratio is the steadier
one and is the headline figure; the wall-clock ratio is printed beside it.

iCaRL and BiC train on the task's data plus the stored exemplars (more steps per epoch), so the
table also gives the ratio per optimizer step.

    python benchmarks/strategy_overhead.py [--samples 4000] [--repeats 3] [--strategies l2,ewc,...]

``--flat-check`` (issue 17) times instead the per-step vector passes of SI and RWalk two ways on the
784-1024-512-256-10 MLP's parameter shapes (1,462,538 floats): a ``torch._foreach_*`` op over the 8
per-parameter tensors (views of one buffer, as the library's state is) and the same op on one flat
vector: whether flat buffers would make these passes cheaper.

    python benchmarks/strategy_overhead.py --flat-check [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics
import time

import torch

import forgetless as fl
from forgetless.loop import train_task
from forgetless.models import build_model
from forgetless.run import make_optimizer
from forgetless.strategies import Context, Strategy, make_strategy

REGULARIZATION = ["l2", "ewc", "online-ewc", "si", "mas", "rwalk", "scp"]
OTHERS = ["lwf", "er", "agem", "gem", "icarl", "bic", "dgr"]
CLASS_ONLY = {"icarl", "bic"}
TARGET = 1.20  # for the regularization family

WHY = {
    "l2": "closed-form penalty gradient: 2 _foreach kernels per step",
    "ewc": "closed-form penalty gradient (terms merged exactly): 2 _foreach kernels per step",
    "online-ewc": "closed-form penalty gradient: 2 _foreach kernels per step",
    "si": "penalty gradient (into new grad tensors, the task gradient is kept without a copy) + path integral: "
    "3 in-place _foreach kernels per step",
    "mas": "closed-form penalty gradient: 2 _foreach kernels per step",
    "rwalk": "penalty gradient (task gradient kept, no copy) + g^2 and path integral (4 kernels) per step, "
    "a flush every 10",
    "scp": "closed-form penalty gradient: 2 _foreach kernels per step",
    "lwf": "a teacher (old model) forward on every batch + the distillation loss",
    "er": "the memory batch is concatenated: every step forwards and backwards 2x128 examples",
    "agem": "a second forward+backward on a 128-example memory batch, flat dot products, projection",
    "gem": "one forward+backward per past task on its whole memory (200 examples each) + the QP",
    "icarl": "a teacher forward on every batch (sigmoid targets); the epoch also covers the exemplars",
    "bic": "a teacher forward on every batch (distillation) + bias layers; epoch covers the exemplars",
    "dgr": "VAE sampling + teacher forward + student forward/backward on a generated batch as large",
}


def truncate(bench, n):
    """The benchmark with every task's training set cut to its first ``n`` examples."""
    tasks = [dataclasses.replace(t, train=t.train.subset(torch.arange(min(n, len(t.train))))) for t in bench.tasks]
    return dataclasses.replace(bench, tasks=tasks)


def naive_epoch(ctx, task, args, seed):
    """One naive epoch on a copy of the current model (not timed: the copy and the optimizer)."""
    model = copy.deepcopy(ctx.model)
    opt = make_optimizer(args.optimizer, [p for p in model.parameters() if p.requires_grad], args.lr)
    nctx = Context(
        model=model,
        optimizer=opt,
        benchmark=ctx.benchmark,
        batch_size=args.batch_size,
        generator=torch.Generator().manual_seed(seed),
        task_id=task.id,
        seen_upto=ctx.seen_upto,
    )
    with Clock() as c:
        stats = train_task(nctx, Strategy(), task, epochs=1)
    return c, stats["steps"]


class Clock:
    """CPU time (``cpu``) and wall time (``wall``) of a ``with`` block, in seconds."""

    def __enter__(self):
        self._c, self._w = time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.cpu, self.wall = time.process_time() - self._c, time.perf_counter() - self._w


def run_sequence(name, bench, args, rep):
    """One 5-task sequence of ``name``; returns the per-task timings."""
    torch.manual_seed(rep)
    model = build_model("mlp:1024,512,256", bench.input_shape, bench.n_outputs)
    opt = make_optimizer(args.optimizer, model.parameters(), args.lr)
    ctx = Context(
        model=model,
        optimizer=opt,
        benchmark=bench,
        batch_size=args.batch_size,
        generator=torch.Generator().manual_seed(rep),
    )
    strategy = make_strategy(name, {}, bench.scenario)
    rows = []
    for task in bench.tasks:
        ctx.task_id = task.id
        with Clock() as before:
            strategy.before_task(ctx, task)
        row = {"task": task.id, "before": before}
        strategy_first = (task.id + rep) % 2 == 0
        if task.id > 0 and not strategy_first:
            row["naive"], row["naive_steps"] = naive_epoch(ctx, task, args, 1000 * rep + task.id)
        with Clock() as epoch:
            stats = train_task(ctx, strategy, task, epochs=1)
        row["epoch"], row["steps"] = epoch, stats["steps"]
        if task.id > 0 and strategy_first:
            row["naive"], row["naive_steps"] = naive_epoch(ctx, task, args, 1000 * rep + task.id)
        with Clock() as after:
            strategy.after_task(ctx, task)
        row["after"] = after
        rows.append(row)
    return rows


def flat_check() -> None:
    shapes = [(1024, 784), (1024,), (512, 1024), (512,), (256, 512), (256,), (10, 256), (10,)]
    sizes = [torch.Size(s).numel() for s in shapes]

    def pair():
        flat = torch.rand(sum(sizes))
        return flat, [v.view(s) for v, s in zip(torch.split(flat, sizes), shapes)]

    (a, av), (b, bv), (c, cv) = pair(), pair(), pair()

    def best(fn, k=200):
        for _ in range(10):
            fn()
        times = []
        for _ in range(7):
            t0 = time.process_time()
            for _ in range(k):
                fn()
            times.append((time.process_time() - t0) / k * 1e6)
        return min(times)

    print(f"threads {torch.get_num_threads()}; {sum(sizes):,} floats; CPU microseconds per pass (best of 7)")
    print("| pass (SI / RWalk per step) | _foreach over 8 tensors | one flat op | flat / foreach |")
    print("|---|---|---|---|")
    for label, many, one in (
        ("omega += g * d (addcmul_)", lambda: torch._foreach_addcmul_(av, bv, cv), lambda: a.addcmul_(b, c)),
        ("prev -= theta (sub_)", lambda: torch._foreach_sub_(av, bv), lambda: a.sub_(b)),
        ("prev <- theta (copy_)", lambda: torch._foreach_copy_(av, bv), lambda: a.copy_(b)),
        ("tmp += g^2 (addcmul_)", lambda: torch._foreach_addcmul_(av, bv, bv), lambda: a.addcmul_(b, b)),
    ):
        f, o = best(many), best(one)
        print(f"| {label} | {f:.0f} | {o:.0f} | {o / f:.2f} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=4000, help="training examples per task (the first N)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tasks", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument(
        "--optimizer",
        default="adam",
        help="adam (the library's default, for which the default lam values were chosen) or sgd",
    )
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--strategies", default=",".join(REGULARIZATION + OTHERS))
    ap.add_argument("--flat-check", action="store_true", help="foreach over parameters vs one flat op (issue 17)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.flat_check:
        return flat_check()
    names = [s.strip() for s in args.strategies.split(",") if s.strip()]
    t_start = time.perf_counter()
    benches = {}
    if any(n not in CLASS_ONLY for n in names):
        benches["domain"] = truncate(
            fl.build("permuted-fashion-mnist", scenario="domain", tasks=args.tasks, seed=0, progress=False),
            args.samples,
        )
    if any(n in CLASS_ONLY for n in names):
        benches["class"] = truncate(
            fl.build("split-fashion-mnist", scenario="class", tasks=args.tasks, seed=0, progress=False), args.samples
        )
    results = {n: [] for n in names}
    for rep in range(args.repeats):
        order = names if rep % 2 == 0 else names[::-1]
        for name in order:
            bench = benches["class" if name in CLASS_ONLY else "domain"]
            results[name].append(run_sequence(name, bench, args, rep))
            print(
                f"  repeat {rep + 1}/{args.repeats} {name:<10} done ({time.perf_counter() - t_start:.0f} s)", flush=True
            )

    print(
        f"\nthreads {torch.get_num_threads()}, batch {args.batch_size}, {args.optimizer} lr {args.lr}, "
        f"first {args.samples} training examples per task, {args.tasks} tasks, {args.repeats} repeats, "
        f"{time.perf_counter() - t_start:.0f} s in all (wall)"
    )
    head = (
        "| strategy | benchmark | steps/epoch (strategy / naive) | CPU s/epoch, strategy | CPU s/epoch, naive | "
        "**overhead (CPU-time ratio)** | wall-clock ratio | CPU ratio per step | CPU ratio, task 2 3 4 5 | "
        "before+after_task CPU s/task | after_task / naive epoch | target |"
    )
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    summary = {}
    for name in names:
        reps = results[name]
        cols = {k: [] for k in ("ratio", "wall", "step", "s_ep", "n_ep", "hooks", "after_rel")}
        per_task = []
        for rows in reps:
            timed = [r for r in rows if r["task"] > 0]
            s_cpu, n_cpu = sum(r["epoch"].cpu for r in timed), sum(r["naive"].cpu for r in timed)
            s_wall, n_wall = sum(r["epoch"].wall for r in timed), sum(r["naive"].wall for r in timed)
            ss, ns = sum(r["steps"] for r in timed), sum(r["naive_steps"] for r in timed)
            cols["ratio"].append(s_cpu / n_cpu)
            cols["wall"].append(s_wall / n_wall)
            cols["step"].append((s_cpu / ss) / (n_cpu / ns))
            cols["s_ep"].append(s_cpu / len(timed))
            cols["n_ep"].append(n_cpu / len(timed))
            hooks = sum(r["before"].cpu + r["after"].cpu for r in rows) / len(rows)
            cols["hooks"].append(hooks)
            cols["after_rel"].append(hooks / (n_cpu / len(timed)))
            per_task.append([r["epoch"].cpu / r["naive"].cpu for r in timed])
        med = {k: statistics.median(v) for k, v in cols.items()}
        summary[name] = med
        steps = f"{reps[0][-1]['steps']} / {reps[0][-1]['naive_steps']}"
        med_task = [statistics.median(col) for col in zip(*per_task)]
        target = ("met" if med["ratio"] <= TARGET else "**not met**") if name in REGULARIZATION else "-"
        print(
            f"| {name} | {'split-fashion-mnist class-IL' if name in CLASS_ONLY else 'permuted-fashion-mnist'} | "
            f"{steps} | {med['s_ep']:.3f} | {med['n_ep']:.3f} | **{med['ratio']:.2f}** | {med['wall']:.2f} | "
            f"{med['step']:.2f} | {' '.join(f'{v:.2f}' for v in med_task)} | {med['hooks']:.3f} | "
            f"{med['after_rel']:.2f} | {target} |"
        )
    print("\nwhy:")
    for name in names:
        print(f"  {name:<10} {WHY.get(name, '')}")
    print("\nCPU-time ratio of every repeat, and CPU seconds of before+after_task for tasks 1..5 (first repeat):")
    for name in names:
        reps = results[name]
        vals = [sum(r["epoch"].cpu for r in rows[1:]) / sum(r["naive"].cpu for r in rows[1:]) for rows in reps]
        hooks = [round(r["before"].cpu + r["after"].cpu, 3) for r in reps[0]]
        print(f"  {name:<10} {' '.join(f'{v:.3f}' for v in vals)}   {hooks}")


if __name__ == "__main__":
    main()
