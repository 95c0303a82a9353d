"""How close an epoch comes to the machine's matmul throughput, and whether bfloat16 pays.

1. Matmul throughput, measured in this process: float32 ``torch.mm`` at the shapes of one training
   step of the 784-1024-512-256-10 MLP at batch 128 - the 4 forward products (x @ W^T), the 4 weight
   gradients (dY^T @ X) and the 3 input gradients (dY @ W; autograd computes none for the first
   layer, whose input needs no gradient) - each timed alone, median of many calls.
2. FLOPs of a naive epoch: 2 * batch * (784*1024 + 1024*512 + 512*256 + 256*10) per forward, x3 for
   forward + backward, x steps (= 2 * samples * P * 3). The exact count of the products autograd
   runs is smaller (no input gradient for layer 1: 2 * samples * (3P - 784*1024)); both are shown.
3. Achieved fraction = FLOPs / (epoch time x GFLOP/s), for the minimal hand-written loop and for
   forgetless's ``train_task`` (naive), one epoch over the first ``--samples`` images of Permuted
   Fashion-MNIST's first task, SGD lr 0.01, interleaved, median of ``--repeats``; times are CPU
   time of the (one-thread) process, so waiting for a core on a loaded machine is not counted.
4. bfloat16: the same mm shapes in bf16, and the minimal loop's epoch under
   ``torch.autocast("cpu", dtype=torch.bfloat16)`` vs float32 from the same initialisation (Adam
   1e-3, ``--bf16-samples`` images, ``--bf16-epochs``), time per epoch and test accuracy (evaluated
   in float32 on the 10,000 test images of the same task). The library's default stays float32.

    python benchmarks/arithmetic_limit.py [--samples 10000] [--repeats 3] [--bf16-samples 60000]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

import torch
import torch.nn.functional as F

import forgetless as fl
from forgetless.loop import train_task
from forgetless.models import build_model
from forgetless.run import make_optimizer
from forgetless.strategies import Context, Strategy

WIDTHS = [784, 1024, 512, 256, 10]
P = sum(a * b for a, b in itertools.pairwise(WIDTHS))  # multiply-adds of one sample's forward


def step_products(batch):
    """(name, m, k, n, transposed operand) of every product in one training step."""
    out = []
    for i, (fi, fo) in enumerate(itertools.pairwise(WIDTHS), 1):
        out.append((f"fwd L{i}: [{batch},{fi}] x W^T[{fi},{fo}]", (batch, fi), (fo, fi), "x@Wt"))
    for i, (fi, fo) in enumerate(itertools.pairwise(WIDTHS), 1):
        out.append((f"grad W{i}: dY^T[{fo},{batch}] x X[{batch},{fi}]", (batch, fo), (batch, fi), "dYt@X"))
    for i, (fi, fo) in enumerate(itertools.pairwise(WIDTHS), 1):
        if i > 1:
            out.append((f"grad X{i}: dY[{batch},{fo}] x W[{fo},{fi}]", (batch, fo), (fo, fi), "dY@W"))
    return out


def time_mm(a, b, kind, min_time=0.3):
    """Median CPU seconds of one product (batches of 10 calls until ``min_time`` is spent)."""
    f = {"x@Wt": lambda: torch.mm(a, b.t()), "dYt@X": lambda: torch.mm(a.t(), b), "dY@W": lambda: torch.mm(a, b)}[kind]
    for _ in range(3):
        f()
    samples, spent = [], 0.0
    while spent < min_time or len(samples) < 5:
        t0 = time.process_time()
        for _ in range(10):
            f()
        dt = time.process_time() - t0
        samples.append(dt / 10)
        spent += dt
    return statistics.median(samples)


def mm_table(batch, dtype):
    rows, total_t, total_f = [], 0.0, 0.0
    for name, sa, sb, kind in step_products(batch):
        a, b = torch.randn(*sa, dtype=dtype), torch.randn(*sb, dtype=dtype)
        t = time_mm(a, b, kind)
        m, n = (sa[0], sb[0]) if kind == "x@Wt" else ((sa[1], sb[1]) if kind == "dYt@X" else (sa[0], sb[1]))
        k = sa[1] if kind == "x@Wt" else (sa[0] if kind == "dYt@X" else sa[1])
        flops = 2 * m * n * k
        rows.append((name, flops, t))
        total_t += t
        total_f += flops
    return rows, total_f / total_t / 1e9


def minimal_epoch(model, opt, x, y, batch_size, g, autocast=False):
    perm = torch.randperm(len(y), generator=g)
    for i in range(0, len(y), batch_size):
        idx = perm[i : i + batch_size]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


@torch.no_grad()
def accuracy(model, x, y):
    model.eval()
    correct = sum(int((model(x[i : i + 4096]).argmax(1) == y[i : i + 4096]).sum()) for i in range(0, len(y), 4096))
    model.train()
    return correct / len(y)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=10000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--bf16-samples", type=int, default=60000)
    ap.add_argument("--bf16-epochs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    B = a.batch_size
    bench = fl.build("permuted-fashion-mnist", scenario="domain", tasks=1, seed=0, progress=False)
    task = bench.tasks[0]
    x, y = task.train.x[: a.samples], task.train.y[: a.samples]

    # ---- 1. matmul throughput -----------------------------------------------------------------
    rows32, gf32 = mm_table(B, torch.float32)
    rows16, gf16 = mm_table(B, torch.bfloat16)
    print(
        f"threads {torch.get_num_threads()}; mkldnn bf16 supported: "
        f"{torch.ops.mkldnn._is_mkldnn_bf16_supported()}; batch {B}"
    )
    print("| product (one training step) | MFLOP | float32 GFLOP/s | bfloat16 GFLOP/s |")
    print("|---|---|---|---|")
    for (name, f, t32), (_, _, t16) in zip(rows32, rows16):
        print(f"| {name} | {f / 1e6:.1f} | {f / t32 / 1e9:.1f} | {f / t16 / 1e9:.1f} |")
    step_f = sum(r[1] for r in rows32)
    print(f"| **all products of one step** | {step_f / 1e6:.1f} | **{gf32:.1f}** | **{gf16:.1f}** |")

    # ---- 2-3. epoch time vs the matmul limit ----------------------------------------------------
    times = {"minimal": [], "forgetless": []}
    walls = {"minimal": [], "forgetless": []}
    for r in range(a.repeats):
        for which in ("minimal", "forgetless") if r % 2 == 0 else ("forgetless", "minimal"):
            torch.manual_seed(r)
            model = build_model("mlp:1024,512,256", bench.input_shape, bench.n_outputs)
            opt = make_optimizer("sgd", model.parameters(), 0.01)
            g = torch.Generator().manual_seed(r)
            c0, w0 = time.process_time(), time.perf_counter()
            if which == "minimal":
                minimal_epoch(model, opt, x, y, B, g)
            else:
                sub = fl.benchmarks.Task(
                    id=0, name=task.name, train=task.train.subset(torch.arange(len(y))), test=None, classes=task.classes
                )
                ctx = Context(model=model, optimizer=opt, benchmark=bench, batch_size=B, generator=g)
                train_task(ctx, Strategy(), sub, epochs=1)
            times[which].append(time.process_time() - c0)
            walls[which].append(time.perf_counter() - w0)
    flops_brief = 2 * len(y) * P * 3
    flops_exact = 2 * len(y) * (3 * P - WIDTHS[0] * WIDTHS[1])
    print(
        f"\none epoch over {len(y)} images, batch {B}, SGD lr 0.01, {a.repeats} repeats (median CPU time; "
        f"wall clock in brackets)"
    )
    print(
        f"FLOPs per epoch: {flops_brief / 1e9:.1f} GFLOP (2 x samples x P x 3), "
        f"{flops_exact / 1e9:.1f} GFLOP (exact: no input gradient for layer 1)"
    )
    print("| loop | s/epoch | achieved fraction (x3 formula) | achieved fraction (exact count) |")
    print("|---|---|---|---|")
    for which in times:
        t = statistics.median(times[which])
        print(
            f"| {which} | {t:.2f} ({statistics.median(walls[which]):.2f} wall) | "
            f"{flops_brief / (t * gf32 * 1e9):.2f} | {flops_exact / (t * gf32 * 1e9):.2f} |"
        )
    mm_epoch = flops_exact / (gf32 * 1e9)
    print(f"the matmuls alone at the measured rate: {mm_epoch:.2f} s per epoch")

    # ---- 4. bfloat16 autocast -------------------------------------------------------------------
    xb, yb = task.train.x[: a.bf16_samples], task.train.y[: a.bf16_samples]
    res = {"float32": {"t": [], "acc": []}, "bf16 autocast": {"t": [], "acc": []}}
    for r in range(a.repeats):
        for name in ("float32", "bf16 autocast") if r % 2 == 0 else ("bf16 autocast", "float32"):
            torch.manual_seed(100 + r)
            model = build_model("mlp:1024,512,256", bench.input_shape, bench.n_outputs)
            opt = make_optimizer("adam", model.parameters(), 1e-3)
            g = torch.Generator().manual_seed(r)
            c0 = time.process_time()
            for _ in range(a.bf16_epochs):
                minimal_epoch(model, opt, xb, yb, B, g, autocast=name != "float32")
            res[name]["t"].append((time.process_time() - c0) / a.bf16_epochs)
            res[name]["acc"].append(accuracy(model, task.test.x, task.test.y))
    print(
        f"\nminimal loop, Adam 1e-3, {len(yb)} images x {a.bf16_epochs} epoch(s), batch {B}, {a.repeats} "
        f"seeds (same initialisations for both); test accuracy in float32 on {len(task.test)} images"
    )
    print("| precision | CPU s/epoch (median) | test accuracy per seed | mean |")
    print("|---|---|---|---|")
    base = statistics.median(res["float32"]["t"])
    for name, v in res.items():
        t = statistics.median(v["t"])
        print(
            f"| {name} | {t:.2f} ({t / base:.2f}x) | {' '.join(f'{q:.4f}' for q in v['acc'])} | "
            f"{statistics.mean(v['acc']):.4f} |"
        )


if __name__ == "__main__":
    main()
