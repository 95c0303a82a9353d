"""The only training loop: train_task, evaluate, run.

Every method runs through these functions; a method changes behaviour only through its hooks
(``strategies/base.py``). Batches are slices of a seeded index permutation over in-memory tensors.
"""
from __future__ import annotations

import math
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from . import metrics as M
from .benchmarks import Benchmark, Task, build
from .checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint
from .config import RunConfig
from .data.base import TensorData
from .data.cache import atomic_write_text
from .errors import UsageError
from .models import build_model, check_model
from .strategies import Compose, Context, Strategy, make_strategy

EVAL_BATCH = 4096


class TrainingDiverged(UsageError):
    """The loss or the parameters became NaN or infinite."""


class RunLocked(UsageError):
    """Another process is writing to the same output directory."""


def lock_dir(out: Path):
    """An exclusive lock on ``out`` (released when the file closes or the process dies)."""
    import fcntl

    f = open(out / ".lock", "a")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise RunLocked(f"another forgetless process is writing to {out}; wait for it or choose another --out") from None
    return f


def make_optimizer(name: str, params, lr: float, momentum: float = 0.0) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, foreach=True)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, foreach=True)
    raise UsageError(f"unknown optimizer {name!r}; choose sgd or adam")


def iterate_batches(n: int, batch_size: int, generator: torch.Generator, epochs: int | None,
                    iterations: int | None):
    """Yield (epoch, index batch): ``epochs`` passes over a fresh permutation each, or exactly
    ``iterations`` batches (drawing new permutations as needed)."""
    epoch, done = 0, 0
    while True:
        if iterations is None and epoch >= epochs:
            return
        perm = torch.randperm(n, generator=generator)
        for i in range(0, n, batch_size):
            if iterations is not None and done >= iterations:
                return
            yield epoch, perm[i:i + batch_size]
            done += 1
        epoch += 1


def train_task(ctx: Context, strategy: Strategy, task: Task, *, epochs: int = 1,
               iterations: int | None = None, eval_every: int = 0,
               on_eval: Callable[[], None] | None = None,
               on_step: Callable[[float], None] | None = None, progress: bool = False) -> dict[str, Any]:
    """Train on ``task`` (or on what the strategy says for it); returns per-task statistics.

    ``on_step(loss)`` is called after every optimizer step, ``on_eval()`` every ``eval_every``
    steps; ``progress`` shows a progress bar.
    """
    model, opt = ctx.model, ctx.optimizer
    got = strategy.train_data(ctx, task)
    if got is None:
        return {"steps": 0, "samples": 0, "mean_loss": None}
    data, task_ids = got
    X, Y = data.x, data.y
    upto = max(task.id, int(task_ids.max()))  # class-IL: every class seen so far competes
    ctx.seen_upto = max(ctx.seen_upto, upto)
    bench = ctx.benchmark
    model.train()
    loss_sum, steps, samples = 0.0, 0, 0
    ctx.step = 0
    if iterations is not None:  # data of later tasks (joint) brings their steps along: same compute
        iterations *= upto - task.id + 1
    total_steps = iterations or epochs * math.ceil(len(Y) / ctx.batch_size)
    bar = progress_bar(total_steps, f"task {task.id + 1}", progress)
    bf16 = ctx.precision == "bf16"
    for epoch, idx in iterate_batches(len(Y), ctx.batch_size, ctx.generator, epochs, iterations):
        ctx.epoch = epoch
        x, y, t = strategy.adapt_batch(ctx, X[idx], Y[idx], task_ids[idx])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(x)
            loss = strategy.task_loss(ctx, x, y, t, out)
            if loss is None:
                loss = F.cross_entropy(bench.mask_logits(out, t, upto), y)
            ctx.loss = loss
            pen = strategy.penalty(ctx, x, y, out)
            total = loss if pen is None else loss + pen
        opt.zero_grad(set_to_none=True)
        total.backward()
        strategy.after_backward(ctx)
        opt.step()
        ctx.step += 1
        ctx.global_step += 1
        strategy.after_step(ctx)
        value = total.item()
        if not math.isfinite(value):
            raise TrainingDiverged(
                f"the loss became {value} in task {task.id + 1}, epoch {epoch + 1}, step {ctx.step}: "
                f"lower the learning rate (--lr) or the regularization strength (lam)")
        loss_sum += value
        steps += 1
        samples += len(y)
        if on_step is not None:
            on_step(value)
        if bar is not None:
            bar.update()
        if eval_every and on_eval is not None and ctx.global_step % eval_every == 0:
            on_eval()
            model.train()
    ctx.loss = None
    if bar is not None:
        bar.close()
    return {"steps": steps, "samples": samples, "mean_loss": loss_sum / max(steps, 1)}


