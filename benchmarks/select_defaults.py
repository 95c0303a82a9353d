"""Issue 12, section 4: the regularizers' default lam chosen by one protocol on validation data.

Benchmarks (forgetting is real on each):

- B1 Permuted Fashion-MNIST, 5 tasks x 1 epoch, MLP 784-1024-512-256-10, Adam 1e-3, batch 128,
  domain-incremental, one optimizer for the whole run (the loop's default);
- B2 the homework protocol on Fashion-MNIST: Permuted, 5 tasks (first unpermuted), the same MLP,
  Adam 1e-4, batch 128, 10 epochs, domain-incremental, a fresh Adam at every task
  (``reproduce_homework.PROTOCOL``);
- B3 Split MNIST task-incremental on the MNIST subset, 5 tasks of 2 digits, MLP 784-400-400,
  Adam 1e-3, batch 128, 500 iterations per task;
- HW the homework protocol of B2 on the MNIST subset (``reproduce_homework.py``; issue 12 section 6).

Protocol, every benchmark alike:

1. Validation only: 10 % of each task's training data held out (``val_fraction=0.1``,
   ``eval_split="val"``), seed 0; the test split is never read. Score: final average accuracy.
2. Candidates: lam on a log grid in steps of x10, per method and benchmark (``GRIDS`` below; trimmed
   to a window around the optimum). If the best candidate is at an edge of the window, the next x10
   value beyond that edge is run too, repeatedly (at most ``MAX_EXTEND`` times per edge), so the
   best is inside the window.
3. The default of a method (the rule): the candidates are the union U of the values run on the
   benchmarks named in ``--rule-benchmarks`` whose selection is complete (``select --bench B3
   --fill B1`` would also run every value tried on B1 on the cheap B3; optional, and not run for
   the recorded choice: machine time). On each benchmark every value
   of U gets a rank (1 = best, ties share their mean rank): the values run there by validation
   score; below them, the values of U not run there (outside that benchmark's window, which was
   widened until its best was inside, so the validation curve is assumed to keep falling away from
   the window), ordered by their distance in decades from the nearest value run there (closer =
   better). The default is the value with the lowest mean rank over those benchmarks; ties go to
   the value run on more of them, then to the smaller lam (a too weak pull costs at most what
   naive loses; a too strong one can fall far below naive).
4. Test: with the defaults, naive, joint and every regularizer on the test split, seeds 0, 1, 2;
   final average accuracy mean +- std; on B1 also the fraction of the naive -> joint gap closed,
   (A_method - A_naive) / (A_joint - A_naive), from the means.

Memory of replay methods is a budget (how many examples the user may keep), not a tuned value: it
is not selected here. LwF (lam x temperature) is optional (``--lwf``).

    PYTHONPATH=$PWD/src python benchmarks/select_defaults.py select --bench B3
    PYTHONPATH=$PWD/src python benchmarks/select_defaults.py select --bench B1
    PYTHONPATH=$PWD/src python benchmarks/select_defaults.py select --bench B3 --fill B1    # optional
    PYTHONPATH=$PWD/src python benchmarks/select_defaults.py rule            # -> benchmarks/defaults_selection.json
    PYTHONPATH=$PWD/src python benchmarks/select_defaults.py test --bench B3 --seeds 0,1,2
    PYTHONPATH=$PWD/src python benchmarks/select_defaults.py table           # -> OUT/tables.md

Runs go to ``OUT/<bench>/<val|test>/<method>/<stamp>`` (default OUT: runs/defaults); every finished
run's result.json is copied at once to ``benchmarks/results/defaults/<bench>/...`` (same layout), so
copying that tree back (``cp -r benchmarks/results/defaults/. runs/defaults/``) resumes the grid:
runs whose result.json is there are skipped. One run at a time, one torch thread.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from reproduce_homework import PROTOCOL as HOMEWORK

from forgetless.config import RunConfig
from forgetless.experiment import execute, finished, run_dir

ROOT = Path(__file__).resolve().parent
SUBSET = "/work/shared/data/mnist-subset"
REGULARIZERS = ["l2", "ewc", "online-ewc", "si", "mas", "rwalk", "scp"]
MAX_EXTEND = 3

BENCHMARKS = {
    "B1": dict(
        benchmark="permuted-fashion-mnist",
        tasks=5,
        epochs=1,
        model="mlp:1024,512,256",
        optimizer="adam",
        lr=1e-3,
        batch_size=128,
        scenario="domain",
    ),
    "B2": dict(HOMEWORK, benchmark="permuted-fashion-mnist"),
    "B3": dict(
        benchmark="split-mnist",
        scenario="task",
        data_dir=SUBSET,
        model="mlp:400,400",
        optimizer="adam",
        lr=1e-3,
        batch_size=128,
        iterations=500,
    ),
    "HW": dict(HOMEWORK, benchmark="permuted-mnist", data_dir=SUBSET),
}
for _b in BENCHMARKS.values():
    _b.pop("seed", None)


def decades(lo: int, hi: int) -> list[float]:
    return [float(f"1e{k}") for k in range(lo, hi + 1)]


# candidate windows (x10 steps, three values around the expected optimum: machine time), widened
# automatically at an edge (protocol step 2)
GRIDS = {
    "B3": {
        "l2": decades(-3, -1),
        "ewc": decades(5, 7),
        "online-ewc": decades(5, 7),
        "si": decades(0, 2),
        "mas": decades(-2, 0),
        "rwalk": decades(0, 2),
        "scp": decades(2, 4),
    },
    "B1": {
        "l2": decades(-3, -1),
        "ewc": decades(1, 3),
        "online-ewc": decades(1, 3),
        "si": decades(-1, 1),
        "mas": decades(-2, 0),
        "rwalk": decades(-1, 1),
        "scp": decades(0, 2),
    },
    "HW": {
        "l2": decades(-4, -2),
        "ewc": decades(1, 3),
        "online-ewc": decades(1, 3),
        "si": decades(0, 2),
        "mas": decades(-3, -1),
        "rwalk": decades(-1, 1),
        "scp": decades(1, 3),
    },
}
# EWC and online EWC are selected with their Fisher min-max normalized (``normalize=minmax``, their
# default since issue 12: the raw Fisher's scale moves the best lam by 8 decades between B1 and B3,
# see benchmarks/ewc_normalisation.py and docs/results.md); their runs live in <method>-minmax folders
# (the raw-Fisher runs stay in <method>/ as the record of the earlier choice).
FIXED = {"ewc": {"normalize": "minmax"}, "online-ewc": {"normalize": "minmax"}}
for _b in GRIDS:
    GRIDS[_b]["ewc"] = GRIDS[_b]["online-ewc"] = decades(0, 3)
GRIDS["B2"] = dict(GRIDS["HW"])
# B2 is the homework protocol on Fashion-MNIST, 8-27 min a run here: three values for the normalized EWCs,
# centred where B1 and B3 put their optimum (10-100); the window still widens at an edge
GRIDS["B2"]["ewc"] = GRIDS["B2"]["online-ewc"] = decades(1, 3)


def folder(m: str) -> str:
    """Where method m's runs are kept (``ewc-minmax`` for the normalized EWC)."""
    return f"{m}-minmax" if m in FIXED else m


