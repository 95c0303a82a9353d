"""A Keras 3 model as a ``torch.nn.Module`` that every forgetless strategy can use (KERAS_BACKEND=torch).

With the PyTorch backend a Keras model already is an ``nn.Module``, but two things differ from a
PyTorch module, and both would go wrong silently in forgetless:

- Keras layers do not read ``module.training``: called as ``model(x)`` a Keras model always runs in
  inference mode (no dropout, batch norm on its moving statistics, which never update);
- a Keras layer reads its weights from its ``keras.Variable`` objects, not from the module's
  attributes, so ``torch.func.functional_call`` (which forgetless's Fisher, MAS and SCP estimators use
  for per-sample gradients) has no effect: the gradients with respect to the substituted parameters
  would be zero, and EWC would protect nothing.

``KerasModel(model)`` fixes both with Keras's own stateless API: its ``forward`` is
``model.stateless_call(trainable, non_trainable, x, training=self.training)`` with the tensors
registered on the wrapper, which ARE the Keras variables' tensors (nothing is copied: an optimizer
step on the wrapper's parameters is a step of the Keras model, ``model.predict`` sees it at once).
Updated non-trainable state (batch-norm moving statistics, dropout seeds) is written back in
training mode. Trainable variables are registered as parameters, non-trainable ones as parameters
with ``requires_grad=False`` (as Keras itself registers them, so that ``.to(device)`` moves them in
place), named by position and short name (``t0_kernel``, ``t1_bias``, ``s0_moving_mean``), so a
checkpoint of one build loads into another build of the same architecture.

``forgetless.run(config, model=keras_model)`` and ``forgetless.Context(model=keras_model, ...)`` wrap
a Keras model by themselves (``forgetless.models.adapt_model``); ``--model keras:pkg.module:function``
builds one from the user's function.

iCaRL and BiC take the input of the model's last ``nn.Linear`` as the feature vector. When the
Keras model's output is a plain ``Dense`` (no activation), the wrapper runs the rest of the model
as a Keras sub-model (same layers and variables) and that Dense as ``self.head``, a ``DenseHead``:
an ``nn.Linear`` with no weights of its own that computes ``features @ kernel + bias`` from the
wrapper's registered kernel and bias. What cannot work, and says so: MAS's Hebbian form and
forgetless's Linear fast path need every parameter inside an ``nn.Linear`` (the fast path falls
back to ``torch.func``; ``hebbian=true`` refuses, naming ``KerasModel``), iCaRL/BiC on a model whose
output layer is not a plain Dense, a Keras model ending in a softmax (forgetless needs logits), and
any backend other than torch.
"""

from __future__ import annotations

import importlib
import os
import sys

import torch
from torch import nn

from ..errors import UsageError
from ._require import require_torch_backend


def _name(prefix: str, i: int, variable) -> str:
    """``t0_kernel``, ``t1_bias``, ``s0_moving_mean``: the variable's position and short name, so the
    names (a checkpoint's keys) do not depend on Keras's per-process layer numbering (dense_3, ...)."""
    short = "".join(c if c.isalnum() else "_" for c in str(getattr(variable, "name", "")).split("/")[-1])
    return f"{prefix}{i}_{short}" if short else f"{prefix}{i}"


def ends_with_softmax(model) -> bool:
    """True when the model's last layer applies a softmax (so its outputs are probabilities)."""
    import keras

    layers = getattr(model, "layers", [])
    if not layers:
        return False
    last = layers[-1]
    act = getattr(last, "activation", None)
    return (
        act is keras.activations.softmax
        or type(last).__name__ == "Softmax"
        or getattr(act, "__name__", "") == "softmax"
    )


def _dense_split(model):
    """(body, dense) when the model's output is a plain ``keras.layers.Dense`` (no activation, no LoRA,
    not quantised) applied to the output of the rest: ``body`` is the Keras model from the inputs to
    that Dense's input (sharing the layers and variables). None otherwise."""
    import keras

    layers = getattr(model, "layers", None)
    if not layers or type(layers[-1]) is not keras.layers.Dense:
        return None
    dense = layers[-1]
    if (
        dense.activation is not keras.activations.linear
        or getattr(dense, "lora_enabled", False)
        or getattr(dense, "quantization_mode", None)
        or dense.kernel is None
    ):
        return None
    try:
        if model.outputs is None or len(model.outputs) != 1 or model.outputs[0] is not dense.output:
            return None
        body = keras.Model(model.inputs, dense.input)
    except Exception:  # a subclassed or multi-input model: no split
        return None
    return body, dense


