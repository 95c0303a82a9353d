"""The one backend-specific piece of ``forgetless.keras``: gradients with respect to a model's weights.

Keras 3 has no backend-independent ``grad`` (``keras.ops`` is forward-only), so each backend's own
autodiff is called here, always through ``model.stateless_call`` (the weights are explicit inputs,
the model's state is untouched) and always on scores written with ``keras.ops``:

- per-sample gradients (Fisher, MAS): JAX ``jax.vmap(jax.grad)`` under ``jax.jit``; PyTorch
  ``torch.func.vmap(torch.func.grad)``; TensorFlow one ``tf.GradientTape`` per sample;
- the gradient of a batch's mean loss (SI's path integral): ``jax.grad``, ``torch.autograd.grad``,
  ``tf.GradientTape``.

Every function takes numpy inputs and returns numpy arrays shaped like ``model.trainable_variables``.
"""

from __future__ import annotations

import numpy as np

CHUNK = 256  # samples per vectorised chunk


def _backend() -> str:
    import keras

    return keras.backend.backend()


def _score_fn(kind: str):
    """score(logits [C], onehot [C]) for one sample, in keras.ops."""
    from keras import ops

    if kind == "loglik":  # log p(t | x): the Fisher's score (t given as a one-hot row)
        return lambda out, oh: ops.sum(oh * ops.log_softmax(out, axis=-1))
    if kind == "sqnorm":  # ||f(x)||^2: MAS's score (the one-hot row is unused)
        return lambda out, oh: ops.sum(ops.square(out)) + 0.0 * ops.sum(oh)
    raise ValueError(kind)


def per_sample_sum(
    model, x: np.ndarray, onehot: np.ndarray, weights: np.ndarray, score: str, reduce: str, chunk: int = CHUNK
) -> list[np.ndarray]:
    """``sum_r w_r h(d score(f(x_r), onehot_r) / d theta)`` over rows r, h = square or abs (``reduce``),
    each row's gradient taken on its own (per-sample). ``x`` [R, ...], ``onehot`` [R, C], ``weights`` [R]."""
    backend = _backend()
    f = _score_fn(score)
    fn = {"torch": _per_sample_torch, "jax": _per_sample_jax, "tensorflow": _per_sample_tf}.get(backend)
    if fn is None:
        raise NotImplementedError(
            f"forgetless.keras has no gradient code for the {backend!r} backend "
            "(torch, jax and tensorflow are supported)"
        )
    return fn(model, x, onehot.astype("float32"), weights.astype("float32"), f, reduce, chunk)


def _h(reduce):
    return (lambda g: g * g) if reduce == "square" else abs


def _per_sample_torch(model, x, onehot, weights, f, reduce, chunk):
    import torch
    from torch.func import grad, vmap

    tv = tuple(v.value.detach() for v in model.trainable_variables)
    nv = [v.value.detach() for v in model.non_trainable_variables]
    device = tv[0].device if tv else None

    def s(params, xi, oi):
        out, _ = model.stateless_call(list(params), nv, xi[None], training=False)
        return f(out[0], oi)

    g_fn = vmap(grad(s), in_dims=(None, 0, 0))
    acc = [torch.zeros_like(t, dtype=torch.float64) for t in tv]
    h = _h(reduce)
    for i in range(0, len(x), chunk):
        xc = torch.as_tensor(x[i : i + chunk], device=device)
        oc = torch.as_tensor(onehot[i : i + chunk], device=device)
        wc = torch.as_tensor(weights[i : i + chunk], device=device)
        G = g_fn(tv, xc, oc)
        for a, g in zip(acc, G):
            a += torch.tensordot(wc, h(g.detach()), dims=1).double()
    return [a.cpu().numpy() for a in acc]


