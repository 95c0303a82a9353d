"""forgetless for Keras users: the methods inside ``model.fit``, on the TensorFlow, JAX and PyTorch backends.

The tutorial's workflow stays as it is; one object per method, bound to the compiled model::

    import keras
    import forgetless.keras as fk

    model.compile(optimizer="adam", metrics=["accuracy"],
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    ewc = fk.EWC(model, lam=100, normalize="none")
    model.fit(xa, ya, epochs=6)        # task A: plain training (nothing to protect yet)
    ewc.consolidate(xa, ya)            # Fisher on A, anchor theta*_A
    model.fit(xb, yb, epochs=6)        # task B: loss + lam * sum F (theta - theta*_A)^2

Methods: ``L2``, ``EWC`` (empirical, sampled or exact (true) Fisher from per-sample gradients;
``online=True`` for online EWC), ``SI``, ``MAS``, ``LwF`` and experience replay (``Replay``); several
can be bound to one model (their terms add up, like forgetless's ``Compose``). The accuracy matrix
and the metrics come from ``forgetless.metrics`` (``AccuracyMatrix``).

How it plugs into Keras (the choice, and why). Keras offers three places: weight regularizers
(``kernel_regularizer``; they see one weight, not the data), callbacks (they see neither the loss
nor the gradients) and a custom ``train_step`` (one per backend: ``tf.GradientTape``, ``jax.grad``,
``torch`` autograd). Keras's own documentation names ``Model.compute_loss(x, y, y_pred,
sample_weight, training)`` as the method to override for custom loss logic: every backend's
``train_step`` calls it, with the weights as traced values under JAX. So a method object binds to
the model by overriding ``compute_loss`` on that model instance (the model keeps its class, its
compile settings and its optimizer state): the compiled loss plus every bound method's term, in
training only (``model.evaluate`` reports the plain loss). All terms are written with
``keras.ops``; the only backend-specific code is the gradient of the estimators (``_grads.py``:
``jax.vmap(jax.grad)``, ``torch.func``, ``tf.GradientTape``). After every ``consolidate`` the model's
compiled train function is dropped so that the next ``fit`` traces the new term.
``SI`` also needs each step's gradient, which ``fit`` hides from callbacks: it is a callback that
recomputes the task-loss gradient at the step's starting weights on the step's own batch, so it
trains on ``fk.batches(...)`` (a ``keras.utils.PyDataset`` that logs which batch every step read).
``Replay`` is data-side: ``replay.batches(x, y)`` mixes a memory batch into every batch.

Conventions: the same as forgetless's PyTorch strategies (``forgetless.strategies.penalty``), so
the values match: ``lam * sum_i Omega_i (theta_i - theta*_i)^2`` with no 1/2, i.e. for EWC
``lam = lambda_paper / 2`` (Kirkpatrick et al. 2017 write ``lambda/2 sum F (theta - theta*)^2``); the
same defaults (EWC lam 100 on the min-max normalised Fisher, ``normalize="none"`` for the paper's
raw Fisher; online EWC lam 100; SI lam 10, xi 0.1; MAS lam 0.01; L2 lam 0.01; LwF lam 0.1, T 2).
The model must output logits (no final softmax) and the labels are integer classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import UsageError
from ..strategies.base import Param
from ._require import require_keras

keras = require_keras()
from keras import ops  # noqa: E402

from . import _grads  # noqa: E402
from .torch_module import KerasModel, as_module  # noqa: E402 (Keras models inside forgetless: torch backend)

__all__ = [
    "EWC",
    "L2",
    "MAS",
    "SI",
    "AccuracyMatrix",
    "Batches",
    "KerasModel",
    "LwF",
    "Replay",
    "accuracy",
    "as_module",
    "batches",
    "fisher_diagonal",
    "mas_importance",
    "methods_of",
]

FISHER_LABELS = ("empirical", "sample", "exact")


# ---- binding to a model ------------------------------------------------------------------------
def methods_of(model) -> list:
    """The forgetless methods bound to ``model`` (in binding order)."""
    return model.__dict__.get("_forgetless_methods", [])


def _bind(model, method) -> None:
    if not isinstance(model, keras.Model):
        raise UsageError(f"forgetless.keras methods bind to a keras.Model, got {type(model).__name__}")
    if not model.built:
        raise UsageError(f"the Keras model {model.name!r} is not built: give it a keras.Input(shape) first")
    from .torch_module import ends_with_softmax

    if ends_with_softmax(model):
        raise UsageError(
            f"the Keras model {model.name!r} ends with a softmax: forgetless.keras needs logits; "
            "remove activation='softmax' and compile with from_logits=True"
        )
    methods = model.__dict__.get("_forgetless_methods")
    if methods is None:
        methods = []
        original = model.compute_loss

        def compute_loss(x=None, y=None, y_pred=None, sample_weight=None, training=True):
            loss = original(x, y, y_pred, sample_weight, training=training)
            if training:
                for m in methods:
                    term = m.penalty(x, y_pred)
                    if term is not None:
                        loss = loss + ops.cast(term, loss.dtype)
            return loss

        object.__setattr__(model, "_forgetless_methods", methods)
        object.__setattr__(model, "compute_loss", compute_loss)  # this instance only
    if any(type(m) is type(method) for m in methods):
        raise UsageError(f"a {type(method).__name__} is already bound to {model.name!r}; bind each method once")
    methods.append(method)
    _retrace(model)


def _retrace(model) -> None:
    """Drop the compiled train/test functions: the next fit traces the current terms."""
    model.train_function = None
    model.test_function = None


def _weights(model) -> list[np.ndarray]:
    return [np.array(v.numpy(), dtype=np.float32) for v in model.trainable_variables]


def _check(params: dict[str, Param], given: dict[str, Any], who: str) -> dict[str, Any]:
    unknown = set(given) - set(params)
    if unknown:
        raise UsageError(f"{who} has no parameter {sorted(unknown)[0]!r}; its parameters: {', '.join(params)}")
    return {k: p.validate(given.get(k, p.default), k, who) for k, p in params.items()}


# ---- the quadratic penalty -------------------------------------------------------------------
class Quadratic:
    """``lam * (sum_i A_i (theta_i - m_i)^2 + c)``: forgetless's ``QuadraticPenalty`` in numpy + keras.ops.

    ``set(omega, anchor)`` replaces it by one term; ``add(omega, anchor)`` adds a term with its own
    anchor, merged exactly (A = sum O_k, m = sum O_k a_k / A, c = sum O_k (a_k - m)^2)."""

    def __init__(self):
        self.omega: list[np.ndarray] | None = None
        self.center: list[np.ndarray] | None = None
        self.const = 0.0
        self._tensors = None

    @property
    def active(self) -> bool:
        return self.omega is not None

    def set(self, omega, anchor) -> None:
        omega = [np.asarray(o, dtype=np.float32) for o in omega]
        if any((o < 0).any() or not np.isfinite(o).all() for o in omega):
            raise ValueError("the importance (Omega) must be finite and >= 0")
        self.omega = omega
        self.center = [np.array(a, dtype=np.float32) for a in anchor]
        self.const = 0.0
        self._make_tensors()

    def add(self, omega, anchor) -> None:
        if self.omega is None:
            self.set(omega, anchor)
            return
        new_o, new_c, const = [], [], self.const
        for A, m, Om, a in zip(self.omega, self.center, omega, anchor):
            Om, a = np.asarray(Om, np.float32), np.asarray(a, np.float32)
            A2 = A + Om
            m2 = np.where(A2 > 0, (A * m + Om * a) / np.maximum(A2, np.finfo(np.float32).tiny), a).astype(np.float32)
            const += float(
                (A.astype(np.float64) * (m - m2).astype(np.float64) ** 2).sum()
                + (Om.astype(np.float64) * (a - m2).astype(np.float64) ** 2).sum()
            )
            new_o.append(A2.astype(np.float32))
            new_c.append(m2)
        self.omega, self.center, self.const = new_o, new_c, const
        self._make_tensors()

    def _make_tensors(self) -> None:
        # made here, outside any trace (a tensor made inside jax.jit's trace would leak from it)
        self._tensors = (
            [ops.convert_to_tensor(o) for o in self.omega],
            [ops.convert_to_tensor(c) for c in self.center],
        )

    def term(self, variables, lam: float):
        """The penalty as a keras tensor of the variables' current (possibly traced) values."""
        if self.omega is None or lam == 0:
            return None
        A, m = self._tensors
        total = ops.sum(ops.stack([ops.sum(a * ops.square(v.value - c)) for v, a, c in zip(variables, A, m)]))
        return lam * (total + self.const)

    def value(self, weights: Sequence[np.ndarray], lam: float) -> float:
        """The same value in float64 numpy, for given weights."""
        if self.omega is None:
            return 0.0
        s = sum(
            float((A.astype(np.float64) * (np.asarray(w, np.float64) - m) ** 2).sum())
            for A, m, w in zip(self.omega, self.center, weights)
        )
        return lam * (s + self.const)