def with_lam(m: str, lam: float) -> dict:
    return {"lam": lam, **FIXED.get(m, {})}


LWF = [{"lam": lam, "temperature": t} for lam in (0.1, 1.0, 10.0) for t in (1.0, 2.0, 4.0)]


def out_root(a) -> Path:
    return Path(a.out)


def export(d: Path, out: Path) -> None:
    """Copy a finished run's result.json to benchmarks/results/defaults/<same relative path>."""
    src = d / "result.json"
    if src.exists():
        dst = ROOT / "results" / "defaults" / d.relative_to(out) / "result.json"
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not dst.exists():
            shutil.copyfile(src, dst)


def run_all(jobs: list[tuple[RunConfig, Path]], out: Path) -> None:
    """One run at a time (one torch thread), each result exported as soon as it exists."""
    for cfg, d in jobs:
        d.parent.mkdir(parents=True, exist_ok=True)
        if finished(d) is None:
            t = time.perf_counter()
            status = execute([(cfg, d)], 1, "local", None, lambda m: None, threads=1)
            print(f"{status[0]['status']}: {d.relative_to(out)} ({time.perf_counter() - t:.0f} s)", flush=True)
        export(d, out)


def val_config(bench: str, strategy: str, params: dict) -> RunConfig:
    return RunConfig.from_dict(
        dict(BENCHMARKS[bench], strategy=strategy, params=params, seed=0, val_fraction=0.1, eval_split="val")
    )


