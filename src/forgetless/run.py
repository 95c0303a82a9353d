"""A run: build everything from a config, resume, train every task, write the results.

``run(config)`` -> ``Result``. With ``out``, a checkpoint is written after every task and
result.json at the end, under an exclusive lock of the directory; ``resume`` continues from the
checkpoint (the result is identical to an uninterrupted run). A directory holding a run of another
configuration is never replaced silently: that needs ``overwrite``.

Under torchrun (several processes, ``devices.init_distributed``) one run is trained by all of them
(``loop.train_step``): every process builds the same benchmark, model and strategy; rank 0 alone
takes the lock of ``out`` and writes result.json, the logs and the checkpoints; on ``resume`` every
process reads the checkpoint. Errors at rank 0's steps (lock, claim, download) stop every process
(``devices.together``).
"""

from __future__ import annotations

import os
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import devices, metrics as M
from .augment import make_augment, resolve as resolve_augment
from .benchmarks import Benchmark, Task, build
from .checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint
from .config import PLACEMENT, RunConfig
from .data.cache import (
    DiskFull,
    atomic_write_text,
    disk_full,
    is_disk_full,
    record_written,
    refuse_foreign,
    written_by_forgetless,
)
from .errors import UsageError
from .loop import TrainingDiverged, evaluate, train_task
from .models import adapt_model, build_model, check_model, normalize_for
from .results import Result, save_result
from .schedules import make_schedule
from .strategies import Context, Strategy, make_strategy

RUN_FILES = ("result.json", CHECKPOINT, CHECKPOINT + ".sha256", "log.csv", "accuracy.csv", "tensorboard")
LOG_HEADS = {"log.csv": "step,task,epoch,loss\n", "accuracy.csv": "step,after_task,task,accuracy\n"}


class RunLocked(UsageError):
    """Another process is writing to the same output directory."""


def lock_dir(out: Path):
    """An exclusive lock on ``out`` (released when the file closes or the process dies)."""
    import fcntl

    try:
        f = open(out / ".lock", "a")  # noqa: SIM115 (held for the whole run; the caller closes it)
    except OSError as e:
        if is_disk_full(e):
            raise disk_full(e, out / ".lock") from None
        raise
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise RunLocked(
            f"another forgetless process is writing to {out}; wait for it or choose another --out"
        ) from None
    return f


def make_optimizer(
    name: str,
    params,
    lr: float,
    momentum: float = 0.0,
    *,
    device: torch.device | None = None,
    weight_decay: float = 0.0,
) -> torch.optim.Optimizer:
    """SGD (with ``momentum``) or Adam, with the device's fastest implementation
    (``devices.optimizer_options``: fused kernels on CPU and CUDA); ``weight_decay`` is torch's:
    ``weight_decay * theta`` added to the gradient (L2 regularisation, for Adam too; not AdamW's
    decoupled decay)."""
    params = list(params)
    if device is None:
        device = params[0].device if params else torch.device("cpu")
    kind = devices.optimizer_options(name, device)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, **kind)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, **kind)
    raise UsageError(f"unknown optimizer {name!r}; choose sgd or adam")


