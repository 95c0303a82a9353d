"""Grids of runs: benchmarks x strategies x hyperparameters x seeds, resumable, local or on Ray.

Every run lives in ``OUT/<stamp>`` (the stamp is derived from its resolved config); a run whose
result.json is there is never run again, and an interrupted run resumes from its last checkpoint.
Results aggregate over seeds into summary.csv / summary.json (mean, std, s.e.m.).

Hyperparameter selection (``select_on="validation"``): every grid value of a group is tried on the
first seed with a validation split held out from the training data (the test split is never read),
the best by ``metric`` is kept, and the chosen values then run on the test data for every seed.

Joint references and intransigence (``with_joint``, or ``metric="intransigence"``). Intransigence
is I_k = a*_k - R[k, k] (Chaudhry et al. 2018), where a*_k is the accuracy on task k of a model
trained from scratch on the data of tasks 1..k together, evaluated as the scenario evaluates task k
right after task k (class-IL: over the classes of tasks 1..k). The design chosen: T reference runs
per group and seed, the joint runs with ``first_tasks = k`` for k = 1..T (same seed, same options
otherwise; k = T is the plain joint run, the usual upper bound and the ``joint`` row of the
summary), and a*_k = ``accuracy_matrix[-1][k-1]`` of run k. Why T runs and not the last row of
one joint run over all T tasks: that model was trained on every task, also the later ones, and in
class-IL it is scored over all classes, so it is not the reference the definition asks for; a
joint run over tasks 1..k is, and ``first_tasks`` evaluates it with exactly the mask the run met
when it learnt task k. It costs T joint runs per seed (with ``--iterations N`` the run k trains k·N
steps), run in two passes: the k = T run with the grid (it tells T), then k = 1..T-1. Those k < T
runs are references, not rows: each row lists them in ``per_run[i]["references"]``, with every
run's I and I_k; ``intransigence_per_task`` is the mean and std of I_k over seeds. Every row also
lists the directories of its runs (``runs``), which the report reads.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import os
import re
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .config import RunConfig
from .data.cache import atomic_write_text, record_written, refuse_foreign
from .errors import UsageError
from .metrics import better, scalar_metrics

SUMMARY_METRICS = tuple(scalar_metrics())  # the registry in metrics.py: average accuracy, BWT, FWT, ...
METRICS = SUMMARY_METRICS  # (the old name)
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
            params = self.base.get("params", {})
            if not isinstance(params, dict):
                raise UsageError(f"params must be a table of KEY = VALUE, got {params!r}")
            params = dict(params)
            params.update({k[7:]: v for k, v in self.base.items() if k.startswith("params.")})
            for k, v in zip(keys, values):
                if k.startswith("params."):
                    params[k[7:]] = v
                else:
                    d[k] = v
            strategy = d.get("strategy", RunConfig.strategy)
            if not isinstance(strategy, str):
                raise UsageError(f"option 'strategy' must be text (e.g. \"er+ewc\"), got {strategy!r}")
            parts = strategy.split("+")
            declared = {p for n in parts if n in STRATEGIES for p in STRATEGIES[n].params}
            declared |= {f"{n}.{p}" for n in parts if n in STRATEGIES for p in STRATEGIES[n].params}
            d["params"] = {k: v for k, v in params.items() if k in declared or not all(n in STRATEGIES for n in parts)}
            cfg = RunConfig.from_dict(d)
            key = json.dumps(cfg.to_dict(), sort_keys=True, default=str)
            if key not in seen:
                seen.add(key)
                out.append(cfg)
        return out


def load_grid_file(path: str | Path, overrides: list[str] = ()) -> Grid:
    """A YAML or TOML file with run options; lists become axes (``angles``, ``milestones`` stay one value).

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
    except Exception as e:  # any parse error is the user's file
        raise UsageError(f"{path} is not valid {path.suffix[1:].upper()}: {str(e).splitlines()[0]}") from None
    if data is None or data == {}:
        raise UsageError(
            f'{path} is empty: give at least one option (e.g. strategy = ["naive", "er"]); '
            f"an empty grid file would silently run the defaults"
        )
    if not isinstance(data, dict):
        raise UsageError(f"{path}: the top level must be a table of options")
    data = dict(data)
    for key in data:
        if not isinstance(key, str) or not re.fullmatch(r"[a-z_][a-z0-9_]*", key):
            raise UsageError(
                f"{path}: option {key!r} is not an option name; write names like batch_size{_did_you_mean(str(key))}"
            )
    params = data.pop("params", {})
    if params is None or not isinstance(params, dict):
        raise UsageError(f"{path}: params must be a table of KEY = VALUE")
    from .spec import check_param_key

    for k in params:
        check_param_key(k, f"{path}: params key")
    flat = {**data, **{f"params.{k}": v for k, v in params.items()}}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"override {item!r}: write KEY=VALUE, e.g. epochs=2 or params.lam=10")
        name = key.replace("-", "_")
        name = name if not name.startswith("param.") else "params." + name[6:]
        head, dot, tail = name.partition(".")
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", head) or (dot and head != "params"):
            raise UsageError(
                f"override {item!r}: {key!r} is not an option (write NAME=VALUE or "
                f"params.NAME=VALUE){_did_you_mean(head)}"
            )
        if dot:
            check_param_key(tail, f"override {item!r}:")
        elif head == "params":
            raise UsageError(f"override {item!r}: set one parameter at a time, e.g. params.lam=10")
        flat[name] = parse_value(value, f"override {item!r}")
    base, axes = {}, {}
    for k, v in flat.items():
        one = k in ("angles", "milestones")  # (a list that is one value)
        if (isinstance(v, list) and not one) or (one and isinstance(v, list) and v and isinstance(v[0], list)):
            if not v:
                raise UsageError(
                    f"{path}: {k} is an empty list, which would make a grid of no runs; give at least one value"
                )
            axes[k] = v
        else:
            base[k] = v
    return Grid(base=base, axes=axes)