def progress_bar(total: int, desc: str, enabled: bool):
    """A tqdm bar on stderr, or None when disabled, not on a terminal, or tqdm is missing."""
    import sys

    if not enabled or not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit="step", leave=False, dynamic_ncols=True)


class RunLog:
    """Per-step loss to OUT/log.csv and accuracies to OUT/accuracy.csv (always), and both to
    TensorBoard event files in OUT/tensorboard when the ``tensorboard`` package is installed."""

    def __init__(self, out: Path, resume_step: int = 0, tensorboard: bool = True):
        self.files = {}
        for name, head in (("log.csv", "step,task,epoch,loss\n"), ("accuracy.csv", "step,after_task,task,accuracy\n")):
            path = out / name
            rows = path.read_text().splitlines(keepends=True)[1:] if resume_step and path.exists() else []
            kept = [r for r in rows if r.endswith("\n") and r.split(",")[0].isdigit()  # (a kill can tear the last)
                    and int(r.split(",")[0]) <= resume_step]
            atomic_write_text(path, head + "".join(kept))  # a kill from now on must not lose these rows
            self.files[name] = open(path, "a", buffering=1 << 16)
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out / "tensorboard"), purge_step=resume_step or None)
            except ImportError:
                pass

    def step(self, step: int, task: int, epoch: int, loss: float) -> None:
        self.files["log.csv"].write(f"{step},{task},{epoch},{loss:.6g}\n")
        if self.tb is not None:
            self.tb.add_scalar("loss", loss, step)

    def accuracy(self, step: int, after_task: int, accs: list[float]) -> None:
        self.files["accuracy.csv"].write("".join(f"{step},{after_task},{j},{a:.6f}\n" for j, a in enumerate(accs)))
        if self.tb is not None:
            for j, a in enumerate(accs):
                self.tb.add_scalar(f"accuracy/task_{j + 1}", a, step)

    def flush(self) -> None:
        for f in self.files.values():
            f.flush()
        if self.tb is not None:
            self.tb.flush()

    def close(self) -> None:
        for f in self.files.values():
            f.close()
        if self.tb is not None:
            self.tb.close()


@torch.inference_mode()
def evaluate(ctx: Context, strategy: Strategy, trained_upto: int, split: str = "test") -> list[float]:
    """Accuracy on every task's test (or val) data after training tasks 0..trained_upto."""
    model = ctx.model
    was_training = model.training
    model.eval()
    accs = []
    for task in ctx.benchmark.tasks:
        data: TensorData = task.test if split == "test" else task.val
        bias = ctx.benchmark.eval_bias(trained_upto, task.id)
        correct = 0
        for i in range(0, len(data), EVAL_BATCH):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=ctx.precision == "bf16"):
                scores = strategy.predict(ctx, data.x[i:i + EVAL_BATCH]) + bias
            correct += int((scores.argmax(1) == data.y[i:i + EVAL_BATCH]).sum())
        accs.append(correct / max(len(data), 1))
    model.train(was_training)
    return accs


@dataclass
class Result:
    """What a run produces; ``to_dict`` is the content of result.json."""

    accuracy_matrix: list[list[float]]
    initial_accuracy: list[float]
    metrics: dict[str, Any]
    config: dict[str, Any]
    timing: dict[str, Any]
    versions: dict[str, str]
    curves: list[dict[str, Any]] = field(default_factory=list)
    benchmark: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("accuracy_matrix", "initial_accuracy", "metrics", "config",
                                               "timing", "versions", "curves", "benchmark")}

    def plot(self, kind: str = "curves"):
        """A matplotlib Figure: ``curves`` (accuracy of every task during training) or ``matrix``."""
        from .results import plot

        return plot(self.to_dict(), kind)

    def to_frame(self):
        """The accuracy matrix as a long pandas DataFrame (after_task, task, accuracy)."""
        from .results import to_frame

        return to_frame(self.to_dict())