class DenseHead(nn.Linear):
    """The Keras model's output ``Dense`` seen as the ``nn.Linear`` that iCaRL and BiC look for (their
    features are the input of the model's last ``nn.Linear``).

    It owns no parameters: ``forward`` computes ``features @ kernel + bias`` (Keras's Dense) with the
    kernel and bias registered on the ``KerasModel`` (so an optimizer step, ``functional_call`` and
    checkpoints see one set of weights), and ``weight`` / ``bias`` are read-only views in
    ``nn.Linear``'s layout (``weight = kernel.T``). forgetless's Linear fast path and Hebbian MAS need
    every parameter inside an ``nn.Linear`` and therefore still take the general path / refuse."""

    def __init__(self, owner: KerasModel, kernel: str, bias: str | None, in_features: int, out_features: int):
        nn.Module.__init__(self)
        self.in_features, self.out_features = in_features, out_features
        self._owner = [owner]  # (a list: not a submodule, no reference cycle in the module tree)
        self._kernel_name, self._bias_name = kernel, bias

    def _tensors(self):
        params = self._owner[0]._parameters
        return params[self._kernel_name], (None if self._bias_name is None else params[self._bias_name])

    @property
    def weight(self):  # nn.Linear's layout, read-only
        return self._tensors()[0].T

    @property
    def bias(self):
        return self._tensors()[1]

    def forward(self, features):
        kernel, bias = self._tensors()
        out = torch.matmul(features, kernel)
        return out if bias is None else out + bias


class KerasModel(nn.Module):
    """``nn.Module`` view of a built Keras 3 model (torch backend); see the module docstring."""

    def __init__(self, model):
        keras = require_torch_backend()
        if not isinstance(model, keras.Model):
            raise UsageError(f"expected a keras.Model, got {type(model).__name__}")
        if not model.built:
            raise UsageError(
                f"the Keras model {model.name!r} is not built: give it an input shape "
                "(keras.Input(shape) first, or call model.build(shape)) before using it in forgetless"
            )
        if ends_with_softmax(model):
            raise UsageError(
                f"the Keras model {model.name!r} ends with a softmax: forgetless's losses need "
                "logits; remove activation='softmax' from its last layer (use from_logits=True in Keras)"
            )
        super().__init__()
        object.__setattr__(self, "keras_model", model)  # not a submodule: its parameters are registered below
        object.__setattr__(self, "_device_scope", keras.device)
        self._trainable_names, self._state_names = [], []
        for i, v in enumerate(model.trainable_variables):
            name = _name("t", i, v)
            self.register_parameter(name, v.value)
            self._trainable_names.append(name)
        for i, v in enumerate(model.non_trainable_variables):
            name = _name("s", i, v)
            t = v.value
            if not isinstance(t, nn.Parameter):  # (Keras registers them as parameters; be safe)
                t = nn.Parameter(t, requires_grad=False)
            self.register_parameter(name, t)
            self._state_names.append(name)
        self._split = None
        split = _dense_split(model)
        if split is not None:
            body, dense = split
            by_id = {id(v): n for v, n in zip(model.trainable_variables, self._trainable_names)}
            by_id.update({id(v): n for v, n in zip(model.non_trainable_variables, self._state_names)})
            try:
                self._split = (
                    body,
                    [by_id[id(v)] for v in body.trainable_variables],
                    [by_id[id(v)] for v in body.non_trainable_variables],
                )
                kernel, bias = by_id[id(dense.kernel)], (None if dense.bias is None else by_id[id(dense.bias)])
            except KeyError:  # a variable of the body that the model does not list: use the whole model
                self._split = None
            else:
                self.head = DenseHead(self, kernel, bias, int(dense.kernel.shape[0]), int(dense.kernel.shape[1]))

    def forward(self, x):
        params = self._parameters  # (torch.func.functional_call substitutes entries here)
        first = params[self._trainable_names[0]] if self._trainable_names else x
        # Keras's torch backend moves every tensor it converts to its own global device (CUDA when
        # present): run it on the device forgetless put this model on instead
        with self._device_scope(str(first.device)):
            return self._forward(params, x)

    def _forward(self, params, x):
        if self._split is not None:  # the body in Keras, then the output Dense as ``self.head``
            body, t_names, s_names = self._split
            state = [params[n] for n in s_names]
            features, new_state = body.stateless_call([params[n] for n in t_names], state, x, training=self.training)
            out = self.head(features)
        else:
            state = [params[n] for n in self._state_names]
            out, new_state = self.keras_model.stateless_call(
                [params[n] for n in self._trainable_names], state, x, training=self.training
            )
        if self.training and state:
            with torch.no_grad():
                for old, new in zip(state, new_state):
                    if new is not old:
                        old.copy_(new)
        return out

    def extra_repr(self) -> str:
        return f"keras_model={self.keras_model.name!r}"

    def __deepcopy__(self, memo):
        """An independent copy (LwF's and DGR's old model): ``keras.models.clone_model`` with the
        weights copied over, wrapped again."""
        import keras

        clone = keras.models.clone_model(self.keras_model)
        if not clone.built:
            clone.build(self.keras_model.input_shape)
        clone.set_weights(self.keras_model.get_weights())
        new = KerasModel(clone)
        new.train(self.training)
        for p_new, p_old in zip(new.parameters(), self.parameters()):
            p_new.requires_grad_(p_old.requires_grad)
            if p_new.device != p_old.device:
                p_new.data = p_new.data.to(p_old.device)
        memo[id(self)] = new
        return new


