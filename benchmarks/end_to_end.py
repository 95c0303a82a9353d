"""End to end, process start to results: `forgetless run` on Permuted Fashion-MNIST, 5 tasks x 1 epoch.

For naive fine-tuning and EWC, in float32 and with ``--precision bf16``, each command is started
as a fresh process (Python start, imports, data loading, permutation, training, evaluation of the
5x5 matrix and the untrained model, writing the results) and timed with the wall clock; the median
of ``--repeats`` runs is reported with the final average accuracy.

    python benchmarks/end_to_end.py [--repeats 3] [--batch-size 128]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--strategies", default="naive,ewc")
    ap.add_argument("--precisions", default="float32,bf16")
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for strategy in a.strategies.split(","):
            for precision in a.precisions.split(","):
                times, accs = [], []
                for rep in range(a.repeats):
                    out = Path(tmp) / f"{strategy}-{precision}-{rep}"
                    cmd = [sys.executable, "-m", "forgetless", "run", "--benchmark", "permuted-fashion-mnist",
                           "--tasks", "5", "--epochs", "1", "--batch-size", str(a.batch_size), "--strategy", strategy,
                           "--precision", precision, "--out", str(out), "--quiet"]
                    t0 = time.perf_counter()
                    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
                    times.append(time.perf_counter() - t0)
                    r = json.loads((out / "result.json").read_text())
                    accs.append(r["metrics"]["average_accuracy"])
                rows.append((strategy, precision, statistics.median(times), min(times), statistics.mean(accs)))
                print(f"{strategy:6} {precision:8} median {rows[-1][2]:6.1f} s  (min {rows[-1][3]:.1f})  "
                      f"average accuracy {100 * rows[-1][4]:.2f} %", flush=True)
    print("\n| strategy | precision | wall s, process start to results (median) | final average accuracy |")
    print("|---|---|---|---|")
    for s, p, med, _, acc in rows:
        print(f"| {s} | {p} | {med:.1f} | {100 * acc:.2f} % |")


if __name__ == "__main__":
    main()
