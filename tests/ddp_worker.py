"""Run by tests/test_distributed.py under torchrun (2 processes): trains the runs given in a JSON
file with ``forgetless.run`` and has EVERY process save what it ended with, so the test can compare
the processes with each other and with one process.

    python -m torch.distributed.run --nproc-per-node 2 tests/ddp_worker.py CASES.json OUT

CASES.json: {name: {"config": RunConfig fields} | {"cli": [run options], "out": DIR, "crash_at": K}}.
A "cli" case builds its config exactly as ``forgetless run`` would; with ``crash_at`` K it is
interrupted when task K+1 starts (every process), leaving rank 0's checkpoint after task K in DIR.
Each process writes OUT/NAME.rankR.pt: the accuracy matrix and the strategy's state (memory, importances).
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


def main(cases_file: str, out: str) -> None:
    torch.set_num_threads(1)
    cases = json.loads(Path(cases_file).read_text())
    for name, case in cases.items():
        if "cli" in case:
            cfg = _config(build_parser().parse_args(["run", *case["cli"]]))
        else:
            cfg = fl.RunConfig(**case["config"])
        strategy = fl.strategies.make_strategy(cfg.strategy, cfg.params, cfg.resolved().scenario)
        crash = case.get("crash_at")

        def progress(message: str) -> None:
            if crash is not None and message.startswith(f"task {crash + 1}/"):
                raise Interrupted

        try:
            result = fl.run(cfg, strategy=strategy, out=case.get("out"), progress=progress)
        except Interrupted:
            continue
        torch.save({"R": result.accuracy_matrix, "initial": result.initial_accuracy,
                    "strategy": devices.to_device(strategy.state_dict(), torch.device("cpu")),
                    "rank": devices.rank(), "world": devices.world_size()},
                   Path(out) / f"{name}.rank{devices.rank()}.pt")
    devices.shutdown_distributed()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
