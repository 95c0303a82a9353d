"""Grids of runs: benchmarks x strategies x hyperparameters x seeds, resumable, local or on Ray.

Every run lives in ``OUT/<stamp>`` (the stamp is derived from its resolved config); a run whose
result.json is there is never run again, and an interrupted run resumes from its last checkpoint.
Results aggregate over seeds into summary.csv / summary.json (mean, std, s.e.m.).

Hyperparameter selection (``select_on="validation"``): every grid value of a group is tried on the
first seed with a validation split held out from the training data (the test split is never read),
the best by ``metric`` is kept, and the chosen values then run on the test data for every seed.
"""
from __future__ import annotations

import csv
import io
import itertools
import json
import math
import os
import traceback
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

from .config import RunConfig
from .data.cache import atomic_write_text
from .errors import UsageError

METRICS = ("average_accuracy", "bwt", "fwt", "forgetting", "intransigence")
NOT_GROUPED = ("seed", "data_dir", "download")  # runs differing only in these are repeats
TUNABLE = ("lr", "epochs", "iterations", "batch_size", "optimizer", "momentum")  # selectable besides params


@dataclass
class Grid:
    """A base config and the options that vary: {"strategy": [...], "seed": [...], "params.lam": [...]}."""

    base: dict[str, Any] = field(default_factory=dict)
    axes: dict[str, list[Any]] = field(default_factory=dict)

    def configs(self) -> list[RunConfig]:
        """Every combination, each strategy given only the parameters it declares (deduplicated)."""
        from .strategies import STRATEGIES

        names = {f.name for f in fields(RunConfig)}
        for key in list(self.base) + list(self.axes):
            if key.split(".")[0] not in names:
                from .errors import closest

                raise UsageError(f"unknown option {key!r}{closest(key, names)}")
        keys = list(self.axes)
        out, seen = [], set()
        for values in itertools.product(*(self.axes[k] for k in keys)):
            d = {k: v for k, v in self.base.items() if not k.startswith("params.")}
            params = dict(self.base.get("params", {}))
            params.update({k[7:]: v for k, v in self.base.items() if k.startswith("params.")})
            for k, v in zip(keys, values):
                if k.startswith("params."):
                    params[k[7:]] = v
                else:
                    d[k] = v
            strategy = d.get("strategy", RunConfig.strategy)
            declared = {p for n in strategy.split("+") if n in STRATEGIES for p in STRATEGIES[n].params}
            d["params"] = {k: v for k, v in params.items() if k in declared or not all(
                n in STRATEGIES for n in strategy.split("+"))}
            cfg = RunConfig.from_dict(d)
            key = json.dumps(cfg.to_dict(), sort_keys=True, default=str)
            if key not in seen:
                seen.add(key)
                out.append(cfg)
        return out


def load_grid_file(path: str | Path, overrides: list[str] = ()) -> Grid:
    """A YAML or TOML file with run options; lists become axes (``angles`` stays one value).

    ``params`` is a table of strategy parameters (lists are axes too). ``overrides`` are
    ``key=value`` strings applied on top (``params.lam=10``).
    """
    from .config import parse_value

    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}") from None
    try:
        if path.suffix in (".toml", ".tml"):
            import tomllib

            data = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml", ".json"):
            try:
                import yaml
            except ImportError:
                raise UsageError("reading YAML needs PyYAML: pip install pyyaml (or use TOML)") from None
            data = yaml.safe_load(text) or {}
        else:
            raise UsageError(f"{path}: use a .toml or .yaml file")
    except UsageError:
        raise
    except Exception as e:  # noqa: BLE001 - any parse error is the user's file
        raise UsageError(f"{path} is not valid {path.suffix[1:].upper()}: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: the top level must be a table of options")
    data = dict(data)
    params = data.pop("params", {}) or {}
    if not isinstance(params, dict):
        raise UsageError(f"{path}: params must be a table of KEY = VALUE")
    flat = {**data, **{f"params.{k}": v for k, v in params.items()}}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"override {item!r}: write KEY=VALUE")
        key = key.strip().replace("-", "_")
        flat[key if not key.startswith("param.") else "params." + key[6:]] = parse_value(value)
    base, axes = {}, {}
    for k, v in flat.items():
        if isinstance(v, list) and k != "angles" or k == "angles" and v and isinstance(v[0], list):
            axes[k] = v
        else:
            base[k] = v
    return Grid(base=base, axes=axes)


# ---- running ---------------------------------------------------------------------------------

