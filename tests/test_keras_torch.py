"""Keras 3 models inside forgetless's PyTorch loop (KERAS_BACKEND=torch): forgetless.run, train_step,
the strategies that touch modules, checkpoints and resume, the ``--model keras:...`` spec, and the
errors (keras absent, another backend, softmax outputs, nn.Linear-only methods).

Keras is imported in this process with the torch backend (set below before the first import). The
runs use the test suite's device (conftest: CPU here, CUDA where present; KerasModel runs Keras on
the device forgetless puts the model on)."""

import copy
import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import Crash

import forgetless as fl
from forgetless import devices as _devices
from forgetless.checkpoint import CHECKPOINT, load_checkpoint

if importlib.util.find_spec("keras") is None:
    if os.environ.get("CI"):
        raise RuntimeError("CI must install keras (pip install keras)")
    pytest.skip("keras is not installed", allow_module_level=True)
os.environ.setdefault("KERAS_BACKEND", "torch")
import keras

if keras.backend.backend() != "torch":
    pytest.skip(f"keras was imported with the {keras.backend.backend()} backend", allow_module_level=True)

from forgetless.keras.torch_module import KerasModel

MODULE = """
import keras

def build(input_shape, n_outputs):
    return keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(),
                             keras.layers.Dense(32, activation="relu"), keras.layers.Dense(n_outputs)])
"""


def kmlp(seed=0, shape=(1, 8, 8), n=10, hidden=32, dropout=0.0, softmax=False, last_activation=None):
    keras.utils.set_random_seed(seed)
    layers = [keras.Input(shape), keras.layers.Flatten(), keras.layers.Dense(hidden, activation="relu")]
    if dropout:
        layers.append(keras.layers.Dropout(dropout))
    layers.append(keras.layers.Dense(n, activation="softmax" if softmax else last_activation))
    return keras.Sequential(layers)


DEVICE = str(_devices.resolve(os.environ.get("FORGETLESS_TEST_DEVICE") or "auto"))  # conftest's device


def cfg(**kw):
    base = dict(
        benchmark="split-digits",
        scenario="task",
        tasks=2,
        epochs=2,
        batch_size=32,
        optimizer="adam",
        lr=1e-3,
        seed=3,
        device=DEVICE,
    )
    base.update(kw)
    return fl.RunConfig(**base)


def run_env(**extra):
    src = os.path.join(os.path.dirname(fl.__file__), os.pardir)
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([os.path.abspath(src), os.environ.get("PYTHONPATH", "")]),
        **extra,
    }


def test_import_forgetless_never_imports_keras():
    code = "import forgetless, forgetless.models, forgetless.cli, sys; assert 'keras' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, env=run_env())


