"""Importance estimation speed: forgetless's estimators vs a plain per-sample Python loop.

Exact diagonal Fisher (``fisher_diagonal(..., labels="exact")``: sum_c p(c|x) g_c^2 per sample,
every one of the 10 classes) and MAS (``mas_importance``: |d ||f(x)||^2 / d theta| per sample) over
the first 10,000 Fashion-MNIST training images, on the 784-1024-512-256-10 MLP after one epoch of
training (Adam 1e-3 on the same 10,000 images, so that p(c|x) is not uniform).

Timed: forgetless's default backend (``"auto"``: the outer-product form of nn.Linear layers on
this all-Linear MLP), ``backend="vmap"`` (torch.func per-sample gradients, any module), and a
direct per-sample loop (one forward per sample, then ``torch.autograd.grad`` once per class for the
Fisher, once for MAS, accumulating as it goes: the arithmetic of ``per_sample_grads_loop`` without
stacking every gradient). The loop runs on the first ``--loop-samples`` images (500) and its time is
extrapolated linearly to 10,000 (it is exactly linear in the number of samples: one forward and one
or ten backward passes per sample). Accuracy: every estimator on those 500 images against the loop,
max |a - b| / max |b| over all parameters (tolerance 1e-5), and the two backends against each other
on the 10,000. Runs are interleaved; the median CPU time over ``--repeats`` is reported (the slow vmap backend runs
``--vmap-repeats`` times, 1 by default, to keep the default run near 5 minutes).

    python benchmarks/importance_speed.py [--samples 10000] [--loop-samples 500] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from forgetless.data import load_dataset
from forgetless.models import build_model
from forgetless.strategies.estimation import trainable
from forgetless.strategies.fisher import fisher_diagonal
from forgetless.strategies.mas import mas_importance

TOL = 1e-5


def loop_fisher_exact(model, x):
    params = trainable(model)
    acc = [torch.zeros_like(p) for p in params]
    model.eval()
    for i in range(len(x)):
        out = model(x[i : i + 1])[0]
        logp = F.log_softmax(out, -1)
        probs = logp.detach().exp()
        for c in range(len(out)):
            grads = torch.autograd.grad(logp[c], params, retain_graph=c < len(out) - 1)
            for a, g in zip(acc, grads):
                a.add_(g * g, alpha=float(probs[c]))
    model.train()
    return [a / len(x) for a in acc]


def loop_mas(model, x):
    params = trainable(model)
    acc = [torch.zeros_like(p) for p in params]
    model.eval()
    for i in range(len(x)):
        out = model(x[i : i + 1])[0]
        for a, g in zip(acc, torch.autograd.grad(out.square().sum(), params)):
            a.add_(g.abs())
    model.train()
    return [a / len(x) for a in acc]


def rel_diff(a, b):
    """max |a - b| / max |b| over every parameter tensor."""
    num = max(float((u - v).abs().max()) for u, v in zip(a, b))
    return num / max(float(v.abs().max()) for v in b)


def timed(fn):
    """(CPU seconds, result): the process's CPU time, so waiting for a core on a loaded machine is
    not counted (one thread)."""
    t0 = time.process_time()
    out = fn()
    return time.process_time() - t0, out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=10000)
    ap.add_argument("--loop-samples", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--vmap-repeats", type=int, default=1, help="vmap runs (slow: ~3 min for the exact Fisher)")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    train, _ = load_dataset("fashion-mnist", progress=False)
    x, y = train.x[: a.samples], train.y[: a.samples]
    torch.manual_seed(0)
    model = build_model("mlp:1024,512,256", tuple(x.shape[1:]), 10)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    for idx in torch.randperm(len(x), generator=g).split(128):
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    xl = x[: a.loop_samples]
    methods = {
        "fisher": {
            "auto": lambda xs: fisher_diagonal(model, xs, labels="exact"),
            "vmap": lambda xs: fisher_diagonal(model, xs, labels="exact", backend="vmap"),
            "loop": lambda xs: loop_fisher_exact(model, xs),
        },
        "mas": {
            "auto": lambda xs: mas_importance(model, xs),
            "vmap": lambda xs: mas_importance(model, xs, backend="vmap"),
            "loop": lambda xs: loop_mas(model, xs),
        },
    }
    rows = []
    t_start = time.perf_counter()
    for kind, fns in methods.items():
        times = {k: [] for k in fns}
        full = {}
        for r in range(a.repeats):
            order = ["loop", "auto", "vmap"] if r % 2 == 0 else ["vmap", "auto", "loop"]
            if r >= a.vmap_repeats:
                order.remove("vmap")
            for k in order:
                xs = xl if k == "loop" else x
                t, out = timed(lambda: fns[k](xs))
                times[k].append(t)
                full[k] = out
            print(
                f"  {kind} repeat {r + 1}: "
                + ", ".join(f"{k} {times[k][-1]:.2f} s" for k in order)
                + f" (CPU time; {time.perf_counter() - t_start:.0f} s wall so far)",
                flush=True,
            )
        small = {k: fns[k](xl) for k in ("auto", "vmap")}  # the backends on the loop's samples
        loop_small = full["loop"]
        med = {k: statistics.median(v) for k, v in times.items()}
        loop_full = med["loop"] * len(x) / len(xl)
        rows.append(
            (
                kind,
                med,
                loop_full,
                {
                    "auto": rel_diff(small["auto"], loop_small),
                    "vmap": rel_diff(small["vmap"], loop_small),
                    "auto_vs_vmap": rel_diff(full["auto"], full["vmap"]),
                },
            )
        )

    print(
        f"\n{len(x)} Fashion-MNIST images, MLP 784-1024-512-256-10, threads {torch.get_num_threads()}, "
        f"CPU seconds, median of {a.repeats} repeats (vmap: {a.vmap_repeats}); loop timed on {len(xl)} images "
        f"and extrapolated x{len(x) / len(xl):g}"
    )
    print(
        "| importance | per-sample loop (s, extrapolated) | forgetless auto (s) | speed-up | forgetless vmap (s) "
        "| speed-up | rel. diff auto vs loop | rel. diff vmap vs loop | rel. diff auto vs vmap (10,000) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for kind, med, loop_full, diff in rows:
        name = {"fisher": "exact Fisher (10 classes)", "mas": "MAS"}[kind]
        print(
            f"| {name} | {loop_full:.1f} ({med['loop']:.2f} s for {len(xl)}) | {med['auto']:.3f} | "
            f"{loop_full / med['auto']:.0f}x | {med['vmap']:.2f} | {loop_full / med['vmap']:.1f}x | "
            f"{diff['auto']:.1e} | {diff['vmap']:.1e} | {diff['auto_vs_vmap']:.1e} |"
        )
    ok = all(v <= TOL for _, _, _, d in rows for v in d.values())
    print(f"all relative differences <= {TOL:g}: {'yes' if ok else 'NO'}")


if __name__ == "__main__":
    main()
