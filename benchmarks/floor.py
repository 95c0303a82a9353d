"""The floor of a run: the unavoidable work of `forgetless run`, next to what the run measured.

For each strategy (default naive and EWC) on Permuted Fashion-MNIST, T tasks x 1 epoch, the MLP
(default 1024-512-256), batch B, Adam, float32, this script starts one `forgetless run` process
(wall clock and peak RSS from ``os.wait4``), reads its result.json timing fields, and prints, phase
by phase, measured / floor:

- start-up: the process's wall time minus the run's own ``total_seconds`` (interpreter, imports,
  CLI, writing result.json); floor: ``python -c "import torch"`` (``python -c pass`` is shown too).
- data loading: ``timing.data_seconds`` (benchmark build: read the decoded cache, permutations);
  floor: one pass over the dataset's uint8 bytes (a copy of them, measured here).
- training: the sum of ``per_task[].train_seconds``; floor: every step's matrix products at the
  run's shapes, forward + backward = 3 products per Linear layer ([B, in] x [in, out] forward;
  [B, out] x [out, in] for the input gradient; [out, B] x [B, in] for the weight gradient: the
  "3x forward FLOPs" rule), each timed here with torch.mm at exactly those shapes and the run's
  thread count, plus Adam's arithmetic (about 12 floating-point operations per parameter per
  step, counted at the measured forward matrix-product rate; it is memory-bound in reality).
- evaluation: ``initial_eval_seconds`` + the sum of ``per_task[].eval_seconds``; floor: what
  ``loop.evaluate`` really does, every task's test set after every task and for the untrained
  model ((T+1) T passes over 10,000 images), forward products only in ``EVAL_BATCH`` rows.
- importance estimation: the sum of ``per_task[].after_task_seconds`` (EWC's Fisher; ~0 for
  naive); floor: EWC's Fisher on ``samples`` (default 1,000) images per task, forward + the
  backward products (the per-sample squared gradients of the Linear layers come in the same
  [out, n] x [n, in] product as a weight gradient, on squared factors): 3 products per layer.
- writing: ``checkpoint_seconds`` (the checkpoint after every task, logs); floor: writing and
  fsyncing the same bytes (the checkpoint's size x T) once, measured here.

The floor of the whole run is the sum of the floors. Each floor is measured in this process with
the same thread count as the run (``--threads``, default 1, also OMP_NUM_THREADS of the run).

    python benchmarks/floor.py [--strategies naive,ewc] [--tasks 5] [--batch-size 128] [--threads 1]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ADAM_FLOPS_PER_PARAM = 12  # m, v updates (2 mul + 1 add each), bias corrections, sqrt, add, div, update


def wall_and_rss(cmd, env) -> tuple[float, float]:
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{err[-3000:]}")
    return wall, usage.ru_maxrss / 1024


def best_of(fn, repeats: int = 5, inner: int = 1) -> float:
    """The fastest of ``repeats`` timings of ``inner`` calls, per call (the floor: least disturbed)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        best = min(best, (time.perf_counter() - t0) / inner)
    return best


def mm_seconds(torch, shapes: list[tuple[int, int, int]], inner: int = 20) -> float:
    """Time of one product of each (m, k, n) shape ([m, k] x [k, n]), float32, summed."""
    total = 0.0
    for m, k, n in shapes:
        a, b = torch.randn(m, k), torch.randn(k, n)
        out = torch.empty(m, n)
        torch.mm(a, b, out=out)
        total += best_of(lambda: torch.mm(a, b, out=out), repeats=5, inner=inner)
    return total


def layers(model: str, n_in: int, n_out: int) -> list[tuple[int, int]]:
    if not model.startswith("mlp:"):
        raise SystemExit("floor.py knows the FLOPs of mlp:W1,W2,... models only")
    widths = [n_in] + [int(w) for w in model[4:].split(",")] + [n_out]
    return list(itertools.pairwise(widths))