def test_config(bench: str, strategy: str, params: dict, seed: int) -> RunConfig:
    return RunConfig.from_dict(dict(BENCHMARKS[bench], strategy=strategy, params=params, seed=seed))


def score(out: Path, bench: str, strategy: str, params: dict) -> float | None:
    r = finished(run_dir(out / bench / "val" / folder(strategy), val_config(bench, strategy, params)))
    return None if r is None else r["metrics"]["average_accuracy"]


def select(a) -> None:
    out = out_root(a)
    bench = a.bench
    refs = [
        (val_config(bench, s, {}), run_dir(out / bench / "val" / s, val_config(bench, s, {})))
        for s in a.refs.split(",")
        if s
    ]
    run_all(refs, out)
    for m in a.methods.split(","):
        grid = sorted(GRIDS[bench][m])
        run_all(
            [
                (c, run_dir(out / bench / "val" / folder(m), c))
                for c in (val_config(bench, m, with_lam(m, v)) for v in grid)
            ],
            out,
        )
        for _ in range(2 * MAX_EXTEND):  # protocol step 2: widen at an edge
            scores = {v: score(out, bench, m, with_lam(m, v)) for v in grid}
            if any(s is None for s in scores.values()):
                break
            best = max(grid, key=lambda v: scores[v])
            if best == grid[0] and len([v for v in grid if v < GRIDS[bench][m][0]]) < MAX_EXTEND:
                new = float(f"{grid[0] / 10:.6g}")
            elif best == grid[-1] and len([v for v in grid if v > GRIDS[bench][m][-1]]) < MAX_EXTEND:
                new = float(f"{grid[-1] * 10:.6g}")
            else:
                break
            print(f"{bench} {m}: best lam {best:g} at the edge, adding {new:g}", flush=True)
            grid = sorted(grid + [new])
            c = val_config(bench, m, with_lam(m, new))
            run_all([(c, run_dir(out / bench / "val" / folder(m), c))], out)
    if getattr(a, "fill", None):  # also every value tried on the other benchmarks (for the rule's common ranks)
        for other in a.fill.split(","):
            for m in a.methods.split(","):
                vals = sorted({t["lam"] for t in tried(out, other, m)} - set(GRIDS[bench][m]))
                run_all(
                    [
                        (c, run_dir(out / bench / "val" / folder(m), c))
                        for c in (val_config(bench, m, with_lam(m, v)) for v in vals)
                    ],
                    out,
                )
    if a.lwf:
        run_all([(c, run_dir(out / bench / "val" / "lwf", c)) for c in (val_config(bench, "lwf", p) for p in LWF)], out)


def tried(out: Path, bench: str, m: str) -> list[dict]:
    """Every finished validation run of method m on bench: [{"lam": .., "validation_average_accuracy": ..}]."""
    rows = []
    for d in sorted((out / bench / "val" / folder(m)).glob("*")):
        r = finished(d)
        if r is None or r["config"].get("eval_split") != "val":
            continue
        rows.append({**r["config"]["params"], "validation_average_accuracy": r["metrics"]["average_accuracy"]})
    key = (lambda t: t.get("lam", 0)) if m != "lwf" else (lambda t: (t["lam"], t["temperature"]))
    return sorted(rows, key=key)


