"""Run by tests/test_distributed.py under torchrun (2 processes): trains the runs given in a JSON
file with ``forgetless.run`` and has EVERY process save what it ended with, so the test can compare
the processes with each other and with one process.

    python -m torch.distributed.run --nproc-per-node 2 tests/ddp_worker.py CASES.json OUT

CASES.json: {name: {"config": RunConfig fields} | {"cli": [run options], "out": DIR, "crash_at": K,
"model": "batchnorm"}}.
A "cli" case builds its config exactly as ``forgetless run`` would; with ``crash_at`` K it is
interrupted when task K+1 starts (every process), leaving rank 0's checkpoint after task K in DIR.
On every rank but 0, any write under a case's DIR raises (``forbid_writes``), so the run fails.
Each process writes OUT/NAME.rankR.pt: the accuracy matrix, the strategy's state (memory, importances)
and, for a batch-norm case, the model's state.
"""

import json
import sys
from pathlib import Path

import torch

import forgetless as fl
from forgetless import devices
from forgetless.cli import _config, build_parser


class Interrupted(Exception):
    pass


def forbid_writes(dirs: list[str]) -> None:
    """Make every write, creation, rename or removal under ``dirs`` raise (used on rank 1: it must
    write nothing into a run directory)."""
    import builtins
    import io
    import os
    import shutil

    roots = [os.path.realpath(d) for d in dirs]

    def inside(path) -> bool:
        if not isinstance(path, (str, bytes, os.PathLike)):
            return False
        p = os.path.realpath(os.fsdecode(os.fspath(path)))
        return any(p == r or p.startswith(r + os.sep) for r in roots)

    def refuse(what, path):
        raise PermissionError(f"rank {devices.rank()} tried to {what} {path}: only rank 0 may write a run directory")

    real_open, real_os_open = builtins.open, os.open

    def guarded_open(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+") and inside(file):
            refuse("open for writing", file)
        return real_open(file, mode, *args, **kwargs)

    def guarded_os_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND) and inside(path):
            refuse("open for writing", path)
        return real_os_open(path, flags, *args, **kwargs)

    def guard(module, name, what, arg=0):
        real = getattr(module, name)

        def guarded(*args, **kwargs):
            if len(args) > arg and inside(args[arg]):
                refuse(what, args[arg])
            return real(*args, **kwargs)

        setattr(module, name, guarded)

    builtins.open = io.open = guarded_open
    os.open = guarded_os_open
    for name, what, arg in (
        ("mkdir", "create", 0),
        ("makedirs", "create", 0),
        ("remove", "remove", 0),
        ("unlink", "remove", 0),
        ("rmdir", "remove", 0),
        ("replace", "replace", 1),
        ("rename", "rename", 1),
    ):
        guard(os, name, what, arg)
    guard(shutil, "rmtree", "remove")


def batch_norm_mlp(seed: int) -> torch.nn.Module:
    """An MLP with batch norm for the 8x8 digits (a case with "model": "batchnorm")."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.BatchNorm1d(32), torch.nn.ReLU(), torch.nn.Linear(32, 10)
    )


def main(cases_file: str, out: str) -> None:
    torch.set_num_threads(1)
    cases = json.loads(Path(cases_file).read_text())
    if devices.rank() != 0:
        forbid_writes([case["out"] for case in cases.values() if case.get("out")])
    for name, case in cases.items():
        if "cli" in case:
            cfg = _config(build_parser().parse_args(["run", *case["cli"]]))
        else:
            cfg = fl.RunConfig(**case["config"])
        strategy = fl.strategies.make_strategy(cfg.strategy, cfg.params, cfg.resolved().scenario)
        crash = case.get("crash_at")
        if crash is not None:  # every process stops when task crash+1 starts (the config stays the same)

            def before_task(ctx, task, original=strategy.before_task):
                if task.id == crash:
                    raise Interrupted
                return original(ctx, task)

            strategy.before_task = before_task
        model = batch_norm_mlp(cfg.seed) if case.get("model") == "batchnorm" else None
        try:
            result = fl.run(cfg, strategy=strategy, model=model, out=case.get("out"))
        except Interrupted:
            continue
        torch.save(
            {
                "R": result.accuracy_matrix,
                "initial": result.initial_accuracy,
                "strategy": devices.to_device(strategy.state_dict(), torch.device("cpu")),
                "model": None if model is None else devices.to_device(model.state_dict(), torch.device("cpu")),
                "rank": devices.rank(),
                "world": devices.world_size(),
            },
            Path(out) / f"{name}.rank{devices.rank()}.pt",
        )
    devices.shutdown_distributed()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