def minmax(arrays: list[np.ndarray], eps: float = 1e-32) -> list[np.ndarray]:
    """``(v - min) / (max - min + eps)`` over every array at once (forgetless's ``minmax``, RWalk's)."""
    lo = min(float(a.min()) for a in arrays)
    hi = max(float(a.max()) for a in arrays)
    return [((a - lo) / (hi - lo + eps)).astype(np.float32) for a in arrays]


# ---- estimators ------------------------------------------------------------------------------
def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def _subsample(x, y, samples, rng):
    if samples is None or samples >= len(x):
        return x, y
    idx = rng.permutation(len(x))[:samples]
    return x[idx], (None if y is None else y[idx])


def _n_outputs(model, x) -> int:
    try:
        return int(model.output_shape[-1])
    except (AttributeError, ValueError, TypeError):
        return int(np.asarray(model.predict(x[:1], verbose=0)).shape[-1])


def fisher_diagonal(
    model, x, y=None, *, labels: str = "empirical", samples: int | None = None, seed: int = 0, chunk: int = _grads.CHUNK
) -> list[np.ndarray]:
    """Diagonal Fisher ``F = mean_n E_c[(d log p(c | x_n) / d theta)^2]`` from PER-SAMPLE gradients.

    Kirkpatrick et al. 2017 (PNAS); the same switch as forgetless's ``fisher_diagonal``: ``labels``
    ``"empirical"`` (c = the true label y_n), ``"sample"`` (one c ~ p(. | x_n) per sample, numpy's
    generator seeded with ``seed``: a Monte-Carlo estimate of the true Fisher) or ``"exact"`` (the true
    Fisher: ``sum_c p(c | x_n) g_c^2``). ``samples``: the first N of a seeded permutation (None: all).
    Returns arrays shaped like ``model.trainable_variables``; no constant (the 1/2 is in lam)."""
    if labels not in FISHER_LABELS:
        raise UsageError(f"unknown Fisher labels {labels!r}; choose one of: {', '.join(FISHER_LABELS)}")
    if labels == "empirical" and y is None:
        raise UsageError("the empirical Fisher needs the labels y")
    rng = np.random.default_rng(seed)
    x = np.asarray(x, dtype=np.float32)
    y = None if y is None else np.asarray(y).astype(np.int64).reshape(-1)
    x, y = _subsample(x, y, samples, rng)
    n = len(x)
    n_out = _n_outputs(model, x)
    if labels == "empirical":
        rows_x, targets, weights = x, y, np.ones(n, np.float32)
    else:
        probs = _softmax(np.asarray(model.predict(x, batch_size=1024, verbose=0), dtype=np.float64))
        if labels == "sample":
            u = rng.random(n)
            targets = np.minimum((probs.cumsum(1) < u[:, None]).sum(1), n_out - 1)
            rows_x, weights = x, np.ones(n, np.float32)
        else:
            rows_x = np.repeat(x, n_out, axis=0)
            targets = np.tile(np.arange(n_out), n)
            weights = probs.reshape(-1).astype(np.float32)
    onehot = np.eye(n_out, dtype=np.float32)[targets]
    acc = _grads.per_sample_sum(model, rows_x, onehot, weights, "loglik", "square", chunk)
    return [(a / n).astype(np.float32) for a in acc]