def ranks(values: list[float]) -> list[float]:
    """Rank 1 = highest; ties share their mean rank."""
    order = sorted(range(len(values)), key=lambda i: -values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def rule(a) -> None:
    out = out_root(a)
    benches = [b for b in ("B1", "B2", "B3", "HW") if (out / b / "val").is_dir()]
    rule_benches = a.rule_benchmarks.split(",")
    record = {
        "protocol": __doc__.split("Protocol, every benchmark alike:")[1].split("Memory of replay")[0].strip(),
        "benchmarks": {b: BENCHMARKS[b] for b in benches},
        "rule_benchmarks": {},
        "selection": {},
        "defaults": {},
    }
    for b in benches:
        record["selection"][b] = {}
        for m in ["naive", "joint"] + REGULARIZERS + ["lwf"]:
            rows = tried(out, b, m)
            if not rows:
                continue
            entry = {"candidates": rows}
            if m in REGULARIZERS or m == "lwf":
                best = max(rows, key=lambda t: t["validation_average_accuracy"])
                entry["best_on_this_benchmark"] = {k: v for k, v in best.items() if k != "validation_average_accuracy"}
                if m in REGULARIZERS:
                    window = sorted(GRIDS[b][m])
                    entry["complete"] = all(any(t["lam"] == v for t in rows) for v in window)
                    lams = [t["lam"] for t in rows]
                    entry["best_at_edge"] = best["lam"] in (min(lams), max(lams))
            record["selection"][b][m] = entry
    for m in REGULARIZERS:
        used = [b for b in rule_benches if record["selection"].get(b, {}).get(m, {}).get("complete")]
        record["rule_benchmarks"][m] = used
        if not used:
            continue
        cands = sorted({t["lam"] for b in used for t in record["selection"][b][m]["candidates"]})
        table = {v: {"ranks": {}, "scores": {}} for v in cands}
        for b in used:
            rows = record["selection"][b][m]["candidates"]
            run_here = [t["lam"] for t in rows]
            for t in rows:
                table[t["lam"]]["scores"][b] = t["validation_average_accuracy"]

            # values not run here: below every value run here, farther from the window = worse
            def key(v):
                if v in run_here:
                    return (0.0, -table[v]["scores"][b])
                return (1.0, min(abs(math.log10(v) - math.log10(u)) for u in run_here))

            keys = [key(v) for v in cands]
            order = sorted(range(len(cands)), key=lambda i: keys[i])
            i = 0
            while i < len(order):
                j = i
                while j + 1 < len(order) and keys[order[j + 1]] == keys[order[i]]:
                    j += 1
                for k in range(i, j + 1):
                    table[cands[order[k]]]["ranks"][b] = (i + j) / 2 + 1
                i = j + 1
        for v in cands:
            table[v]["mean_rank"] = sum(table[v]["ranks"].values()) / len(used)
            s = table[v]["scores"]
            table[v]["mean_score_where_run"] = sum(s.values()) / len(s)
        best = min(cands, key=lambda v: (table[v]["mean_rank"], -len(table[v]["scores"]), v))
        record["defaults"][m] = {
            "lam": best,
            "mean_rank": table[best]["mean_rank"],
            "over": used,
            "table": [{"lam": v, **table[v]} for v in cands],
        }
    lwf_rule(record, rule_benches)
    path = Path(a.json)
    path.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {path}")
    for m, d in record["defaults"].items():
        best = {b: record["selection"][b][m]["best_on_this_benchmark"] for b in d["over"]}
        print(
            f"{m:>11}: lam {d['lam']:g}{_temperature(d)} (mean rank {d['mean_rank']:.2f} over "
            f"{','.join(d['over'])}; per benchmark best: "
            + ", ".join(f"{b} {best[b]['lam']:g}{_temperature(best[b])}" for b in d["over"])
            + ")"
        )


def _temperature(e: dict) -> str:
    return f", T {e['temperature']:g}" if "temperature" in e else ""


def lwf_rule(record: dict, rule_benches: list[str]) -> None:
    """LwF's default (lam, temperature): the same rule over the fixed 3 x 3 grid ``LWF``, on the
    benchmarks where all of it ran; ties go to the smaller lam, then to the temperature nearest the
    paper's 2."""
    key = lambda t: (t["lam"], t["temperature"])  # noqa: E731
    used = [
        b
        for b in rule_benches
        if {key(t) for t in record["selection"].get(b, {}).get("lwf", {}).get("candidates", [])}
        >= {key(c) for c in LWF}
    ]
    if not used:
        return
    table = {key(c): {"ranks": {}, "scores": {}} for c in LWF}
    for b in used:
        scores = {key(t): t["validation_average_accuracy"] for t in record["selection"][b]["lwf"]["candidates"]}
        cands = list(table)
        for c, r in zip(cands, ranks([scores[c] for c in cands])):
            table[c]["ranks"][b], table[c]["scores"][b] = r, scores[c]
    for c in table:
        table[c]["mean_rank"] = sum(table[c]["ranks"].values()) / len(used)
    best = min(table, key=lambda c: (table[c]["mean_rank"], c[0], abs(math.log2(c[1] / 2.0))))
    record["defaults"]["lwf"] = {
        "lam": best[0],
        "temperature": best[1],
        "mean_rank": table[best]["mean_rank"],
        "over": used,
        "table": [{"lam": c[0], "temperature": c[1], **table[c]} for c in table],
    }


def chosen_lams(json_path: str, kind: str, bench: str) -> dict[str, float]:
    """lam per method for the test runs: the defaults (``kind`` "defaults") or this benchmark's own
    validation choice ("own")."""
    rec = json.loads(Path(json_path).read_text())
    if kind == "defaults":
        return {m: d["lam"] for m, d in rec["defaults"].items() if m in REGULARIZERS}
    return {m: e["best_on_this_benchmark"]["lam"] for m, e in rec["selection"][bench].items() if m in REGULARIZERS}


def test(a) -> None:
    out = out_root(a)
    seeds = [int(s) for s in a.seeds.split(",")]
    lams = chosen_lams(a.json, a.lams, a.bench)
    methods = list(a.methods.split(","))
    jobs = []
    for seed in seeds:  # seed-major: a cut-off run still leaves every method with the first seeds
        for m in methods:
            if m in ("naive", "joint"):
                c = test_config(a.bench, m, {}, seed)
            elif m in lams:
                c = test_config(a.bench, m, with_lam(m, lams[m]), seed)
            else:
                print(f"no lam for {m} on {a.bench}; skipped")
                continue
            d = run_dir(out / a.bench / f"test-{a.lams}" / folder(m), c)
            twin = run_dir(out / a.bench / f"test-{'own' if a.lams == 'defaults' else 'defaults'}" / folder(m), c)
            if finished(d) is None and finished(twin) is not None:  # the same run (default = own choice)
                d.parent.mkdir(parents=True, exist_ok=True)
                shutil.copytree(twin, d, dirs_exist_ok=True)
            jobs.append((c, d))
    run_all(jobs, out)


def mean_std(xs: list[float]) -> tuple[float, float]:
    m = sum(xs) / len(xs)
    return m, (math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0)


def table(a) -> None:
    out = out_root(a)
    lines = []
    for b in ("B3", "B1", "B2", "HW"):
        for kind in ("test-defaults", "test-own"):
            root = out / b / kind
            if not root.is_dir():
                continue
            res = {}
            try:  # only the runs at the lam of this table (earlier choices stay in the same folders)
                lams = chosen_lams(a.json, kind[len("test-") :], b)
            except (OSError, KeyError, ValueError):
                lams = {}
            for m in ["naive", "joint"] + REGULARIZERS + ["lwf"]:
                rs = [r for d in sorted((root / folder(m)).glob("*")) if (r := finished(d))]
                if m in lams:
                    rs = [
                        r
                        for r in rs
                        if r["config"]["params"].get("lam") == lams[m]
                        and all(r["config"]["params"].get(k) == v for k, v in FIXED.get(m, {}).items())
                    ]
                if rs:
                    res[m] = rs
            if not res:
                continue
            A = {m: mean_std([r["metrics"]["average_accuracy"] for r in rs]) for m, rs in res.items()}
            gap = "naive" in A and "joint" in A and A["joint"][0] > A["naive"][0]
            lines += [
                f"### {b}, {kind}",
                "",
                "| method | lam | seeds | final average accuracy % (mean ± std) | BWT % | forgetting % |"
                + (" gap closed |" if gap else ""),
                "|---|---|---|---|---|---|" + ("---|" if gap else ""),
            ]
            for m in ["naive", "joint"] + REGULARIZERS + ["lwf"]:
                if m not in res:
                    continue
                rs = res[m]
                lam = rs[0]["config"]["params"].get("lam", "-")
                bwt = mean_std([r["metrics"]["bwt"] for r in rs])
                fg = mean_std([r["metrics"]["forgetting"] for r in rs])
                row = (
                    f"| {m} | {lam if lam == '-' else format(lam, 'g')} | "
                    f"{','.join(str(r['config']['seed']) for r in sorted(rs, key=lambda r: r['config']['seed']))} | "
                    f"{100 * A[m][0]:.2f} ± {100 * A[m][1]:.2f} | {100 * bwt[0]:+.2f} ± {100 * bwt[1]:.2f} | "
                    f"{100 * fg[0]:.2f} ± {100 * fg[1]:.2f} |"
                )
                if gap:
                    row += f" {(A[m][0] - A['naive'][0]) / (A['joint'][0] - A['naive'][0]):.2f} |"
                lines.append(row)
            lines.append("")
    (out / "tables.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def report(a) -> None:
    """Markdown of the validation scores and the chosen defaults, from the JSON of the rule stage."""
    rec = json.loads(Path(a.json).read_text())
    lines = [
        "Validation final average accuracy (%), seed 0, by lam (** = best on that benchmark):",
        "",
        "| method | " + " | ".join(rec["selection"]) + " |",
        "|---|" + "---|" * len(rec["selection"]),
    ]
    for m in ["naive", "joint"] + REGULARIZERS + ["lwf"]:
        cells = []
        for sel in rec["selection"].values():
            e = sel.get(m)
            if e is None:
                cells.append("not run")
                continue
            best = e.get("best_on_this_benchmark", {})
            parts = []
            for t in e["candidates"]:
                acc = f"{100 * t['validation_average_accuracy']:.2f}"
                if "lam" not in t:
                    parts.append(acc)
                    continue
                lab = f"{t['lam']:g}" + (f", T {t['temperature']:g}" if "temperature" in t else "")
                is_best = all(t.get(k) == v for k, v in best.items())
                parts.append(f"{lab}: " + (f"**{acc}**" if is_best else acc))
            cells.append("; ".join(parts) + ("" if e.get("complete", True) else " (incomplete)"))
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines += ["", "| method | chosen default lam | mean rank | over | best per benchmark |", "|---|---|---|---|---|"]
    for m, d in rec["defaults"].items():
        per = ", ".join(f"{b} {rec['selection'][b][m]['best_on_this_benchmark']['lam']:g}" for b in d["over"])
        lines.append(f"| {m} | {d['lam']:g} | {d['mean_rank']:.2f} | {', '.join(d['over'])} | {per} |")
    print("\n".join(lines))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("stage", choices=["select", "rule", "test", "table", "report"])
    ap.add_argument("--bench", default="B3", choices=list(BENCHMARKS))
    ap.add_argument("--methods", default=None)
    ap.add_argument("--lwf", action="store_true", help="also LwF, lam x temperature (select stage)")
    ap.add_argument("--fill", default=None, help="select stage: also run every lam tried on these benchmarks")
    ap.add_argument(
        "--refs",
        default="naive,joint",
        help="select stage: reference runs first (joint is not needed to select, only to report the gap)",
    )
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument(
        "--lams",
        default="defaults",
        choices=["defaults", "own"],
        help="test with the chosen defaults, or with this benchmark's own validation choice",
    )
    ap.add_argument("--rule-benchmarks", default="B1,B2,B3")
    ap.add_argument("--out", default="runs/defaults")
    ap.add_argument("--json", default=str(ROOT / "defaults_selection.json"))
    a = ap.parse_args()
    if a.methods is None:
        a.methods = ",".join(REGULARIZERS if a.stage == "select" else ["naive", "joint"] + REGULARIZERS)
    {"select": select, "rule": rule, "test": test, "table": table, "report": report}[a.stage](a)


if __name__ == "__main__":
    main()
