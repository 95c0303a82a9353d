"""Every strategy behaves the same in the library's loop and in a hand-written loop that calls only
before_task, train_data (the data the strategy trains on), train_step and after_task."""

import pytest
import torch

import forgetless as fl
from forgetless import Batch, Context, RunConfig
from forgetless.benchmarks import build
from forgetless.models import build_model
from forgetless.run import make_optimizer
from forgetless.strategies import STRATEGIES, make_strategy

CFG = dict(benchmark="split-digits", epochs=2, batch_size=64, model="mlp:64", seed=3)
CASES = (
    [(name, "class") for name, cls in STRATEGIES.items() if "class" in cls.scenarios]
    + [("er+ewc", "class")]
    + [(name, "task") for name in ("er", "agem", "gem", "lwf", "dgr", "si", "er+ewc", "pnn", "packnet", "hat")]
)


def own_loop(spec: str, scenario: str, device: torch.device) -> list[list[float]]:
    """What a user writes: their model, optimizer and batches on their device; forgetless only for the method."""
    bench = build(CFG["benchmark"], scenario=scenario, seed=CFG["seed"]).to(device)
    torch.manual_seed(CFG["seed"])
    model = build_model(CFG["model"], bench.input_shape, bench.n_outputs).to(device)
    opt = make_optimizer("adam", list(model.parameters()), 1e-3, device=device)
    ctx = Context(
        model=model,
        optimizer=opt,
        benchmark=bench,
        batch_size=CFG["batch_size"],
        generator=torch.Generator().manual_seed(CFG["seed"]),
        device=device,
    )
    s = make_strategy(spec, {}, scenario)
    rows = []
    for task in bench.tasks:
        s.before_task(ctx, task)
        got = s.train_data(ctx, task)
        if got is not None:
            data, t = got
            for _ in range(CFG["epochs"]):
                perm = torch.randperm(len(data), generator=ctx.generator).to(device)  # drawn on the CPU
                for i in range(0, len(data), CFG["batch_size"]):
                    idx = perm[i : i + CFG["batch_size"]]
                    loss = fl.train_step(ctx, s, Batch(data.x[idx], data.y[idx], t[idx]))
                    assert loss.requires_grad is False and loss.dim() == 0
        s.after_task(ctx, task)
        rows.append(fl.evaluate(ctx, s, ctx.seen_upto))
    return rows


@pytest.mark.parametrize("spec,scenario", CASES, ids=[f"{s}-{sc}" for s, sc in CASES])
def test_library_loop_and_own_loop_agree(spec, scenario, one_thread, device):
    library = fl.run(RunConfig(strategy=spec, scenario=scenario, **CFG)).accuracy_matrix  # on the fixture's device
    assert own_loop(spec, scenario, device) == library


def test_er_fills_its_memory_in_a_users_loop(one_thread, device):
    bench = build("split-digits", scenario="task", seed=0).to(device)
    model = build_model("mlp:32", bench.input_shape, bench.n_outputs).to(device)
    ctx = Context(
        model=model,
        optimizer=make_optimizer("sgd", model.parameters(), 0.1, device=device),
        benchmark=bench,
        device=device,
    )
    er = make_strategy("er", {"memory": 50})
    for task in bench.tasks[:2]:
        er.before_task(ctx, task)
        for i in range(0, len(task.train), 32):
            fl.train_step(ctx, er, Batch(task.train.x[i : i + 32], task.train.y[i : i + 32], task.ids()[i : i + 32]))
        er.after_task(ctx, task)
    assert len(er.buffer_) == 50
    assert set(er.buffer_.t[:50].tolist()) == {0, 1}  # both tasks are in the reservoir
    assert ctx.task_id == 1 and ctx.seen_upto == 1  # before_task told the context