def _per_sample_jax(model, x, onehot, weights, f, reduce, chunk):
    import jax
    import jax.numpy as jnp

    tv = [v.value for v in model.trainable_variables]
    nv = [v.value for v in model.non_trainable_variables]
    h = _h(reduce)

    def s(params, xi, oi):
        out, _ = model.stateless_call(params, nv, xi[None], training=False)
        return f(out[0], oi)

    @jax.jit
    def chunk_sum(params, xc, oc, wc):
        G = jax.vmap(jax.grad(s), in_axes=(None, 0, 0))(params, xc, oc)
        return [jnp.tensordot(wc, h(g), axes=1) for g in G]

    acc = [np.zeros(tuple(v.shape), dtype=np.float64) for v in model.trainable_variables]
    for i in range(0, len(x), chunk):
        part = chunk_sum(
            tv, jnp.asarray(x[i : i + chunk]), jnp.asarray(onehot[i : i + chunk]), jnp.asarray(weights[i : i + chunk])
        )
        for a, p in zip(acc, part):
            a += np.asarray(p, dtype=np.float64)
    return acc


def _per_sample_tf(model, x, onehot, weights, f, reduce, chunk):  # pragma: no cover - not installed in CI
    import tensorflow as tf

    variables = model.trainable_variables
    h = _h(reduce)
    acc = [np.zeros(tuple(v.shape), dtype=np.float64) for v in variables]
    for r in range(len(x)):
        with tf.GradientTape() as tape:
            out = model(x[r : r + 1], training=False)
            value = f(out[0], tf.constant(onehot[r]))
        for a, g in zip(acc, tape.gradient(value, variables)):
            if g is not None:
                a += float(weights[r]) * np.asarray(h(tf.convert_to_tensor(g)), dtype=np.float64)
    return acc


def loss_grads(model, x: np.ndarray, y: np.ndarray, weights: list[np.ndarray] | None = None) -> list[np.ndarray]:
    """The gradient of the mean sparse categorical cross-entropy (from logits) of the batch (x, y),
    in inference mode, with respect to the trainable weights, taken at ``weights`` (numpy arrays in
    ``model.trainable_variables`` order; None: the model's current weights)."""
    from keras import ops

    def loss_of(out, labels):
        logp = ops.log_softmax(out, axis=-1)
        return -ops.mean(ops.take_along_axis(logp, ops.expand_dims(labels, -1), axis=-1))

    if weights is None:
        weights = [np.asarray(v.numpy()) for v in model.trainable_variables]
    backend = _backend()
    y = y.astype("int32")
    if backend == "torch":
        import torch

        first = model.trainable_variables[0].value
        tv = [torch.tensor(w, device=first.device, requires_grad=True) for w in weights]
        nv = [v.value.detach() for v in model.non_trainable_variables]
        with torch.enable_grad():
            out, _ = model.stateless_call(tv, nv, torch.as_tensor(x, device=first.device), training=False)
            loss = loss_of(out, torch.as_tensor(y, dtype=torch.long, device=first.device))
            grads = torch.autograd.grad(loss, tv, allow_unused=True)
        return [
            np.zeros(tuple(t.shape), "float32") if g is None else g.detach().cpu().numpy() for t, g in zip(tv, grads)
        ]
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        def total(params, state, xb, yb):
            out, _ = model.stateless_call(params, state, xb, training=False)
            return loss_of(out, yb)

        fn = model.__dict__.get("_forgetless_grad_fn")  # compiled once per model
        if fn is None:
            fn = jax.jit(jax.grad(total))
            object.__setattr__(model, "_forgetless_grad_fn", fn)
        grads = fn(
            [jnp.asarray(w) for w in weights],
            [v.value for v in model.non_trainable_variables],
            jnp.asarray(x),
            jnp.asarray(y),
        )
        return [np.asarray(g) for g in grads]
    if backend == "tensorflow":  # pragma: no cover - not installed in CI
        import tensorflow as tf

        tv = [tf.constant(w) for w in weights]
        nv = [v.value for v in model.non_trainable_variables]
        with tf.GradientTape() as tape:
            tape.watch(tv)
            out, _ = model.stateless_call(tv, nv, tf.constant(x), training=False)
            loss = loss_of(out, tf.constant(y))
        grads = tape.gradient(loss, tv)
        return [np.zeros(tuple(t.shape), "float32") if g is None else np.asarray(g) for t, g in zip(tv, grads)]
    raise NotImplementedError(f"forgetless.keras has no gradient code for the {backend!r} backend")
