"""The Keras tutorial's experiment: even digits, then odd digits, with plain training, L2 and EWC.

Task A = the even digits, task B = the odd digits, both on the same five outputs (label // 2: a
domain-incremental pair); a Dense(128, relu) + Dense(5) network on flattened 28x28 images, Adam
(learning rate 1e-3), batches of 32, 6 epochs per task; here on the MNIST subset shipped with
forgetless (tests/data/mnist-subset: 8,500 training and 1,500 test images).

First column: in Keras, through ``model.fit`` (``forgetless.keras``; any backend: ``KERAS_BACKEND=jax
python examples/keras_even_odd.py``; torch by default here). Second: the same experiment with
``forgetless run`` on the equivalent PyTorch model (``--model mlp:128``; PyTorch's default
initialisation, not Keras's Glorot), i.e.::

    forgetless run --benchmark split-mnist --classes "0,2,4,6,8|1,3,5,7,9" --scenario domain \\
        --model mlp:128 --optimizer adam --lr 0.001 --batch-size 32 --epochs 6 \\
        --data-dir tests/data/mnist-subset --strategy ewc

Third (torch backend only): the Keras model itself trained by ``forgetless.run(config, model=...)``.
Strengths use forgetless's convention (``lam * sum Omega (theta - theta*)^2``, no 1/2): EWC with its
defaults (lam 100 on the min-max normalised Fisher of 1,000 training samples), L2 with lam 0.1
(chosen on a validation split of the training data, among 0.01, 0.1 and 1). The numbers of one run
are in docs: README, "Keras".

    python examples/keras_even_odd.py [--epochs 6] [--data-dir tests/data/mnist-subset]
"""

import argparse
import os
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is imported: it fixes the backend then

import keras

import forgetless
import forgetless.keras as fk
from forgetless.data import load_dataset

L2_LAM = 0.1
HERE = Path(__file__).resolve().parent


def even_odd(data, n=None):
    """((x_A, y_A), (x_B, y_B)): even and odd digits, flattened, labels // 2."""
    x, y = data.x.numpy().reshape(len(data), -1).astype("float32"), data.y.numpy()
    even = y % 2 == 0
    return (x[even], y[even] // 2), (x[~even], y[~even] // 2)


def keras_model(seed: int, images: bool = False):
    """Dense(128, relu) + Dense(5) on flattened images (``images``: the network flattens [1, 28, 28] itself)."""
    keras.utils.set_random_seed(seed)
    first = [keras.Input((1, 28, 28)), keras.layers.Flatten()] if images else [keras.Input((784,))]
    model = keras.Sequential(
        [*first, keras.layers.Dense(128, activation="relu"), keras.layers.Dense(5)]
    )  # logits: no softmax
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        metrics=["accuracy"],
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def with_keras(method: str, train, test, epochs: int, seed: int):
    model = keras_model(seed)
    protect = {"plain": lambda: None, "l2": lambda: fk.L2(model, lam=L2_LAM), "ewc": lambda: fk.EWC(model)}[method]()
    R = fk.AccuracyMatrix(test)
    for x, y in train:
        model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
        R.record(model)
        if protect is not None:
            protect.consolidate(x, y)  # importance (EWC: Fisher) and anchor at the end of the task
    return R.matrix


def with_forgetless_run(method: str, data_dir: str, epochs: int, seed: int, model=None):
    strategy, params = {"plain": ("naive", {}), "l2": ("l2", {"lam": L2_LAM}), "ewc": ("ewc", {})}[method]
    cfg = forgetless.RunConfig(
        benchmark="split-mnist",
        classes="0,2,4,6,8|1,3,5,7,9",
        scenario="domain",
        model="mlp:128",
        optimizer="adam",
        lr=1e-3,
        batch_size=32,
        epochs=epochs,
        data_dir=data_dir,
        download=False,
        strategy=strategy,
        params=params,
        seed=seed,
        device="cpu",
    )
    return forgetless.run(cfg, model=model).accuracy_matrix


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-dir", default=str(HERE.parent / "tests" / "data" / "mnist-subset"))
    a = ap.parse_args()
    train, test = load_dataset("mnist", data_dir=a.data_dir, download=False)
    tr, te = even_odd(train), even_odd(test)
    print(
        f"Keras {keras.__version__} on {keras.backend.backend()}; {len(tr[0][1])} / {len(tr[1][1])} training "
        f"images of A / B, {a.epochs} epochs each"
    )
    torch_backend = keras.backend.backend() == "torch"
    for method in ("plain", "l2", "ewc"):
        k = with_keras(method, tr, te, a.epochs, a.seed)
        f = with_forgetless_run(method, a.data_dir, a.epochs, a.seed)
        line = (
            f"{method:>5}: model.fit task A {k[1][0]:.3f}, task B {k[1][1]:.3f} | "
            f"forgetless run (PyTorch MLP) task A {f[1][0]:.3f}, task B {f[1][1]:.3f}"
        )
        if torch_backend:  # the Keras model itself inside forgetless's loop (KERAS_BACKEND=torch only)
            kf = with_forgetless_run(method, a.data_dir, a.epochs, a.seed, model=keras_model(a.seed, images=True))
            line += f" | forgetless run (Keras model) task A {kf[1][0]:.3f}, task B {kf[1][1]:.3f}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
