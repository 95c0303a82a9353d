"""Crop-flip augmentation (augment.py): exact shifted copies, its statistics, determinism from the
seed and across resume, replayed samples augmented, never at evaluation."""

import pytest
import torch
from conftest import Crash

import forgetless as fl
from forgetless import Batch, Context
from forgetless.augment import CropFlip, resolve
from forgetless.benchmarks import build
from forgetless.checkpoint import CHECKPOINT, load_checkpoint
from forgetless.models import build_model
from forgetless.run import make_optimizer
from forgetless.strategies import make_strategy


def candidates(x, p=4):
    """Every crop offset and flip of every sample, by direct slicing of the padded images:
    {(dy - p, dx - p, flip): [N, C, H, W]}."""
    n, c, h, w = x.shape
    padded = torch.zeros(n, c, h + 2 * p, w + 2 * p, dtype=x.dtype)
    padded[:, :, p : p + h, p : p + w] = x
    out = {}
    for dy in range(2 * p + 1):
        for dx in range(2 * p + 1):
            crop = padded[:, :, dy : dy + h, dx : dx + w]
            out[(dy - p, dx - p, False)] = crop
            out[(dy - p, dx - p, True)] = crop.flip(-1)
    return out


def recover(x, y, p=4):
    """For every sample, the (offset_y, offset_x, flip) that turns x into y exactly (asserting that
    exactly one does)."""
    found = [[] for _ in range(len(x))]
    for key, cand in candidates(x, p).items():
        for i in (cand == y).flatten(1).all(1).nonzero().flatten().tolist():
            found[i].append(key)
    assert all(len(f) == 1 for f in found), [f for f in found if len(f) != 1][:3]
    return [f[0] for f in found]