def mas_importance(model, x, *, chunk: int = _grads.CHUNK) -> list[np.ndarray]:
    """MAS (Aljundi et al. 2018, ECCV, eq. 2-4): ``Omega = mean_n |d ||f(x_n)||_2^2 / d theta|``, per
    sample, f the logits (forgetless's ``mas_importance``). Needs no labels."""
    x = np.asarray(x, dtype=np.float32)
    n_out = _n_outputs(model, x)
    acc = _grads.per_sample_sum(
        model, x, np.zeros((len(x), n_out), np.float32), np.ones(len(x), np.float32), "sqnorm", "abs", chunk
    )
    return [(a / len(x)).astype(np.float32) for a in acc]


# ---- methods ---------------------------------------------------------------------------------
class Method:
    """A method bound to one compiled Keras model: ``penalty`` enters its loss, ``consolidate`` ends a task."""

    hparams: dict[str, Param] = {}

    def __init__(self, model, **kwargs):
        for k, v in _check(self.hparams, kwargs, type(self).__name__).items():
            setattr(self, k, v)
        self.model = model
        self.tasks_seen = 0
        _bind(model, self)

    def penalty(self, x, y_pred):
        return None

    def consolidate(self, x=None, y=None) -> None:
        raise NotImplementedError

    def _done(self) -> None:
        self.tasks_seen += 1
        _retrace(self.model)