def _did_you_mean(name: str) -> str:
    from .errors import closest

    return closest(name, [f.name for f in fields(RunConfig)])


# ---- running ---------------------------------------------------------------------------------


def run_dir(out: Path, cfg: RunConfig) -> Path:
    """The folder of one run of a grid: ``out / <stamp>``, the stamp named from the resolved config."""
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
        (path / BUG_REPORT).unlink(missing_ok=True)  # (from an earlier attempt)
        return {"dir": out_dir, "status": "done"}
    except RunLocked:
        return {"dir": out_dir, "status": "busy"}  # another worker is running it
    except UsageError as e:
        return {"dir": out_dir, "status": "failed", "error": str(e)}
    except Exception as e:  # a bug in one run must not lose the grid
        tb = traceback.format_exc()
        where = _bug_report(path, tb)
        return {
            "dir": out_dir,
            "status": "failed",
            "traceback": tb,
            "error": f"{type(e).__name__}: {e}" + (f" (a bug: its traceback is in {where})" if where else ""),
        }


BUG_REPORT = "error.txt"


def _bug_report(folder: Path, tb: str) -> Path | None:
    """Write the traceback of a run that failed from a bug (not from its input) into its folder, for
    the bug report; None when that cannot be written either (a full disk)."""
    from .data.cache import atomic_write_text, record_written

    try:
        atomic_write_text(folder / BUG_REPORT, tb)
        record_written(folder, BUG_REPORT)
    except Exception:  # the run's error is what matters
        return None
    return folder / BUG_REPORT