def versions() -> dict[str, str]:
    from . import __version__

    return {"forgetless": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "platform": platform.platform()}


def run(config: RunConfig | None = None, *, model: torch.nn.Module | None = None,
        strategy: Strategy | None = None, benchmark: Benchmark | None = None,
        out: str | Path | None = None, resume: bool = False,
        progress: Callable[[str], None] | None = None, show_progress: bool = False) -> Result:
    """Train on every task of the benchmark in turn and fill the accuracy matrix.

    ``model``, ``strategy`` and ``benchmark`` may be given as objects; otherwise they are built
    from ``config``. With ``out``, a checkpoint is written there after every task and result.json
    at the end; ``resume`` continues from the checkpoint of the same config (the result is
    identical to an uninterrupted run). ``progress`` receives one-line messages;
    ``show_progress`` draws progress bars on a terminal. Same config and seed -> identical results.
    """
    t0 = time.perf_counter()
    cfg = (config or RunConfig()).resolved()
    say = progress or (lambda msg: None)
    if benchmark is None:
        benchmark = build(cfg.benchmark, scenario=cfg.scenario, tasks=cfg.tasks, seed=cfg.seed,
                          data_dir=cfg.data_dir, classes=cfg.classes, val_fraction=cfg.val_fraction,
                          first_unpermuted=cfg.first_unpermuted, angles=cfg.angles, download=cfg.download,
                          with_test=cfg.eval_split == "test")
    cfg.scenario, cfg.tasks = benchmark.scenario, len(benchmark.tasks)
    if cfg.first_tasks is not None:
        benchmark = benchmark.first(cfg.first_tasks)
    if strategy is None:
        strategy = make_strategy(cfg.strategy, cfg.params, benchmark.scenario)
    elif benchmark.scenario not in strategy.scenarios:
        raise UsageError(f"strategy {strategy.name!r} does not support the {benchmark.scenario}-incremental scenario")
    torch.manual_seed(cfg.seed)
    if model is None:
        model = build_model(cfg.model, benchmark.input_shape, benchmark.n_outputs)
    else:
        cfg.model = f"custom:{type(model).__name__}"
    check_model(model, benchmark.input_shape, benchmark.n_outputs)
    params = [p for p in model.parameters() if p.requires_grad]
    ctx = Context(model=model, optimizer=make_optimizer(cfg.optimizer, params, cfg.lr, cfg.momentum),
                  benchmark=benchmark, batch_size=cfg.batch_size, precision=cfg.precision,
                  generator=torch.Generator().manual_seed(cfg.seed))
    hp = strategy.hparams()  # every hyperparameter with its default filled in
    cfg.params = {k: v for part in hp.values() for k, v in part.items()} if isinstance(strategy, Compose) else hp
    out = Path(out) if out is not None else None
    if out is not None:
        if out.exists() and not out.is_dir():
            raise UsageError(f"--out {out} is a file, not a directory; choose another path")
        out.mkdir(parents=True, exist_ok=True)
    t_setup = time.perf_counter() - t0

    lock = lock_dir(out) if out is not None else None
    try:
        return _train_all(cfg, ctx, strategy, out, resume, say, show_progress, t0, t_setup)
    finally:
        if lock is not None:
            lock.close()