class _Regularizer(Method):
    def __init__(self, model, **kwargs):
        self.quad = Quadratic()
        super().__init__(model, **kwargs)

    def penalty(self, x, y_pred):
        return self.quad.term(self.model.trainable_variables, self.lam)

    def value(self) -> float:
        """The current penalty ``lam * sum Omega (theta - theta*)^2`` at the model's weights."""
        return self.quad.value(_weights(self.model), self.lam)

    @property
    def importance(self) -> list[np.ndarray] | None:
        return self.quad.omega


class L2(_Regularizer):
    """L2 to the previous task's weights: ``lam * ||theta - theta*||^2`` (Omega = 1; Kirkpatrick et
    al. 2017, fig. 2's baseline); forgetless's ``l2``."""

    hparams = {"lam": Param(0.01, ">=0", "strength of the quadratic penalty")}

    def consolidate(self, x=None, y=None) -> None:
        w = _weights(self.model)
        self.quad.set([np.ones_like(a) for a in w], w)
        self._done()


class EWC(_Regularizer):
    """Elastic Weight Consolidation (Kirkpatrick et al. 2017, PNAS): Omega = diagonal Fisher.

    ``lam * sum F (theta - theta*)^2`` (the paper's ``lambda/2``: lam = lambda/2), one term per task
    merged exactly (forgetless's ``ewc``); ``online=True``: one running Fisher decayed by ``gamma`` and
    one anchor, ``Omega_k = gamma (Omega_{k-1} + F_k)`` (Schwarz et al. 2018; forgetless's
    ``online-ewc``, default lam 100). ``fisher``: empirical / sample / exact (``fisher_diagonal``);
    ``normalize="minmax"`` (the default, as in forgetless) scales each task's Fisher to [0, 1],
    ``"none"`` is the paper's raw Fisher. ``fisher_`` holds the last task's raw Fisher."""

    hparams = {
        "lam": Param(None, ">=0", "strength (default 100; online: 100)", optional=True),
        "fisher": Param("empirical", FISHER_LABELS, "labels of the Fisher"),
        "samples": Param(1000, ">=1", "samples the Fisher is estimated on", optional=True),
        "normalize": Param("minmax", ("none", "minmax"), "scale of each task's Fisher"),
        "online": Param(False, help="online EWC: one running Fisher and one anchor"),
        "gamma": Param(1.0, "(0, 1]", "decay of the running Fisher (online)"),
        "seed": Param(0, ">=0", "seed of the subsample and of sampled labels"),
    }

    def __init__(self, model, **kwargs):
        super().__init__(model, **kwargs)
        if self.lam is None:
            self.lam = 100.0
        if not self.online and "gamma" in kwargs:
            raise UsageError("EWC's gamma needs online=True")
        self.fisher_: list[np.ndarray] | None = None

    def consolidate(self, x=None, y=None) -> None:
        if x is None:
            raise UsageError("EWC.consolidate(x, y) needs the task's training data")
        F = fisher_diagonal(
            self.model, x, y, labels=self.fisher, samples=self.samples, seed=self.seed + 7919 * self.tasks_seen
        )
        self.fisher_ = F
        if self.normalize == "minmax":
            F = minmax(F)
        w = _weights(self.model)
        if self.online:
            running = F if not self.quad.active else [o + f for o, f in zip(self.quad.omega, F)]
            self.quad.set([self.gamma * r for r in running], w)
        else:
            self.quad.add(F, w)
        self._done()