class RunLog:
    """Per-step loss to OUT/log.csv and accuracies to OUT/accuracy.csv (always), and both to
    TensorBoard event files in OUT/tensorboard when the ``tensorboard`` package is installed."""

    def __init__(self, out: Path, resume_step: int = 0, tensorboard: bool = True):
        self.files, self.paths = {}, {}
        for name, head in LOG_HEADS.items():
            path = out / name
            rows = path.read_text().splitlines(keepends=True)[1:] if resume_step and path.exists() else []
            kept = [
                r
                for r in rows
                if r.endswith("\n")
                and r.split(",")[0].isdigit()  # (a kill can tear the last)
                and int(r.split(",")[0]) <= resume_step
            ]
            atomic_write_text(path, head + "".join(kept))  # a kill from now on must not lose these rows
            self.paths[name] = path
            self.files[name] = self._guard(name, partial(open, path, "a", buffering=1 << 16))
        self.tb = None
        self.paths["tensorboard"] = out / "tensorboard"
        self._hook = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                SummaryWriter = None
            if SummaryWriter is not None:
                self._quiet_writer_thread()
                try:
                    self.tb = self._guard(
                        "tensorboard", lambda: SummaryWriter(str(out / "tensorboard"), purge_step=resume_step or None)
                    )
                except BaseException:
                    self.close(quiet=True)
                    raise

    def _quiet_writer_thread(self) -> None:
        """TensorBoard writes from a thread of its own; a full disk there is raised again in this thread
        at the next call (where it becomes the one-line DiskFull): the thread must not print it too."""
        import threading

        previous = threading.excepthook

        def hook(args):
            if not is_disk_full(args.exc_value):
                previous(args)

        self._hook = previous
        threading.excepthook = hook

    def _guard(self, name: str, write: Callable[[], Any]):
        """``write()``; a full disk becomes the one-line DiskFull naming the file."""
        try:
            return write()
        except OSError as e:
            if is_disk_full(e):
                raise disk_full(e, self.paths[name]) from None
            raise

    def step(self, step: int, task: int, epoch: int, loss: float) -> None:
        self._guard("log.csv", lambda: self.files["log.csv"].write(f"{step},{task},{epoch},{loss:.6g}\n"))
        if self.tb is not None:
            self._guard("tensorboard", lambda: self.tb.add_scalar("loss", loss, step))

    def accuracy(self, step: int, after_task: int, accs: list[float]) -> None:
        rows = "".join(f"{step},{after_task},{j},{a:.6f}\n" for j, a in enumerate(accs))
        self._guard("accuracy.csv", lambda: self.files["accuracy.csv"].write(rows))
        if self.tb is not None:
            for j, a in enumerate(accs):
                self._guard("tensorboard", partial(self.tb.add_scalar, f"accuracy/task_{j + 1}", a, step))

    def flush(self) -> None:
        for name, f in self.files.items():
            self._guard(name, f.flush)
            self._guard(name, lambda f=f: os.fsync(f.fileno()))
        if self.tb is not None:
            self._guard("tensorboard", self.tb.flush)

    def close(self, quiet: bool = False) -> None:
        """Close the files; ``quiet``: while another error is on its way, a failing close (a full disk
        flushing the last rows) must not hide it (the torn rows are dropped on resume)."""
        for name, f in self.files.items():
            try:
                self._guard(name, f.close)
            except (OSError, UsageError):
                if not quiet:
                    raise
        try:
            if self.tb is not None:
                self._guard("tensorboard", self.tb.close)
        except (OSError, UsageError):
            if not quiet:
                raise
        finally:
            if self._hook is not None:
                import threading

                threading.excepthook, self._hook = self._hook, None


