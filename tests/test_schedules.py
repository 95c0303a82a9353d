"""Learning-rate schedules per task (schedules.py) and weight decay: the rate before every step
against a direct computation, restarts at every task, resume, and the option checks."""

import math

import pytest
import torch
from conftest import Crash

import forgetless as fl
from forgetless.checkpoint import CHECKPOINT, load_checkpoint
from forgetless.schedules import lr_at

BASE = dict(benchmark="permuted-digits", tasks=2, model="mlp:16", batch_size=128, optimizer="sgd", lr=0.2, momentum=0.9)


@pytest.fixture
def rates(monkeypatch):
    """The rate of every optimizer step, in order (SGD and Adam); ``.weight_decay`` likewise."""

    class Seen(list):
        weight_decay: list

    seen = Seen()
    seen.weight_decay = []
    for cls in (torch.optim.SGD, torch.optim.Adam):
        real = cls.step

        def step(self, *a, _real=real, **kw):
            seen.append(self.param_groups[0]["lr"])
            seen.weight_decay.append(self.param_groups[0]["weight_decay"])
            return _real(self, *a, **kw)

        monkeypatch.setattr(cls, "step", step)
    return seen


def test_milestones_in_iterations_restart_at_every_task(rates, one_thread):
    fl.run(fl.RunConfig(iterations=12, lr_schedule="milestones", milestones=[5, 9], lr_decay=0.5, **BASE))
    per_task = [0.2] * 5 + [0.1] * 4 + [0.05] * 3  # steps 0-4, 5-8, 9-11 of every task
    assert rates == pytest.approx(per_task * 2, rel=1e-12)


def test_milestones_in_epochs(rates, one_thread):
    # 1,437 training digits, batches of 128: 12 steps per epoch; 4 epochs, milestones at epochs 1 and 3
    fl.run(fl.RunConfig(epochs=4, lr_schedule="milestones", milestones="1,3", **BASE))
    per_epoch = [0.2, 0.2 * 0.1, 0.2 * 0.1, 0.2 * 0.01]
    expected = [per_epoch[e] for e in range(4) for _ in range(12)]
    assert len(rates) == 2 * 48 and rates == pytest.approx(expected * 2, rel=1e-12)


def test_cosine_per_step_over_the_task(rates, one_thread):
    fl.run(fl.RunConfig(epochs=2, lr_schedule="cosine", **BASE))
    K = 24
    expected = [0.2 * (1 + math.cos(math.pi * k / K)) / 2 for k in range(K)]
    assert rates == pytest.approx(expected * 2, rel=1e-12)
    assert lr_at("cosine", 1.0, K // 2, K) == pytest.approx(0.5)


def test_no_schedule_leaves_the_rate_alone(rates, one_thread):
    fl.run(fl.RunConfig(iterations=5, **BASE))
    assert rates == [0.2] * 10


def test_adam_schedule_and_a_fresh_optimizer_per_task_keep_the_schedule_and_weight_decay(rates, one_thread):
    r = fl.run(
        fl.RunConfig(
            **{**BASE, "optimizer": "adam", "lr": 0.01},
            iterations=6,
            lr_schedule="milestones",
            milestones=[3],
            weight_decay=1e-3,
            reset_optimizer=True,
        )
    )
    assert rates == pytest.approx(([0.01] * 3 + [0.001] * 3) * 2, rel=1e-12)
    assert r.config["weight_decay"] == 1e-3 and rates.weight_decay == [1e-3] * 12


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_weight_decay_reaches_the_optimizer(name):
    from forgetless.run import make_optimizer

    w = torch.nn.Parameter(torch.ones(3))
    opt = make_optimizer(name, [w], 0.1, 0.0, weight_decay=0.5)
    assert opt.param_groups[0]["weight_decay"] == 0.5
    w.grad = torch.zeros(3)
    opt.step()
    if name == "sgd":  # theta <- theta - lr * (g + wd * theta)
        torch.testing.assert_close(w.detach(), torch.full((3,), 1 - 0.1 * 0.5))
    else:  # Adam's first step moves every coordinate by lr against the sign of g + wd * theta
        torch.testing.assert_close(w.detach(), torch.full((3,), 0.9), atol=1e-6, rtol=0)


def test_a_resumed_run_has_the_same_rates_and_result(tmp_path, rates, one_thread):
    cfg = fl.RunConfig(**{**BASE, "tasks": 3}, iterations=10, lr_schedule="cosine", weight_decay=5e-4)
    full = fl.run(cfg, strategy=Crash(), out=tmp_path / "full")
    full_rates = list(rates)
    rates.clear()
    with pytest.raises(KeyboardInterrupt):
        fl.run(cfg, strategy=Crash(1), out=tmp_path / "cut")
    assert load_checkpoint(tmp_path / "cut" / CHECKPOINT)["lr_schedule"]["kind"] == "cosine"
    resumed = fl.run(cfg, strategy=Crash(), out=tmp_path / "cut", resume=True)
    assert rates == full_rates and resumed.accuracy_matrix == full.accuracy_matrix


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(lr_schedule="milestones"), "needs --milestones"),
        (dict(lr_schedule="milestones", milestones="3,2"), "increasing positive integers"),
        (dict(lr_schedule="milestones", milestones="0"), "increasing positive integers"),
        (dict(lr_schedule="milestones", milestones="a"), "increasing positive integers"),
        (dict(lr_schedule="milestones", milestones=[3]), "not within a task's 3 epochs"),
        (dict(lr_schedule="milestones", milestones=[20], iterations=20), "not within a task's 20 iterations"),
        (dict(milestones=[1]), "apply to --lr-schedule milestones only"),
        (dict(lr_schedule="cosine", lr_decay=0.5), "applies to --lr-schedule milestones only"),
        (dict(lr_schedule="milestones", milestones=[1], lr_decay=2.0), "must be a number in \\(0, 1\\)"),
        (dict(lr_schedule="step"), "--lr-schedule must be one of"),
        (dict(weight_decay=-1.0), "--weight-decay must be a number >= 0"),
    ],
)
def test_bad_schedule_options_are_one_line_errors(kw, match):
    with pytest.raises(fl.UsageError, match=match) as e:
        fl.RunConfig(**kw).resolved()
    assert "\n" not in str(e.value)


def test_cli_options_reach_the_config_and_defaults_keep_old_run_names():
    from forgetless.cli import _config, build_parser

    a = build_parser().parse_args(
        [
            "run",
            "--lr-schedule",
            "milestones",
            "--milestones",
            "35,45",
            "--lr-decay",
            "0.2",
            "--weight-decay",
            "5e-4",
            "--epochs",
            "50",
            "--augment",
            "none",
            "--normalize",
            "off",
        ]
    )
    c = _config(a).resolved()
    assert (c.lr_schedule, c.milestones, c.lr_decay, c.weight_decay) == ("milestones", [35, 45], 0.2, 5e-4)
    assert (c.augment, c.normalize) == ("none", "off")
    assert "ms35,45" in c.stamp() and "wd0.0005" in c.stamp()
    plain = fl.RunConfig().resolved()
    d = plain.to_dict()
    for key in ("augment", "normalize", "lr_schedule", "milestones", "lr_decay", "weight_decay"):
        del d[key]  # a config saved before these options existed gets the same name
    assert fl.RunConfig.from_dict(d).stamp() == plain.stamp()