class MAS(_Regularizer):
    """Memory Aware Synapses (Aljundi et al. 2018, ECCV): ``Omega += mean_n |d ||f(x_n)||^2 / d theta|``
    at the end of each task, anchor at the latest weights, ``lam * sum Omega (theta - theta*)^2``
    (lam = the paper's lambda); forgetless's ``mas``."""

    hparams = {"lam": Param(0.01, ">=0", "strength of the quadratic penalty")}

    def consolidate(self, x=None, y=None) -> None:
        if x is None:
            raise UsageError("MAS.consolidate(x) needs the task's training inputs")
        new = mas_importance(self.model, x)
        total = new if not self.quad.active else [o + n for o, n in zip(self.quad.omega, new)]
        self.quad.set(total, _weights(self.model))
        self._done()


class SI(_Regularizer, keras.callbacks.Callback):
    """Synaptic Intelligence (Zenke, Poole & Ganguli 2017, ICML), as a Keras callback.

    ``omega += -g * delta`` after every step (g: the task loss's gradient at the step's start, on the
    step's own batch; delta: the step's change of the weights), then at the task's end
    ``Omega <- max(0, Omega + omega / (Delta^2 + xi))`` with Delta the task's total change, anchor at
    the latest weights, ``lam * sum Omega (theta - theta*)^2`` (lam = c); forgetless's ``si``.

    ``fit`` does not show gradients to callbacks, so after every step SI recomputes g at the step's
    starting weights (``stateless_call``; inference mode, mean sparse cross-entropy from logits: one
    more forward and backward per step) on the batch the step trained on, which the ``fk.batches``
    dataset it watches has logged (with plain SGD, omega then equals sum delta^2 / lr exactly: the
    tests check it)::

        data = fk.batches(xa, ya, batch_size=32)
        model.fit(data, epochs=6, callbacks=[si.watch(data)])
        si.consolidate()
    """

    hparams = {
        "lam": Param(10.0, ">=0", "strength of the quadratic penalty (c)"),
        "xi": Param(0.1, ">0", "damping of the path-integral importance"),
    }

    def __init__(self, model, **kwargs):
        keras.callbacks.Callback.__init__(self)
        _Regularizer.__init__(self, model, **kwargs)
        self.data: Batches | None = None
        self.omega_: list[np.ndarray] | None = None
        self.start_: list[np.ndarray] | None = None
        self._before = None

    def watch(self, data: Batches) -> SI:
        if not isinstance(data, Batches):
            raise UsageError("SI.watch needs the dataset from forgetless.keras.batches(x, y, batch_size)")
        self.data = data
        return self

    # callback hooks
    def on_train_begin(self, logs=None):
        if self.data is None:
            raise UsageError(
                "SI needs to see each step's batch: fit on data = fk.batches(x, y) with callbacks=[si.watch(data)]"
            )
        if int(getattr(self.model, "steps_per_execution", 1) or 1) != 1:
            raise UsageError("SI needs steps_per_execution=1 (it runs after every step)")
        if self.start_ is None:
            self.start_ = _weights(self.model)
            self.omega_ = [np.zeros_like(w) for w in self.start_]
        self.data.served.clear()  # (a backend may have read a few batches to learn their shapes)

    def on_train_batch_begin(self, batch, logs=None):
        self._before = _weights(self.model)

    def on_train_batch_end(self, batch, logs=None):
        sync = getattr(self.model, "jax_state_sync", None)
        if sync is not None:  # JAX keeps the weights outside the variables during fit: put them back
            sync()
        after = _weights(self.model)
        xb, yb = self.data.served_batch(batch)  # the batch this step trained on
        grad = _grads.loss_grads(self.model, xb, yb, self._before)  # at the step's start
        for o, g, b, a in zip(self.omega_, grad, self._before, after):
            o -= g * (a - b)

    def consolidate(self, x=None, y=None) -> None:
        w = _weights(self.model)
        if self.start_ is None:  # the callback saw no fit: its importance would silently be zero
            raise UsageError(
                "SI saw no training: fit on data = fk.batches(x, y) with callbacks=[si.watch(data)] "
                "before si.consolidate()"
            )
        new = [o / ((a - s) ** 2 + self.xi) for o, a, s in zip(self.omega_, w, self.start_)]
        total = new if not self.quad.active else [q + n for q, n in zip(self.quad.omega, new)]
        self.quad.set([np.maximum(t, 0) for t in total], w)
        self.start_ = self.omega_ = None
        self._done()

    # Keras sets the callback's model through this property; keep ours (the same model)
    @property
    def model(self):
        return self._fl_model

    @model.setter
    def model(self, value):
        if value is not None:
            self._fl_model = value

    def set_model(self, model):
        if model is not self._fl_model:
            raise UsageError("this SI is bound to another model")


