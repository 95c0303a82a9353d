"""Command line: ``forgetless run``, ``compare``, ``list`` and ``report``; the only module with argparse.

Errors a user can fix print one line and exit with code 2; nothing prints a traceback for them.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from . import __version__
from .errors import UsageError
from .metrics import scalar_metrics


class _OnUse:  # (torch is imported when a command needs it: `forgetless --help` does without)
    def __init__(self, module: str):
        self._module = module

    def __getattr__(self, name):
        return getattr(importlib.import_module(self._module, __package__), name)


devices, _benchmarks, _cfg = _OnUse(".devices"), _OnUse(".benchmarks"), _OnUse(".config")


def parse_data_dir(text):
    return _benchmarks.parse_data_dir(text)


def parse_params(items):
    return _cfg.parse_params(items)


def RunConfig(**kw):  # config.RunConfig, imported on use
    return _cfg.RunConfig(**kw)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse would print the usage first)
        raise UsageError(f"{message}; see `{self.prog} --help`")


def _float_list(text: str) -> list[float]:
    from .spec import parse_angles  # (strict: no empty items, no spaces, finite numbers)

    try:
        return parse_angles(text)
    except UsageError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}: {e}") from None


RUN_OPTIONS = [  # (flag, keyword arguments): shared by `run` and `compare`
    ("--benchmark", dict(help="benchmark name (default permuted-digits); see `forgetless list`")),
    (
        "--scenario",
        dict(
            choices=["task", "domain", "class", "fscil"],
            help="task-, domain- or class-incremental, or fscil (few-shot class-IL: --base-classes "
            "--ways --shots) (default: domain for permuted/rotated, class for split, "
            "task otherwise)",
        ),
    ),
    ("--base-classes", dict(type=int, help="fscil: classes of the base session (all their training data)")),
    ("--ways", dict(type=int, help="fscil: new classes per later session")),
    ("--shots", dict(type=int, help="fscil: training examples of each new class (drawn with --seed)")),
    (
        "--sessions",
        dict(type=int, help="fscil: sessions including the base one (default: as many as the classes allow)"),
    ),
    (
        "--session-lists",
        dict(
            help="fscil: a folder of session_1.txt, session_2.txt, ... (training-set rows, one a "
            "line: the standard CIFAR-100 lists) fixing every session"
        ),
    ),
    ("--tasks", dict(type=int, help="number of tasks (default: the benchmark's)")),
    (
        "--blurry",
        dict(
            type=float,
            help="i-Blurry stream (split, class-IL): percent M of each blurry class's "
            "training samples appear in other tasks (e.g. 10)",
        ),
    ),
    (
        "--blurry-disjoint",
        dict(type=float, help="with --blurry: percent N of the classes kept disjoint (default 50, i-Blurry-50-M)"),
    ),
    ("--strategy", dict(help="strategy name; several compose with '+' (default naive)")),
    (
        "--model",
        dict(
            help="mlp:W1,W2,..., cnn, resnet18[:nf=N], resnet20 or resnet32 (default mlp:1024,512,256); "
            "keras:package.module:function for a Keras 3 model (KERAS_BACKEND=torch)"
        ),
    ),
    ("--epochs", dict(type=int, help="epochs per task (default 3)")),
    ("--iterations", dict(type=int, help="optimizer steps per task (replaces --epochs)")),
    ("--batch-size", dict(type=int, help="default 64")),
    ("--optimizer", dict(choices=["sgd", "adam"], help="default adam")),
    ("--lr", dict(type=float, help="learning rate (default 0.001)")),
    ("--momentum", dict(type=float, help="SGD momentum")),
    ("--weight-decay", dict(type=float, help="L2 weight decay of SGD and Adam (default 0)")),
    (
        "--lr-schedule",
        dict(
            choices=["none", "milestones", "cosine"],
            help="learning rate within every task, restarting at each (default none)",
        ),
    ),
    (
        "--milestones",
        dict(
            help="milestones schedule: epochs (steps with --iterations) where the rate is "
            "multiplied by --lr-decay, e.g. 35,45"
        ),
    ),
    ("--lr-decay", dict(type=float, help="milestones schedule: the factor at every milestone (default 0.1)")),
    (
        "--augment",
        dict(
            choices=["auto", "none", "crop-flip"],
            help="training augmentation: 4-pixel random crop and horizontal flip (default auto: "
            "crop-flip for CIFAR, none otherwise)",
        ),
    ),
    (
        "--normalize",
        dict(
            choices=["auto", "on", "off"],
            help="the dataset's mean/std as the model's first layer (default auto: on for the "
            "ResNets, off for mlp and cnn)",
        ),
    ),
    ("--seed", dict(type=int, help="default 0")),
    ("--classes", dict(help='split groups, e.g. "0,2,4,6,8|1,3,5,7,9"')),
    ("--angles", dict(type=None, help="rotated: one angle per task, e.g. 0,45,90")),
    ("--val-fraction", dict(type=float, help="hold out this part of each task's training data")),
    ("--eval-every", dict(type=int, help="evaluate every N steps (curves)")),
    (
        "--precision",
        dict(
            choices=["float32", "bf16", "fp16"],
            help="autocast of the forward passes: bf16 (GPUs, CPUs with AVX512-BF16/AMX) or fp16 "
            "(with a gradient scaler); default float32",
        ),
    ),
    (
        "--device",
        dict(
            help="auto (CUDA when present, else CPU; $FORGETLESS_DEVICE overrides), cpu, cuda, "
            "cuda:N or mps (default auto)"
        ),
    ),
    (
        "--data-dir",
        dict(
            help="where the dataset files are, or NAME=DIR,NAME=DIR (else $FORGETLESS_DATA, the cache, system copies)"
        ),
    ),
]
FLAGS = [
    ("--reset-optimizer", "a fresh optimizer at every task"),
    ("--compile", "torch.compile the model (off by default; see docs/performance.md)"),
    ("--first-unpermuted", "permuted: the first task keeps the original images"),
    (
        "--online",
        "online learning: one pass over each task's data, evaluated during the stream "
        "(every --eval-every steps; default about every 1,000 samples); "
        "use a small --batch-size, e.g. 10",
    ),
    ("--task-free", "the strategy is not told where tasks start and end (er, der, derpp, er-ace, mir, gdumb, naive)"),
]


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="forgetless",
        description="Continual learning in PyTorch: train on a sequence of tasks, measure how much is forgotten.",
    )
    p.add_argument("--version", action="version", version=f"forgetless {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    r = sub.add_parser("run", help="train one strategy on one benchmark; print and save the accuracy matrix")
    c = sub.add_parser("compare", help="a grid of benchmarks x strategies x parameters x seeds; a summary table")
    for parser, repeat in ((r, False), (c, True)):
        for flag, kw in RUN_OPTIONS:
            kw = dict(kw)
            if flag == "--angles":
                kw["type"] = _float_list
            parser.add_argument(
                flag,
                action="append" if repeat else "store",
                **({**kw, "help": kw["help"] + " (repeat: a grid axis)"} if repeat else kw),
            )
        parser.add_argument(
            "--param",
            action="append",
            metavar="KEY=VALUE",
            help="a strategy hyperparameter; PART.KEY=VALUE for one part of a composed "
            "strategy, e.g. ewc.lam=100 (repeatable" + ("; repeated keys are grid axes)" if repeat else ")"),
        )
        for flag, help_ in FLAGS:
            parser.add_argument(flag, action="store_true", help=help_)
        parser.add_argument("--no-download", action="store_true", help="never download; fail if the data is not found")
        parser.add_argument("--quiet", action="store_true", help="print only the results")
    r.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    r.add_argument("--out", default=None, help="output directory (default runs/<run stamp>)")
    r.add_argument(
        "--resume", action="store_true", help="continue from the checkpoint in --out (after its last finished task)"
    )
    r.add_argument("--overwrite", action="store_true", help="replace a run of another configuration found in --out")
    c.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides on top of --config")
    c.add_argument("--config", help="a TOML or YAML file of run options (lists are grid axes)")
    c.add_argument("--out", default="runs/compare", help="output directory (default runs/compare)")
    c.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the summary of another grid (or a file forgetless did not write) found in --out",
    )
    c.add_argument("--workers", type=int, default=1, help="runs at once (default 1)")
    c.add_argument(
        "--threads", type=int, default=None, help="torch threads per run (default: the cores divided among the workers)"
    )
    c.add_argument("--executor", choices=["local", "ray"], default="local")
    c.add_argument("--address", default=None, help="Ray cluster address (default: start a local Ray)")
    c.add_argument(
        "--gpus-per-run",
        type=float,
        default=0.0,
        help="with --executor ray: GPUs each run reserves (e.g. 1, or 0.5 to share one; default 0)",
    )
    c.add_argument(
        "--select-on",
        choices=["validation"],
        default=None,
        help="choose each strategy's parameters on a validation split, then run them on test",
    )
    c.add_argument(
        "--metric",
        default="average_accuracy",
        help=f"the metric for --select-on: {', '.join(scalar_metrics())} (default average_accuracy)",
    )
    c.add_argument("--selection-val-fraction", type=float, default=0.1, help="validation part for --select-on")
    c.add_argument(
        "--with-joint",
        action="store_true",
        help="add the joint runs on the first k tasks, k = 1..T (upper bound; intransigence)",
    )
    sub.add_parser("list", help="benchmarks, scenarios, strategies and their parameters")
    add_report_parser(sub)
    return p


def _config(a: argparse.Namespace) -> RunConfig:
    given = {
        name: getattr(a, name)
        for name in (
            "benchmark",
            "scenario",
            "tasks",
            "strategy",
            "model",
            "epochs",
            "iterations",
            "batch_size",
            "optimizer",
            "lr",
            "momentum",
            "seed",
            "classes",
            "angles",
            "val_fraction",
            "eval_every",
            "precision",
            "device",
            "weight_decay",
            "lr_schedule",
            "milestones",
            "lr_decay",
            "augment",
            "normalize",
            "base_classes",
            "ways",
            "shots",
            "sessions",
            "session_lists",
            "blurry",
            "blurry_disjoint",
        )
    }
    cfg = RunConfig(**{k: v for k, v in given.items() if v is not None})
    cfg.params = parse_params(a.param)
    cfg.reset_optimizer, cfg.first_unpermuted, cfg.compile = a.reset_optimizer, a.first_unpermuted, a.compile
    cfg.online, cfg.task_free = a.online, a.task_free
    from .spec import parse_data_dir as strict_data_dir

    cfg.data_dir, cfg.download = strict_data_dir(a.data_dir), not a.no_download
    return cfg


def format_matrix(R: list[list[float]], initial: list[float] | None = None) -> str:
    T = len(R[0]) if R else 0
    head = "accuracy (%)  " + "".join(f"{'task ' + str(j + 1):>9}" for j in range(T))
    rows = [head]
    if initial is not None:
        rows.append(f"{'initial':<14}" + "".join(f"{100 * v:9.1f}" for v in initial))
    rows += [f"{'after task ' + str(i + 1):<14}" + "".join(f"{100 * v:9.1f}" for v in row) for i, row in enumerate(R)]
    return "\n".join(rows)


def format_metrics(m: dict) -> str:
    """Every metric of ``metrics.REGISTRY`` that ``m`` has, one a line: numbers in %, lists of
    per-task values (A_k, learning accuracy, ...) as space-separated percentages."""
    from .metrics import REGISTRY

    def pct(v):
        return "n/a (one task)" if v is None else f"{100 * v:+.2f} %" if v < 0 else f"{100 * v:.2f} %"

    width = max(len(info.label) for info in REGISTRY.values()) + 2
    lines = []
    for key, info in sorted(REGISTRY.items(), key=lambda kv: not kv[1].scalar):  # numbers first
        if key not in m:
            continue
        v = m[key]
        text = pct(v) if info.scalar else " ".join(f"{100 * x:.1f}" for x in v)
        lines.append(f"{info.label:<{width}}{text}")
    return "\n".join(lines)


def cmd_run(a: argparse.Namespace) -> int:
    import torch

    from .run import run

    if a.threads is not None:
        if a.threads < 1:
            raise UsageError(f"--threads must be at least 1, got {a.threads}")
        torch.set_num_threads(a.threads)
    cfg = _config(a)
    out = Path(a.out) if a.out else Path("runs") / cfg.resolved().stamp()
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a directory; choose another path")
    say = (lambda m: None) if a.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    result = run(cfg, out=out, resume=a.resume, overwrite=a.overwrite, progress=say, show_progress=not a.quiet)
    if not devices.is_main():  # (under torchrun rank 0 prints)
        return 0
    path = out / "result.json"
    c = result.config
    print(
        f"{c['benchmark']} ({c['scenario']}-incremental, {c['tasks']} tasks), strategy {c['strategy']}, "
        f"model {c['model']}, seed {c['seed']}"
    )
    print(format_matrix(result.accuracy_matrix, result.initial_accuracy))
    print(format_metrics(result.metrics))
    t = result.timing
    print(f"time: {t['total_seconds']:.1f} s in all, {t['train_seconds']:.1f} s training")
    print(f"results: {path}")
    return 0


# `forgetless run` with no option at all: README's first command. It shows forgetting and two ways
# to fight it side by side: naive fine-tuning, a regularizer and replay, each at its defaults, on the
# embedded digits (no download), three seeds, with the HTML report (issue 19).
MAIN_JOB = {"benchmark": "permuted-digits"}
MAIN_STRATEGIES = ["naive", "ewc", "er"]
MAIN_SEEDS = [0, 1, 2]
MAIN_OUT = Path("runs") / "main-job"


def cmd_main_job(a: argparse.Namespace) -> int:
    import time

    t0 = time.perf_counter()
    from .workers import start_early

    start_early()  # (the workers' server imports torch on the other core while this process does)
    from .experiment import Grid, compare, format_summary
    from .report import write_report

    print(
        f"forgetless run without options: the main job. {', '.join(MAIN_STRATEGIES)} (fine-tuning, a "
        f"regularizer, replay; their defaults) on {MAIN_JOB['benchmark']}, seeds "
        f"{', '.join(map(str, MAIN_SEEDS))}; `forgetless run --help` runs one configuration of your choice.",
        file=sys.stderr,
        flush=True,
    )
    grid = Grid(base=dict(MAIN_JOB), axes={"strategy": list(MAIN_STRATEGIES), "seed": list(MAIN_SEEDS)})
    rows = compare(grid, MAIN_OUT, workers=2, threads=1)
    print(format_summary(rows))
    report = write_report(MAIN_OUT)
    print(f"time: {time.perf_counter() - t0:.1f} s; runs and summary: {MAIN_OUT}; report: {report}")
    return 0


def _grid(a: argparse.Namespace):
    """The grid of `compare`: a file's options, then the command line's (a repeated option is an axis)."""
    from .experiment import Grid, load_grid_file

    if a.overrides and not a.config:
        raise UsageError("KEY=VALUE overrides apply on top of --config FILE")
    grid = load_grid_file(a.config, a.overrides) if a.config else Grid()

    def put(name, values):
        grid.axes.pop(name, None)
        grid.base.pop(name, None)
        if len(values) > 1:
            grid.axes[name] = values
        else:
            grid.base[name] = values[0]

    for flag, _ in RUN_OPTIONS:
        name = flag[2:].replace("-", "_")
        if getattr(a, name):
            put(name, getattr(a, name))
    by_key: dict = {}
    for item in a.param or []:
        for key, value in parse_params([item]).items():
            by_key.setdefault(key, []).append(value)
    for key, values in by_key.items():
        put(f"params.{key}", values)
    for flag in ("reset_optimizer", "first_unpermuted", "online", "task_free"):
        if getattr(a, flag):
            grid.base[flag] = True
    if a.data_dir:
        from .spec import parse_data_dir as strict_data_dir

        put("data_dir", [strict_data_dir(d) for d in a.data_dir])
    if a.no_download:
        grid.base["download"] = False
    return grid


def cmd_compare(a: argparse.Namespace) -> int:
    import time

    from .experiment import compare, format_summary

    if a.workers < 1:
        raise UsageError(f"--workers must be at least 1, got {a.workers}")
    if devices.launched_by_torchrun():
        raise UsageError("compare runs its own processes: start it without torchrun (torchrun is for one `run`)")
    if a.threads is not None and a.threads < 1:
        raise UsageError(f"--threads must be at least 1, got {a.threads}")
    say = (lambda m: None) if a.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    t0 = time.perf_counter()
    rows = compare(
        _grid(a),
        a.out,
        workers=a.workers,
        executor=a.executor,
        address=a.address,
        select_on=a.select_on,
        metric=a.metric,
        val_fraction=a.selection_val_fraction,
        with_joint=a.with_joint,
        say=say,
        threads=a.threads,
        gpus_per_run=a.gpus_per_run,
        overwrite=a.overwrite,
    )
    print(format_summary(rows))
    print(f"time: {time.perf_counter() - t0:.1f} s; summary: {Path(a.out) / 'summary.csv'}")
    return 0


def cmd_list(a: argparse.Namespace) -> int:
    from .benchmarks import SCENARIOS, benchmark_names
    from .data.sources import DATASETS
    from .strategies import STRATEGIES

    print("benchmarks:")
    for name in benchmark_names():
        print(f"  {name}")
    print("datasets:")
    for name, info in DATASETS.items():
        print(f"  {name:<15}{info.get('description', '')}")
    print(
        f"scenarios: {', '.join(SCENARIOS)} (fscil: --base-classes --ways --shots; every class-IL strategy runs in it)"
    )
    print(
        "models: mlp:W1,W2,... (default mlp:1024,512,256), cnn, resnet18[:nf=N] (nf=20: GEM's reduced), "
        "resnet20[:nf=N], resnet32[:nf=N], keras:package.module:function (a Keras 3 model, KERAS_BACKEND=torch)"
    )
    print("strategies (parameters with defaults):")
    for name, cls in STRATEGIES.items():
        print(f"  {name:<12}{cls.help} (scenarios: {', '.join(cls.scenarios)})")
        for key, decl in cls.params.items():
            print(f"  {'':<14}{key}={decl.default}: {decl.describe()}")
    return 0


def add_report_parser(subparsers) -> argparse.ArgumentParser:
    """``forgetless report DIR [--out FILE] [--figures DIR]``."""
    p = subparsers.add_parser(
        "report", help="one self-contained HTML page (figures, tables) of a run or comparison directory"
    )
    p.add_argument(
        "dir", metavar="DIR", help="a directory written by `forgetless run --out` or `forgetless compare --out`"
    )
    p.add_argument("--out", default=None, metavar="FILE", help="the HTML file to write (default DIR/report.html)")
    p.add_argument("--figures", default=None, metavar="DIR", help="also save every figure there as PNG and SVG")
    p.add_argument("--overwrite", action="store_true", help="replace a file forgetless did not write")
    return p


def cmd_report(a: argparse.Namespace) -> int:
    from .report import write_report

    print(write_report(a.dir, a.out, figures=getattr(a, "figures", None), overwrite=getattr(a, "overwrite", False)))
    return 0


def _terminate_like_interrupt(signum, frame):
    """SIGTERM (what schedulers send first) stops a run the way Ctrl-C does: a clean exit, resumable."""
    raise KeyboardInterrupt


def sigterm_as_interrupt() -> None:
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate_like_interrupt)


PEER_LOST = (
    "Connection reset by peer",
    "Connection closed by peer",
    "Broken pipe",
    "Connection refused",
    "Socket Timeout",
    "socket timeout",
    "NCCL communicator was aborted",
    "remote process exited",
)


def _peer_lost(error: RuntimeError) -> bool:
    """Whether a collective failed because another process of the run is gone (not a bug here)."""
    import torch.distributed as dist

    kinds = tuple(
        k for k in (getattr(dist, "DistNetworkError", None), getattr(dist, "DistBackendError", None)) if k is not None
    )
    return (bool(kinds) and isinstance(error, kinds)) or any(s in str(error) for s in PEER_LOST)


def main(argv: list[str] | None = None) -> int:
    import signal

    previous = signal.getsignal(signal.SIGTERM)
    sigterm_as_interrupt()
    try:
        args = sys.argv[1:] if argv is None else list(argv)
        a = build_parser().parse_args(args)
        if args == ["run"]:
            return cmd_main_job(a)
        return {"run": cmd_run, "compare": cmd_compare, "list": cmd_list, "report": cmd_report}[a.command](a)
    except UsageError as e:
        if devices.is_main():  # (under torchrun every process stops with the same error; rank 0 says it)
            print(f"forgetless: error: {e}", file=sys.stderr, flush=True)
        devices.leave_after_main()  # (torchrun stops every process when the first one ends)
        return 2
    except OSError as e:  # a full disk or quota where no write path named it (the last line of defence)
        from .data.cache import disk_full, is_disk_full

        if not is_disk_full(e):
            raise
        print(f"forgetless: error: {disk_full(e, e.filename or 'a file')}", file=sys.stderr, flush=True)
        return 2
    except RuntimeError as e:  # under torchrun: another process died, and a collective here saw it
        if not devices.launched_by_torchrun() or not _peer_lost(e):
            raise
        why = next((s for s in PEER_LOST if s in str(e)), type(e).__name__)
        print(
            f"forgetless: error: rank {devices.rank()}: another process of this torchrun run stopped "
            f"({why}); run the same torchrun command with --resume to continue from the last checkpoint",
            file=sys.stderr,
            flush=True,
        )
        return 1
    except KeyboardInterrupt:
        if devices.launched_by_torchrun():  # (torchrun stops the others with SIGTERM when one process ends)
            print(
                f"forgetless: rank {devices.rank()}: stopped (torchrun stops every process of the run when "
                "another process of this torchrun run stopped or was interrupted); run the same torchrun "
                "command with --resume to continue from the last checkpoint",
                file=sys.stderr,
                flush=True,
            )
        else:
            print(
                "forgetless: interrupted; run the same command again (with --resume for `run`) to continue "
                "from the last checkpoint",
                file=sys.stderr,
            )
        return 130
    finally:
        if "torch" in sys.modules:  # (no torch imported: no process group to leave)
            devices.shutdown_distributed()
        import threading

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
