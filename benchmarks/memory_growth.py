"""Memory as the number of tasks grows: peak RSS and the strategy's state size, T = 2, 5, 10 tasks.

Every measurement is a fresh Python process (``--child``) that runs ``forgetless.run`` on
Permuted Digits (domain-IL; scikit-learn's 8x8 digits, so the data itself is a few hundred KB per
task and does not hide the strategy's memory) - or Split Digits class-IL for iCaRL and BiC, which
support class-IL only (T = 2, 5, 10 tasks of 5, 2, 1 classes) - with the 1024-512-256 MLP
(64-1024-512-256-10: 725,258 parameters, 2.9 MB as float32), ``--iterations`` optimizer steps per
task, batch 128, Adam 1e-3 (the library's default optimizer; with SGD lr 0.01, EWC's default lam
diverges by the 10th task), each strategy with its default hyperparameters. At the end the child reports
``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (the process's peak resident set) and the bytes of
every tensor in ``strategy.state_dict()`` (what a checkpoint stores; shared storage counted once).

    python benchmarks/memory_growth.py [--tasks 2,5,10] [--iterations 10] [--strategies naive,ewc,...]

Issue 17 (one uint8 copy of a dataset for all its tasks): ``--benchmark permuted-fashion-mnist``
measures the permuted benchmark itself (60,000 28x28 images a task), e.g.

    python benchmarks/memory_growth.py --benchmark permuted-fashion-mnist --tasks 5,10,20 --strategies naive,ewc

and ``--src DIR`` runs another source tree (PYTHONPATH=DIR) to compare before and after.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

STRATEGIES = [
    "naive",
    "l2",
    "ewc",
    "online-ewc",
    "si",
    "mas",
    "rwalk",
    "scp",
    "lwf",
    "er",
    "agem",
    "gem",
    "dgr",
    "naive-class",
    "icarl",
    "bic",
]
CLASS_ONLY = {"icarl", "bic", "naive-class"}  # naive-class: naive on Split Digits, the baseline of iCaRL and BiC


def tensor_bytes(obj, seen=None) -> int:
    """Bytes of every tensor reachable in nested dicts/lists/tuples (each storage once)."""
    import torch

    seen = set() if seen is None else seen
    if isinstance(obj, torch.Tensor):
        key = (obj.untyped_storage().data_ptr(), obj.storage_offset(), obj.numel())
        if key in seen:
            return 0
        seen.add(key)
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v, seen) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v, seen) for v in obj)
    return 0


def child(strategy: str, tasks: int, iterations: int, benchmark: str = "permuted-digits") -> None:
    import resource

    import torch

    torch.set_num_threads(1)
    import forgetless as fl
    from forgetless.strategies import make_strategy

    cls = strategy in CLASS_ONLY
    bench = fl.build(
        "split-digits" if cls else benchmark, scenario="class" if cls else "domain", tasks=tasks, seed=0, progress=False
    )
    name = "naive" if strategy == "naive-class" else strategy
    strat = make_strategy(name, {}, bench.scenario)
    t0 = time.perf_counter()
    res = fl.run(
        fl.RunConfig(
            benchmark=bench.name,
            scenario=bench.scenario,
            tasks=tasks,
            iterations=iterations,
            batch_size=128,
            strategy=name,
        ),
        strategy=strat,
        benchmark=bench,
    )
    n_params = sum(
        p.numel() for p in fl.models.build_model("mlp:1024,512,256", bench.input_shape, bench.n_outputs).parameters()
    )
    print(
        json.dumps(
            {
                "strategy": strategy,
                "tasks": tasks,
                "benchmark": bench.name,
                "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                "state_bytes": tensor_bytes(strat.state_dict()),
                "params": n_params,
                "seconds": time.perf_counter() - t0,
                "average_accuracy": res.metrics["average_accuracy"],
            }
        )
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", default="2,5,10")
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--benchmark", default="permuted-digits", help="a permuted or rotated benchmark")
    ap.add_argument("--src", default=None, help="a source tree to run (PYTHONPATH)")
    ap.add_argument(
        "--child", nargs=4, metavar=("STRATEGY", "TASKS", "ITERATIONS", "BENCHMARK"), help=argparse.SUPPRESS
    )
    a = ap.parse_args()
    if a.child:
        child(a.child[0], int(a.child[1]), int(a.child[2]), a.child[3])
        return
    Ts = [int(t) for t in a.tasks.split(",")]
    names = [s.strip() for s in a.strategies.split(",") if s.strip()]
    out = {}
    t_start = time.perf_counter()
    for name in names:
        for T in Ts:
            env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
            if a.src:
                env["PYTHONPATH"] = a.src
            proc = subprocess.run(
                [sys.executable, __file__, "--child", name, str(T), str(a.iterations), a.benchmark],
                capture_output=True,
                text=True,
                env=env,
            )
            if proc.returncode != 0:
                print(f"  {name} T={T} failed:\n{proc.stderr[-2000:]}", flush=True)
                continue
            out[name, T] = json.loads(proc.stdout.strip().splitlines()[-1])
            print(
                f"  {name:<10} T={T:<3} state {out[name, T]['state_bytes'] / 2**20:7.2f} MiB, peak RSS "
                f"{out[name, T]['maxrss_kb'] / 1024:7.1f} MiB ({time.perf_counter() - t_start:.0f} s)",
                flush=True,
            )
    vec = next(iter(out.values()))["params"] * 4 / 2**20
    print(
        f"\n{a.benchmark}; {a.iterations} iterations per task, batch 128, Adam 1e-3, fresh process per cell, "
        f"threads 1; one parameter vector = {vec:.2f} MiB (float32)"
    )
    cols = " | ".join(f"T={T}" for T in Ts)
    print(
        f"| strategy | state MiB: {cols} | state growth per task (MiB) | peak RSS MiB: {cols} | "
        f"peak RSS - naive's, MiB: {cols} |"
    )
    print("|---|" + "---|" * (3 * len(Ts) + 1))
    for name in names:
        if not all((name, T) in out for T in Ts):
            continue
        st = [out[name, T]["state_bytes"] / 2**20 for T in Ts]
        rss = [out[name, T]["maxrss_kb"] / 1024 for T in Ts]
        slope = (st[-1] - st[0]) / (Ts[-1] - Ts[0]) if len(Ts) > 1 else 0.0
        ref = "naive-class" if name in CLASS_ONLY else "naive"
        base = [out[ref, T]["maxrss_kb"] / 1024 if (ref, T) in out else None for T in Ts]
        rel = " | ".join("-" if b is None else f"{r - b:+.1f}" for r, b in zip(rss, base))
        label = ("naive" if name == "naive-class" else name) + (
            " (split-digits class-IL)" if name in CLASS_ONLY else ""
        )
        print(
            f"| {label} | {' | '.join(f'{v:.2f}' for v in st)} | {slope:+.2f} ({slope / vec:.2f} vectors) | "
            f"{' | '.join(f'{v:.0f}' for v in rss)} | {rel} |"
        )


if __name__ == "__main__":
    main()