def _distill(student, teacher, T: float):
    """Hinton et al. 2015: ``T^2 * mean_n KL(softmax(teacher/T) || softmax(student/T))`` (forgetless's
    ``distillation_loss``)."""
    log_p = ops.log_softmax(student / T, axis=-1)
    log_q = ops.log_softmax(teacher / T, axis=-1)
    q = ops.exp(log_q)
    return T * T * ops.mean(ops.sum(q * (log_q - log_p), axis=-1))


class LwF(Method):
    """Learning without Forgetting (Li & Hoiem 2017, TPAMI): ``loss + lam * KD_T(f(x), f_old(x))``.

    ``consolidate()`` freezes a copy of the model (``keras.models.clone_model`` + its weights); while
    the next tasks train, the current inputs x also go through the copy and the outputs are distilled
    towards its (``_distill``, temperature T with its T^2 factor; every output: one shared head, as in
    the tutorial's domain-incremental setting); forgetless's ``lwf``, balance=false."""

    hparams = {
        "lam": Param(0.1, ">=0", "weight of the distillation term (lambda_o)"),
        "temperature": Param(2.0, ">0", "distillation temperature T"),
    }

    def __init__(self, model, **kwargs):
        super().__init__(model, **kwargs)
        self.old = None

    def consolidate(self, x=None, y=None) -> None:
        old = keras.models.clone_model(self.model)
        if not old.built:
            old.build(self.model.input_shape)
        old.set_weights(self.model.get_weights())
        old.trainable = False
        self.old = old
        self._done()

    def penalty(self, x, y_pred):
        if self.old is None or self.lam == 0:
            return None
        teacher = ops.stop_gradient(self.old(x, training=False))
        return self.lam * _distill(y_pred, teacher, self.temperature)


class Replay:
    """Experience replay (Chaudhry et al. 2019): a memory of at most ``memory`` examples, and a
    memory batch of the same size concatenated to every training batch (forgetless's ``er``).

    ``consolidate(x, y)`` offers the task's examples, in a random order, to a reservoir (algorithm R:
    every example seen so far is kept with the same probability); ``batches(x, y, batch_size)`` is
    the training data for ``fit``. Not bound to a model: it only changes the data."""

    hparams = {"memory": Param(500, ">=1", "examples kept"), "seed": Param(0, ">=0", "seed of the memory")}

    def __init__(self, **kwargs):
        for k, v in _check(self.hparams, kwargs, "Replay").items():
            setattr(self, k, v)
        self.x: np.ndarray | None = None
        self.y: np.ndarray | None = None
        self.seen = 0
        self.rng = np.random.default_rng(self.seed)

    def __len__(self) -> int:
        return 0 if self.y is None else len(self.y)

    def consolidate(self, x, y) -> None:
        x, y = np.asarray(x, dtype=np.float32), np.asarray(y)
        if self.x is None:
            self.x = np.zeros((self.memory, *x.shape[1:]), np.float32)
            self.y = np.zeros((self.memory,), y.dtype)
            self._n = 0
        for i in self.rng.permutation(len(x)):
            if self._n < self.memory:
                self.x[self._n], self.y[self._n] = x[i], y[i]
                self._n += 1
            else:
                j = int(self.rng.integers(0, self.seen + 1))
                if j < self.memory:
                    self.x[j], self.y[j] = x[i], y[i]
            self.seen += 1

    def sample(self, n: int, rng: np.random.Generator):
        idx = rng.integers(0, self._n, size=n)
        return self.x[idx], self.y[idx]

    def batches(self, x, y, batch_size: int = 32, seed: int = 0) -> Batches:
        return Batches(x, y, batch_size=batch_size, seed=seed, replay=self)


