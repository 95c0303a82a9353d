"""One run across 2 processes (torchrun, gloo on the CPU) against the same run in one process.

One torchrun launch trains every case of CASES with ``forgetless.run`` (tests/ddp_worker.py) and
has each process save its accuracy matrix and strategy state; a second launch resumes, through
``-m forgetless run --resume``, a run the first one interrupted; a third checks that an error on
rank 0 alone stops both processes with one line. The runs in one process are made here, with one
thread like the torchrun processes.

Measured (this machine, CPU): every accuracy matrix below is EXACTLY the one-process matrix (max
difference 0, so the tolerance is 1e-9: no float-summation flip of an argmax happened); the
memories (ER, A-GEM, GEM, iCaRL's and BiC's exemplars) are bit-identical to one process's; the
importances (EWC's Fisher, also with sampled labels, MAS) agree to a relative 4e-7, and are
bit-identical between the two processes.

The processes run on the CPU (gloo), or on 2 GPUs (NCCL) when the ``device`` fixture is CUDA and
the machine has two.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import forgetless as fl
from forgetless import devices

SRC = str(Path(fl.__file__).resolve().parents[1])
WORKER = str(Path(__file__).with_name("ddp_worker.py"))
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
TOL = 1e-9

BASE = dict(model="mlp:64", iterations=25, seed=1)
THREE = "0,1,2|3,4,5|6,7,8,9"  # split-digits in 3 tasks
CASES = {  # batch sizes that do not divide evenly between the 2 processes in most cases
    "naive": dict(benchmark="permuted-digits", tasks=3, strategy="naive", batch_size=50),
    "ewc": dict(
        benchmark="permuted-digits", tasks=3, strategy="ewc", params={"lam": 100.0, "samples": 301}, batch_size=33
    ),
    "ewc-sampled": dict(
        benchmark="permuted-digits",
        tasks=2,
        strategy="ewc",
        batch_size=32,
        params={"lam": 100.0, "fisher": "sample", "samples": 301},
    ),
    "mas": dict(benchmark="permuted-digits", tasks=2, strategy="mas", params={"lam": 1.0}, batch_size=33),
    "er": dict(benchmark="split-digits", scenario="class", strategy="er", params={"memory": 101}, batch_size=31),
    "lwf": dict(benchmark="split-digits", scenario="task", strategy="lwf", batch_size=37),
    "agem": dict(
        benchmark="split-digits",
        scenario="task",
        classes=THREE,
        strategy="agem",
        batch_size=32,
        params={"memory": 50, "replay_batch_size": 7},
    ),
    "gem": dict(
        benchmark="split-digits", scenario="task", classes=THREE, strategy="gem", params={"memory": 51}, batch_size=32
    ),
    "icarl": dict(
        benchmark="split-digits",
        scenario="class",
        classes=THREE,
        strategy="icarl",
        params={"memory": 90},
        batch_size=31,
    ),
    "bic": dict(
        benchmark="split-digits", scenario="class", classes=THREE, strategy="bic", params={"memory": 90}, batch_size=31
    ),
}
BATCHNORM = dict(benchmark="permuted-digits", tasks=2, strategy="ewc", batch_size=33)  # with batch_norm_mlp
WRITES = "er"  # this case also writes a run directory (rank 1 must write nothing there)
# interrupted by the first launch when task 2 starts, resumed by the second through the CLI
CUT = [
    "--benchmark",
    "split-digits",
    "--classes",
    THREE,
    "--strategy",
    "er",
    "--param",
    "memory=60",
    "--model",
    "mlp:64",
    "--iterations",
    "25",
    "--batch-size",
    "35",
    "--seed",
    "2",
    "--quiet",
]


def device_name(device: torch.device) -> str:
    return "cuda" if device.type == "cuda" and torch.cuda.device_count() >= 2 else "cpu"


def torchrun(args, tmp: Path, device: str, timeout=300):
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "FORGETLESS_DEVICE": device,
        "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    return subprocess.run([*TORCHRUN, *args], capture_output=True, text=True, env=env, cwd=tmp, timeout=timeout)


def config(name: str, device: str) -> fl.RunConfig:
    return fl.RunConfig(**BASE, **CASES[name], device=device)


@pytest.fixture(scope="module")
def launched(tmp_path_factory, device):
    """The first torchrun launch: every case, plus the interrupted CUT run."""
    tmp = tmp_path_factory.mktemp("ddp")
    dev = device_name(device)
    cases = {name: {"config": {**BASE, **kw, "device": dev}} for name, kw in CASES.items()}
    cases[WRITES]["out"] = str(tmp / "written")
    cases["batchnorm"] = {"config": {**BASE, **BATCHNORM, "device": dev}, "model": "batchnorm"}
    cases["cut"] = {"cli": [*CUT, "--device", dev], "out": str(tmp / "cut"), "crash_at": 1}
    (tmp / "cases.json").write_text(json.dumps(cases))
    p = torchrun([WORKER, str(tmp / "cases.json"), str(tmp)], tmp, dev)
    assert p.returncode == 0, p.stderr[-3000:]
    return tmp, dev


@pytest.fixture(scope="module")
def one_process(launched, one_thread):
    """The same runs in this process: (result, strategy) per case."""
    _, dev = launched
    out = {}
    for name in CASES:
        cfg = config(name, dev)
        strategy = fl.make_strategy(cfg.strategy, cfg.params, cfg.resolved().scenario)
        out[name] = fl.run(cfg, strategy=strategy), strategy
    return out


def saved(tmp: Path, name: str, rank: int) -> dict:
    return torch.load(tmp / f"{name}.rank{rank}.pt", weights_only=False)


def tensors(obj) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in tensors(v)]
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in tensors(v)]
    return []


def max_difference(A, B) -> float:
    return max(abs(a - b) for ra, rb in zip(A, B) for a, b in zip(ra, rb))


@pytest.mark.parametrize("name", list(CASES))
def test_two_processes_give_the_accuracy_matrix_of_one(launched, one_process, name):
    tmp, _ = launched
    result, _ = one_process[name]
    for rank in (0, 1):
        got = saved(tmp, name, rank)
        assert got["world"] == 2
        assert len(got["R"]) == len(result.accuracy_matrix)
        assert max_difference(got["R"], result.accuracy_matrix) <= TOL, (got["R"], result.accuracy_matrix)
        assert max(abs(a - b) for a, b in zip(got["initial"], result.initial_accuracy)) <= TOL


@pytest.mark.parametrize("name", list(CASES))
def test_both_processes_end_with_the_same_state(launched, name):
    tmp, _ = launched
    a, b = saved(tmp, name, 0), saved(tmp, name, 1)
    assert devices.fingerprint(a["strategy"]) == devices.fingerprint(b["strategy"])
    assert a["R"] == b["R"]


@pytest.mark.parametrize("name", ["er", "agem", "gem", "icarl", "bic"])
def test_memories_are_those_of_one_process(launched, one_process, name):
    """Replay memories and exemplars: the same seeded choices on every process, bit for bit the
    choices of one process."""
    tmp, _ = launched
    _, strategy = one_process[name]
    state = devices.to_device(strategy.state_dict(), torch.device("cpu"))
    key = {"er": "buffer_", "agem": "buffer_", "gem": "mem_x_", "icarl": "exemplars_", "bic": "exemplars_"}[name]
    mine = tensors(state[key])
    assert mine and sum(t.numel() for t in mine) > 0
    for rank in (0, 1):
        theirs = tensors(saved(tmp, name, rank)["strategy"][key])
        assert len(theirs) == len(mine) and all(torch.equal(x, y) for x, y in zip(mine, theirs))


@pytest.mark.parametrize("name", ["ewc", "ewc-sampled", "mas"])
def test_importance_estimated_in_parts_is_that_of_one_process(launched, one_process, name):
    """Each process estimates Omega on its part of the samples; the sums are all-reduced."""
    tmp, _ = launched
    _, strategy = one_process[name]
    mine = strategy.state_dict()["penalty"]
    theirs = saved(tmp, name, 0)["strategy"]["penalty"]
    omega_mine, omega_theirs = tensors(mine), tensors(theirs)
    assert omega_mine and len(omega_mine) == len(omega_theirs)
    for x, y in zip(omega_mine, omega_theirs):
        torch.testing.assert_close(y, x.cpu(), rtol=1e-5, atol=1e-7 * float(x.abs().max()))
    assert any(float(x.abs().max()) > 0 for x in omega_mine)


def test_rank_0_alone_writes_the_run_directory(launched, one_process):
    """ddp_worker.py makes any write under a run directory by rank 1 fail the run; rank 0's files
    are those of one process."""
    tmp, _ = launched
    out = tmp / "written"
    stored = json.loads((out / "result.json").read_text())
    assert max_difference(stored["accuracy_matrix"], one_process[WRITES][0].accuracy_matrix) <= TOL
    assert stored["timing"]["processes"] == 2
    steps = [int(r.split(",")[0]) for r in (out / "log.csv").read_text().splitlines()[1:]]
    assert steps == list(range(1, len(steps) + 1))  # one writer: every step once


def test_a_run_interrupted_under_torchrun_resumes_under_torchrun(launched, one_thread):
    tmp, dev = launched
    cut = tmp / "cut"
    assert torch.load(cut / "checkpoint.pt", weights_only=True)["state"]["done"] == 1
    p = torchrun(["-m", "forgetless", "run", *CUT, "--device", dev, "--out", str(cut), "--resume"], tmp, dev)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.count("after task 3") == 1  # printed by rank 0 only
    resumed = json.loads((cut / "result.json").read_text())
    from forgetless.cli import _config, build_parser

    full = fl.run(_config(build_parser().parse_args(["run", *CUT, "--device", dev])))
    assert max_difference(resumed["accuracy_matrix"], full.accuracy_matrix) <= TOL
    steps = [int(r.split(",")[0]) for r in (cut / "log.csv").read_text().splitlines()[1:]]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) == 3 * 25


def test_an_error_on_rank_0_alone_stops_both_processes_with_one_line(launched):
    """Rank 0 alone claims the directory: it refuses (another configuration is there); rank 1 must
    stop too, not wait in a collective, and the error is said once."""
    tmp, dev = launched
    other = [a if a != "er" else "naive" for a in CUT if a != "memory=60" and a != "--param"]
    p = torchrun(
        ["-m", "forgetless", "run", *other, "--device", dev, "--out", str(tmp / "written")], tmp, dev, timeout=180
    )
    assert p.returncode != 0
    lines = [line for line in p.stderr.splitlines() if line.startswith("forgetless: error:")]
    assert len(lines) == 1 and "holds a run with other settings" in lines[0], p.stderr[-3000:]
    assert str(Path(SRC) / "forgetless") not in p.stderr  # no traceback from forgetless itself


def test_batch_norm_statistics_stay_the_same_on_both_processes(launched):
    """Each process normalizes with its part's statistics; the running statistics are averaged
    after every step (devices.sync_gradients_), so both processes keep the same ones (the run's
    check after every task would stop it otherwise) and they have moved from their start."""
    tmp, _ = launched
    a, b = saved(tmp, "batchnorm", 0)["model"], saved(tmp, "batchnorm", 1)["model"]
    mean, var = "2.running_mean", "2.running_var"
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert float(a[mean].abs().max()) > 0 and not torch.allclose(a[var], torch.ones_like(a[var]))
    assert int(a["2.num_batches_tracked"]) >= 2 * 25  # (+1: models.check_model's forward runs in train mode)


@pytest.mark.parametrize("n, world", [(10, 2), (33, 2), (7, 3), (1, 2), (0, 2), (5, 8)])
def test_parts_are_contiguous_cover_everything_and_differ_by_at_most_one(monkeypatch, n, world):
    parts = []
    for r in range(world):
        monkeypatch.setattr(devices, "world_size", lambda: world)
        monkeypatch.setattr(devices, "rank", lambda r=r: r)
        parts.append(devices.shard(n))
    assert [i for p in parts for i in range(n)[p]] == list(range(n))
    sizes = [p.stop - p.start for p in parts]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def test_compare_and_a_numbered_gpu_are_refused_under_torchrun(monkeypatch, capsys):
    from forgetless.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    assert main(["compare", "--strategy", "naive"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "start it without torchrun" in err[0]
    with pytest.raises(fl.UsageError, match="takes the GPU of its LOCAL_RANK; use --device cuda"):
        devices.init_distributed("cuda:1")


def test_a_strategy_that_cannot_split_its_batch_is_refused(monkeypatch):
    from forgetless.run import _check_data_parallel

    dgr = fl.make_strategy("dgr", {}, "class")
    _check_data_parallel(dgr)  # one process: fine
    monkeypatch.setattr(devices, "world_size", lambda: 2)
    with pytest.raises(fl.UsageError, match="dgr does not train across several processes"):
        _check_data_parallel(fl.make_strategy("er+dgr", {}, "class"))
    _check_data_parallel(fl.make_strategy("er+ewc", {}, "class"))


def test_a_stray_rank_variable_does_not_silence_a_single_process(monkeypatch):
    monkeypatch.setenv("RANK", "3")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert devices.rank() == 0 and devices.is_main() and devices.world_size() == 1