def test_without_keras_the_error_names_the_install_command(tmp_path):
    code = textwrap.dedent("""
        import sys
        sys.modules["keras"] = None  # what an environment without keras looks like to an import
        import forgetless
        for attempt in (lambda: __import__("forgetless.keras"),
                        lambda: forgetless.build_model("keras:my_models:build", (1, 8, 8), 10)):
            try:
                attempt()
            except forgetless.UsageError as e:
                print(e)
            else:
                raise SystemExit("no error")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=run_env())
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 2 and all('pip install "forgetless[keras]"' in line for line in lines), lines


def test_a_keras_model_through_run_gives_the_same_matrix_twice():
    first = fl.run(cfg(strategy="ewc"), model=kmlp(0))
    second = fl.run(cfg(strategy="ewc"), model=kmlp(0))
    assert first.accuracy_matrix == second.accuracy_matrix
    assert first.config["model"] == "custom:Sequential"
    assert first.accuracy_matrix[0][0] > 0.5  # it learns


def test_a_keras_model_trains_like_its_pytorch_twin():
    """Same initial weights (nn.Linear's weight = Dense's kernel transposed), same run: same accuracies."""
    km = kmlp(1)
    tm = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    w = km.get_weights()
    with torch.no_grad():
        for layer, k in ((tm[1], 0), (tm[3], 2)):
            layer.weight.copy_(torch.from_numpy(w[k]).T)
            layer.bias.copy_(torch.from_numpy(w[k + 1]))
    a = fl.run(cfg(strategy="naive", optimizer="sgd", lr=0.05), model=km)
    b = fl.run(cfg(strategy="naive", optimizer="sgd", lr=0.05), model=tm)
    for ra, rb in zip(a.accuracy_matrix, b.accuracy_matrix):
        assert ra == pytest.approx(rb, abs=0.01)


@pytest.mark.parametrize("name", ["ewc", "mas", "si", "scp"])
def test_importance_of_a_keras_model_is_not_zero(name):
    """functional_call does not reach a raw Keras layer's weights; KerasModel's stateless forward does."""
    strategy = fl.make_strategy(name, {}, "task")
    fl.run(cfg(strategy=name, epochs=1), model=kmlp(0), strategy=strategy)
    omega = strategy.quad.omega
    assert omega is not None and float(omega.abs().max()) > 0


def test_train_step_in_a_users_loop_with_a_keras_model(device):
    bench = fl.build("split-digits", scenario="task", tasks=2, seed=0).to(device)
    km = kmlp(2)
    km.to(device)
    ctx = fl.Context(model=km, optimizer=torch.optim.Adam(km.parameters(), lr=1e-3), benchmark=bench, batch_size=32)
    assert isinstance(ctx.model, KerasModel) and ctx.model.keras_model is km
    s = fl.make_strategy("ewc", {}, "task")
    for task in bench.tasks:
        s.before_task(ctx, task)
        for _ in range(3):
            order = torch.randperm(len(task.train), generator=torch.Generator().manual_seed(task.id)).to(device)
            for idx in order.split(32):
                fl.train_step(ctx, s, fl.Batch(task.train.take(idx), task.train.y[idx], task.ids(len(idx))))
        s.after_task(ctx, task)
    acc = fl.evaluate(ctx, s, trained_upto=1)
    assert min(acc) > 0.5
    # the optimizer's steps are the Keras model's: predict sees them
    x = bench.tasks[1].test.take(slice(0, 64))
    ctx.model.eval()
    assert torch.allclose(
        torch.as_tensor(km.predict(x.cpu().numpy(), verbose=0)), ctx.model(x).detach().cpu(), atol=1e-5
    )


def test_training_mode_reaches_keras_layers():
    m = KerasModel(kmlp(0, dropout=0.5))
    x = torch.rand(16, 1, 8, 8, device=next(m.parameters()).device)
    m.eval()
    assert torch.equal(m(x), m(x))
    m.train()
    assert not torch.equal(m(x), m(x))  # dropout is on in training mode


def test_old_model_copies_are_independent():
    m = KerasModel(kmlp(0))
    old = copy.deepcopy(m)
    x = torch.rand(4, 1, 8, 8, device=next(m.parameters()).device)
    m.eval(), old.eval()
    assert torch.allclose(m(x), old(x))
    with torch.no_grad():
        next(m.parameters()).add_(1.0)
    assert not torch.allclose(m(x), old(x))
    lwf = fl.run(cfg(strategy="lwf", epochs=1), model=kmlp(0))
    assert len(lwf.accuracy_matrix) == 2


@pytest.mark.parametrize("strategy", ["icarl", "bic"])
def test_icarl_and_bic_take_the_input_of_the_output_dense(strategy):
    """The output Dense is exposed as an nn.Linear (DenseHead) whose input is iCaRL's feature vector."""
    res = fl.run(cfg(strategy=strategy, scenario="class", epochs=2), model=kmlp(0))
    assert res.accuracy_matrix[1][0] > 0.15  # task 1's classes are not all forgotten (naive: 0)
    m = KerasModel(kmlp(0))
    caught = []
    m.head.register_forward_hook(lambda mod, inp, out: caught.append(inp[0]))
    m.eval()
    x = torch.rand(3, 1, 8, 8, device=m.t0_kernel.device)
    logits = m(x)
    hidden = torch.relu(x.flatten(1) @ m.t0_kernel + m.t1_bias)
    assert torch.allclose(caught[0], hidden, atol=1e-6)
    assert torch.allclose(logits, torch.nn.functional.linear(hidden, m.head.weight, m.head.bias), atol=1e-5)
    assert [n for n, _ in m.named_parameters()] == ["t0_kernel", "t1_bias", "t2_kernel", "t3_bias"]  # no copies


@pytest.mark.parametrize(
    "strategy,params,model,match",
    [
        ("icarl", {}, lambda: kmlp(0, hidden=32, last_activation="tanh"), "KerasModel has no nn.Linear layer"),
        ("mas", {"hebbian": True}, lambda: kmlp(0), "hebbian=true needs .* nn.Linear"),
        ("pnn", {}, lambda: kmlp(0), "MLP only"),
        ("hat", {}, lambda: kmlp(0), "MLP only"),
        ("packnet", {}, lambda: kmlp(0), "has none it can own"),
    ],
)
def test_methods_that_need_nn_linear_refuse_clearly(strategy, params, model, match):
    scenario = "task" if strategy in ("pnn", "hat", "packnet") else "class"  # (isolation: task-IL only)
    with pytest.raises(fl.UsageError, match=match):
        fl.run(cfg(strategy=strategy, params=params, scenario=scenario, epochs=1), model=model())


@pytest.mark.parametrize("strategy", ["der", "derpp", "xder", "er-ace", "mir", "gdumb", "lucir"])
def test_the_rehearsal_methods_run_a_keras_model(strategy):
    """They touch only the model's outputs (LUCIR: the output Dense as an nn.Linear), so a Keras model
    trains through them; each keeps something of the first task in class-IL (naive keeps 0)."""
    res = fl.run(cfg(strategy=strategy, scenario="class", epochs=5, params={"memory": 200}), model=kmlp(0))
    naive = fl.run(cfg(strategy="naive", scenario="class", epochs=5), model=kmlp(0))
    assert res.accuracy_matrix[1][0] > naive.accuracy_matrix[1][0] + 0.05, (res.accuracy_matrix, naive.accuracy_matrix)


def test_softmax_outputs_are_refused():
    with pytest.raises(fl.UsageError, match=r"ends with a softmax.*logits"):
        fl.run(cfg(), model=kmlp(0, softmax=True))


def test_keras_spec_resumes_to_the_same_result(tmp_path, monkeypatch):
    (tmp_path / "kmodels_resume.py").write_text(MODULE)
    monkeypatch.chdir(tmp_path)
    c = cfg(model="keras:kmodels_resume:build", tasks=3, benchmark="permuted-digits", scenario="domain")
    full = fl.run(c, strategy=Crash(None), out=tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):
        fl.run(c, strategy=Crash(1), out=tmp_path / "cut")
    assert load_checkpoint(tmp_path / "cut" / CHECKPOINT)["state"]["done"] == 1
    resumed = fl.run(c, strategy=Crash(None), out=tmp_path / "cut", resume=True)
    assert resumed.accuracy_matrix == full.accuracy_matrix
    assert full.config["model"] == "keras:kmodels_resume:build"


def test_cli_keras_model_spec(tmp_path):
    (tmp_path / "kmodels_cli.py").write_text(MODULE)
    args = [
        sys.executable,
        "-m",
        "forgetless",
        "run",
        "--benchmark",
        "split-digits",
        "--tasks",
        "2",
        "--epochs",
        "1",
        "--model",
        "keras:kmodels_cli:build",
        "--strategy",
        "ewc",
        "--out",
        str(tmp_path / "run"),
        "--quiet",
    ]
    ok = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, env=run_env(KERAS_BACKEND="torch"))
    assert ok.returncode == 0, ok.stderr
    assert '"model": "keras:kmodels_cli:build"' in (tmp_path / "run" / "result.json").read_text()
    bad = subprocess.run(
        args[:-3] + ["--quiet"], cwd=tmp_path, capture_output=True, text=True, env=run_env(KERAS_BACKEND="numpy")
    )
    err = bad.stderr.strip().splitlines()
    assert bad.returncode != 0 and len(err) == 1 and "KERAS_BACKEND=torch" in err[0], bad.stderr
    missing = subprocess.run(
        args[:-3] + ["--model", "keras:no_such_module:build", "--quiet"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=run_env(KERAS_BACKEND="torch"),
    )
    assert missing.returncode != 0 and "cannot import 'no_such_module'" in missing.stderr
