"""Run by tests/test_keras.py in a subprocess whose KERAS_BACKEND is set (the backend is fixed when keras
is imported): ``python tests/keras_worker.py values OUT.npz`` or ``python tests/keras_worker.py evenodd EPOCHS``.

Data: the MNIST subset shipped in tests/data/mnist-subset, task A = even digits, task B = odd digits,
five outputs (label // 2), images flattened to 784 values in [0, 1].
"""

import json
import sys
from pathlib import Path

import keras
import numpy as np

import forgetless.keras as fk
from forgetless.data import load_dataset

MNIST = Path(__file__).resolve().parent / "data" / "mnist-subset"


def even_odd(split: str = "train"):
    train, test = load_dataset("mnist", data_dir=MNIST, download=False)
    d = train if split == "train" else test
    x, y = d.x.numpy().reshape(len(d), -1).astype("float32"), d.y.numpy()
    even = y % 2 == 0
    return (x[even], y[even] // 2), (x[~even], y[~even] // 2)


def mlp(hidden: int, seed: int):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [keras.Input((784,)), keras.layers.Dense(hidden, activation="relu"), keras.layers.Dense(5)]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    return model


def moved(weights, seed, scale=0.02):
    rng = np.random.default_rng(seed)
    return [w + scale * rng.standard_normal(w.shape).astype("float32") for w in weights]


def values(out: str) -> None:
    (xa, ya), (xb, yb) = even_odd()
    xa, ya, xb, yb = xa[:300], ya[:300], xb[:300], yb[:300]
    res = {"backend": np.array(keras.backend.backend())}
    m = mlp(16, 1)
    w0 = m.get_weights()
    for i, w in enumerate(w0):
        res[f"w0_{i}"] = w
    for labels in ("empirical", "exact"):
        for i, f in enumerate(fk.fisher_diagonal(m, xa, ya, labels=labels, samples=None)):
            res[f"fisher_{labels}_{i}"] = f
    for i, f in enumerate(fk.fisher_diagonal(m, np.concatenate([xa] * 4), labels="sample", samples=None, seed=5)):
        res[f"fisher_sample_{i}"] = f  # (labels drawn from the model: 4 draws per image)
    for i, f in enumerate(fk.mas_importance(m, xa)):
        res[f"mas_{i}"] = f
    # EWC with two tasks (two separate terms, merged exactly), evaluated at moved weights
    ewc = fk.EWC(m, lam=3.0, normalize="none", samples=None)
    ewc.consolidate(xa, ya)
    w1 = moved(w0, 2)
    m.set_weights(w1)
    res["ewc_value_1"] = np.array(ewc.value())
    res["ewc_term_1"] = np.array(float(keras.ops.convert_to_numpy(ewc.penalty(None, None))))
    y_pred = m(xb[:64], training=False)
    train_loss = m.compute_loss(xb[:64], yb[:64], y_pred, None, training=True)
    eval_loss = m.compute_loss(xb[:64], yb[:64], y_pred, None, training=False)
    res["loss_difference"] = np.array(float(keras.ops.convert_to_numpy(train_loss - eval_loss)))
    ewc.consolidate(xb, yb)
    w2 = moved(w1, 3)
    m.set_weights(w2)
    res["ewc_value_2"] = np.array(ewc.value())
    for i, w in enumerate(w1):
        res[f"w1_{i}"] = w
    for i, w in enumerate(w2):
        res[f"w2_{i}"] = w
    # online EWC (minmax normalised Fisher, gamma 0.9) on a second model with the same weights
    m2 = mlp(16, 1)
    on = fk.EWC(m2, online=True, gamma=0.9, lam=5.0, samples=None)
    on.consolidate(xa, ya)
    m2.set_weights(w1)
    on.consolidate(xb, yb)
    m2.set_weights(w2)
    res["online_value"] = np.array(on.value())
    np.savez(out, **res)


def evenodd(epochs: int) -> None:
    (xa, ya), (xb, yb) = even_odd()
    (ta, tya), (tb, tyb) = even_odd("test")
    result = {}
    for name in ("plain", "ewc", "l2"):
        m = mlp(128, 0)
        method = {"plain": None, "ewc": lambda: fk.EWC(m), "l2": lambda: fk.L2(m, lam=0.1)}[name]
        method = method() if method else None
        R = fk.AccuracyMatrix([(ta, tya), (tb, tyb)])
        for x, y in ((xa, ya), (xb, yb)):
            m.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
            R.record(m)
            if method is not None:
                method.consolidate(x, y)
        result[name] = {"matrix": R.matrix, "metrics": R.metrics()}
    print(json.dumps(result))


def methods(epochs: int) -> None:
    """SI, MAS, LwF, replay and online EWC through fit on the even/odd pair: accuracy after both tasks."""
    (xa, ya), (xb, yb) = even_odd()
    (ta, tya), (tb, tyb) = even_odd("test")
    result = {}
    for name in ("plain", "si", "mas", "lwf", "replay", "online"):
        m = mlp(128, 0)
        method = {
            "plain": lambda: None,
            "si": lambda: fk.SI(m, lam=10.0),
            "mas": lambda: fk.MAS(m, lam=1.0),
            "lwf": lambda: fk.LwF(m, lam=1.0),
            "replay": lambda: fk.Replay(memory=500),
            "online": lambda: fk.EWC(m, online=True),
        }[name]()
        for x, y in ((xa, ya), (xb, yb)):
            if name == "si":
                data = fk.batches(x, y, batch_size=32)
                m.fit(data, epochs=epochs, verbose=0, callbacks=[method.watch(data)])
            elif name == "replay":
                m.fit(method.batches(x, y, batch_size=32), epochs=epochs, verbose=0)
            else:
                m.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
            if method is not None:
                method.consolidate(x, y)
        result[name] = [fk.accuracy(m, ta, tya), fk.accuracy(m, tb, tyb)]
    print(json.dumps(result))


class Steps(keras.callbacks.Callback):
    """Records the weights after every step (and before the first)."""

    def __init__(self):
        super().__init__()
        self.weights = []

    def on_train_batch_begin(self, batch, logs=None):
        if not self.weights:
            self.weights.append([np.array(w) for w in self.model.get_weights()])

    def on_train_batch_end(self, batch, logs=None):
        if hasattr(self.model, "jax_state_sync"):
            self.model.jax_state_sync()
        self.weights.append([np.array(w) for w in self.model.get_weights()])


def si_check() -> None:
    """With plain SGD (lr eta) a step is delta = -eta g, so SI's omega = -sum g delta must equal
    sum delta^2 / eta: true only if SI's gradient is the step's own gradient (the right batch)."""
    (xa, ya), _ = even_odd()
    xa, ya = xa[:400], ya[:400]
    keras.utils.set_random_seed(4)
    m = keras.Sequential([keras.Input((784,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(5)])
    eta = 0.1
    m.compile(optimizer=keras.optimizers.SGD(eta), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    si = fk.SI(m)
    steps = Steps()
    data = fk.batches(xa, ya, batch_size=50, seed=3)
    m.fit(data, epochs=2, verbose=0, callbacks=[si.watch(data), steps])
    expected = [
        sum((b[i] - a[i]) ** 2 for a, b in zip(steps.weights, steps.weights[1:])) / eta
        for i in range(len(steps.weights[0]))
    ]
    err = max(float(np.abs(o - e).max() / np.abs(e).max()) for o, e in zip(si.omega_, expected))
    si.consolidate()
    print(
        json.dumps(
            {
                "steps": len(steps.weights) - 1,
                "relative_error": err,
                "omega_max": max(float(np.abs(e).max()) for e in expected),
                "importance_max": max(float(o.max()) for o in si.importance),
            }
        )
    )


if __name__ == "__main__":
    if sys.argv[1] == "values":
        values(sys.argv[2])
    elif sys.argv[1] == "methods":
        methods(int(sys.argv[2]))
    elif sys.argv[1] == "si":
        si_check()
    else:
        evenodd(int(sys.argv[2]))