def run_dir(out: Path, cfg: RunConfig) -> Path:
    return out / cfg.resolved().stamp()


def finished(path: Path) -> dict | None:
    """The result in ``path`` if it is complete and readable, else None."""
    try:
        return json.loads((path / "result.json").read_text())
    except (OSError, ValueError):
        return None


def run_one(cfg_dict: dict, out_dir: str, threads: int | None = None) -> dict:
    """Run one config into ``out_dir`` (resuming), in this process; returns a short status."""
    import torch

    from .run import run

    if threads:
        torch.set_num_threads(threads)
    path = Path(out_dir)
    if finished(path) is not None:
        return {"dir": out_dir, "status": "skipped"}
    from .run import RunLocked

    try:
        run(RunConfig.from_dict(cfg_dict), out=path, resume=True)
        return {"dir": out_dir, "status": "done"}
    except RunLocked:
        return {"dir": out_dir, "status": "busy"}  # another worker is running it
    except UsageError as e:
        return {"dir": out_dir, "status": "failed", "error": str(e)}
    except Exception as e:  # noqa: BLE001 - a bug in one run must not lose the grid
        return {"dir": out_dir, "status": "failed", "error": f"{type(e).__name__}: {e}",
                "traceback": traceback.format_exc()}


def execute(jobs: list[tuple[RunConfig, Path]], workers: int = 1, executor: str = "local",
            address: str | None = None, say: Callable[[str], None] = lambda m: None,
            threads: int | None = None) -> list[dict]:
    """Run every (config, dir) job; finished ones are skipped. Returns their statuses.

    Each run gets ``threads`` torch threads (default: the cores divided among the workers)."""
    todo = [(c, d) for c, d in jobs if finished(d) is None]
    say(f"{len(jobs)} runs, {len(jobs) - len(todo)} already finished, {len(todo)} to run "
        f"({executor}, {workers} worker{'s' if workers > 1 else ''})")
    if not todo:
        return [{"dir": str(d), "status": "skipped"} for _, d in jobs]
    cores = os.cpu_count() or 1
    threads = threads or max(1, cores // max(1, workers))
    if executor == "ray":
        return _execute_ray(todo, workers, threads, address, say)
    if executor != "local":
        raise UsageError(f"unknown executor {executor!r}; choose local or ray")
    statuses = []
    if workers <= 1:
        for c, d in todo:
            statuses.append(run_one(c.to_dict(), str(d), threads))
            say(f"  {statuses[-1]['status']}: {d.name}")
        return _wait_for_busy(statuses, todo, threads, say)
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        futures = [pool.submit(run_one, c.to_dict(), str(d), threads) for c, d in todo]
        for f in as_completed(futures):
            statuses.append(f.result())
            say(f"  {statuses[-1]['status']}: {Path(statuses[-1]['dir']).name}")
    return _wait_for_busy(statuses, todo, threads, say)


BUSY_WAIT = 24 * 3600  # at most this many seconds to wait for runs another process is writing


def _wait_for_busy(statuses: list[dict], todo: list[tuple[RunConfig, Path]], threads: int,
                   say: Callable[[str], None]) -> list[dict]:
    """Runs that were "busy" (another process held their lock): wait until that process finishes
    them, or run them here once their lock is free (it died), so the summary includes them."""
    if not any(s["status"] == "busy" for s in statuses):
        return statuses
    import time

    from .run import RunLocked, lock_dir

    configs = {Path(d).resolve(): c for c, d in todo}
    deadline = time.monotonic() + BUSY_WAIT
    out = []
    for s in statuses:
        if s["status"] != "busy":
            out.append(s)
            continue
        say(f"  waiting for another process to finish {Path(s['dir']).name}")
        while s["status"] == "busy" and time.monotonic() < deadline:
            d = Path(s["dir"])
            if finished(d) is not None:
                s = {"dir": s["dir"], "status": "done by another process"}
                break
            try:
                lock_dir(d).close()  # free: the other process stopped without finishing the run
            except RunLocked:
                time.sleep(0.2)
                continue
            s = run_one(configs[d.resolve()].to_dict(), s["dir"], threads)
        if s["status"] != "busy":
            say(f"  {s['status']}: {Path(s['dir']).name}")
        else:
            say(f"  still running in another process, not in this summary: {Path(s['dir']).name}")
        out.append(s)
    return out


def _execute_ray(todo, workers, threads, address, say):
    try:
        import ray
    except ImportError:
        raise UsageError("the ray executor needs Ray: pip install 'forgetless[ray]'") from None
    started = not ray.is_initialized()
    if started:
        kwargs = {"address": address} if address else {"num_cpus": max(workers, 1) * threads}
        ray.init(include_dashboard=False, log_to_driver=False, **kwargs)
    try:
        remote = ray.remote(num_cpus=threads)(run_one)
        refs = [remote.remote(c.to_dict(), str(d.resolve()), threads) for c, d in todo]
        statuses = ray.get(refs)
        for s in statuses:
            say(f"  {s['status']}: {Path(s['dir']).name}")
        return statuses
    finally:
        if started:
            ray.shutdown()


# ---- aggregation -------------------------------------------------------------------------------

def group_key(config: dict) -> str:
    return json.dumps({k: v for k, v in config.items() if k not in NOT_GROUPED}, sort_keys=True, default=str)


def label(config: dict) -> str:
    params = ",".join(f"{k}={v}" for k, v in sorted(config.get("params", {}).items()))
    return f"{config['strategy']}" + (f" ({params})" if params else "")


def summarize(results: list[dict], reference: dict[str, list[float]] | None = None) -> list[dict]:
    """One row per group of runs that differ only in seed: mean, std and s.e.m. of every metric.

    ``reference`` maps a group key without strategy/params to a joint run's final accuracies, for
    intransigence.
    """
    groups: dict[str, list[dict]] = {}
    for r in results:
        groups.setdefault(group_key(r["config"]), []).append(r)
    rows = []
    for runs in groups.values():
        c = runs[0]["config"]
        row = {"benchmark": c["benchmark"], "scenario": c["scenario"], "strategy": c["strategy"],
               "params": c.get("params", {}), "label": label(c), "seeds": sorted(r["config"]["seed"] for r in runs),
               "n": len(runs)}
        for m in METRICS:
            values = []
            for r in runs:
                v = r["metrics"].get(m)
                if m == "intransigence" and v is None and reference:
                    ref = reference.get(_ref_key(r["config"]))
                    if ref is not None:
                        from .metrics import intransigence

                        v = intransigence(r["accuracy_matrix"], ref)
                if v is not None:
                    values.append(float(v))
            if values:
                mean = sum(values) / len(values)
                std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
                row[m] = {"mean": mean, "std": std, "sem": std / math.sqrt(len(values)), "n": len(values)}
        row["train_seconds"] = sum(r["timing"]["train_seconds"] for r in runs) / len(runs)
        rows.append(row)
    return rows


def _ref_key(config: dict) -> str:
    return json.dumps({k: v for k, v in config.items() if k not in NOT_GROUPED + ("strategy", "params")} |
                      {"seed": config["seed"]}, sort_keys=True, default=str)


def write_summary(rows: list[dict], out: Path) -> None:
    atomic_write_text(out / "summary.json", json.dumps(rows, indent=1))
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["benchmark", "scenario", "strategy", "params", "n"] +
               [f"{m}_{s}" for m in METRICS for s in ("mean", "std", "sem")] + ["train_seconds"])
    for r in rows:
        w.writerow([r["benchmark"], r["scenario"], r["strategy"], json.dumps(r["params"], sort_keys=True), r["n"]] +
                   [r[m][s] if m in r else "" for m in METRICS for s in ("mean", "std", "sem")] +
                   [f"{r['train_seconds']:.3f}"])
    atomic_write_text(out / "summary.csv", buf.getvalue())


