"""End to end, process start to results: wall time and peak memory of whole `forgetless` processes.

Default: `forgetless run` on Permuted Fashion-MNIST, 5 tasks x 1 epoch, for naive fine-tuning and
EWC, in float32 and with ``--precision bf16``. Each command is a fresh process (Python start,
imports, data loading, permutation, training, evaluation of the 5x5 matrix and the untrained
model, writing the results), timed with the wall clock; its peak resident set comes from
``os.wait4`` (the same figure as ``/usr/bin/time -v``'s "Maximum resident set size"). The median of
``--repeats`` runs is reported with the final average accuracy.

``--startup`` times instead ``forgetless --help`` and the main job ``forgetless run --benchmark
permuted-digits`` (5 tasks, defaults), and ``python -c pass`` / ``python -c "import torch"`` for
reference. ``--src DIR`` runs another source tree (``PYTHONPATH=DIR``), to compare before/after.

    python benchmarks/end_to_end.py [--repeats 3] [--batch-size 128] [--threads 1]
    python benchmarks/end_to_end.py --startup [--repeats 5] [--src /path/to/old/src]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(cmd: list[str], env: dict) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of one process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-2000:]}")
    return wall, usage.ru_maxrss / 1024


def environment(a) -> dict:
    env = dict(os.environ)
    if a.src:
        env["PYTHONPATH"] = str(Path(a.src).resolve())
    if a.threads:
        env["OMP_NUM_THREADS"] = str(a.threads)
    return env


def startup(a) -> None:
    env = environment(a)
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        cases = [("python -c pass", [py, "-c", "pass"]),
                 ("python -c 'import torch'", [py, "-c", "import torch"]),
                 ("python -c 'import forgetless'", [py, "-c", "import forgetless"]),
                 ("forgetless --help", [py, "-m", "forgetless", "--help"])]
        main_job = [py, "-m", "forgetless", "run", "--benchmark", "permuted-digits", "--quiet"]
        if a.threads:
            main_job += ["--threads", str(a.threads)]
        rows = []
        for label, cmd in cases + [("forgetless run --benchmark permuted-digits", main_job)]:
            runs = []
            for rep in range(a.repeats):
                runs.append(timed(cmd + (["--out", f"{tmp}/d{rep}"] if cmd is main_job else []), env))
            rows.append((label, statistics.median(w for w, _ in runs), min(w for w, _ in runs),
                         max(m for _, m in runs)))
            print(f"{label:<45} median {rows[-1][1]:6.2f} s (min {rows[-1][2]:.2f}), peak RSS {rows[-1][3]:.0f} MiB",
                  flush=True)
    print(f"\nsource: {a.src or 'installed / PYTHONPATH'}; threads: {a.threads or 'default'}; repeats {a.repeats}")
    print("| command | wall s (median) | min | peak RSS MiB |")
    print("|---|---|---|---|")
    for label, med, low, rss in rows:
        print(f"| `{label}` | {med:.2f} | {low:.2f} | {rss:.0f} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--strategies", default="naive,ewc")
    ap.add_argument("--precisions", default="float32,bf16")
    ap.add_argument("--model", default="mlp:1024,512,256")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (and OMP_NUM_THREADS) per process")
    ap.add_argument("--src", default=None, help="a source tree to run (PYTHONPATH), e.g. an older checkout's src")
    ap.add_argument("--startup", action="store_true", help="time --help and the permuted-digits main job instead")
    a = ap.parse_args()
    if a.startup:
        return startup(a)
    env = environment(a)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for strategy in a.strategies.split(","):
            for precision in a.precisions.split(","):
                times, peaks, accs = [], [], []
                for rep in range(a.repeats):
                    out = Path(tmp) / f"{strategy}-{precision}-{rep}"
                    cmd = [sys.executable, "-m", "forgetless", "run", "--benchmark", "permuted-fashion-mnist",
                           "--tasks", "5", "--epochs", "1", "--batch-size", str(a.batch_size), "--strategy", strategy,
                           "--model", a.model, "--precision", precision, "--out", str(out), "--quiet"]
                    if a.threads:
                        cmd += ["--threads", str(a.threads)]
                    wall, rss = timed(cmd, env)
                    times.append(wall)
                    peaks.append(rss)
                    r = json.loads((out / "result.json").read_text())
                    accs.append(r["metrics"]["average_accuracy"])
                rows.append((strategy, precision, statistics.median(times), min(times), max(peaks),
                             statistics.mean(accs)))
                print(f"{strategy:6} {precision:8} median {rows[-1][2]:6.1f} s  (min {rows[-1][3]:.1f})  "
                      f"peak RSS {rows[-1][4]:.0f} MiB  average accuracy {100 * rows[-1][5]:.2f} %", flush=True)
    print(f"\nsource: {a.src or 'installed / PYTHONPATH'}; threads: {a.threads or 'default'}; repeats {a.repeats}")
    print("| strategy | precision | wall s, process start to results (median) | peak RSS MiB | final average accuracy |")
    print("|---|---|---|---|---|")
    for s, p, med, _, rss, acc in rows:
        print(f"| {s} | {p} | {med:.1f} | {rss:.0f} | {100 * acc:.2f} % |")


if __name__ == "__main__":
    main()