def test_every_output_is_an_exact_shifted_copy_of_its_input():
    torch.manual_seed(0)
    x = torch.rand(64, 3, 32, 32) + 0.01  # distinct, nonzero pixels: one candidate matches
    y = CropFlip(seed=0)(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    keys = recover(x, y)
    assert len(set(keys)) > 20  # per sample, not one choice for the batch


def test_offsets_cover_minus_4_to_4_and_half_are_flipped():
    torch.manual_seed(1)
    n = 3000
    x = torch.rand(n, 1, 6, 6) + 0.01
    keys = recover(x, CropFlip(seed=3)(x))
    dys = torch.tensor([k[0] for k in keys])
    dxs = torch.tensor([k[1] for k in keys])
    flips = torch.tensor([k[2] for k in keys], dtype=torch.float)
    for d in (dys, dxs):
        counts = torch.bincount(d + 4, minlength=9)
        assert len(counts) == 9 and counts.min() > n / 9 * 0.75 and counts.max() < n / 9 * 1.25, counts
    assert abs(flips.mean().item() - 0.5) < 0.04
    assert abs(torch.corrcoef(torch.stack([dys.float(), dxs.float()]))[0, 1]) < 0.08  # drawn independently


def test_uint8_batches_stay_uint8_and_match_the_float_result():
    torch.manual_seed(2)
    x = torch.randint(1, 256, (32, 3, 32, 32), dtype=torch.uint8)
    y = CropFlip(seed=5)(x)
    assert y.dtype == torch.uint8
    torch.testing.assert_close(y.float() / 255, CropFlip(seed=5)(x.float() / 255))


def test_same_seed_same_crops_other_seed_other_crops_and_state_round_trips():
    x = torch.rand(16, 3, 32, 32)
    a, b, c = CropFlip(seed=7), CropFlip(seed=7), CropFlip(seed=8)
    assert torch.equal(a(x), b(x)) and not torch.equal(a(x), c(x))
    a(x)  # a is now one batch ahead of b
    saved = a.state_dict()
    d = CropFlip(seed=7)
    d.load_state_dict(saved)
    assert torch.equal(d(x), a(x))
    assert not torch.equal(b(x), d(x))  # b is behind: its next batch differs


def test_auto_is_crop_flip_for_cifar_only():
    assert resolve("auto", ["cifar10"]) == "crop-flip" and resolve("auto", ["cifar100"]) == "crop-flip"
    assert resolve("auto", ["mnist"]) == "none" and resolve("auto", ["digits"]) == "none"
    assert resolve("auto", None) == "none" and resolve("crop-flip", ["mnist"]) == "crop-flip"
    with pytest.raises(fl.UsageError, match="--augment must be one of"):
        fl.RunConfig(augment="flip").resolved()


class Spy:
    """Wraps an augmentation: records every batch it is given and what it returns."""

    def __init__(self, inner):
        self.inner, self.seen = inner, []

    def __call__(self, x):
        y = self.inner(x)
        self.seen.append((x.clone(), y.clone()))
        return y


def test_replayed_samples_are_augmented_and_evaluation_is_not(one_thread):
    """ER's adapted batch (current samples, then the memory's) goes through the augmentation in one
    call, after adapt_batch, and the model trains on what it returns; evaluate never augments."""
    bench = build("split-digits", scenario="class", seed=0)
    torch.manual_seed(0)
    model = build_model("mlp:32", bench.input_shape, bench.n_outputs)
    inputs = []
    model.register_forward_pre_hook(lambda mod, args: inputs.append(args[0].clone()))
    spy, twin = Spy(CropFlip(seed=0, padding=2)), CropFlip(seed=0, padding=2)
    ctx = Context(
        model=model,
        optimizer=make_optimizer("sgd", model.parameters(), 0.1),
        benchmark=bench,
        generator=torch.Generator().manual_seed(0),
        augment=spy,
    )
    er = make_strategy("er", {"memory": 40, "replay_batch_size": 16})
    replay_steps = changed = 0
    for task in bench.tasks[:2]:
        er.before_task(ctx, task)
        for i in range(0, 96, 16):
            x, y = task.train.x[i : i + 16], task.train.y[i : i + 16]
            memory_before = er.buffer_.tensors()[0].clone() if len(er.buffer_) else None
            spy.seen.clear(), inputs.clear()
            fl.train_step(ctx, er, Batch(x, y, task.ids(len(y))))
            ((given, returned),) = spy.seen
            assert torch.equal(inputs[-1], returned)  # the model trains on the augmented batch
            assert torch.equal(returned, twin(given))  # the whole adapted batch in one call
            assert torch.equal(given[:16], x)
            if memory_before is not None:
                replayed = given[16:]
                assert len(replayed) == 16
                # every replayed row is a stored example (before this step's reservoir update)
                assert all((memory_before == r).flatten(1).all(1).any() for r in replayed)
                replay_steps += 1
                changed += int(not torch.equal(returned[16:], replayed))
        er.after_task(ctx, task)
    assert replay_steps >= 10 and changed == replay_steps
    spy.seen.clear()
    fl.evaluate(ctx, er, ctx.seen_upto)
    assert spy.seen == []


def test_a_resumed_run_continues_the_augmentation_stream(tmp_path, one_thread):
    cfg = fl.RunConfig(
        benchmark="permuted-digits", tasks=3, model="mlp:32", iterations=15, batch_size=32, augment="crop-flip"
    )
    full = fl.run(cfg, strategy=Crash(), out=tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):
        fl.run(cfg, strategy=Crash(2), out=tmp_path / "cut")
    saved = load_checkpoint(tmp_path / "cut" / CHECKPOINT)["augment_generator"]
    assert saved["device_type"] == "cpu" and saved["state"] is not None
    resumed = fl.run(cfg, strategy=Crash(), out=tmp_path / "cut", resume=True)
    assert resumed.accuracy_matrix == full.accuracy_matrix
    plain = fl.run(fl.RunConfig(**{**cfg.to_dict(), "augment": "none"}), strategy=Crash())
    assert plain.accuracy_matrix != full.accuracy_matrix  # the augmentation did something
    assert full.benchmark["augment"] == "crop-flip" and plain.benchmark["augment"] == "none"
