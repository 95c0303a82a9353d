"""The training step, the loop over one task, and evaluation: nothing else (``run.py`` drives a run).

``train_step`` is the one step of every method, in the library's loop and in a user's own loop
alike (``examples/own_loop.py``)::

    s.before_task(ctx, task)
    data, t = s.train_data(ctx, task)
    for idx in my_batches:
        loss = forgetless.train_step(ctx, s, Batch(data.take(idx), data.y[idx], t[idx]))
    s.after_task(ctx, task)

A step makes no host synchronisation: ``train_step`` returns the loss as a tensor; ``train_task``
reads the losses every ``LOG_EVERY`` steps (and at the end of the task) to log them and to stop a
run whose loss is no longer finite. Data lives on ``ctx.device`` (uint8 where the source is) and is
scaled batch by batch; batch indices are drawn on the CPU with ``ctx.generator`` (one permutation
per epoch, moved to the device at once).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

import torch
import torch.nn.functional as F

from . import devices
from .benchmarks import Task
from .errors import UsageError
from .strategies import Batch, Context, Strategy

if TYPE_CHECKING:  # pragma: no cover
    from .schedules import TaskSchedule

EVAL_BATCH = 4096
LOG_EVERY = 50  # steps between reads of the accumulated losses


class TrainingDiverged(UsageError):
    """The loss or the parameters became NaN or infinite."""


def autocast(ctx: Context) -> contextlib.AbstractContextManager[Any]:
    """The precision of the run's forward passes and losses (``devices.autocast``)."""
    assert ctx.device is not None  # Context.__post_init__ set it
    context: contextlib.AbstractContextManager[Any] = devices.autocast(ctx.device, ctx.precision)
    return context


def train_step(ctx: Context, strategy: Strategy, batch: Batch) -> torch.Tensor:
    """One optimizer step of ``strategy`` on ``batch``; returns the loss that was minimised (a
    detached tensor: reading it is the caller's choice).

    adapt_batch -> ``ctx.augment`` (if any) -> forward -> the scenario's masked cross-entropy ->
    task_loss -> + penalty -> backward -> after_backward -> optimizer step -> after_step. The
    augmentation transforms the adapted batch, so replayed samples are augmented like incoming ones.
    With a GradScaler (fp16), the gradients are unscaled before after_backward, so hooks see true
    gradients (zeros in a step that overflowed, which the scaler then skips).

    Several processes (``devices.world_size() > 1``, under torchrun): ``batch`` is the GLOBAL batch,
    the same on every process; adapt_batch and augment run on all of it (so replay choices and
    memory updates are the same everywhere), then each process runs forward, task_loss and penalty
    on its contiguous part (``devices.shard``) with the total weighted by n_part / n_batch, and
    after backward the gradients are summed over the processes (``devices.sync_gradients_``, which
    also averages batch-norm running statistics) BEFORE after_backward: every hook sees the global
    batch's gradient, and after_step gets the whole batch. A process whose part is empty (a batch
    smaller than the number of processes) adds nothing. The loss returned is the global one.
    """
    batch = strategy.adapt_batch(ctx, batch)
    if ctx.seen_labels is not None:  # a blurry stream: these labels compete from now on
        ctx.seen_labels[batch.y] = True
    if ctx.augment is not None:
        batch = batch._replace(x=ctx.augment(batch.x))
    several = devices.world_size() > 1
    part = batch
    if several:
        rows = devices.shard(len(batch.y))
        part = Batch(batch.x[rows], batch.y[rows], batch.t[rows])
    if len(part.y) or not several:
        with autocast(ctx):
            out = ctx.model(part.x)
            loss = F.cross_entropy(ctx.mask(out, part.t), part.y)
            loss = strategy.task_loss(ctx, part, out, loss)
            pen = strategy.penalty(ctx, part, out)
            total = loss if pen is None else loss + pen
            if several:
                total = total * (len(part.y) / len(batch.y))
        ctx.optimizer.zero_grad(set_to_none=True)
        (total if ctx.scaler is None else ctx.scaler.scale(total)).backward()
    else:
        ctx.optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), device=ctx.device)
        if ctx.scaler is not None:
            ctx.scaler.scale(total)  # (the scaler starts its scale at its first scale() call)
    if several:
        total = devices.sync_gradients_(ctx.params(), total, devices.running_stats(ctx.model))
    scaler = ctx.scaler
    if scaler is None:
        strategy.after_backward(ctx)
        ctx.optimizer.step()
    else:
        scaler.unscale_(ctx.optimizer)
        _zero_if_overflowed(scaler, ctx.optimizer)
        strategy.after_backward(ctx)
        scaler.step(ctx.optimizer)
        scaler.update()
    ctx.step += 1
    ctx.global_step += 1
    strategy.after_step(ctx, batch)
    return total.detach()


