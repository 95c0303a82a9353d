"""Devices and precision (devices.py): choosing a device, data resident as uint8, every tensor of a
run on the run's device, fp16 with a gradient scaler, fused optimizers, checkpoints across devices.

The suite runs on the device of the ``device`` fixture (conftest: CPU here, CUDA where present,
``FORGETLESS_TEST_DEVICE`` to choose). Where no GPU is at hand, ``test_no_tensor_is_made_off_the_run_device``
is the check that a run on a GPU would not mix devices: it runs every strategy with torch's default
device set to "meta", so any tensor a strategy, the loop or the data code makes without saying where
lands on "meta" and the run fails (or its numbers change); the accuracy matrix must be identical.
"""

import numpy as np
import pytest
import torch

import forgetless as fl
from forgetless import devices
from forgetless.benchmarks import build
from forgetless.errors import UsageError
from forgetless.models import build_model
from forgetless.run import make_optimizer
from forgetless.strategies import STRATEGIES
from forgetless.strategies.regularization import EWC

pytestmark = pytest.mark.usefixtures("one_thread")


def test_auto_resolves_to_the_fixture_device(device):
    assert devices.resolve("auto") == device
    assert devices.resolve("cpu") == torch.device("cpu")


@pytest.mark.parametrize("spec", ["gpu", "cuda:x", "cpu:0", "tpu", ""])
def test_bad_device_names_are_one_line_errors(spec):
    if spec == "":
        assert devices.resolve(spec) == devices.resolve("auto")  # empty = auto
        return
    with pytest.raises(UsageError) as e:
        devices.resolve(spec)
    assert "\n" not in str(e.value) and ("device" in str(e.value))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_says_so():
    with pytest.raises(UsageError, match=r"no CUDA device.*--device cpu"):
        devices.resolve("cuda")
    with pytest.raises(UsageError):
        fl.run(fl.RunConfig(benchmark="permuted-digits", tasks=2, epochs=1, device="cuda:0"))


def test_device_is_not_part_of_a_runs_identity():
    a, b = fl.RunConfig(device="cpu"), fl.RunConfig(device="auto")
    assert a.stamp() == b.stamp()
    assert fl.RunConfig(precision="fp16").stamp() != a.stamp()


def test_data_stays_uint8_and_batches_scale_exactly(mnist_dir, device):
    bench = build("split-mnist", scenario="class", data_dir=str(mnist_dir))
    bench.to(device)
    train = bench.tasks[0].train
    assert train.raw.dtype == torch.uint8 and train.raw.device == device and train.scale == 255
    idx = torch.arange(0, 64, device=device)
    want = train.raw[idx].double() / 255
    got = train.take(idx)
    assert got.dtype == torch.float32 and torch.equal(got, want.float())
    digits = build("permuted-digits", tasks=2).tasks[1].train
    assert digits.raw.dtype == torch.uint8 and digits.scale == 16 and float(digits.x.max()) == 1.0
    rotated = build("rotated-digits", tasks=2).tasks[1].train
    assert rotated.raw.dtype == torch.float32 and rotated.scale is None  # interpolated: kept float


def _spec(name):
    return {
        "icarl": ("class", {}),
        "bic": ("class", {}),
        "prototype": ("class", {}),
        "cec": ("class", {"episodes": 20}),
        "topic": ("class", {}),
        "xder": ("class", {}),
        "lucir": ("class", {}),
    }.get(name, ("task", {}))


def _run(name, device, meta=False):
    scenario, params = _spec(name)
    bench = build("split-digits", scenario=scenario, tasks=5)
    torch.manual_seed(0)
    model = build_model("mlp:32", bench.input_shape, bench.n_outputs)
    cfg = fl.RunConfig(
        benchmark="split-digits",
        strategy=name,
        scenario=scenario,
        params=params,
        iterations=6,
        batch_size=32,
        tasks=5,
        device=str(device),
    )
    if meta:
        torch.set_default_device("meta")
    try:
        return fl.run(cfg, model=model, benchmark=bench)
    finally:
        if meta:
            torch.set_default_device(None)


NAMES = sorted(set(STRATEGIES) - {"joint"}) + ["er+ewc", "lwf+si"]


@pytest.mark.parametrize("name", NAMES)
def test_no_tensor_is_made_off_the_run_device(name, device):
    normal = _run(name, device)
    probed = _run(name, device, meta=True)
    assert probed.accuracy_matrix == normal.accuracy_matrix
    assert all(np.isfinite(r).all() for r in normal.accuracy_matrix)


def test_optimizers_use_fused_kernels_on_cpu_and_cuda(device):
    p = [torch.nn.Parameter(torch.zeros(3, device=device))]
    for name in ("adam", "sgd"):
        opt = make_optimizer(name, p, 0.1, device=device)
        if device.type in ("cpu", "cuda"):
            assert opt.defaults.get("fused") is True


