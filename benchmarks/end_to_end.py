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
    python benchmarks/end_to_end.py --data-load [--dataset fashion-mnist] [--repeats 5]

``--data-load``: ``load_dataset`` alone in fresh processes (decoded-data cache off; first load into
an empty cache; later loads from it).
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
    """(wall seconds, peak RSS MiB) of one process; its CPU seconds (user + system, the steadier
    figure on a loaded machine) go to ``CPU`` (last value)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-2000:]}")
    CPU.append(usage.ru_utime + usage.ru_stime)
    return wall, usage.ru_maxrss / 1024


CPU: list[float] = []


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
        cases = [
            ("python -c pass", [py, "-c", "pass"]),
            ("python -c 'import torch'", [py, "-c", "import torch"]),
            ("python -c 'import forgetless'", [py, "-c", "import forgetless"]),
            ("forgetless --help", [py, "-m", "forgetless", "--help"]),
        ]
        main_job = [py, "-m", "forgetless", "run", "--benchmark", "permuted-digits", "--quiet"]
        if a.threads:
            main_job += ["--threads", str(a.threads)]
        rows = []
        for label, cmd in cases + [("forgetless run --benchmark permuted-digits", main_job)]:
            CPU.clear()
            runs = [
                timed(cmd + (["--out", f"{tmp}/d{rep}"] if cmd is main_job else []), env) for rep in range(a.repeats)
            ]
            rows.append(
                (
                    label,
                    statistics.median(w for w, _ in runs),
                    min(w for w, _ in runs),
                    max(m for _, m in runs),
                    statistics.median(CPU),
                )
            )
            print(
                f"{label:<45} median {rows[-1][1]:6.2f} s (min {rows[-1][2]:.2f}), CPU {rows[-1][4]:.2f} s, "
                f"peak RSS {rows[-1][3]:.0f} MiB",
                flush=True,
            )
    print(
        f"\nsource: {a.src or 'installed / PYTHONPATH'}; threads: {a.threads or 'default'}; repeats {a.repeats}; "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print("| command | wall s (median) | min | CPU s (median) | peak RSS MiB |")
    print("|---|---|---|---|---|")
    for label, med, low, rss, cpu in rows:
        print(f"| `{label}` | {med:.2f} | {low:.2f} | {cpu:.2f} | {rss:.0f} |")


LOAD = (
    "import time, torch\nfrom forgetless.data import load_dataset\nt = time.perf_counter()\n"
    "train, test = load_dataset({name!r}, download=False)\nprint(time.perf_counter() - t)"
)


def data_load(a) -> None:
    """``load_dataset`` in fresh processes: decoding with the cache off, then the first load with an
    empty cache (decode + write), then later loads (the memory-mapped cache)."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        env = {**environment(a), "XDG_CACHE_HOME": tmp}
        code = LOAD.format(name=a.dataset)

        def load(extra=None):
            done = subprocess.run(
                [sys.executable, "-c", code], env={**env, **(extra or {})}, capture_output=True, text=True, check=True
            )
            return float(done.stdout.strip().splitlines()[-1])

        off = sorted(load({"FORGETLESS_DATA_CACHE": "off"}) for _ in range(a.repeats))
        first = load()
        later = sorted(load() for _ in range(a.repeats))
        rows = [
            ("decoded every run (FORGETLESS_DATA_CACHE=off)", off),
            ("first load, empty cache (decode + write)", [first]),
            ("second and later loads", later),
        ]
    print(f"load_dataset({a.dataset!r}) in a fresh process (after import torch); load average {os.getloadavg()[0]:.1f}")
    print("| load | seconds (median) | min |")
    print("|---|---|---|")
    for label, values in rows:
        print(f"| {label} | {statistics.median(values):.3f} | {min(values):.3f} |")


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
    ap.add_argument("--data-load", action="store_true", help="time load_dataset: no cache, first and later loads")
    ap.add_argument("--dataset", default="fashion-mnist", help="for --data-load")
    a = ap.parse_args()
    if a.startup:
        return startup(a)
    if a.data_load:
        return data_load(a)
    env = environment(a)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for strategy in a.strategies.split(","):
            for precision in a.precisions.split(","):
                times, peaks, accs = [], [], []
                for rep in range(a.repeats):
                    out = Path(tmp) / f"{strategy}-{precision}-{rep}"
                    cmd = [
                        sys.executable,
                        "-m",
                        "forgetless",
                        "run",
                        "--benchmark",
                        "permuted-fashion-mnist",
                        "--tasks",
                        "5",
                        "--epochs",
                        "1",
                        "--batch-size",
                        str(a.batch_size),
                        "--strategy",
                        strategy,
                        "--model",
                        a.model,
                        "--precision",
                        precision,
                        "--out",
                        str(out),
                        "--quiet",
                    ]
                    if a.threads:
                        cmd += ["--threads", str(a.threads)]
                    wall, rss = timed(cmd, env)
                    times.append(wall)
                    peaks.append(rss)
                    r = json.loads((out / "result.json").read_text())
                    accs.append(r["metrics"]["average_accuracy"])
                rows.append(
                    (strategy, precision, statistics.median(times), min(times), max(peaks), statistics.mean(accs))
                )
                print(
                    f"{strategy:6} {precision:8} median {rows[-1][2]:6.1f} s  (min {rows[-1][3]:.1f})  "
                    f"peak RSS {rows[-1][4]:.0f} MiB  average accuracy {100 * rows[-1][5]:.2f} %",
                    flush=True,
                )
    print(f"\nsource: {a.src or 'installed / PYTHONPATH'}; threads: {a.threads or 'default'}; repeats {a.repeats}")
    print(
        "| strategy | precision | wall s, process start to results (median) | peak RSS MiB | final average accuracy |"
    )
    print("|---|---|---|---|---|")
    for s, p, med, _, rss, acc in rows:
        print(f"| {s} | {p} | {med:.1f} | {rss:.0f} | {100 * acc:.2f} % |")


if __name__ == "__main__":
    main()
