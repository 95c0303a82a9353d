import json
import subprocess
import sys

import pytest


def forgetless(*args, cwd=None, env=None):
    return subprocess.run(
        [sys.executable, "-m", "forgetless", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )


def test_run_prints_the_matrix_and_writes_result_json(tmp_path):
    p = forgetless(
        "run",
        "--benchmark",
        "split-digits",
        "--model",
        "mlp:64",
        "--epochs",
        "2",
        "--out",
        str(tmp_path / "o"),
        "--quiet",
    )
    assert p.returncode == 0, p.stderr
    assert "after task 5" in p.stdout and "BWT" in p.stdout and "forgetting" in p.stdout
    assert p.stderr == ""  # --quiet
    result = json.loads((tmp_path / "o" / "result.json").read_text())
    assert len(result["accuracy_matrix"]) == 5
    assert result["config"]["scenario"] == "class" and result["config"]["model"] == "mlp:64"
    assert {"average_accuracy", "bwt", "fwt", "forgetting"} <= set(result["metrics"])
    assert "train_seconds" in result["timing"] and len(result["timing"]["per_task"]) == 5


def test_list_shows_benchmarks_strategies_and_parameters():
    p = forgetless("list")
    assert p.returncode == 0
    for word in (
        "split-mnist",
        "permuted-fashion-mnist",
        "mnist-fashion-mnist",
        "naive",
        "joint",
        "cumulative",
        "task, domain, class",
    ):
        assert word in p.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "--benchmark", "split-mnsit"], "did you mean 'split-mnist'"),
        (["run", "--strategy", "cumulativ"], "did you mean 'cumulative'"),
        (["run", "--param", "lam=3"], "unknown parameter 'lam'"),
        (["run", "--param", "lam"], "KEY=VALUE"),
        (["run", "--model", "mlp:10,x"], "hidden widths must be integers"),
        (["run", "--model", "resnet"], "unknown model"),
        (
            ["run", "--benchmark", "split-cifar10", "--model", "cnn", "--no-download", "--data-dir", "/nonexistent"],
            "cifar-10-binary.tar.gz",
        ),
        (["run", "--epochs", "0"], "--epochs must be an integer >= 1"),
        (["run", "--lr", "-1"], "--lr must be positive"),
        (["run", "--scenario", "classes"], "invalid choice"),
        (["run", "--tasks", "x"], "invalid int value"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_input_gets_one_line_and_exit_code_2(args, message, tmp_path):
    p = forgetless(*args, cwd=tmp_path)
    assert p.returncode == 2, (p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert "Traceback" not in p.stderr and message in lines[0]
    assert not (tmp_path / "runs").exists()


def test_missing_mnist_offline_says_where_to_put_the_files(tmp_path):
    env = {
        "HOME": str(tmp_path),
        "FORGETLESS_MIRROR": "http://127.0.0.1:9/",
        "PATH": "/usr/bin:/bin",
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }
    import os

    env = {**os.environ, **env}
    env.pop("FORGETLESS_DATA", None)
    p = forgetless(
        "run",
        "--benchmark",
        "permuted-mnist",
        "--data-dir",
        str(tmp_path / "empty"),
        "--no-download",
        cwd=tmp_path,
        env=env,
    )
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert "train-images-idx3-ubyte.gz" in p.stderr and "--data-dir" in p.stderr


def test_corrupt_idx_is_named(tmp_path, mnist_dir):
    import shutil

    for f in mnist_dir.glob("*.gz"):
        shutil.copy(f, tmp_path / f.name)
    data = (tmp_path / "train-images-idx3-ubyte.gz").read_bytes()
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(data[: len(data) // 2])
    p = forgetless("run", "--benchmark", "split-mnist", "--data-dir", str(tmp_path), "--no-download", cwd=tmp_path)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert "train-images-idx3-ubyte.gz" in p.stderr and "Traceback" not in p.stderr


def test_output_dir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    p = forgetless("run", "--out", str(tmp_path / "f"), cwd=tmp_path)
    assert p.returncode == 2 and "is a file" in p.stderr
    assert (tmp_path / "f").read_text() == "x"


def test_compare_table_shows_only_the_parameters_that_differ(tmp_path):
    p = forgetless(
        "compare",
        "--benchmark",
        "split-digits",
        "--tasks",
        "2",
        "--model",
        "mlp:32",
        "--iterations",
        "5",
        "--strategy",
        "ewc",
        "--strategy",
        "naive",
        "--param",
        "lam=1",
        "--param",
        "lam=100",
        "--threads",
        "1",
        "--out",
        str(tmp_path / "c"),
        "--quiet",
    )
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert any(ln.startswith("ewc (lam=1) ") for ln in lines) and any(ln.startswith("ewc (lam=100) ") for ln in lines)
    assert any(ln.startswith("naive ") for ln in lines)
    assert "gamma" not in p.stdout and "fisher" not in p.stdout  # EWC's other defaults are not listed
    rows = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert all(len(r["runs"]) == 1 for r in rows)
    assert "lam" in next(r for r in rows if r["strategy"] == "ewc")["params"]


def test_run_prints_every_metric_of_the_registry_it_has(tmp_path):
    from forgetless.metrics import REGISTRY

    p = forgetless(
        "run",
        "--benchmark",
        "split-digits",
        "--tasks",
        "2",
        "--model",
        "mlp:32",
        "--iterations",
        "5",
        "--out",
        str(tmp_path / "o"),
        "--quiet",
    )
    assert p.returncode == 0, p.stderr
    metrics = json.loads((tmp_path / "o" / "result.json").read_text())["metrics"]
    for key in metrics:
        assert any(ln.startswith(REGISTRY[key].label + " ") for ln in p.stdout.splitlines()), key


def test_run_without_options_is_the_main_job_comparison_with_its_report(tmp_path):
    """README's first command: naive, EWC and ER on permuted digits, 3 seeds, the side-by-side table
    and the HTML report; forgetting shows (naive) and so does what fights it (EWC, ER)."""
    p = forgetless("run", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    rows = {}
    for line in p.stdout.splitlines():
        parts = line.split()
        if parts and parts[0] in ("naive", "ewc", "er") and parts[1] == "domain":
            rows[parts[0]] = (int(parts[2]), float(parts[3]))  # (seeds, mean average accuracy %)
    assert set(rows) == {"naive", "ewc", "er"} and all(n == 3 for n, _ in rows.values()), p.stdout
    assert rows["ewc"][1] > rows["naive"][1] + 10 and rows["er"][1] > rows["naive"][1] + 10, rows
    report = tmp_path / "runs" / "main-job" / "report.html"
    assert report.is_file() and "ewc" in report.read_text()
    assert len(json.loads((tmp_path / "runs" / "main-job" / "summary.json").read_text())) == 3
    again = forgetless("run", cwd=tmp_path)  # the finished runs are kept: the same table again
    assert again.returncode == 0 and again.stdout.splitlines()[:4] == p.stdout.splitlines()[:4]


def test_version_is_the_package_version():
    """`forgetless --version` prints the one version number, ``forgetless.__version__`` (which pyproject reads)."""
    import forgetless as fl

    p = forgetless("--version")
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == f"forgetless {fl.__version__}" == "forgetless 0.2.0"
