"""Figures: plots.py and results.py on real runs (scikit-learn's digits, a few seconds)."""

import importlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import forgetless as fl
from forgetless import plots
from forgetless.errors import UsageError


def need(module: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail(f"CI must install {module} (it is in forgetless[test] and forgetless[report])", pytrace=False)
        pytest.skip(f"{module} is not installed: pip install 'forgetless[report]'", allow_module_level=True)


need("matplotlib")
SMALL = dict(benchmark="permuted-digits", tasks=3, model="mlp:32", epochs=1)


@pytest.fixture(scope="module")
def run_result(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    fl.run(fl.RunConfig(**SMALL, eval_every=5), out=out)
    return json.loads((out / "result.json").read_text())


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """(summary rows, {strategy: [result per seed]}) of naive vs cumulative, 2 seeds."""
    import torch

    from forgetless.experiment import Grid, compare

    out = tmp_path_factory.mktemp("grid")
    threads = torch.get_num_threads()
    try:
        with pytest.MonkeyPatch.context() as mp:  # one torch thread per run: the tests share 2 cores
            mp.setattr(os, "cpu_count", lambda: 1)
            rows = compare(
                Grid(base=dict(SMALL, eval_every=10), axes={"strategy": ["naive", "cumulative"], "seed": [0, 1]}), out
            )
    finally:
        torch.set_num_threads(threads)  # compare sets the threads of its runs
    by_strategy = {}
    for f in sorted(out.glob("*/result.json")):
        r = json.loads(f.read_text())
        by_strategy.setdefault(r["config"]["strategy"], []).append(r)
    return rows, by_strategy


def task_ends(r):
    return list(np.cumsum([p["steps"] for p in r["timing"]["per_task"]]))


def test_curves_one_line_per_task_with_boundaries(run_result):
    r = run_result
    R, T = r["accuracy_matrix"], 3
    fig = plots.plot_curves(r)
    ax = fig.axes[0]
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    assert [k for k in lines if k.startswith("task ")] == ["task 1", "task 2", "task 3"]
    ends = task_ends(r)
    starts = [0] + ends[:-1]
    for j in range(T):
        x, y = lines[f"task {j + 1}"].get_data()
        assert x[0] == starts[j]  # solid from where the task is first trained
        assert x[-1] == ends[-1]
        assert y[-1] == pytest.approx(100 * R[-1][j])  # ends at the final accuracy
        for i in range(j, T):  # passes through every task end at the matrix value
            assert y[list(x).index(ends[i])] == pytest.approx(100 * R[i][j])
    # every recorded curve point of task 1 is on its line
    assert {c["step"] for c in r["curves"]} <= set(lines["task 1"].get_xdata())
    # tasks 2 and 3 show their accuracy before training, dimmed
    for j in (2, 3):
        before = [ln for ln in ax.get_lines() if ln.get_gid() == f"before-{j}"]
        assert len(before) == 1 and before[0].get_alpha() < 1
        assert before[0].get_xdata()[0] == 0
        assert before[0].get_ydata()[0] == pytest.approx(100 * r["initial_accuracy"][j - 1])
    boundaries = [ln for ln in ax.get_lines() if ln.get_gid() == "boundary"]
    assert [ln.get_xdata()[0] for ln in boundaries] == ends[:-1]
    assert all(ln.get_linestyle() == "--" for ln in boundaries)
    assert {t.get_text() for t in ax.texts} == {"training task 1", "training task 2", "training task 3"}
    assert ax.get_ylim() == (0, 102)
    assert "%" in ax.get_ylabel() and "steps" in ax.get_xlabel()
    assert "permuted-digits" in ax.get_title() and "naive" in ax.get_title()
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[:3] == ["task 1", "task 2", "task 3"] and "task boundary" in legend
    colours = [lines[f"task {j}"].get_color() for j in (1, 2, 3)]
    assert colours == list(plots.OKABE_ITO[:3])


def test_curves_without_curves_fall_back_to_task_ends(run_result):
    r = dict(run_result, curves=[])
    ax = plots.plot_curves(r).axes[0]
    lines = {ln.get_label(): ln for ln in ax.get_lines() if ln.get_label().startswith("task ")}
    assert len(lines) == 3
    assert list(lines["task 1"].get_xdata()) == [0, 1, 2, 3]
    assert list(lines["task 3"].get_xdata()) == [2, 3]
    assert list(lines["task 3"].get_ydata()) == pytest.approx([100 * r["accuracy_matrix"][i][2] for i in (1, 2)])
    assert [ln.get_xdata()[0] for ln in ax.get_lines() if ln.get_gid() == "boundary"] == [1, 2]
    assert "tasks trained" in ax.get_xlabel()


def test_matrix_heatmap_annotations_equal_the_matrix(run_result):
    R = run_result["accuracy_matrix"]
    fig = plots.plot_matrix(run_result)
    ax, cbar = fig.axes
    assert [t.get_text() for t in ax.texts] == [f"{100 * v:.1f}" for row in R for v in row]
    assert np.allclose(ax.images[0].get_array(), 100 * np.array(R))
    assert [t.get_text() for t in ax.get_yticklabels()] == ["after task 1", "after task 2", "after task 3"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["task 1", "task 2", "task 3"]
    assert cbar.get_ylabel() == "test accuracy (%)"
    assert [t.get_fontweight() for t in ax.texts][::4] == ["bold"] * 3  # the diagonal


def test_matrix_text_is_readable_on_dark_and_light_cells():
    ax = plots.plot_matrix({"accuracy_matrix": [[0.02, 0.97], [0.45, 0.93]]}).axes[0]
    colours = [t.get_color() for t in ax.texts]
    assert colours[0] == "white" and colours[1] == "black"  # dark purple / bright yellow in viridis


def test_methods_grouped_bars_with_std_error_bars(grid):
    rows, _ = grid
    fig = plots.plot_methods(rows)
    ax = fig.axes[0]
    bars = [c for c in ax.containers if hasattr(c, "errorbar")]
    assert len(bars) == 3  # final average accuracy, BWT, forgetting
    assert sum(len(c.patches) for c in bars) == 3 * len(rows)
    for container, metric in zip(bars, ("average_accuracy", "bwt", "forgetting")):
        heights = [p.get_height() for p in container.patches]
        assert heights == pytest.approx([100 * r[metric]["mean"] for r in rows])
        segments = container.errorbar.lines[2][0].get_segments()
        assert [s[1][1] - s[0][1] for s in segments] == pytest.approx([2 * 100 * r[metric]["std"] for r in rows])
    assert [t.get_text() for t in ax.get_xticklabels()] == [r["label"] for r in rows]
    assert "std" in ax.get_ylabel() and "2 seeds" in ax.get_ylabel()
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[0].startswith("final average accuracy") and "BWT" in legend[1] and legend[2].startswith("forgetting")
    # the mean is written on each bar
    assert f"{100 * rows[0]['average_accuracy']['mean']:.1f}" in [t.get_text() for t in ax.texts]


def test_methods_missing_metric_shows_na(grid):
    rows, _ = grid
    row = {k: v for k, v in rows[0].items() if k != "bwt"}
    ax = plots.plot_methods([row, rows[1]]).axes[0]
    assert "n/a" in [t.get_text() for t in ax.texts]


def test_average_accuracy_mean_and_std_band(grid):
    _, by = grid
    ax = plots.plot_average_accuracy(by).axes[0]
    lines = [ln for ln in ax.get_lines() if not ln.get_label().startswith("_")]
    assert len(lines) == 2
    for ln, (label, runs) in zip(lines, by.items()):
        A = 100 * np.array([r["metrics"]["average_accuracies"] for r in runs])
        assert ln.get_label() == f"{label} (n=2)"
        assert list(ln.get_xdata()) == [1, 2, 3]
        assert ln.get_ydata() == pytest.approx(A.mean(0))
    assert len(ax.collections) == 2  # one ± std band per method
    lo = ax.collections[0].get_paths()[0].vertices[:, 1]
    A0 = 100 * np.array([r["metrics"]["average_accuracies"] for r in next(iter(by.values()))])
    assert lo.min() == pytest.approx((A0.mean(0) - A0.std(0, ddof=1)).min())
    # one run per method: no band
    single = plots.plot_average_accuracy({k: v[0] for k, v in by.items()}).axes[0]
    assert len(single.collections) == 0 and len(single.get_lines()) == 2


def test_save_writes_png_and_svg(run_result, tmp_path):
    fig = plots.plot_matrix(run_result)
    paths = plots.save(fig, tmp_path / "sub" / "matrix")
    assert [p.name for p in paths] == ["matrix.png", "matrix.svg"]
    assert all(p.stat().st_size > 1000 for p in paths)
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in paths[1].read_text()
    again = plots.save(fig, tmp_path / "again.png")  # a suffix is replaced, not doubled
    assert [p.name for p in again] == ["again.png", "again.svg"]
    assert again[1].read_bytes() == paths[1].read_bytes()  # deterministic SVG (no date, fixed ids)


def test_results_to_frame_and_plot(run_result):
    need("pandas")
    from forgetless.results import plot, to_frame

    df = to_frame(run_result)
    assert list(df.columns) == ["after_task", "task", "accuracy"] and len(df) == 9
    assert np.allclose(
        df.pivot(index="after_task", columns="task", values="accuracy").values, run_result["accuracy_matrix"]
    )
    assert len(plot(run_result, "matrix").axes[0].texts) == 9
    assert len([ln for ln in plot(run_result).axes[0].get_lines() if ln.get_label().startswith("task ")]) == 3
    with pytest.raises(UsageError, match="did you mean 'matrix'"):
        plot(run_result, "matirx")


def test_missing_matplotlib_and_pandas_are_usage_errors(run_result, monkeypatch):
    from forgetless.results import to_frame

    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg", "pandas"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(UsageError, match=r"pip install 'forgetless\[report\]'"):
        plots.plot_curves(run_result)
    with pytest.raises(UsageError, match=r"pip install 'forgetless\[report\]'"):
        to_frame(run_result)


def test_modules_import_without_matplotlib_or_pandas():
    code = (
        "import sys; import forgetless, forgetless.plots, forgetless.report, forgetless.results; "
        "assert 'matplotlib' not in sys.modules and 'pandas' not in sys.modules, 'imported eagerly'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_curves_of_joint_training_and_of_one_task(run_result):
    T = 3
    steps = sum(p["steps"] for p in run_result["timing"]["per_task"])
    joint = dict(
        run_result,
        config=dict(run_result["config"], strategy="joint"),
        timing={"per_task": [{"steps": steps}, {"steps": 0}, {"steps": 0}]},
        curves=[c for c in run_result["curves"] if c["step"] < steps],
    )
    ax = plots.plot_curves(joint).axes[0]
    lines = [ln for ln in ax.get_lines() if ln.get_label().startswith("task ")]
    assert len(lines) == T and all(ln.get_xdata()[0] == 0 for ln in lines)  # all trained from the start
    assert not [ln for ln in ax.get_lines() if ln.get_gid() == "boundary"]
    assert [t.get_text() for t in ax.texts] == ["training all tasks at once (joint)"]
    one = dict(
        run_result,
        accuracy_matrix=[run_result["accuracy_matrix"][0][:1]],
        initial_accuracy=run_result["initial_accuracy"][:1],
        timing={"per_task": run_result["timing"]["per_task"][:1]},
        curves=[dict(c, accuracy=c["accuracy"][:1]) for c in run_result["curves"] if c["task"] == 0],
    )
    ax = plots.plot_curves(one).axes[0]
    assert [ln.get_label() for ln in ax.get_lines()] == ["task 1"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["task 1"]


def test_result_object_plots_and_makes_a_frame():
    import forgetless as fl

    r = fl.run(fl.RunConfig(benchmark="permuted-digits", tasks=2, model="mlp:32", epochs=1, eval_every=5))
    fig = r.plot("matrix")
    assert fig.axes and r.plot("curves").axes
    pd = pytest.importorskip("pandas")
    frame = r.to_frame()
    assert isinstance(frame, pd.DataFrame) and len(frame) == 4
    assert frame["accuracy"].tolist() == [v for row in r.accuracy_matrix for v in row]


def test_matrix_plot_of_the_task_aware_matrix(run_result):
    TA = [[0.99, 0.12, 0.45], [0.88, 0.97, 0.34], [0.77, 0.86, 0.95]]
    fig = plots.plot_matrix(dict(run_result, task_aware_accuracy_matrix=TA), key="task_aware_accuracy_matrix")
    ax = fig.axes[0]
    cells = {t.get_gid(): t.get_text() for t in ax.texts}
    assert cells["cell-2-1"] == "86.0" and cells["cell-0-0"] == "99.0"
    assert ax.get_title().startswith("Task aware accuracy matrix (%)")
    with pytest.raises(UsageError, match="no task_aware_accuracy_matrix"):
        plots.plot_matrix(run_result, key="task_aware_accuracy_matrix")


def test_methods_legend_comes_from_the_metric_registry(grid):
    from forgetless.metrics import REGISTRY

    rows, _ = grid
    fig = plots.plot_methods(rows, metrics=("average_accuracy", "forgetting"))
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == [
        f"{REGISTRY['average_accuracy'].label}\n(higher is better)",
        f"{REGISTRY['forgetting'].label}\n(lower is better)",
    ]