def _zero_if_overflowed(scaler: torch.amp.GradScaler, optimizer: torch.optim.Optimizer) -> None:
    """After ``unscale_``: set every gradient to 0 if any was inf/NaN (on the device, no host read)."""
    found = scaler._found_inf_per_device(optimizer)  # {device: 0-dim tensor, 1.0 if inf/NaN was found}
    if not found:
        return
    bad = sum(v.to(next(iter(found))) for v in found.values()) > 0
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p.grad is not None:
                p.grad.masked_fill_(bad.to(p.grad.device), 0.0)


def iterate_batches(
    n: int,
    batch_size: int,
    generator: torch.Generator,
    epochs: int | None,
    iterations: int | None,
    device: torch.device | None = None,
) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield (epoch, index batch): ``epochs`` passes over a fresh permutation each, or exactly
    ``iterations`` batches (drawing new permutations as needed). The permutation is drawn with
    ``generator`` (CPU) and moved to ``device`` once per epoch."""
    epoch, done = 0, 0
    while True:
        if iterations is None:
            if epochs is None:
                raise TypeError("iterate_batches needs epochs or iterations")
            if epoch >= epochs:
                return
        perm = torch.randperm(n, generator=generator, device="cpu")
        if device is not None:
            perm = devices.put(perm, device)
        for i in range(0, n, batch_size):
            if iterations is not None and done >= iterations:
                return
            yield epoch, perm[i : i + batch_size]
            done += 1
        epoch += 1


def train_task(
    ctx: Context,
    strategy: Strategy,
    task: Task,
    *,
    epochs: int = 1,
    iterations: int | None = None,
    eval_every: int = 0,
    on_eval: Callable[[], None] | None = None,
    on_step: Callable[[int, int, float], None] | None = None,
    progress: bool = False,
    lr_schedule: TaskSchedule | None = None,
) -> dict[str, Any]:
    """Train on what the strategy gives for ``task`` (after its ``before_task``); returns statistics.

    ``iterations`` N: N steps per task; data of later tasks (joint) brings their N steps along, so a
    bound has the compute of the runs it bounds. ``on_step(global_step, epoch, loss)`` is called for
    every step (in groups, every ``LOG_EVERY`` steps), ``on_eval()`` every ``eval_every`` steps;
    ``progress`` shows a progress bar. ``lr_schedule`` (``schedules.TaskSchedule``) sets the rate
    before every step.
    """
    got = strategy.train_data(ctx, task)
    if got is None:
        return {"steps": 0, "samples": 0, "mean_loss": None}
    data, task_ids = got
    Y = data.y
    if iterations is not None:
        iterations *= max(strategy.trains_upto(ctx, task), task.id) - task.id + 1
    ctx.model.train()
    total_steps = iterations or epochs * math.ceil(len(Y) / ctx.batch_size)
    bar = progress_bar(total_steps, f"task {task.id + 1}", progress)
    pending: list[tuple[int, int, torch.Tensor]] = []
    acc = {"sum": 0.0, "steps": 0}

    def flush() -> None:
        if not pending:
            return
        values = torch.stack([v for _, _, v in pending]).float().tolist()
        for (step, epoch, _), value in zip(pending, values):
            if not math.isfinite(value):
                raise TrainingDiverged(
                    f"the loss became {value} in task {task.id + 1}, epoch {epoch + 1}, step "
                    f"{step - (ctx.global_step - ctx.step)}: lower the learning rate (--lr) or the "
                    f"regularization strength (lam)"
                )
            acc["sum"] += value
            acc["steps"] += 1
            if on_step is not None:
                on_step(step, epoch, value)
        if bar is not None:
            bar.update(len(pending))
        pending.clear()

    samples = 0
    for epoch, idx in iterate_batches(len(Y), ctx.batch_size, ctx.generator, epochs, iterations, Y.device):
        ctx.epoch = epoch
        if lr_schedule is not None:
            lr_schedule.set(ctx.optimizer, ctx.step, epoch, total_steps, task.id)
        pending.append(
            (ctx.global_step + 1, epoch, train_step(ctx, strategy, Batch(data.take(idx), Y[idx], task_ids[idx])))
        )
        samples += len(idx)
        if len(pending) >= LOG_EVERY:
            flush()
        if eval_every and on_eval is not None and ctx.global_step % eval_every == 0:
            flush()
            on_eval()
            ctx.model.train()
    flush()
    if bar is not None:
        bar.close()
    return {"steps": acc["steps"], "samples": samples, "mean_loss": acc["sum"] / max(acc["steps"], 1)}


class _Bar(Protocol):
    """What train_task uses of a progress bar (tqdm's)."""

    def update(self, n: int) -> object: ...

    def close(self) -> None: ...


def progress_bar(total: int, desc: str, enabled: bool) -> _Bar | None:
    """A tqdm bar on stderr, or None when disabled, not on a terminal, or tqdm is missing."""
    import sys

    if not enabled or not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    bar: _Bar = tqdm(total=total, desc=desc, unit="step", leave=False, dynamic_ncols=True)  # (tqdm is untyped)
    return bar


@torch.inference_mode()
def evaluate(
    ctx: Context, strategy: Strategy, trained_upto: int, split: str = "test", task_aware: bool = False
) -> list[float] | tuple[list[float], list[float]]:
    """Accuracy on every task's test (or val) data after training tasks 0..trained_upto, masked as
    the scenario evaluates. ``task_aware=True`` returns (accuracies, task-aware accuracies), the
    latter with each task's own classes alone competing (from the same scores)."""
    model = ctx.model
    was_training = model.training
    model.eval()
    bench = ctx.benchmark
    counts: list[torch.Tensor] = []
    sizes: list[int] = []
    for task in bench.tasks:
        data = task.test if split == "test" else task.val
        # (run.py evaluates on val only with a validation fraction, and on test only when it is built)
        assert data is not None, f"task {task.id + 1} has no {split} data"
        bias = bench.eval_bias(trained_upto, task.id)
        if ctx.seen_labels is not None:  # (a blurry stream: every label trained on competes)
            bias = bias.masked_fill(ctx.seen_labels, 0.0)
        own = bench.eval_bias(trained_upto, task.id, task_aware=True) if task_aware else None
        correct = torch.zeros((), dtype=torch.long, device=data.device)
        correct_own = torch.zeros((), dtype=torch.long, device=data.device)
        rows = devices.shard(len(data))  # (all of it in one process; several processes share the work)
        for i in range(rows.start, rows.stop, EVAL_BATCH):
            j = min(i + EVAL_BATCH, rows.stop)
            y = data.y[i:j]
            with autocast(ctx):
                scores = strategy.predict(ctx, data.take(slice(i, j))).float()
            correct += ((scores + bias).argmax(1) == y).sum()
            if own is not None:
                correct_own += ((scores + own).argmax(1) == y).sum()
        counts += [correct, correct_own]
        sizes.append(max(len(data), 1))
    stacked = torch.stack(counts)
    devices.all_reduce_([stacked])
    correct_counts: list[int] = stacked.tolist()
    accs = [c / n for c, n in zip(correct_counts[0::2], sizes)]
    aware = [c / n for c, n in zip(correct_counts[1::2], sizes)]
    model.train(was_training)
    return (accs, aware) if task_aware else accs


__all__ = ["Batch", "TrainingDiverged", "evaluate", "iterate_batches", "train_step", "train_task"]