def floors(a, run: dict, out: Path) -> dict[str, float]:
    """Each phase's floor, in seconds, for the run whose result.json is ``run``."""
    import numpy as np
    import torch

    torch.set_num_threads(a.threads)
    cfg = run["config"]
    T = cfg["tasks"]
    tasks = run["benchmark"]["tasks"]
    n_train = sum(t["train"] for t in tasks) * cfg["epochs"]
    n_test = [t["test"] for t in tasks]
    B = cfg["batch_size"]
    import math

    from forgetless.data.sources import DATASETS

    n_in = math.prod(DATASETS[cfg["benchmark"].partition("-")[2]]["shape"])
    L = layers(cfg["model"], n_in, run["benchmark"]["n_outputs"])
    n_params = sum(i * o + o for i, o in L)
    steps = sum(p["steps"] for p in run["timing"]["per_task"])

    def train_shapes(b):
        return [s for i, o in L for s in ((b, i, o), (b, o, i), (o, b, i))]

    def forward_shapes(b):
        return [(b, i, o) for i, o in L]

    full, last = divmod(n_train // T, B)
    step = mm_seconds(torch, train_shapes(B))
    train = T * (full * step + (mm_seconds(torch, train_shapes(last)) if last else 0.0))
    fwd_flops = sum(2 * B * i * o for i, o in L)
    rate = fwd_flops / mm_seconds(torch, forward_shapes(B))  # FLOP/s of the forward products at batch B
    train += steps * ADAM_FLOPS_PER_PARAM * n_params / rate

    from forgetless.loop import EVAL_BATCH

    evaluation = 0.0
    for n in n_test:
        full, last = divmod(n, EVAL_BATCH)
        one = full * mm_seconds(torch, forward_shapes(EVAL_BATCH), inner=3)
        one += mm_seconds(torch, forward_shapes(last), inner=3) if last else 0.0
        evaluation += (T + 1) * one  # after every task and for the untrained model, every task's test set

    importance = 0.0
    if cfg["strategy"] in ("ewc", "online-ewc"):
        samples = min(cfg["params"].get("samples") or n_train, n_train // T)
        importance = T * mm_seconds(torch, train_shapes(samples), inner=3)

    images = np.random.randint(
        0, 256, size=(sum(t["train"] + (t["test"] or 0) for t in tasks[:1]), n_in), dtype=np.uint8
    )
    data = best_of(lambda: images.copy(), repeats=3)

    ck = out / "checkpoint.pt"
    size = ck.stat().st_size if ck.exists() else 3 * 4 * n_params
    blob = os.urandom(size)

    def write():
        with open(out / "floor.bin", "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())

    writing = T * best_of(write, repeats=3)
    (out / "floor.bin").unlink()
    return {
        "data": data,
        "training": train,
        "evaluation": evaluation,
        "importance": importance,
        "writing": writing,
        "_rate_gflops": rate / 1e9,
        "_n_params": n_params,
        "_steps": steps,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--strategies", default="naive,ewc")
    ap.add_argument("--tasks", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--model", default="mlp:1024,512,256")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--benchmark", default="permuted-fashion-mnist")
    ap.add_argument("--src", default=None, help="a source tree to run (PYTHONPATH), e.g. an older checkout's src")
    a = ap.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads)}
    if a.src:
        env["PYTHONPATH"] = str(Path(a.src).resolve())
        sys.path.insert(0, env["PYTHONPATH"])
    py = sys.executable
    start_pass = min(wall_and_rss([py, "-c", "pass"], env)[0] for _ in range(3))
    start_torch = min(wall_and_rss([py, "-c", "import torch"], env)[0] for _ in range(3))
    print(f"python -c pass: {start_pass:.2f} s; python -c 'import torch': {start_torch:.2f} s (best of 3)")
    summary = []
    with tempfile.TemporaryDirectory() as tmp:
        for strategy in a.strategies.split(","):
            out = Path(tmp) / strategy
            cmd = [
                py,
                "-m",
                "forgetless",
                "run",
                "--benchmark",
                a.benchmark,
                "--tasks",
                str(a.tasks),
                "--epochs",
                str(a.epochs),
                "--batch-size",
                str(a.batch_size),
                "--model",
                a.model,
                "--strategy",
                strategy,
                "--threads",
                str(a.threads),
                "--out",
                str(out),
                "--quiet",
            ]
            wall, rss = wall_and_rss(cmd, env)
            run = json.loads((out / "result.json").read_text())
            t = run["timing"]
            per = t["per_task"]
            measured = {
                "start-up": wall - t["total_seconds"],
                "data": t.get("data_seconds", float("nan")),
                "other setup": t["setup_seconds"] - t.get("data_seconds", 0.0),
                "training": sum(p["train_seconds"] for p in per),
                "evaluation": t.get("initial_eval_seconds", 0.0) + sum(p["eval_seconds"] for p in per),
                "importance": sum(p["after_task_seconds"] for p in per),
                "writing": t.get("checkpoint_seconds", float("nan")),
            }
            accounted = sum(v for k, v in measured.items() if k != "start-up")
            measured["rest of the run"] = t["total_seconds"] - accounted
            f = floors(a, run, out)
            floor = {
                "start-up": start_torch,
                "data": f["data"],
                "other setup": 0.0,
                "training": f["training"],
                "evaluation": f["evaluation"],
                "importance": f["importance"],
                "writing": f["writing"],
                "rest of the run": 0.0,
            }
            total_m, total_f = wall, sum(floor.values())
            acc = run["metrics"]["average_accuracy"]
            print(
                f"\n{strategy}: {a.benchmark} {a.tasks} x {a.epochs} epoch, {a.model}, batch {a.batch_size}, "
                f"threads {a.threads}: wall {wall:.1f} s, peak RSS {rss:.0f} MiB, final average accuracy "
                f"{100 * acc:.2f} %; forward matrix-product rate {f['_rate_gflops']:.1f} GFLOP/s at batch "
                f"{a.batch_size}; {f['_n_params']:,} parameters, {f['_steps']} steps"
            )
            print("| phase | measured s | floor s | measured / floor |")
            print("|---|---|---|---|")
            for k in measured:
                ratio = f"{measured[k] / floor[k]:.2f}" if floor[k] > 0 else "-"
                print(f"| {k} | {measured[k]:.2f} | {floor[k]:.2f} | {ratio} |")
            print(f"| **total** | **{total_m:.2f}** | **{total_f:.2f}** | **{total_m / total_f:.2f}** |")
            summary.append((strategy, total_m, total_f, rss, acc))
    print("\n| strategy | wall s | floor s | measured / floor | peak RSS MiB | final average accuracy |")
    print("|---|---|---|---|---|---|")
    for s, m, fl, rss, acc in summary:
        print(f"| {s} | {m:.1f} | {fl:.1f} | {m / fl:.2f} | {rss:.0f} | {100 * acc:.2f} % |")


if __name__ == "__main__":
    main()