def test_fp16_trains_with_a_grad_scaler(device):
    r16 = fl.run(
        fl.RunConfig(
            benchmark="split-digits",
            scenario="task",
            strategy="si",
            iterations=40,
            tasks=5,
            precision="fp16",
            device=str(device),
        )
    )
    r32 = fl.run(
        fl.RunConfig(
            benchmark="split-digits", scenario="task", strategy="si", iterations=40, tasks=5, device=str(device)
        )
    )
    assert r16.metrics["average_accuracy"] > 0.85  # task-IL split digits: chance is 0.5
    assert abs(r16.metrics["average_accuracy"] - r32.metrics["average_accuracy"]) < 0.05
    assert r16.accuracy_matrix != r32.accuracy_matrix  # it did run in half precision


def test_an_overflowing_fp16_step_is_skipped_and_hooks_see_zero_gradients(device):
    from forgetless.loop import train_step
    from forgetless.strategies import Batch, Context
    from forgetless.strategies.regularization import SI

    bench = build("split-digits", scenario="task", tasks=5).to(device)
    torch.manual_seed(0)
    model = build_model("mlp:16", bench.input_shape, bench.n_outputs).to(device)
    opt = make_optimizer("adam", model.parameters(), 1e-2, device=device)
    scaler = torch.amp.GradScaler(device.type, init_scale=2.0**40)  # the first steps overflow in fp16
    ctx = Context(model=model, optimizer=opt, benchmark=bench, precision="fp16", device=device, scaler=scaler)
    s = SI()
    task = bench.tasks[0]
    s.before_task(ctx, task)
    before = [p.detach().clone() for p in model.parameters()]
    idx = torch.arange(32, device=device)
    train_step(ctx, s, Batch(task.train.take(idx), task.train.y[idx], task.ids(32)))
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters()))  # the step was skipped
    assert all(p.grad is None or float(p.grad.abs().max()) == 0.0 for p in model.parameters())
    assert scaler.get_scale() < 2.0**40  # and the scale came down
    for _ in range(60):  # the scale halves at every overflow, then steps go through
        train_step(ctx, s, Batch(task.train.take(idx), task.train.y[idx], task.ids(32)))
    assert not all(torch.equal(a, p) for a, p in zip(before, model.parameters()))
    s.after_task(ctx, task)
    assert bool(torch.isfinite(s.quad.omega).all())  # SI's path integral took no inf * 0


def test_strategy_state_moves_between_devices():
    state = {"a": torch.zeros(2), "b": [torch.ones(1), (torch.ones(1), 3)], "c": None, "d": "x"}
    moved = devices.to_device(state, torch.device("cpu"))
    assert torch.equal(moved["a"], state["a"]) and moved["b"][1][1] == 3 and moved["d"] == "x"


class _Crash(EWC):
    def __init__(self, at=None, **kw):
        super().__init__(**kw)
        self.at = at

    def before_task(self, ctx, task):
        if task.id == self.at:
            raise KeyboardInterrupt
        super().before_task(ctx, task)


def test_resume_with_another_device_spelling_is_the_same_run(tmp_path, device):
    """A checkpoint is read onto the CPU and moved (``devices.to_device``); the device is not part
    of the run's identity, so a run started with --device auto resumes with --device <its device>."""
    base = dict(benchmark="permuted-digits", tasks=3, epochs=1, model="mlp:32")
    whole = fl.run(fl.RunConfig(**base, device=str(device)), strategy=_Crash(), out=tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        fl.run(fl.RunConfig(**base, device="auto"), strategy=_Crash(at=2), out=tmp_path / "cut")
    resumed = fl.run(fl.RunConfig(**base, device=str(device)), strategy=_Crash(), out=tmp_path / "cut", resume=True)
    assert resumed.accuracy_matrix == whole.accuracy_matrix


def test_compile_gives_the_same_model_function(device):
    pytest.importorskip("torch._inductor")
    try:
        r = fl.run(
            fl.RunConfig(
                benchmark="permuted-digits", tasks=2, iterations=5, compile=True, device=str(device), model="mlp:32"
            )
        )
    except UsageError as e:
        pytest.skip(f"torch.compile unavailable here: {e}")
    ref = fl.run(fl.RunConfig(benchmark="permuted-digits", tasks=2, iterations=5, device=str(device), model="mlp:32"))
    assert np.allclose(r.accuracy_matrix, ref.accuracy_matrix, atol=0.02)


def test_device_check_runs_here(device):
    """benchmarks/device_check.py, the script a machine with a GPU runs as is, also runs on this
    machine's device (its smoke-test form: tiny ResNet, naive and ER, one epoch)."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "device_check.py"
    p = subprocess.run(
        [sys.executable, str(script), "--device", str(device), "--quick", "--skip-tests"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    assert "naive   float32" in p.stdout and "er   float32" in p.stdout and "ratio" in p.stdout
