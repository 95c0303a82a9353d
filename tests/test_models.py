"""The ResNets (parameter counts against the published ones, any input shape, the features and head
that iCaRL/BiC use), the Normalize first layer, and the --model spellings."""

import subprocess
import sys

import pytest
import torch
from torch import nn

import forgetless as fl
from forgetless.models import Normalize, build_model, check_model
from forgetless.models.resnet import ShortcutA
from forgetless.strategies.icarl import extract, last_linear


def n_params(model):
    return sum(p.numel() for p in model.parameters())


# Exact counts (3 input channels), also in the docstring of forgetless/models/resnet.py.
# ResNet-18 (CIFAR, nf=64, 10 classes): the 11,173,962 of GEM/DER/Mammoth's network (11.17M);
# ResNet-20 / ResNet-32 with option-A shortcuts: He et al. 2016, Table 6: 0.27M and 0.46M.
COUNTS = [
    ("resnet18", 10, 11_173_962),
    ("resnet18", 100, 11_220_132),
    ("resnet18:nf=20", 10, 1_094_750),
    ("resnet18:nf=20", 100, 1_109_240),
    ("resnet20", 10, 269_722),
    ("resnet20", 100, 275_572),
    ("resnet32", 10, 464_154),
    ("resnet32", 100, 470_004),
]


@pytest.mark.parametrize("spec,classes,count", COUNTS)
def test_parameter_counts_match_the_published_ones(spec, classes, count):
    assert n_params(build_model(spec, (3, 32, 32), classes)) == count


def test_parameter_counts_round_to_he_et_al_table_6():
    assert round(n_params(build_model("resnet20", (3, 32, 32), 10)) / 1e6, 2) == 0.27
    assert round(n_params(build_model("resnet32", (3, 32, 32), 10)) / 1e6, 2) == 0.46
    # a grey input changes only the first convolution: 2 * 9 * nf weights fewer
    assert n_params(build_model("resnet18", (1, 32, 32), 10)) == 11_173_962 - 2 * 9 * 64


def test_resnet18_structure_is_the_cifar_one():
    m = build_model("resnet18:nf=20", (3, 32, 32), 10)
    first = m.features[0]
    assert isinstance(first, nn.Conv2d) and first.kernel_size == (3, 3) and first.stride == (1, 1)
    assert not any(isinstance(x, nn.MaxPool2d) for x in m.modules())
    blocks = [b for b in m.features if b.__class__.__name__ == "BasicBlock"]
    assert [b.conv1.out_channels for b in blocks] == [20, 20, 40, 40, 80, 80, 160, 160]
    assert [b.conv1.stride[0] for b in blocks] == [1, 1, 2, 1, 2, 1, 2, 1]
    assert m.head.in_features == 160 and last_linear(m) is m.head


def test_resnet32_has_three_stages_of_five_blocks_and_parameter_free_shortcuts():
    m = build_model("resnet32", (3, 32, 32), 10)
    blocks = [b for b in m.features if b.__class__.__name__ == "BasicBlock"]
    assert [b.conv1.out_channels for b in blocks] == [16] * 5 + [32] * 5 + [64] * 5
    downs = [b.shortcut for b in blocks if not isinstance(b.shortcut, nn.Identity)]
    assert len(downs) == 2 and all(isinstance(s, ShortcutA) and n_params(s) == 0 for s in downs)


def test_option_a_shortcut_subsamples_and_pads_with_zero_channels():
    x = torch.randn(2, 16, 8, 8)
    y = ShortcutA(16, 2)(x)
    assert y.shape == (2, 32, 4, 4)
    torch.testing.assert_close(y[:, 8:24], x[:, :, ::2, ::2], rtol=0, atol=0)
    assert y[:, :8].abs().sum() == 0 and y[:, 24:].abs().sum() == 0


@pytest.mark.parametrize("spec", ["resnet18:nf=8", "resnet20", "resnet32:nf=4"])
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 32, 32), (3, 64, 64), (3, 28, 28)])
def test_any_input_shape_works(spec, shape):
    m = build_model(spec, shape, 7)
    check_model(m, shape, 7)
    out = m(torch.rand(3, *shape))
    assert out.shape == (3, 7)
    out.sum().backward()
    assert all(p.grad is not None for p in m.parameters())


