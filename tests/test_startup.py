"""Start-up (issue 17): what ``import forgetless``, ``forgetless --help`` and a digits benchmark's data
load import. Each check runs in a fresh interpreter, so what the test process imported does not count."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

HEAVY = ["sklearn", "matplotlib", "pandas", "tensorboard", "ray", "keras", "hypothesis", "scipy"]


def imported_after(code: str) -> list[str]:
    """The top-level modules of HEAVY + torch that are in sys.modules after running ``code``."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps([m for m in {HEAVY + ['torch']!r} if m in sys.modules]))"
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_import_forgetless_imports_neither_torch_nor_heavy_packages():
    assert imported_after("import forgetless") == []


def test_help_needs_no_torch():
    code = (
        "import contextlib, io\nfrom forgetless.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    try:\n        main(['--help'])\n    except SystemExit as e:\n        assert e.code == 0\n"
        "assert 'run' in out.getvalue()\n"
    )
    assert imported_after(code) == []


def test_run_help_needs_no_torch():
    code = (
        "import contextlib, io\nfrom forgetless.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    try:\n        main(['run', '--help'])\n    except SystemExit:\n        pass\n"
        "assert '--benchmark' in out.getvalue()\n"
    )
    assert imported_after(code) == []


def test_permuted_digits_data_load_imports_no_heavy_package():
    got = imported_after(
        "import forgetless\nb = forgetless.build('permuted-digits', scenario='domain')\nassert len(b.tasks) == 5"
    )
    assert got == ["torch"]  # torch, and nothing of HEAVY


def test_public_names_resolve_lazily():
    import forgetless
    import forgetless.run  # the submodule must not replace the function

    assert callable(forgetless.run) and forgetless.run.__module__ == "forgetless.run"
    assert forgetless.train_step.__module__ == "forgetless.loop"
    assert forgetless.metrics.__name__ == "forgetless.metrics"
    assert forgetless.strategies.__name__ == "forgetless.strategies" and forgetless.data.TensorData
    for name in forgetless.__all__:
        assert getattr(forgetless, name) is not None
    with pytest.raises(AttributeError):
        forgetless.no_such_name  # noqa: B018


def test_digits_read_without_sklearn_match_sklearn():
    """The CSV reader and the shipped split reproduce load_digits + train_test_split exactly."""
    pytest.importorskip("sklearn")
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from forgetless.data.digits import read_digits, split_rows
    from forgetless.data.sources import _load_digits

    d = load_digits()
    images, labels = read_digits()
    assert np.array_equal(images, d.images.astype(np.uint8)) and np.array_equal(labels, d.target)
    x_tr, x_te, y_tr, y_te = train_test_split(
        d.images.astype(np.uint8)[:, None], d.target, test_size=0.2, random_state=0, stratify=d.target
    )
    train_rows, test_rows = split_rows()
    assert sorted(np.concatenate([train_rows, test_rows]).tolist()) == list(range(len(labels)))
    train, test = _load_digits()
    assert np.array_equal(train.raw.numpy(), x_tr) and np.array_equal(train.y.numpy(), y_tr)
    assert np.array_equal(test.raw.numpy(), x_te) and np.array_equal(test.y.numpy(), y_te)
    assert train.scale == test.scale == 16.0


def test_corrupt_digits_file_is_a_data_error(tmp_path):
    from forgetless.data.digits import read_digits
    from forgetless.errors import DataError

    bad = tmp_path / "digits.csv.gz"
    bad.write_bytes(b"not gzip")
    with pytest.raises(DataError, match="digits"):
        read_digits(bad)
