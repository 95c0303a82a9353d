"""Make the example report in docs/example-report/: a small comparison on permuted digits.

naive fine-tuning against EWC and experience replay (or cumulative training where those are not
available), 3 tasks, 2 seeds, accuracy curves every 5 steps; scikit-learn's real 8x8 digits, so it
runs offline in about 15 seconds on 2 CPU cores.

    python benchmarks/make_example_report.py [--out docs/example-report] [--work runs/example-report]

Writes OUT/report.html (one self-contained page) and every figure as OUT/<name>.png. The runs
themselves stay in --work (not committed); running again reuses them.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

WANTED = ["naive", "ewc", "er"]  # a regularisation method and a replay method against the baseline
BASE = dict(benchmark="permuted-digits", tasks=3, model="mlp:256,128", epochs=3, eval_every=5)
SEEDS = [0, 1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(REPO / "docs" / "example-report"))
    p.add_argument("--work", default=str(REPO / "runs" / "example-report"))
    a = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    import forgetless as fl
    from forgetless.experiment import Grid, compare, format_summary
    from forgetless.report import write_report

    torch.set_num_threads(1)
    os.cpu_count = lambda: 1  # compare gives each run cpu_count() threads: one is fastest for these small models
    strategies = [s for s in WANTED if s in fl.STRATEGIES]
    if len(strategies) < 2:
        strategies = ["naive", "cumulative"]
    t0 = time.perf_counter()
    rows = compare(
        Grid(base=dict(BASE), axes={"strategy": strategies, "seed": SEEDS}),
        a.work,
        say=lambda m: print(m, file=sys.stderr),
    )
    print(format_summary(rows))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.png"):
        old.unlink()
    page = write_report(a.work, out / "report.html", figures=out, figure_formats=("png",))
    size = page.stat().st_size
    print(
        f"{page} ({size / 1e6:.2f} MB) and {len(list(out.glob('*.png')))} PNG figures in "
        f"{time.perf_counter() - t0:.0f} s"
    )
    if size > 1_000_000:
        print("the report is over 1 MB: make the example smaller", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
