"""The two Keras examples run and show what they teach (fewer epochs than their defaults); CPU."""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NUM = r"([\d.]+)"


def run(script, *args, backend="torch"):
    for module in ("keras", backend):
        if importlib.util.find_spec(module) is None:
            if os.environ.get("CI"):
                pytest.fail(f"CI must install {module}")
            pytest.skip(f"{module} is not installed")
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "KERAS_BACKEND": backend,
        "JAX_PLATFORMS": "cpu",
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    p = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args], capture_output=True, text=True, timeout=900, env=env
    )
    assert p.returncode == 0, p.stderr[-3000:]
    return p.stdout


@pytest.mark.parametrize(
    "backend", ["torch", "jax"] + (["tensorflow"] if importlib.util.find_spec("tensorflow") else [])
)
def test_even_odd_example(backend):
    out = run("keras_even_odd.py", "--epochs", "2", backend=backend)
    fit = {m[0]: (float(m[1]), float(m[2])) for m in re.findall(rf"(\w+): model.fit task A {NUM}, task B {NUM}", out)}
    ours = {
        m[0]: (float(m[1]), float(m[2]))
        for m in re.findall(rf"(\w+): .*forgetless run \(PyTorch MLP\) task A {NUM}, task B {NUM}", out)
    }
    assert set(fit) == set(ours) == {"plain", "l2", "ewc"}, out
    for acc in (fit, ours):
        assert acc["plain"][0] < 0.5 and acc["plain"][1] > 0.9  # plain training forgets A
        assert acc["ewc"][0] > acc["plain"][0] + 0.15 and acc["ewc"][1] > 0.7  # (lam 100: B 0.79-0.84 here)
        assert acc["l2"][0] > acc["plain"][0] + 0.15
    if backend == "torch":  # the Keras model inside forgetless run too
        assert len(re.findall(r"forgetless run \(Keras model\) task A", out)) == 3


def test_custom_loop_example():
    out = run("keras_custom_loop.py", "--epochs", "2")
    acc = {float(m[0]): float(m[1]) for m in re.findall(rf"lambda {NUM}: task A {NUM}", out)}
    assert len(acc) == 2, out
    plain, ewc = acc[0.0], acc[max(acc)]
    assert plain < 0.5 and ewc > plain + 0.15