def execute(
    jobs: list[tuple[RunConfig, Path]],
    workers: int = 1,
    executor: str = "local",
    address: str | None = None,
    say: Callable[[str], None] = lambda m: None,
    threads: int | None = None,
    gpus_per_run: float = 0.0,
) -> list[dict]:
    """Run every (config, dir) job; finished ones are skipped. Returns their statuses.

    Each run gets ``threads`` torch threads (default: the cores divided among the workers) and, with
    Ray, ``gpus_per_run`` GPUs (Ray's ``num_gpus``: fractions share a GPU; Ray sets each task's
    CUDA_VISIBLE_DEVICES, so ``--device auto`` lands every run on its own GPU)."""
    todo = [(c, d) for c, d in jobs if finished(d) is None]
    say(
        f"{len(jobs)} runs, {len(jobs) - len(todo)} already finished, {len(todo)} to run "
        f"({executor}, {workers} worker{'s' if workers > 1 else ''})"
    )
    if not todo:
        return [{"dir": str(d), "status": "skipped"} for _, d in jobs]
    cores = os.cpu_count() or 1
    threads = threads or max(1, cores // max(1, workers))
    if gpus_per_run < 0:
        raise UsageError(f"--gpus-per-run must be >= 0, got {gpus_per_run}")
    if executor == "ray":
        return _execute_ray(todo, workers, threads, address, say, gpus_per_run)
    if gpus_per_run:
        raise UsageError(
            "--gpus-per-run needs --executor ray (local workers share the device each run's --device names)"
        )
    if executor != "local":
        raise UsageError(f"unknown executor {executor!r}; choose local or ray")
    statuses = []
    if workers <= 1:
        for c, d in todo:
            statuses.append(run_one(c.to_dict(), str(d), threads))
            say(f"  {statuses[-1]['status']}: {d.name}")
        return _wait_for_busy(statuses, todo, threads, say)
    statuses = _execute_local(todo, workers, threads, say)
    return _wait_for_busy(statuses, todo, threads, say)


WORKER_ATTEMPTS = 8  # a run whose worker process dies (killed, out of memory) is started again this often


def _worker(conn, cfg_dict: dict, out_dir: str, threads: int | None) -> None:
    """One run in a worker process; its status goes back through ``conn``. SIGTERM stops it like
    Ctrl-C: the run ends cleanly and resumes from its last checkpoint when started again."""
    import signal

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        status = run_one(cfg_dict, out_dir, threads)
    except KeyboardInterrupt:
        status = {"dir": out_dir, "status": "interrupted"}
    try:
        conn.send(status)
    finally:
        conn.close()


def _execute_local(
    todo: list[tuple[RunConfig, Path]], workers: int, threads: int | None, say: Callable[[str], None]
) -> list[dict]:
    """Run the jobs in at most ``workers`` processes at once, one process per run. A worker that dies
    (SIGKILL, out of memory) or is stopped alone (SIGTERM) costs only its run, which starts again
    (from its last checkpoint) up to ``WORKER_ATTEMPTS`` times; the others go on. Ctrl-C or SIGTERM
    of this process stops every worker cleanly (SIGTERM, then SIGKILL after 10 s) and re-raises."""
    import collections
    from multiprocessing.connection import wait

    from .workers import context

    ctx = context()
    pending = collections.deque(range(len(todo)))
    tries = [0] * len(todo)
    statuses: list[dict | None] = [None] * len(todo)
    running: dict[int, tuple[Any, Any]] = {}
    try:
        while pending or running:
            while pending and len(running) < workers:
                i = pending.popleft()
                c, d = todo[i]
                recv, send = ctx.Pipe(duplex=False)
                p = ctx.Process(target=_worker, args=(send, c.to_dict(), str(d), threads), daemon=True)
                p.start()
                send.close()
                running[i] = (p, recv)
                tries[i] += 1
            wait([p.sentinel for p, _ in running.values()], timeout=5.0)
            for i, (p, recv) in list(running.items()):
                if p.exitcode is None:
                    continue
                p.join()
                status = None
                try:
                    if recv.poll():
                        status = recv.recv()
                except (EOFError, OSError):
                    pass
                recv.close()
                del running[i]
                d = todo[i][1]
                if status is None or status["status"] == "interrupted":
                    how = (
                        "stopped by SIGTERM"
                        if status is not None
                        else f"killed by signal {-p.exitcode}"
                        if p.exitcode < 0
                        else f"exited with code {p.exitcode}"
                    )
                    if tries[i] < WORKER_ATTEMPTS and (status is not None or p.exitcode < 0):  # (not a crash)
                        say(f"  worker {how}; starting {d.name} again (from its last checkpoint)")
                        pending.append(i)
                        continue
                    status = {
                        "dir": str(d),
                        "status": "failed",
                        "error": f"its worker process stopped {tries[i]} times (last: {how})",
                    }
                statuses[i] = status
                say(f"  {status['status']}: {d.name}")
    except BaseException:
        for p, _ in running.values():
            p.terminate()  # (SIGTERM: each run stops cleanly, resumable)
        for p, recv in running.values():
            p.join(10)
            if p.exitcode is None:
                p.kill()
                p.join()
            recv.close()
        raise
    return [s for s in statuses if s is not None]


BUSY_WAIT = 24 * 3600  # at most this many seconds to wait for runs another process is writing


def _wait_for_busy(
    statuses: list[dict], todo: list[tuple[RunConfig, Path]], threads: int, say: Callable[[str], None]
) -> list[dict]:
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


def _execute_ray(todo, workers, threads, address, say, gpus_per_run: float = 0.0):
    try:
        import ray
    except ImportError:
        raise UsageError("the ray executor needs Ray: pip install 'forgetless[ray]'") from None
    started = not ray.is_initialized()
    if started:
        kwargs = {"address": address} if address else {"num_cpus": max(workers, 1) * threads}
        ray.init(include_dashboard=False, log_to_driver=False, **kwargs)
    try:
        have = ray.cluster_resources().get("GPU", 0)
        if gpus_per_run > have:  # (Ray would wait forever for GPUs that are not there)
            raise UsageError(
                f"--gpus-per-run {gpus_per_run:g}: the Ray cluster has {have:g} GPUs; "
                f"use --gpus-per-run 0 or a cluster with GPUs"
            )
        remote = ray.remote(num_cpus=threads, num_gpus=gpus_per_run)(run_one)
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
    """The key that groups runs differing only by seed (and the other keys of NOT_GROUPED) into one summary row."""
    return json.dumps({k: v for k, v in config.items() if k not in NOT_GROUPED}, sort_keys=True, default=str)


def label(config: dict, keys: list[str] | None = None) -> str:
    """``strategy (k=v,...)`` with the parameters in ``keys`` (all of them when None)."""
    params = config.get("params", {})
    shown = sorted(params) if keys is None else [k for k in keys if k in params]
    text = ", ".join(f"{k}={_fmt(params[k])}" for k in shown)
    return f"{config['strategy']}" + (f" ({text})" if text else "")


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else str(v)


def _differ(dicts: list[dict], skip: tuple = ()) -> list[str]:
    """The keys whose values are not the same in every dict (a key some lack counts as differing)."""
    keys = sorted({k for d in dicts for k in d} - set(skip))
    return [k for k in keys if len({json.dumps(d.get(k), sort_keys=True, default=str) for d in dicts}) > 1]


def short_labels(configs: list[dict]) -> list[str]:
    """One label per config (one per summary row): the strategy, with only the parameters whose
    values differ between the rows of the same strategy, then the other options (lr, epochs, ...)
    in which rows with the same strategy, benchmark, scenario and label still differ."""
    by_strategy: dict[str, list[int]] = {}
    for i, c in enumerate(configs):
        by_strategy.setdefault(c["strategy"], []).append(i)
    labels = [""] * len(configs)
    for idx in by_strategy.values():
        keys = _differ([configs[i].get("params", {}) for i in idx])
        for i in idx:
            labels[i] = label(configs[i], keys)
    same: dict[tuple, list[int]] = {}
    for i, c in enumerate(configs):
        same.setdefault((labels[i], c.get("benchmark"), c.get("scenario")), []).append(i)
    for idx in same.values():
        if len(idx) < 2:
            continue
        keys = _differ([configs[i] for i in idx], NOT_GROUPED + ("params", "strategy", "benchmark", "scenario"))
        for i in idx:
            extra = ", ".join(f"{k}={_fmt(configs[i].get(k))}" for k in keys)
            if extra:
                labels[i] = labels[i][:-1] + f", {extra})" if labels[i].endswith(")") else labels[i] + f" ({extra})"
    return labels


def _stats(values: list[float]) -> dict:
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return {"mean": mean, "std": std, "sem": std / math.sqrt(len(values)), "n": len(values)}


def summarize(
    results: list[dict] | dict[str, dict], references: dict[str, dict] | list[dict] | None = None
) -> list[dict]:
    """One row per group of runs that differ only in seed: mean, std and s.e.m. of every metric.

    ``results``: the runs' result dicts, or {run directory name: result}; with names, each row
    records the directories it aggregates in ``runs`` (sorted by seed), so the report needs no
    re-matching. ``references``: joint runs (a list, or {directory name: result}) with
    ``first_tasks`` = 1..T for intransigence (see ``compare``); each row then also has
    ``intransigence_per_task`` (mean and std over seeds of every I_k) and ``per_run`` (each run's
    I, I_k and the directories of the references it used).
    """
    items = list(results.items()) if isinstance(results, dict) else [(None, r) for r in results]
    index = _reference_index(references)
    groups: dict[str, list[tuple[str | None, dict]]] = {}
    for d, r in items:
        groups.setdefault(group_key(r["config"]), []).append((d, r))
    rows = []
    for runs in groups.values():
        runs.sort(key=lambda dr: dr[1]["config"]["seed"])
        c = runs[0][1]["config"]
        row = {
            "benchmark": c["benchmark"],
            "scenario": c["scenario"],
            "strategy": c["strategy"],
            "params": c.get("params", {}),
            "label": "",
            "seeds": [r["config"]["seed"] for _, r in runs],
            "n": len(runs),
            "runs": [d for d, _ in runs if d is not None],
        }
        per_run = []
        for d, r in runs:
            ref = _reference_for(r, index) if index else None
            if ref is not None:
                from .metrics import intransigence, intransigence_per_task

                per_run.append(
                    {
                        "dir": d,
                        "seed": r["config"]["seed"],
                        "intransigence": intransigence(r["accuracy_matrix"], ref["values"]),
                        "intransigence_per_task": intransigence_per_task(r["accuracy_matrix"], ref["values"]),
                        "references": ref["dirs"],
                    }
                )
        for m in SUMMARY_METRICS:
            if m == "intransigence" and per_run:
                values = [p["intransigence"] for p in per_run]
            else:
                values = [float(v) for _, r in runs if (v := r["metrics"].get(m)) is not None]
            if values:
                row[m] = _stats(values)
        if per_run:
            per_task = [p["intransigence_per_task"] for p in per_run]
            cols = [_stats([v[k] for v in per_task]) for k in range(min(len(v) for v in per_task))]
            row["intransigence_per_task"] = {"mean": [s["mean"] for s in cols], "std": [s["std"] for s in cols]}
            row["per_run"] = per_run
        row["train_seconds"] = sum(r["timing"]["train_seconds"] for _, r in runs) / len(runs)
        rows.append(row)
    for row, text in zip(rows, short_labels([groups[k][0][1]["config"] for k in groups])):
        row["label"] = text
    return rows


def _ref_key(config: dict, k: int | None) -> str:
    """The key of the joint reference of ``config`` (same seed, same everything but the strategy)
    trained on the first ``k`` tasks (None: all of the benchmark's tasks)."""
    d = {kk: v for kk, v in config.items() if kk not in NOT_GROUPED + ("strategy", "params", "first_tasks")}
    return json.dumps(d | {"seed": config["seed"], "first_tasks": k}, sort_keys=True, default=str)


def _first(config: dict) -> int | None:
    """A result config's ``first_tasks``, None when it trains every task of the benchmark."""
    k = config.get("first_tasks")
    return None if k is None or k == config.get("tasks") else k


def _reference_index(references) -> dict[str, tuple[str | None, dict]]:
    if not references:
        return {}
    items = references.items() if isinstance(references, dict) else [(None, r) for r in references]
    return {_ref_key(r["config"], _first(r["config"])): (d, r) for d, r in items if r["config"]["strategy"] == "joint"}


def _reference_for(result: dict, index: dict) -> dict | None:
    """a*_k for k = 1..T of ``result`` (the last row of the joint run with first_tasks = k, its
    entry k) and those runs' directories; None if one is missing."""
    c, T = result["config"], len(result["accuracy_matrix"])
    values, dirs = [], []
    for k in range(1, T + 1):
        found = index.get(_ref_key(c, None if k == c.get("tasks") else k))
        if found is None:
            return None
        d, r = found
        values.append(r["accuracy_matrix"][-1][k - 1])
        dirs.append(d)
    return {"values": values, "dirs": dirs}


SUMMARY_FILES = ("summary.json", "summary.csv", "selection.json")


def _ours(path: Path) -> bool:
    """A summary.json / summary.csv / selection.json written by forgetless before manifests existed."""
    if path.name == "summary.csv":
        with open(path, "rb") as f:
            return f.readline().startswith(b"benchmark,scenario,strategy,params,n,")
    data = json.loads(path.read_text())
    key = "strategy" if path.name == "summary.json" else "chosen"
    return isinstance(data, list) and all(isinstance(r, dict) and key in r for r in data)


def claim_compare_dir(out: Path, configs: list[RunConfig], overwrite: bool = False) -> None:
    """Refuse to write a comparison into ``out`` over files forgetless did not write, or over the
    summary of another grid (one whose runs are not all in this one), unless ``overwrite``; then
    record the summary files in ``out``'s manifest. A grid that extends the stored one (more seeds,
    more strategies) replaces its summary: every stored row is still in it."""
    for name in SUMMARY_FILES:
        refuse_foreign(out / name, overwrite, _ours)
    if not overwrite and configs and (out / "summary.json").is_file():
        try:
            stored = {d for row in json.loads((out / "summary.json").read_text()) for d in row.get("runs", [])}
        except (OSError, ValueError, AttributeError, TypeError):
            stored = set()
        dropped = sorted(stored - {run_dir(out, c).name for c in configs})
        if dropped:  # (the joint references of a with_joint grid count as its runs)
            tasks = max(len(finished(out / d)["accuracy_matrix"]) if finished(out / d) else 0 for d in stored)
            dropped = sorted(
                set(dropped)
                - {run_dir(out, _joint_of(c, k)).name for c in configs for k in [c.first_tasks, *range(1, tasks + 1)]}
            )
        if dropped:
            raise UsageError(
                f"{out} holds the summary of another grid ({len(dropped)} of its runs are not in this "
                f"one, e.g. {dropped[0]}); choose another --out, or add --overwrite to replace that "
                f"summary (finished runs are kept and reused)"
            )
    record_written(out, *SUMMARY_FILES)


def write_summary(rows: list[dict], out: Path) -> None:
    """Write the summary rows to ``out/summary.json`` and ``out/summary.csv`` (atomically)."""
    atomic_write_text(out / "summary.json", json.dumps(rows, indent=1))
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(
        ["benchmark", "scenario", "strategy", "params", "n"]
        + [f"{m}_{s}" for m in SUMMARY_METRICS for s in ("mean", "std", "sem")]
        + ["train_seconds"]
    )
    for r in rows:
        w.writerow(
            [r["benchmark"], r["scenario"], r["strategy"], json.dumps(r["params"], sort_keys=True), r["n"]]
            + [r[m][s] if m in r else "" for m in SUMMARY_METRICS for s in ("mean", "std", "sem")]
            + [f"{r['train_seconds']:.3f}"]
        )
    atomic_write_text(out / "summary.csv", buf.getvalue())


def format_summary(rows: list[dict]) -> str:
    """The summary rows as the text table ``forgetless compare`` prints."""
    shown = [m for m in SUMMARY_METRICS if any(m in r for r in rows)]
    width = max([len(r["label"]) for r in rows] + [8]) + 2
    head = f"{'method':<{width}}{'scenario':<10}{'n':>3}  " + "".join(f"{m.replace('_', ' '):>22}" for m in shown)
    lines = [head]
    for r in rows:
        cells = "".join(
            f"{100 * r[m]['mean']:>13.2f} ± {100 * r[m]['std']:<6.2f}" if m in r else f"{'-':>22}" for m in shown
        )
        lines.append(f"{r['label']:<{width}}{r['scenario']:<10}{r['n']:>3}  {cells}")
    return "\n".join(lines) + "\n(percent, mean ± std over seeds)"


# ---- the whole comparison ---------------------------------------------------------------------


def compare(
    grid: Grid,
    out: str | Path,
    *,
    workers: int = 1,
    executor: str = "local",
    address: str | None = None,
    select_on: str | None = None,
    metric: str = "average_accuracy",
    val_fraction: float = 0.1,
    with_joint: bool = False,
    say: Callable[[str], None] = lambda m: None,
    threads: int | None = None,
    gpus_per_run: float = 0.0,
    overwrite: bool = False,
) -> list[dict]:
    """Run the grid (after selecting hyperparameters on validation data if asked) and summarize.

    ``with_joint`` (implied by ``metric="intransigence"``) adds the joint references described in
    the module docstring: the ``joint`` row, and intransigence for every row. ``overwrite``
    replaces a summary (or a file forgetless did not write) found in ``out`` (otherwise an error).
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a directory; choose another path")
    if metric not in SUMMARY_METRICS:
        raise UsageError(f"unknown metric {metric!r}; choose one of: {', '.join(SUMMARY_METRICS)}")
    out.mkdir(parents=True, exist_ok=True)
    configs = grid.configs()
    if not configs:
        raise UsageError("the grid has no runs: give at least one value for every option")
    for c in configs:
        c.resolved()  # bad values fail here, before anything runs
    claim_compare_dir(out, [] if select_on is not None else configs, overwrite)
    run = lambda jobs: execute(jobs, workers, executor, address, say, threads, gpus_per_run)  # noqa: E731
    if select_on is not None:
        if select_on != "validation":
            raise UsageError(f"--select-on {select_on!r}: only 'validation' is supported")
        vary = ("params",) + tuple(k for k in grid.axes if k in TUNABLE)
        configs = _select(
            configs, out, metric, val_fraction, workers, executor, address, say, vary, threads, gpus_per_run
        )
    joint = with_joint or metric == "intransigence"
    jobs, references = _with_references(configs, out, run, joint)
    failed = [s for s in jobs["statuses"] if s["status"] == "failed"]
    for s in failed:
        say(f"  failed: {Path(s['dir']).name}: {s['error']}")
    results = {d.name: r for d in jobs["dirs"] if (r := finished(d)) is not None}
    rows = summarize(results, references)
    write_summary(rows, out)
    if failed:
        n = len(jobs["statuses"])
        raise UsageError(
            f"{len(failed)} of {n} runs failed (first: {failed[0]['error']}); "
            f"the others are in {out}; run again to retry"
        )
    return rows


def _joint_of(cfg: RunConfig, k: int | None) -> RunConfig:
    """The joint run with ``cfg``'s options (same seed) trained and evaluated on the first ``k`` tasks."""
    return RunConfig.from_dict(cfg.to_dict() | {"strategy": "joint", "params": {}, "first_tasks": k})


def _with_references(configs: list[RunConfig], out: Path, run: Callable, joint: bool) -> tuple[dict, dict]:
    """Run ``configs`` in ``out`` and, with ``joint``, their joint references in two passes: first
    the joint run over the same tasks (k = T, the ``joint`` row), with the grid; then, once it has
    told the number of tasks T, the joint runs with first_tasks = 1..T-1.

    Returns ({"dirs": the directories of the rows, "statuses": of every run}, {directory name:
    result} of every joint reference)."""
    dirs = list(dict.fromkeys(run_dir(out, c) for c in configs))
    full = list({run_dir(out, j): j for j in (_joint_of(c, c.first_tasks) for c in configs)}.items()) if joint else []
    dirs += [d for d, _ in full if d not in dirs]
    by_dir = {run_dir(out, c): c for c in configs} | dict(full)
    statuses = run([(by_dir[d], d) for d in dirs])
    partial = {}
    for d, j in full:
        r = finished(d)
        if r is not None:
            for k in range(1, len(r["accuracy_matrix"])):
                p = _joint_of(j, k)
                partial[run_dir(out, p)] = p
    if partial:
        statuses += run([(c, d) for d, c in partial.items()])
    references = {d.name: r for d in [d for d, _ in full] + list(partial) if (r := finished(d)) is not None}
    return {"dirs": dirs, "statuses": statuses}, references


def _select(
    configs,
    out,
    metric,
    val_fraction,
    workers,
    executor,
    address,
    say,
    vary=("params",),
    threads=None,
    gpus_per_run=0.0,
):
    """Pick each family's values of the ``vary`` options on validation data (first seed); every seed
    then runs with them. A family: the configs that differ only in ``vary`` and the seed."""
    if metric not in SUMMARY_METRICS:
        raise UsageError(f"unknown metric {metric!r}; choose one of: {', '.join(SUMMARY_METRICS)}")
    families: dict[str, list[RunConfig]] = {}
    for c in configs:
        key = json.dumps(c.to_dict() | dict.fromkeys(vary + ("seed",)), sort_keys=True, default=str)
        families.setdefault(key, []).append(c)
    sel_dir = out / "selection"
    plans = []  # (family, first seed, [(choice, trial config)])
    for fam in families.values():
        seed = min(c.seed for c in fam)
        choices = {
            json.dumps(ch, sort_keys=True, default=str): ch for ch in ({k: c.to_dict()[k] for k in vary} for c in fam)
        }
        trials = [
            (
                ch,
                RunConfig.from_dict(
                    fam[0].to_dict() | ch | {"seed": seed, "val_fraction": val_fraction, "eval_split": "val"}
                ),
            )
            for ch in choices.values()
        ]
        plans.append((fam, seed, trials))
    run = lambda jobs: execute(jobs, workers, executor, address, say, threads, gpus_per_run)  # noqa: E731
    # intransigence needs the joint references of every trial, on the same validation data
    _, references = _with_references(
        [t for _, _, trials in plans for _, t in trials], sel_dir, run, metric == "intransigence"
    )
    index = _reference_index(references)
    chosen_configs, record = [], []
    for fam, seed, trials in plans:
        tried = []
        for choice, t in trials:
            r = finished(run_dir(sel_dir, t))
            value = None if r is None else r["metrics"].get(metric)
            if r is not None and metric == "intransigence" and (ref := _reference_for(r, index)) is not None:
                from .metrics import intransigence

                value = intransigence(r["accuracy_matrix"], ref["values"])
            tried.append({"values": choice, metric: value})
        valid = [t for t in tried if t[metric] is not None]
        if not valid:
            raise UsageError(f"no selection run of {fam[0].strategy} gave {metric!r}")
        best = valid[0]
        for t in valid[1:]:
            if better(metric, t[metric], best[metric]):
                best = t
        flat = {**{k: v for k, v in best["values"].items() if k != "params"}, **best["values"].get("params", {})}
        record.append(
            {
                "strategy": fam[0].strategy,
                "benchmark": fam[0].benchmark,
                "scenario": fam[0].scenario,
                "metric": metric,
                "split": f"validation: {val_fraction:g} of each task's training data, "
                f"seed {seed}; the test split is not read",
                "tried": tried,
                "chosen": flat,
            }
        )
        say(f"selected for {fam[0].strategy}: {flat} ({metric} {best[metric]:.4f} on validation)")
        chosen_configs += [
            RunConfig.from_dict(fam[0].to_dict() | best["values"] | {"seed": s}) for s in sorted({c.seed for c in fam})
        ]
    atomic_write_text(out / "selection.json", json.dumps(record, indent=1))
    return chosen_configs