def test_check_model_leaves_batch_norm_statistics_alone():
    m = build_model("resnet20:nf=4", (3, 32, 32), 10)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    m.train()
    check_model(m, (3, 32, 32), 10)
    assert m.training
    after = m.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_features_and_head_are_what_icarl_and_bic_use():
    torch.manual_seed(0)
    m = build_model("resnet32:nf=4", (3, 32, 32), 10, normalize="cifar10")
    x = torch.rand(5, 3, 32, 32)
    feats, logits = extract(m, x)
    m.eval()
    with torch.no_grad():
        direct = m.features(m.normalize(x))
        torch.testing.assert_close(feats, direct)
        torch.testing.assert_close(logits, m.head(direct))
    assert feats.shape == (5, m.feature_dim) == (5, 16)


@pytest.mark.parametrize(
    "spec,fix",
    [
        ("resnet18:20", "resnet18:nf=N"),
        ("resnet18:nf=0", "resnet18:nf=N"),
        ("resnet32:width=8", "resnet32:nf=N"),
        ("resnet20:nf=2.5", "resnet20:nf=N"),
        ("resnet34", "resnet18[:nf=N], resnet20 or resnet32"),
    ],
)
def test_bad_spellings_are_one_line_errors_with_the_valid_one(spec, fix):
    with pytest.raises(fl.UsageError) as e:
        build_model(spec, (3, 32, 32), 10)
    assert fix in str(e.value) and "\n" not in str(e.value)


def test_bad_spelling_on_the_command_line():
    p = subprocess.run(
        [sys.executable, "-m", "forgetless", "run", "--benchmark", "split-digits", "--model", "resnet18:20", "--quiet"],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [p.stderr.strip()] and "resnet18:nf=N" in p.stderr


def test_normalize_is_the_first_layer_and_equals_normalising_the_input():
    torch.manual_seed(1)
    plain = build_model("resnet20:nf=4", (3, 32, 32), 10)
    torch.manual_seed(1)
    normed = build_model("resnet20:nf=4", (3, 32, 32), 10, normalize="cifar10")
    assert isinstance(next(iter(normed.children())), Normalize)
    mean = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
    std = torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1)
    x = torch.rand(4, 3, 32, 32)
    plain.eval(), normed.eval()
    with torch.no_grad():
        torch.testing.assert_close(normed(x), plain((x - mean) / std))
    assert {"normalize.mean", "normalize.std"} <= set(normed.state_dict())  # buffers: saved, never trained
    assert n_params(normed) == n_params(plain)


def test_pooled_statistics_of_a_sequence():
    from forgetless.models.normalize import dataset_stats

    (m,), (s,) = dataset_stats(["mnist", "fashion-mnist"])
    assert m == pytest.approx((0.1307 + 0.2860) / 2)
    var = (0.3081**2 + 0.3530**2) / 2 + ((0.1307 - 0.2860) / 2) ** 2
    assert s == pytest.approx(var**0.5)


def test_normalize_auto_keeps_mlp_and_cnn_as_before_and_turns_on_for_resnets(one_thread):
    small = dict(benchmark="split-digits", tasks=2, iterations=3, batch_size=32)
    mlp = fl.run(fl.RunConfig(model="mlp:32", **small))
    assert mlp.benchmark["normalize"] is None and mlp.config["normalize"] == "auto"
    cnn = fl.run(fl.RunConfig(model="cnn", **small))
    assert cnn.benchmark["normalize"] is None
    res = fl.run(fl.RunConfig(model="resnet20:nf=4", **small))
    assert res.benchmark["normalize"] == {"mean": [pytest.approx(0.3054)], "std": [pytest.approx(0.3761)]}
    off = fl.run(fl.RunConfig(model="resnet20:nf=4", normalize="off", **small))
    assert off.benchmark["normalize"] is None
    on = fl.run(fl.RunConfig(model="mlp:32", normalize="on", **small))
    assert on.benchmark["normalize"] is not None and on.accuracy_matrix != mlp.accuracy_matrix
    with pytest.raises(fl.UsageError, match="normalize"):
        fl.RunConfig(normalize="yes", **small).resolved()