def is_keras_model(model) -> bool:
    """True for a Keras model object (checked without importing keras)."""
    keras = sys.modules.get("keras")
    if keras is None:
        return False
    Model = getattr(keras, "Model", None)
    return Model is not None and isinstance(model, Model)


def as_module(model) -> nn.Module:
    """``model`` unchanged if it is not a Keras model (or already wrapped), else ``KerasModel(model)``."""
    if isinstance(model, KerasModel) or not is_keras_model(model):
        return model
    return KerasModel(model)


def build_keras_model(target: str, input_shape: tuple[int, ...], n_outputs: int) -> KerasModel:
    """``--model keras:package.module:function``: ``function(input_shape, n_outputs)`` -> keras.Model.

    ``input_shape`` is the benchmark's, channels first (``(1, 28, 28)`` for MNIST; give convolutions
    ``data_format="channels_first"``). The module is imported from the working directory or
    PYTHONPATH. Keras's random state is seeded from torch's (``torch.initial_seed()``, which the run
    has just set to its seed), so the same seed builds the same initial weights.
    """
    module_name, sep, func_name = target.partition(":")
    if not sep or not module_name or not func_name or not func_name.isidentifier():
        raise UsageError(
            f"--model keras:{target}: write keras:package.module:function, e.g. "
            "keras:my_models:build (function(input_shape, n_outputs) returns a keras.Model)"
        )
    keras = require_torch_backend("--model keras:...")
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise UsageError(
            f"--model keras:{target}: cannot import {module_name!r} ({e}); it must be importable "
            "from the working directory or PYTHONPATH"
        ) from None
    finally:
        if added:
            sys.path.remove(cwd)
    fn = getattr(module, func_name, None)
    if not callable(fn):
        raise UsageError(f"--model keras:{target}: {module_name} has no function {func_name!r}")
    keras.utils.set_random_seed(torch.initial_seed() % 2**32)
    model = fn(tuple(input_shape), int(n_outputs))
    if not isinstance(model, keras.Model):
        raise UsageError(
            f"--model keras:{target}: {func_name}(input_shape, n_outputs) must return a keras.Model, "
            f"it returned {type(model).__name__}"
        )
    if not model.built:
        model.build((None, *input_shape))
    return KerasModel(model)