class Batches(keras.utils.PyDataset):
    """Training data for ``fit``: shuffled batches (one seeded permutation per epoch), each with a
    memory batch of the same size appended when a ``Replay`` holds examples. ``self[i]`` is a pure
    function of (seed, epoch, i), and the indices read in an epoch are logged in order (``served``:
    ``fit`` may shuffle the batch order), which is how ``SI`` finds the batch of every step."""

    def __init__(self, x, y, batch_size: int = 32, seed: int = 0, replay: Replay | None = None):
        super().__init__(workers=1, use_multiprocessing=False)
        if batch_size < 1:
            raise UsageError(f"batch_size must be >= 1, got {batch_size}")
        self.x, self.y = np.asarray(x, dtype=np.float32), np.asarray(y)
        if len(self.x) != len(self.y):
            raise UsageError(f"{len(self.x)} inputs but {len(self.y)} labels")
        self.batch_size, self.seed, self.replay = int(batch_size), int(seed), replay
        self.epoch = 0
        self._perm_epoch, self._perm = -1, None
        self.served: list[int] = []  # the batch indices read this epoch, in the order fit read them

    def __len__(self) -> int:
        return -(-len(self.y) // self.batch_size)

    def _order(self) -> np.ndarray:
        if self._perm_epoch != self.epoch:
            self._perm = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.y))
            self._perm_epoch = self.epoch
        return self._perm

    def __getitem__(self, i):
        self.served.append(int(i))
        return self._batch(int(i))

    def served_batch(self, step: int):
        """The batch that the epoch's ``step``-th read returned (``fit`` may shuffle the batch order)."""
        if step >= len(self.served):
            raise UsageError(
                "SI could not tell which batch a step trained on: fit on the fk.batches "
                "dataset that SI watches, with one step per batch (steps_per_execution=1)"
            )
        return self._batch(self.served[step])

    def _batch(self, i: int):
        idx = self._order()[i * self.batch_size : (i + 1) * self.batch_size]
        xb, yb = self.x[idx], self.y[idx]
        if self.replay is not None and len(self.replay):
            mx, my = self.replay.sample(len(idx), np.random.default_rng([self.seed, self.epoch, i, 1]))
            xb, yb = np.concatenate([xb, mx]), np.concatenate([yb, my.astype(yb.dtype)])
        return xb, yb

    def on_epoch_end(self):
        self.epoch += 1
        self.served.clear()


def batches(x, y, batch_size: int = 32, seed: int = 0, replay: Replay | None = None) -> Batches:
    """``Batches(x, y, batch_size, seed, replay)``: the data ``SI`` (and ``Replay``) train on."""
    return Batches(x, y, batch_size=batch_size, seed=seed, replay=replay)


# ---- evaluation ------------------------------------------------------------------------------
def accuracy(model, x, y, batch_size: int = 1024) -> float:
    """Top-1 accuracy of ``model`` on (x, y)."""
    scores = np.asarray(model.predict(np.asarray(x, dtype=np.float32), batch_size=batch_size, verbose=0))
    return float((scores.argmax(1) == np.asarray(y).reshape(-1)).mean())


class AccuracyMatrix:
    """The accuracy matrix of a Keras run: ``record(model)`` after each task appends the accuracy on
    every task's test set (row i: after task i, column j: task j); ``metrics()`` is forgetless's
    ``metrics.all_metrics`` of it (average accuracy, BWT, forgetting, ...)."""

    def __init__(self, tests: Sequence[tuple[Any, Any]]):
        self.tests = list(tests)
        self.rows: list[list[float]] = []

    def record(self, model) -> list[float]:
        row = [accuracy(model, x, y) for x, y in self.tests]
        self.rows.append(row)
        return row

    @property
    def matrix(self) -> list[list[float]]:
        return [list(r) for r in self.rows]

    def metrics(self) -> dict:
        from .. import metrics

        return metrics.all_metrics(self.rows)
