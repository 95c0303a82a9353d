"""The lecture's custom training loop for EWC, on a Keras model, with forgetless's penalty.

The lecture writes EWC by hand: train task A, estimate the diagonal Fisher from squared per-sample
gradients, then train task B with a loop that does, for every batch,

    forward  ->  loss = CE(y, f(x)) + lambda/2 * sum_i F_i (theta_i - theta*_i)^2  ->  gradient  ->  update

Here the Fisher is ``forgetless.keras.fisher_diagonal`` and the penalty is ``forgetless.keras.EWC``'s
term (``ewc.penalty``, written with ``keras.ops``), in forgetless's convention ``lam * sum F (theta -
theta*)^2`` with ``lam = lambda / 2``; the loop is Keras's "training loop from scratch" on the PyTorch
backend (forward, ``loss.backward()``, ``optimizer.apply(grads, variables)``), so it reads like the
lecture's ``tf.GradientTape`` loop. Task A = even digits, task B = odd digits, five outputs (label // 2),
the MNIST subset shipped with forgetless; Dense(128) + Dense(5), Adam 1e-3, batches of 32.

    python examples/keras_custom_loop.py [--epochs 3] [--lambda 2000]
"""

import argparse
import os
from pathlib import Path

os.environ["KERAS_BACKEND"] = "torch"  # this loop uses torch's autograd (the backend is fixed at import)

import keras
import numpy as np
import torch

import forgetless.keras as fk
from forgetless.data import load_dataset

HERE = Path(__file__).resolve().parent


def even_odd(data):
    x, y = data.x.numpy().reshape(len(data), -1).astype("float32"), data.y.numpy()
    even = y % 2 == 0
    return (x[even], y[even] // 2), (x[~even], y[~even] // 2)


def train(model, optimizer, x, y, epochs, ewc=None, seed=0):
    """The lecture's loop: forward, loss (+ the EWC penalty), gradient, update."""
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        for idx in np.array_split(rng.permutation(len(y)), int(np.ceil(len(y) / 32))):
            xb, yb = torch.from_numpy(x[idx]), torch.from_numpy(y[idx])
            logits = model(xb, training=True)  # forward
            loss = loss_fn(yb, logits)
            penalty = None if ewc is None else ewc.penalty(xb, logits)  # lam * sum F (theta - theta*)^2
            if penalty is not None:  # (None while lam = 0)
                loss = loss + penalty
            model.zero_grad()
            loss.backward()  # gradient
            grads = [v.value.grad for v in model.trainable_variables]
            with torch.no_grad():
                optimizer.apply(grads, model.trainable_variables)  # update


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument(
        "--lambda",
        dest="lambda_",
        type=float,
        default=2000.0,
        help="the lecture's lambda (forgetless's lam is lambda / 2)",
    )
    ap.add_argument("--data-dir", default=str(HERE.parent / "tests" / "data" / "mnist-subset"))
    a = ap.parse_args()
    train_set, test_set = load_dataset("mnist", data_dir=a.data_dir, download=False)
    (xa, ya), (xb, yb) = even_odd(train_set)
    (ta, tya), (tb, tyb) = even_odd(test_set)
    for lam_paper in (0.0, a.lambda_):
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [keras.Input((784,)), keras.layers.Dense(128, activation="relu"), keras.layers.Dense(5)]
        )
        optimizer = keras.optimizers.Adam(1e-3)
        optimizer.build(model.trainable_variables)
        train(model, optimizer, xa, ya, a.epochs)
        after_a = fk.accuracy(model, ta, tya)
        # the Fisher of task A from per-sample gradients, and the anchor theta*_A
        ewc = fk.EWC(model, lam=lam_paper / 2, normalize="none", samples=1000)
        ewc.consolidate(xa, ya)
        train(model, optimizer, xb, yb, a.epochs, ewc=ewc, seed=1)
        # the penalty is the lecture's lambda/2 sum F (theta - theta*)^2, by hand:
        F, anchor = ewc.fisher_, ewc.quad.center
        by_hand = (
            lam_paper / 2 * sum(float((f * (w - t) ** 2).sum()) for f, w, t in zip(F, model.get_weights(), anchor))
        )
        assert np.isclose(ewc.value(), by_hand, rtol=1e-4), (ewc.value(), by_hand)
        print(
            f"lambda {lam_paper:g}: task A {fk.accuracy(model, ta, tya):.3f} (after A: {after_a:.3f}), "
            f"task B {fk.accuracy(model, tb, tyb):.3f}; penalty at the end {by_hand:.4f}"
        )


if __name__ == "__main__":
    main()