def _train_all(cfg, ctx, strategy, out, resume, say, show_progress, t0, t_setup) -> Result:
    """The body of ``run`` once everything is built: resume, train every task, write the result."""
    model, benchmark = ctx.model, ctx.benchmark
    state = {"R": [], "initial": None, "curves": [], "per_task": [], "done": 0}
    ck = load_checkpoint(out / CHECKPOINT) if (out is not None and resume) else None
    if ck is not None:
        if ck["config"] != cfg.to_dict():
            raise UsageError(f"{out} holds a run with another configuration; use another --out or drop --resume")
        model.load_state_dict(ck["model"])
        ctx.optimizer.load_state_dict(ck["optimizer"])
        strategy.load_state_dict(ck["strategy"])
        ctx.generator.set_state(ck["generator"])
        torch.set_rng_state(ck["torch_rng"])
        ctx.global_step, ctx.seen_upto = ck["global_step"], ck["seen_upto"]
        state = ck["state"]
        say(f"resuming after task {state['done']} from {out / CHECKPOINT}")
    if state["initial"] is None:
        state["initial"] = evaluate(ctx, strategy, -1, cfg.eval_split)
    log = RunLog(out, ctx.global_step) if out is not None else None
    try:
        for task in benchmark.tasks[state["done"]:]:
            _run_task(cfg, ctx, strategy, task, state, log, say, show_progress)
            if out is not None:
                log.flush()
                save_checkpoint(out / CHECKPOINT, {
                    "config": cfg.to_dict(), "state": state, "model": model.state_dict(),
                    "optimizer": ctx.optimizer.state_dict(), "strategy": strategy.state_dict(),
                    "generator": ctx.generator.get_state(), "torch_rng": torch.get_rng_state(),
                    "global_step": ctx.global_step, "seen_upto": ctx.seen_upto})
    finally:
        if log is not None:
            log.close()
    R, initial, per_task = state["R"], state["initial"], state["per_task"]
    total = time.perf_counter() - t0
    result = Result(
        accuracy_matrix=R, initial_accuracy=initial, metrics=M.all_metrics(R, initial), config=cfg.to_dict(),
        timing={"total_seconds": total, "setup_seconds": t_setup, "threads": torch.get_num_threads(),
                "train_seconds": sum(p["train_seconds"] for p in per_task), "per_task": per_task},
        versions=versions(), curves=state["curves"],
        benchmark={"name": benchmark.name, "scenario": benchmark.scenario, "n_outputs": benchmark.n_outputs,
                   "tasks": [{"name": t.name, "classes": t.classes, "train": len(t.train),
                              "test": len(t.test) if t.test is not None else None,
                              "val": len(t.val) if t.val is not None else None}
                             for t in benchmark.tasks]})
    if out is not None:
        save_result(result, out)
    return result


def _run_task(cfg: RunConfig, ctx: Context, strategy: Strategy, task: Task, state: dict,
              log: RunLog | None, say: Callable[[str], None], show_progress: bool) -> None:
    """One task of ``run``: hooks, training, evaluation on every task; appends to ``state``."""
    ctx.task_id = task.id
    if cfg.reset_optimizer and task.id > 0:
        ctx.optimizer = make_optimizer(cfg.optimizer, ctx.params(), cfg.lr, cfg.momentum)
    say(f"task {task.id + 1}/{len(ctx.benchmark.tasks)}: {task.name}")
    ts = time.perf_counter()
    strategy.before_task(ctx, task)

    def record():
        accs = evaluate(ctx, strategy, ctx.seen_upto, cfg.eval_split)
        state["curves"].append({"step": ctx.global_step, "task": task.id, "epoch": ctx.epoch, "accuracy": accs})
        if log is not None:
            log.accuracy(ctx.global_step, task.id, accs)

    def step(loss: float):
        log.step(ctx.global_step, task.id, ctx.epoch, loss)

    stats = train_task(ctx, strategy, task, epochs=cfg.epochs, iterations=cfg.iterations,
                       eval_every=cfg.eval_every, on_eval=record, on_step=step if log is not None else None,
                       progress=show_progress)
    t_train = time.perf_counter() - ts
    strategy.after_task(ctx, task)
    if not all(bool(torch.isfinite(p).all()) for p in ctx.model.parameters()):
        raise TrainingDiverged(f"the parameters became NaN or infinite in task {task.id + 1}: lower the "
                               f"learning rate (--lr) or the regularization strength (lam)")
    t_after = time.perf_counter() - ts - t_train
    te = time.perf_counter()
    accs = evaluate(ctx, strategy, max(task.id, ctx.seen_upto), cfg.eval_split)
    state["R"].append(accs)
    if log is not None:
        log.accuracy(ctx.global_step, task.id, accs)
    state["per_task"].append({"task": task.id, "train_seconds": t_train, "after_task_seconds": t_after,
                              "eval_seconds": time.perf_counter() - te, **stats})
    state["done"] = task.id + 1


def save_result(result: Result, out: str | Path) -> Path:
    """Write OUT/result.json atomically; returns its path."""
    import json

    from .data.cache import atomic_write_text

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a directory; choose another path")
    out.mkdir(parents=True, exist_ok=True)
    path = out / "result.json"
    atomic_write_text(path, json.dumps(result.to_dict(), indent=1))
    return path
