"""Models: an MLP (the lecture's 1024-512-256 by default), a small CNN, CIFAR-style ResNets.

Input and output sizes come from the benchmark. Any ``nn.Module`` that maps a batch of images
[N, C, H, W] to logits [N, n_outputs] works: scenario masking is done by the loop, not the model.

``--model`` spellings (``build_model``):

- ``mlp:1024,512,256`` (hidden widths; ``mlp:`` for none), ``cnn`` (``mlp.py``, ``cnn.py``);
- ``resnet18`` / ``resnet18:nf=20`` (GEM's reduced width), ``resnet32``, ``resnet20`` (width option
  ``nf`` too, default 16) (``resnet.py``, with the sources and parameter counts);
- ``keras:package.module:function``: ``function(input_shape, n_outputs)`` returns a Keras 3 model
  (KERAS_BACKEND=torch), wrapped by ``forgetless.keras.torch_module.KerasModel``; keras is imported
  only then (``adapt_model`` wraps a Keras model given as an object).

Normalisation (``normalize.py``): a model can take a ``Normalize`` first layer with a dataset's
channel mean and std. ``RunConfig.normalize`` chooses: ``auto`` (the default) turns it on for the
ResNets (the image protocols normalise) and leaves the MLP and CNN as they have always been (pixels
in [0, 1], so their results do not change); ``on`` / ``off`` force it for any built model.
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch
from torch import nn

from ..errors import UsageError
from .cnn import CNN
from .mlp import MLP
from .normalize import STATS, Normalize, dataset_stats
from .resnet import ResNet, cifar_resnet, resnet18

DEFAULT_MODEL = "mlp:1024,512,256"
RESNETS = {"resnet18": 64, "resnet20": 16, "resnet32": 16}  # default nf
NORMALIZE_CHOICES = ("auto", "on", "off")
_NF = re.compile(r"^nf=(\d+)$")


def model_kind(spec: str) -> str:
    return spec.partition(":")[0]


def build_model(
    spec: str,
    input_shape: tuple[int, ...],
    n_outputs: int,
    *,
    normalize: tuple[tuple[float, ...], tuple[float, ...]] | str | None = None,
) -> nn.Module:
    """``mlp:1024,512,256`` (hidden widths; ``mlp:`` for none), ``cnn``, ``resnet18[:nf=N]``,
    ``resnet20[:nf=N]`` or ``resnet32[:nf=N]``.

    ``normalize``: None (no normalisation layer), a dataset name (its published statistics,
    ``normalize.STATS``) or ``(mean, std)`` per channel: a ``Normalize`` first layer."""
    layer = None
    if normalize is not None:
        mean, std = dataset_stats(normalize) if isinstance(normalize, (str, list)) else normalize
        if len(input_shape) == 3 and len(mean) != input_shape[0]:
            raise UsageError(
                f"normalisation statistics for {len(mean)} channel(s) do not fit the input "
                f"{tuple(input_shape)}; use --normalize off"
            )
        layer = Normalize(tuple(mean), tuple(std))
    kind, _, rest = spec.partition(":")
    if kind == "keras":
        if layer is not None:
            raise UsageError(
                "--normalize on applies to forgetless's own models; normalise inside your Keras "
                "model (keras.layers.Normalization) and use --normalize off"
            )
        from ..keras.torch_module import build_keras_model  # (imports keras: only when asked for)

        return build_keras_model(rest, tuple(input_shape), n_outputs)
    if kind == "mlp":
        try:
            hidden = [int(w) for w in rest.split(",") if w.strip()] if rest else [1024, 512, 256]
        except ValueError:
            raise UsageError(f"--model {spec!r}: hidden widths must be integers, e.g. mlp:1024,512,256") from None
        if any(w < 1 for w in hidden):
            raise UsageError(f"--model {spec!r}: hidden widths must be positive")
        return MLP(math.prod(input_shape), hidden, n_outputs, normalize=layer)
    if kind == "cnn":
        if rest:
            raise UsageError(f"--model {spec!r}: cnn takes no options; use --model cnn")
        if len(input_shape) != 3:
            raise UsageError(f"cnn needs images [C, H, W], the benchmark gives {input_shape}")
        return CNN(tuple(input_shape), n_outputs, normalize=layer)
    if kind in RESNETS:
        nf = RESNETS[kind]
        if rest:
            m = _NF.match(rest.strip())
            if not m or int(m.group(1)) < 1:
                raise UsageError(
                    f"--model {spec!r}: write {kind} or {kind}:nf=N with N a positive integer "
                    f"(the first stage's width, default {nf}; e.g. resnet18:nf=20)"
                )
            nf = int(m.group(1))
        if len(input_shape) != 3:
            raise UsageError(f"{kind} needs images [C, H, W], the benchmark gives {input_shape}")
        if kind == "resnet18":
            return resnet18(input_shape[0], n_outputs, nf=nf, normalize=layer)
        return cifar_resnet(int(kind[len("resnet") :]), input_shape[0], n_outputs, nf=nf, normalize=layer)
    raise UsageError(
        f"unknown model {spec!r}; use mlp:W1,W2,... (e.g. {DEFAULT_MODEL}), cnn, "
        f"resnet18[:nf=N], resnet20 or resnet32 (a Keras model: keras:package.module:function)"
    )


def adapt_model(model: Any) -> nn.Module:
    """A Keras 3 model (already imported by the caller, so keras is never imported here) as the
    ``nn.Module`` forgetless trains (``forgetless.keras.torch_module.KerasModel``); any other model
    unchanged."""
    import sys

    if "keras" not in sys.modules:
        return model
    from ..keras.torch_module import as_module

    return as_module(model)


def normalize_for(choice: str, spec: str, datasets: list[str] | None):
    """What ``build_model``'s ``normalize`` gets for ``RunConfig.normalize`` = ``choice``: the
    benchmark's dataset names (``datasets``; None when unknown, e.g. a benchmark object of the
    user's) or None for no normalisation. ``auto``: on for the ResNets when the statistics are
    known, off for the MLP and the CNN; ``on``: always (an error if the statistics are unknown)."""
    if choice not in NORMALIZE_CHOICES:
        raise UsageError(f"--normalize must be one of {', '.join(NORMALIZE_CHOICES)}, got {choice!r}")
    known = datasets is not None and all(d in STATS for d in datasets)
    if choice == "off" or (choice == "auto" and (model_kind(spec) not in RESNETS or not known)):
        return None
    if not known:
        raise UsageError(
            "--normalize on: the benchmark's datasets have no known mean/std (known: "
            f"{', '.join(STATS)}); use --normalize off"
        )
    return list(datasets)


def check_model(model: nn.Module, input_shape: tuple[int, ...], n_outputs: int) -> None:
    """One forward pass on a zero batch (in eval mode, so batch-norm statistics are untouched): the
    input must fit and the output must be [2, n_outputs]."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            first = next(iter(model.parameters()), None)
            out = model(torch.zeros(2, *input_shape, device=first.device if first is not None else None))
    except Exception as e:  # any failure means the model does not fit
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UsageError(f"the model does not accept the benchmark's input {tuple(input_shape)}: {first}") from None
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or out.shape != (2, n_outputs):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UsageError(
            f"the model must return logits of shape [N, {n_outputs}] for this benchmark, "
            f"it returns {got} for a batch of 2"
        )


__all__ = [
    "CNN",
    "DEFAULT_MODEL",
    "MLP",
    "NORMALIZE_CHOICES",
    "Normalize",
    "ResNet",
    "adapt_model",
    "build_model",
    "check_model",
    "cifar_resnet",
    "dataset_stats",
    "normalize_for",
    "resnet18",
]