@dataclass
class RunState:
    """What a run has produced so far (saved in every checkpoint)."""

    R: list[list[float]] = field(default_factory=list)  # the accuracy matrix, one row per finished task
    R_task_aware: list[list[float]] = field(default_factory=list)  # class-IL: each task's classes alone
    initial: list[float] | None = None  # accuracy of the untrained model
    curves: list[dict[str, Any]] = field(default_factory=list)
    per_task: list[dict[str, Any]] = field(default_factory=list)
    done: int = 0  # tasks finished

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunState:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def versions() -> dict[str, str]:
    """The versions of forgetless, torch, numpy and the other packages a result depends on."""
    from . import __version__

    return {
        "forgetless": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


CLASS_IL_NOTE = (
    "note: in class-IL, {name} (no replay) is expected to stay near naive: nothing stops the "
    "new classes' outputs from taking over (van de Ven et al. 2020). result.json also records "
    "the task-aware accuracy matrix; add replay (e.g. er+{name}) to keep the old classes."
)


def run(
    config: RunConfig | None = None,
    *,
    model: torch.nn.Module | None = None,
    strategy: Strategy | None = None,
    benchmark: Benchmark | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: Callable[[str], None] | None = None,
    show_progress: bool = False,
) -> Result:
    """Train on every task of the benchmark in turn and fill the accuracy matrix.

    ``model``, ``strategy`` and ``benchmark`` may be given as objects; otherwise they are built
    from ``config`` (the recorded config says what was given: ``custom:ClassName`` for a model or
    strategy class of the user's). With ``out``, a checkpoint is written there after every task and
    result.json at the end; ``resume`` continues from the checkpoint of the same config;
    ``overwrite`` replaces a run of another configuration found in ``out`` (otherwise an error).
    ``progress`` receives one-line messages; ``show_progress`` draws progress bars on a terminal.
    Same config, seed and thread count -> identical results.
    """
    t0 = time.perf_counter()
    cfg = (config or RunConfig()).resolved()
    device = devices.init_distributed(cfg.device)  # (one process: devices.resolve)
    main = devices.is_main()
    say = (progress if main else None) or (lambda msg: None)
    show_progress = show_progress and main
    devices.check_precision(cfg.precision, device)
    t_data = time.perf_counter()
    if benchmark is None:  # (rank 0 first: a download happens once)
        benchmark = devices.main_first(
            lambda: build(
                cfg.benchmark,
                scenario=cfg.scenario,
                tasks=cfg.tasks,
                seed=cfg.seed,
                data_dir=cfg.data_dir,
                classes=cfg.classes,
                val_fraction=cfg.val_fraction,
                first_unpermuted=cfg.first_unpermuted,
                angles=cfg.angles,
                download=cfg.download,
                with_test=cfg.eval_split == "test",
                base_classes=cfg.base_classes,
                ways=cfg.ways,
                shots=cfg.shots,
                sessions=cfg.sessions,
                session_lists=cfg.session_lists,
                blurry=cfg.blurry,
                blurry_disjoint=cfg.blurry_disjoint,
            )
        )
    clock = {"data_seconds": time.perf_counter() - t_data, "initial_eval_seconds": 0.0, "checkpoint_seconds": 0.0}
    fscil = benchmark.info.get("fscil")
    cfg.scenario, cfg.tasks = ("fscil" if fscil else benchmark.scenario), len(benchmark.tasks)
    if fscil:
        cfg.sessions = len(benchmark.tasks)
    if cfg.first_tasks is not None:
        benchmark = benchmark.first(cfg.first_tasks)
    benchmark.to(device)
    if strategy is None:
        strategy = make_strategy(cfg.strategy, cfg.params, benchmark.scenario)
    elif benchmark.scenario not in strategy.scenarios:
        raise UsageError(f"strategy {strategy.spec()!r} does not support the {benchmark.scenario}-incremental scenario")
    cfg.strategy, cfg.params = strategy.spec(), strategy.hparams()  # every value, defaults filled in
    if cfg.task_free and not getattr(strategy, "task_free", False):
        from .strategies import STRATEGIES

        free = ", ".join(n for n, c in STRATEGIES.items() if getattr(c, "task_free", False) is True)
        raise UsageError(
            f"strategy {cfg.strategy!r} needs to know where tasks end (it consolidates or changes "
            f"its model there), so it cannot run with --task-free; task-free strategies: {free}"
        )
    _check_data_parallel(strategy)
    torch.manual_seed(cfg.seed)
    datasets = benchmark_datasets(benchmark.name)
    if model is None:
        model = build_model(
            cfg.model,
            benchmark.input_shape,
            benchmark.n_outputs,
            normalize=normalize_for(cfg.normalize, cfg.model, datasets),
        )
    else:
        if cfg.normalize == "on":
            raise UsageError(
                "--normalize on applies to the models forgetless builds; give your model a "
                "forgetless.models.Normalize first layer instead"
            )
        cfg.model = f"custom:{type(model).__name__}"
        model = adapt_model(model)  # a Keras 3 model -> forgetless.keras.torch_module.KerasModel
    model.to(device)
    check_model(model, benchmark.input_shape, benchmark.n_outputs)
    if cfg.compile:
        devices.compile_model(model)
    devices.broadcast_([*model.parameters(), *model.buffers()])  # several processes: rank 0's initial model
    params = [p for p in model.parameters() if p.requires_grad]
    ctx = Context(
        model=model,
        optimizer=make_optimizer(
            cfg.optimizer, params, cfg.lr, cfg.momentum, device=device, weight_decay=cfg.weight_decay
        ),
        benchmark=benchmark,
        batch_size=cfg.batch_size,
        precision=cfg.precision,
        generator=torch.Generator().manual_seed(cfg.seed),
        device=device,
        scaler=devices.grad_scaler(device, cfg.precision),
        augment=make_augment(cfg.augment, datasets, cfg.seed),
        seen_labels=torch.zeros(benchmark.n_outputs, dtype=torch.bool, device=device) if cfg.blurry else None,
    )
    out = Path(out) if out is not None else None
    with devices.together():
        if out is not None and main:
            if out.exists() and not out.is_dir():
                raise UsageError(f"--out {out} is a file, not a directory; choose another path")
            try:
                out.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                if is_disk_full(e):
                    raise disk_full(e, out) from None
                raise
    if benchmark.scenario == "class" and getattr(strategy, "family", "") in ("regularization", "distillation"):
        say(CLASS_IL_NOTE.format(name=cfg.strategy))
    t_setup = time.perf_counter() - t0

    lock = ck = None
    try:
        with devices.together():  # rank 0 alone locks and claims the directory
            if out is not None and main:
                lock = lock_dir(out)
                ck, read = _claim(out, cfg, overwrite)
                if resume and not read:
                    ck = load_checkpoint(out / CHECKPOINT)
                if resume and ck is not None and not _usable(ck, out):
                    ck = None
        if devices.world_size() > 1 and out is not None and resume:
            with devices.together():  # the others read the checkpoint once rank 0 has claimed the directory
                if not main:
                    ck = load_checkpoint(out / CHECKPOINT, quiet=True)  # (rank 0 says what is wrong)
                    if ck is not None and not _usable(ck, out, quiet=True):
                        ck = None
            devices.check_same(
                f"the checkpoint in {out} (every process must see --out: a directory they all share)",
                None if ck is None else (ck["global_step"], ck["state"]),
            )
        return _train_all(cfg, ctx, strategy, out, ck if resume else None, say, show_progress, t0, t_setup, clock)
    finally:
        if lock is not None:
            lock.close()


CHECKPOINT_KEYS = (
    "config",
    "state",
    "model",
    "optimizer",
    "strategy",
    "generator",
    "torch_rng",
    "global_step",
    "seen_upto",
)


def _usable(ck: dict, out: Path, quiet: bool = False) -> bool:
    """Whether a loaded checkpoint has what resuming needs (a damaged one without a checksum may
    load as something else); if not, a warning: the run starts over."""
    import sys

    missing = [k for k in CHECKPOINT_KEYS if k not in ck]
    if not missing and isinstance(ck["config"], dict) and isinstance(ck["state"], dict):
        return True
    if not quiet:
        print(
            f"forgetless: warning: ignoring unreadable checkpoint {out / CHECKPOINT} (it lacks "
            f"{', '.join(missing) or 'a valid config'}); the run restarts from task 1 (the beginning)",
            file=sys.stderr,
        )
    return False


def benchmark_datasets(name: str) -> list[str] | None:
    """The datasets a benchmark of this name is made of (None for a name forgetless does not build)."""
    from .benchmarks import SEQUENCES
    from .data.sources import DATASETS

    if name in SEQUENCES:
        return list(SEQUENCES[name])
    _kind, _, dataset = name.partition("-")
    return [dataset] if dataset in DATASETS else None


def _check_data_parallel(strategy: Strategy) -> None:
    """Refuse, under torchrun, a strategy (or part) that says it cannot split a batch across processes."""
    if devices.world_size() == 1:
        return
    parts = getattr(strategy, "strategies", [strategy])
    bad = [st.name for st in parts if not getattr(st, "data_parallel", True)]
    if bad:
        raise UsageError(
            f"{bad[0]} does not train across several processes yet; run it in one process (without torchrun)"
        )


def _differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """``key: old -> new`` for every setting that differs (params one by one)."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict) and key == "params":
            out += _differences(a, b, "params.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


def _same_config(stored: dict[str, Any], cfg: RunConfig) -> list[str]:
    """The differences between a stored config and ``cfg``; options added since the stored run was
    made count as equal when ``cfg`` has their default."""
    defaults = RunConfig().to_dict()
    now = {k: v for k, v in cfg.to_dict().items() if k not in PLACEMENT}
    stored = {
        k: v
        for k, v in {**{k: v for k, v in defaults.items() if k not in stored}, **stored}.items()
        if k not in PLACEMENT
    }  # where a run computes is not what it computes: it may resume elsewhere
    diff = _differences(stored, now)
    return sorted(diff, key=lambda d: d.startswith("params."))  # (the strategy, lr, ... before its parameters)


def _claim(out: Path, cfg: RunConfig, overwrite: bool) -> tuple[dict | None, bool]:
    """Refuse to write over a run of another configuration in ``out`` (unless ``overwrite``), or over
    files forgetless did not write. Returns (the checkpoint if it had to be read (no result.json) and
    is still there, else None; whether it was read: a corrupt one is reported once)."""
    import json

    stored = ck = None
    read = False
    try:
        stored = json.loads((out / "result.json").read_text())["config"]
        if not isinstance(stored, dict):
            raise TypeError
    except (OSError, ValueError, KeyError, TypeError):
        stored = None
        read = True
        ck = load_checkpoint(out / CHECKPOINT) if (out / CHECKPOINT).exists() else None
        stored = ck["config"] if ck is not None and isinstance(ck.get("config"), dict) else None
    if stored is None:
        _refuse_foreign_files(out, overwrite)
        record_written(out, *RUN_FILES)
        return ck, read
    diff = _same_config(stored, cfg)
    if not diff:
        if not written_by_forgetless(out / "result.json") and not written_by_forgetless(out / CHECKPOINT):
            _refuse_foreign_files(out, overwrite, known=("result.json", CHECKPOINT))  # (a run made before manifests)
        record_written(out, *RUN_FILES)
        return ck, read
    if not overwrite:
        shown = "; ".join(diff[:4]) + (f"; and {len(diff) - 4} more" if len(diff) > 4 else "")
        raise UsageError(
            f"{out} holds a run with other settings ({shown}); choose another --out, or add --overwrite to replace it"
        )
    for name in RUN_FILES:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    record_written(out, *RUN_FILES)
    return None, True


def _is_our_log(path: Path) -> bool:
    """A log.csv / accuracy.csv with forgetless's header (a run killed before its first checkpoint)."""
    with open(path, "rb") as f:
        return f.readline().decode("utf-8", "replace") == LOG_HEADS.get(path.name)


def _refuse_foreign_files(out: Path, overwrite: bool, known: tuple[str, ...] = ()) -> None:
    """Refuse to write into ``out`` over files forgetless did not write (the manifest does not list
    them): a user's result.json, log.csv, ...; ``known`` are names already recognised as a run's."""
    for name in RUN_FILES:
        if name in known:
            continue
        path = out / name
        if name in LOG_HEADS:
            refuse_foreign(path, overwrite, _is_our_log)
        elif name == CHECKPOINT + ".sha256":
            refuse_foreign(path, overwrite, lambda p: (out / CHECKPOINT).exists())
        elif name == "tensorboard":
            refuse_foreign(
                path,
                overwrite,
                lambda p: p.is_dir() and all(f.name.startswith("events.out.tfevents.") for f in p.iterdir()),
            )
        else:
            refuse_foreign(path, overwrite)


def _train_all(cfg, ctx, strategy, out, ck, say, show_progress, t0, t_setup, clock=None) -> Result:
    """The body of ``run`` once everything is built: resume from ``ck`` (a checkpoint, or None),
    train every task, write the result."""
    model, benchmark = ctx.model, ctx.benchmark
    state = RunState()
    schedule = make_schedule(cfg.lr_schedule, cfg.lr, cfg.milestones, cfg.lr_decay, cfg.iterations)
    if ck is not None:
        if _same_config(ck["config"], cfg):
            raise UsageError(f"{out} holds a run with another configuration; use another --out or drop --resume")
        model.load_state_dict(ck["model"])
        ctx.optimizer.load_state_dict(ck["optimizer"])
        strategy.load_state_dict(devices.to_device(ck["strategy"], ctx.device))
        ctx.generator.set_state(ck["generator"].cpu())
        devices.set_rng_state(ck["torch_rng"])  # (rank 0's: every process had the same)
        if ctx.scaler is not None and ck.get("scaler"):
            ctx.scaler.load_state_dict(ck["scaler"])
        ctx.global_step, ctx.seen_upto = ck["global_step"], ck["seen_upto"]
        if ctx.seen_labels is not None:
            ctx.seen_labels.copy_(ck["seen_labels"].to(ctx.device))
        if ctx.augment is not None and ck.get("augment_generator") is not None:
            ctx.augment.load_state_dict(ck["augment_generator"])
        if schedule is not None and ck.get("lr_schedule") is not None:
            schedule.load_state_dict(ck["lr_schedule"])
        state = RunState.from_dict(ck["state"])
        say(f"resuming after task {state.done} from {out / CHECKPOINT}")
    clock = {} if clock is None else clock
    if state.initial is None:
        t_eval = time.perf_counter()
        state.initial = evaluate(ctx, strategy, -1, cfg.eval_split)
        clock["initial_eval_seconds"] = time.perf_counter() - t_eval
    writes = out is not None and devices.is_main()  # several processes: rank 0 writes, the others compute
    saved = state.done  # tasks in the checkpoint on disk
    try:
        log = RunLog(out, ctx.global_step) if writes else None
    except DiskFull as e:
        raise _resumable(e, saved, len(benchmark.tasks)) from None
    try:
        for task in benchmark.tasks[state.done :]:
            _run_task(cfg, ctx, strategy, task, state, log, say, show_progress, schedule)
            if writes:
                t_write = time.perf_counter()
                log.flush()
                save_checkpoint(
                    out / CHECKPOINT,
                    {
                        "config": cfg.to_dict(),
                        "state": asdict(state),
                        "model": model.state_dict(),
                        "optimizer": ctx.optimizer.state_dict(),
                        "strategy": strategy.state_dict(),
                        "generator": ctx.generator.get_state(),
                        "torch_rng": devices.rng_state(ctx.device),
                        "scaler": ctx.scaler.state_dict() if ctx.scaler is not None else None,
                        "global_step": ctx.global_step,
                        "seen_upto": ctx.seen_upto,
                        "seen_labels": ctx.seen_labels,
                        "augment_generator": ctx.augment.state_dict() if ctx.augment is not None else None,
                        "lr_schedule": schedule.state_dict() if schedule is not None else None,
                    },
                )
                clock["checkpoint_seconds"] = clock.get("checkpoint_seconds", 0.0) + time.perf_counter() - t_write
                saved = state.done
    except DiskFull as e:
        if log is not None:
            log.close(quiet=True)
        raise _resumable(e, saved, len(benchmark.tasks)) from None
    except BaseException:
        if log is not None:
            log.close(quiet=True)
        raise
    if log is not None:
        try:
            log.close()
        except DiskFull as e:
            raise _resumable(e, saved, len(benchmark.tasks)) from None
    total = time.perf_counter() - t0
    class_il = benchmark.scenario == "class"
    metrics = M.all_metrics(state.R, state.initial)
    if state.curves:  # evaluations during training: the anytime accuracy (A_AUC)
        metrics["anytime_accuracy"] = M.anytime_accuracy([(p["task"], p["accuracy"]) for p in state.curves])
    if "fscil" in benchmark.info:  # pooled over the seen sessions' test (or validation) data
        metrics.update(
            M.fscil_metrics(state.R, [len(t.test if cfg.eval_split == "test" else t.val) for t in benchmark.tasks])
        )
    result = Result(
        accuracy_matrix=state.R,
        initial_accuracy=state.initial,
        metrics=metrics,
        config=cfg.to_dict(),
        timing={
            "total_seconds": total,
            "setup_seconds": t_setup,
            "threads": torch.get_num_threads(),
            "device": devices.describe(ctx.device),
            "processes": devices.world_size(),
            "train_seconds": sum(p["train_seconds"] for p in state.per_task),
            "per_task": state.per_task,
            **clock,
        },  # data_seconds (in setup), initial_eval_seconds, checkpoint_seconds (issue 17)
        versions=versions(),
        curves=state.curves,
        benchmark={
            "name": benchmark.name,
            "scenario": benchmark.scenario,
            "n_outputs": benchmark.n_outputs,
            "tasks": [
                {
                    "name": t.name,
                    "classes": t.classes,
                    "train": len(t.train),
                    "test": len(t.test) if t.test is not None else None,
                    "val": len(t.val) if t.val is not None else None,
                }
                for t in benchmark.tasks
            ],
            "augment": resolve_augment(cfg.augment, benchmark_datasets(benchmark.name)),
            "normalize": _normalization(model),
            **({"fscil": benchmark.info["fscil"]} if "fscil" in benchmark.info else {}),
            **({"blurry": benchmark.info["blurry"]} if "blurry" in benchmark.info else {}),
        },
        task_aware_accuracy_matrix=state.R_task_aware if class_il else None,
    )
    if writes:
        try:
            save_result(result, out)
        except DiskFull as e:
            raise _resumable(e, saved, len(benchmark.tasks)) from None
    return result


class RunDiskFull(DiskFull):
    """A full disk during a run: the message says that the run resumes from its last checkpoint."""

    def __init__(self, error: DiskFull, done: int, tasks: int):
        UsageError.__init__(
            self,
            str(error).replace("and run again", "and run the same command again (with --resume for `forgetless run`)")
            + (
                f": the run resumes from its last checkpoint (after task {done} of {tasks})"
                if done
                else ": there is no checkpoint yet, so the run starts from task 1"
            ),
        )
        self.path, self.needed, self.free = error.path, error.needed, error.free


def _resumable(error: DiskFull, done: int, tasks: int) -> RunDiskFull:
    return error if isinstance(error, RunDiskFull) else RunDiskFull(error, done, tasks)


def _normalization(model: torch.nn.Module) -> dict[str, list[float]] | None:
    """The mean and std of the model's ``Normalize`` first layer, if it has one (for result.json)."""
    from .models import Normalize

    layer = getattr(model, "normalize", None)
    if not isinstance(layer, Normalize):
        return None
    return {"mean": layer.mean.flatten().tolist(), "std": layer.std.flatten().tolist()}


def _run_task(
    cfg: RunConfig,
    ctx: Context,
    strategy: Strategy,
    task: Task,
    state: RunState,
    log: RunLog | None,
    say: Callable[[str], None],
    show_progress: bool,
    schedule=None,
) -> None:
    """One task of ``run``: hooks, training, evaluation on every task; appends to ``state``."""
    if cfg.reset_optimizer and task.id > 0:
        ctx.optimizer = make_optimizer(
            cfg.optimizer, ctx.params(), cfg.lr, cfg.momentum, device=ctx.device, weight_decay=cfg.weight_decay
        )
    say(f"task {task.id + 1}/{len(ctx.benchmark.tasks)}: {task.name}")
    ts = time.perf_counter()
    last = task.id == len(ctx.benchmark.tasks) - 1
    if not cfg.task_free or task.id == 0:
        strategy.before_task(ctx, task)
    else:  # task-free: the strategy is not told; the loop still tracks the task (masks, logs)
        ctx.begin_task(task)

    def record():
        accs = evaluate(ctx, strategy, ctx.seen_upto, cfg.eval_split)
        state.curves.append({"step": ctx.global_step, "task": task.id, "epoch": ctx.epoch, "accuracy": accs})
        if log is not None:
            log.accuracy(ctx.global_step, task.id, accs)

    def step(global_step: int, epoch: int, loss: float):
        log.step(global_step, task.id, epoch, loss)

    stats = train_task(
        ctx,
        strategy,
        task,
        epochs=cfg.epochs,
        iterations=cfg.iterations,
        eval_every=cfg.eval_every,
        on_eval=record,
        on_step=step if log is not None else None,
        progress=show_progress,
        lr_schedule=schedule,
    )
    t_train = time.perf_counter() - ts
    if not cfg.task_free or last:
        strategy.after_task(ctx, task)
    if not all(bool(torch.isfinite(p).all()) for p in ctx.model.parameters()):
        raise TrainingDiverged(
            f"the parameters became NaN or infinite in task {task.id + 1}: lower the "
            f"learning rate (--lr) or the regularization strength (lam)"
        )
    if devices.world_size() > 1:  # identical by construction; a strategy that draws per process would break it
        devices.check_same(
            f"the model, optimizer, strategy state and generator after task {task.id + 1}",
            (
                ctx.model.state_dict(),
                ctx.optimizer.state_dict()["state"],
                strategy.state_dict(),
                ctx.generator.get_state(),
            ),
        )
    t_after = time.perf_counter() - ts - t_train
    te = time.perf_counter()
    class_il = ctx.benchmark.scenario == "class"
    got = evaluate(ctx, strategy, max(task.id, ctx.seen_upto), cfg.eval_split, task_aware=class_il)
    accs, aware = got if class_il else (got, None)
    state.R.append(accs)
    if aware is not None:
        state.R_task_aware.append(aware)
    if log is not None:
        log.accuracy(ctx.global_step, task.id, accs)
    state.per_task.append(
        {
            "task": task.id,
            "train_seconds": t_train,
            "after_task_seconds": t_after,
            "eval_seconds": time.perf_counter() - te,
            **stats,
        }
    )
    state.done = task.id + 1


__all__ = ["RunLocked", "RunLog", "RunState", "lock_dir", "make_optimizer", "run", "save_result", "versions"]