def format_summary(rows: list[dict]) -> str:
    shown = [m for m in METRICS if any(m in r for r in rows)]
    width = max([len(r["label"]) for r in rows] + [8]) + 2
    head = f"{'method':<{width}}{'scenario':<10}{'n':>3}  " + "".join(f"{m.replace('_', ' '):>22}" for m in shown)
    lines = [head]
    for r in rows:
        cells = "".join(f"{100 * r[m]['mean']:>13.2f} ± {100 * r[m]['std']:<6.2f}" if m in r else f"{'-':>22}"
                        for m in shown)
        lines.append(f"{r['label']:<{width}}{r['scenario']:<10}{r['n']:>3}  {cells}")
    return "\n".join(lines) + "\n(percent, mean ± std over seeds)"


# ---- the whole comparison ---------------------------------------------------------------------

def compare(grid: Grid, out: str | Path, *, workers: int = 1, executor: str = "local",
            address: str | None = None, select_on: str | None = None, metric: str = "average_accuracy",
            val_fraction: float = 0.1, with_joint: bool = False,
            say: Callable[[str], None] = lambda m: None, threads: int | None = None) -> list[dict]:
    """Run the grid (after selecting hyperparameters on validation data if asked) and summarize."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a directory; choose another path")
    out.mkdir(parents=True, exist_ok=True)
    configs = grid.configs()
    for c in configs:
        c.resolved()  # bad values fail here, before anything runs
    if select_on is not None:
        if select_on != "validation":
            raise UsageError(f"--select-on {select_on!r}: only 'validation' is supported")
        vary = ("params",) + tuple(k for k in grid.axes if k in TUNABLE)
        configs = _select(configs, out, metric, val_fraction, workers, executor, address, say, vary, threads)
    if with_joint or "intransigence" == metric:
        configs += _joint_references(configs)
    jobs = [(c, run_dir(out, c)) for c in configs]
    statuses = execute(jobs, workers, executor, address, say, threads)
    failed = [s for s in statuses if s["status"] == "failed"]
    for s in failed:
        say(f"  failed: {Path(s['dir']).name}: {s['error']}")
    results = [r for _, d in jobs if (r := finished(d)) is not None]
    reference = {_ref_key(r["config"]): r["accuracy_matrix"][-1] for r in results if r["config"]["strategy"] == "joint"}
    rows = summarize(results, reference)
    write_summary(rows, out)
    if failed:
        raise UsageError(f"{len(failed)} of {len(jobs)} runs failed (first: {failed[0]['error']}); "
                         f"the others are in {out}; run again to retry")
    return rows


def _joint_references(configs: list[RunConfig]) -> list[RunConfig]:
    refs = {}
    for c in configs:
        if c.strategy != "joint":
            d = c.to_dict() | {"strategy": "joint", "params": {}}
            refs[json.dumps(d, sort_keys=True, default=str)] = RunConfig.from_dict(d)
    return list(refs.values())


def _select(configs, out, metric, val_fraction, workers, executor, address, say, vary=("params",), threads=None):
    """Pick each family's values of the ``vary`` options on validation data (first seed); every seed
    then runs with them. A family: the configs that differ only in ``vary`` and the seed."""
    if metric not in METRICS:
        raise UsageError(f"unknown metric {metric!r}; choose one of: {', '.join(METRICS)}")
    families: dict[str, list[RunConfig]] = {}
    for c in configs:
        key = json.dumps(c.to_dict() | {k: None for k in vary + ("seed",)}, sort_keys=True, default=str)
        families.setdefault(key, []).append(c)
    sel_dir = out / "selection"
    plans = []  # (family, first seed, [(choice, trial config)])
    for fam in families.values():
        seed = min(c.seed for c in fam)
        choices = {json.dumps(ch, sort_keys=True, default=str): ch
                   for ch in ({k: c.to_dict()[k] for k in vary} for c in fam)}
        trials = [(ch, RunConfig.from_dict(fam[0].to_dict() | ch | {"seed": seed, "val_fraction": val_fraction,
                                                                     "eval_split": "val"}))
                  for ch in choices.values()]
        plans.append((fam, seed, trials))
    execute([(t, run_dir(sel_dir, t)) for _, _, trials in plans for _, t in trials], workers, executor, address, say,
            threads)
    chosen_configs, record = [], []
    lower_better = metric in ("forgetting", "intransigence")
    for fam, seed, trials in plans:
        tried = []
        for choice, t in trials:
            r = finished(run_dir(sel_dir, t))
            tried.append({"values": choice, metric: None if r is None else r["metrics"].get(metric)})
        valid = [t for t in tried if t[metric] is not None]
        if not valid:
            raise UsageError(f"no selection run of {fam[0].strategy} gave {metric!r}")
        best = (min if lower_better else max)(valid, key=lambda t: t[metric])
        flat = {**{k: v for k, v in best["values"].items() if k != "params"}, **best["values"].get("params", {})}
        record.append({"strategy": fam[0].strategy, "benchmark": fam[0].benchmark, "scenario": fam[0].scenario,
                       "metric": metric, "split": f"validation: {val_fraction:g} of each task's training data, "
                       f"seed {seed}; the test split is not read", "tried": tried, "chosen": flat})
        say(f"selected for {fam[0].strategy}: {flat} ({metric} {best[metric]:.4f} on validation)")
        chosen_configs += [RunConfig.from_dict(fam[0].to_dict() | best["values"] | {"seed": s})
                           for s in sorted({c.seed for c in fam})]
    atomic_write_text(out / "selection.json", json.dumps(record, indent=1))
    return chosen_configs
