"""forgetless report: one self-contained HTML page of a run or a comparison, checked as text and
as Chromium renders it."""

import argparse
import base64
import importlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import forgetless as fl
from forgetless.cli import cmd_report
from forgetless.errors import UsageError
from forgetless.report import write_report

try:
    importlib.import_module("matplotlib")
except ImportError:
    if os.environ.get("CI"):
        pytest.fail("CI must install matplotlib (it is in forgetless[test] and forgetless[report])", pytrace=False)
    pytest.skip("matplotlib is not installed: pip install 'forgetless[report]'", allow_module_level=True)

SMALL = dict(benchmark="permuted-digits", tasks=3, model="mlp:32", epochs=1)
CHROMIUM = Path("/usr/bin/chromium")
IMG = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" width="(\d+)" height="(\d+)"')


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    fl.run(fl.RunConfig(**SMALL, eval_every=5), out=out)
    return out


@pytest.fixture(scope="module")
def grid_dir(tmp_path_factory):
    import torch

    from forgetless.experiment import Grid, compare

    out = tmp_path_factory.mktemp("grid")
    threads = torch.get_num_threads()
    try:
        with pytest.MonkeyPatch.context() as mp:  # one torch thread per run: the tests share 2 cores
            mp.setattr(os, "cpu_count", lambda: 1)
            compare(
                Grid(base=dict(SMALL, eval_every=10), axes={"strategy": ["naive", "cumulative"], "seed": [0, 1]}), out
            )
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.fixture(scope="module")
def grid_report(grid_dir, tmp_path_factory):
    """The grid's report written elsewhere, with its figures also saved as files: (page, figures dir)."""
    figs = tmp_path_factory.mktemp("figs")
    path = write_report(grid_dir, figs.parent / "grid-report.html", figures=figs)
    assert path == figs.parent / "grid-report.html"
    return path, figs


def images(page: str) -> list[tuple[np.ndarray, int, int]]:
    """Every embedded PNG decoded, with the width and height the page gives it."""
    import matplotlib.image as mpimg

    return [
        (mpimg.imread(io.BytesIO(base64.b64decode(data)), format="png"), int(w), int(h))
        for data, w, h in IMG.findall(page)
    ]


def assert_self_contained(page: str):
    low = page.lower()
    assert "<script" not in low
    for attr in ("src", "href", "srcset", "action", "poster", "data"):
        assert not re.search(rf'\b{attr}\s*=\s*["\']?\s*(https?:)?//', low), f"{attr}= points outside the page"
    assert "@import" not in low and not re.search(r"url\(\s*['\"]?\s*(https?:)?//", low)
    assert "<link" not in low and "<iframe" not in low
    assert all(src.startswith("data:image/png;base64,") for src in re.findall(r'<img src="([^"]*)"', page))


def test_run_report(run_dir):
    r = json.loads((run_dir / "result.json").read_text())
    path = write_report(run_dir)
    assert path == run_dir / "report.html"
    page = path.read_text()
    assert_self_contained(page)
    m = r["metrics"]
    assert f"{100 * m['average_accuracy']:.2f} %" in page  # e.g. 61.76 %, as `forgetless run` prints it
    for key in ("bwt", "fwt", "forgetting"):
        assert f"{100 * m[key]:.2f} %" in page
    for row in r["accuracy_matrix"]:  # the accuracy matrix table
        assert all(f"<td>{100 * v:.1f}</td>" in page for v in row)
    assert "<title>forgetless: naive on permuted-digits</title>" in page
    for text in (
        "Accuracy matrix",
        "Configuration",
        "Versions",
        "Tasks and timing",
        r["versions"]["torch"],
        "digits permutation 1",
        "mlp:32",
    ):
        assert text in page
    figs = images(page)
    assert len(figs) == 3 and page.count("<figcaption>") == 3
    for pixels, w, h in figs:
        assert pixels.shape[:2] == (h, w) and w >= 400 and h >= 300
        assert pixels[..., :3].std() > 0.05  # not a blank image


def test_single_task_run_report(run_dir, tmp_path):
    r = json.loads((run_dir / "result.json").read_text())
    R = [r["accuracy_matrix"][0][:1]]
    one = dict(
        r,
        accuracy_matrix=R,
        initial_accuracy=r["initial_accuracy"][:1],
        metrics=fl.metrics.all_metrics(R, r["initial_accuracy"][:1]),
        timing=dict(r["timing"], per_task=r["timing"]["per_task"][:1]),
        curves=[dict(c, accuracy=c["accuracy"][:1]) for c in r["curves"] if c["task"] == 0],
    )
    (tmp_path / "result.json").write_text(json.dumps(one))
    page = write_report(tmp_path).read_text()
    assert f"{100 * R[0][0]:.2f} %" in page
    assert 'id="metric-bwt"' not in page and "<td>n/a</td>" in page  # BWT needs two tasks
    assert len(images(page)) == 2  # no average-accuracy curve for one task


def test_grid_report(grid_dir, grid_report):
    rows = json.loads((grid_dir / "summary.json").read_text())
    path, fig_dir = grid_report
    page = path.read_text()
    assert_self_contained(page)
    for row in rows:  # the summary table: mean ± std in percent
        for metric in ("average_accuracy", "bwt", "forgetting"):
            cell = row[metric]
            assert f"{100 * cell['mean']:.2f} ± {100 * cell['std']:.2f}" in page
        assert f"<h3>{row['label']}</h3>" in page
    runs = sorted(p.name for p in grid_dir.iterdir() if (p / "result.json").exists())
    assert len(runs) == 4 and all(name in page for name in runs)
    figs = images(page)
    assert len(figs) == 2 + 2 * 2  # methods, A_k, and per method a matrix and curves
    assert all(p.shape[:2] == (h, w) for p, w, h in figs)
    saved = sorted(p.name for p in fig_dir.iterdir())
    assert len(saved) == 12 and "methods.png" in saved and "methods.svg" in saved
    assert all((fig_dir / n).stat().st_size > 1000 for n in saved)


def test_report_of_a_grid_without_run_dirs(grid_dir, tmp_path):
    shutil.copy(grid_dir / "summary.json", tmp_path / "summary.json")
    page = write_report(tmp_path).read_text()
    assert "only the summary is shown" in page and len(images(page)) == 1


def test_cmd_report_prints_the_path(run_dir, tmp_path, capsys):
    out = tmp_path / "r.html"
    assert cmd_report(argparse.Namespace(dir=str(run_dir), out=str(out))) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert out.read_text().startswith("<!DOCTYPE html>")


def test_bad_directories_are_one_line_usage_errors(tmp_path):
    with pytest.raises(UsageError) as e:
        write_report(tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and "has no result.json or summary.json" in msg and "forgetless run --out" in msg
    with pytest.raises(UsageError, match="is not a directory"):
        write_report(tmp_path / "missing")
    (tmp_path / "result.json").write_text("{not json")
    with pytest.raises(UsageError, match="not valid JSON"):
        write_report(tmp_path)


def test_report_command_line(run_dir, tmp_path, capsys):
    """`forgetless report DIR`: the sub-command lives in cli.py, the only module with argparse."""
    import forgetless.report as report
    from forgetless import cli

    assert not hasattr(report, "add_parser") and "argparse" not in Path(report.__file__).read_text()
    out = tmp_path / "cli.html"
    done = subprocess.run(
        [sys.executable, "-m", "forgetless", "report", str(run_dir), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(out) and out.stat().st_size > 10_000
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["report", str(empty)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has no result.json or summary.json" in err


def test_grid_report_takes_each_rows_runs_from_the_summary(grid_dir, tmp_path):
    """The rows list their run directories; the report shows those runs and no others."""
    rows = json.loads((grid_dir / "summary.json").read_text())
    assert all(len(r["runs"]) == 2 and all((grid_dir / d / "result.json").exists() for d in r["runs"]) for r in rows)
    copy = tmp_path / "grid"
    shutil.copytree(grid_dir, copy, ignore=shutil.ignore_patterns("report.html", "*.pt"))
    kept, dropped = rows[0]["runs"]
    rows[0]["runs"], rows[0]["n"] = [kept], 1
    (copy / "summary.json").write_text(json.dumps(rows))
    page = write_report(copy).read_text()
    assert kept in page and dropped not in page  # the dropped run is not matched back by its config
    assert len(images(page)) == 2 + 2 * 2


def test_run_report_shows_the_task_aware_matrix_next_to_the_task_agnostic_one(run_dir, tmp_path, capsys):
    from forgetless.cli import format_metrics

    r = json.loads((run_dir / "result.json").read_text())
    TA = [[0.991, 0.123, 0.456], [0.882, 0.977, 0.345], [0.771, 0.866, 0.955]]
    (tmp_path / "result.json").write_text(json.dumps(dict(r, task_aware_accuracy_matrix=TA)))
    page = write_report(tmp_path).read_text()
    assert_self_contained(page)
    assert "Task-aware accuracy matrix (%): each task's classes alone compete" in page
    assert "task-agnostic" in page and 'id="fig-matrix-task-aware"' in page
    for row in TA:
        assert all(f"<td>{100 * v:.1f}</td>" in page for v in row)
    assert f"<td>{100 * (0.771 + 0.866 + 0.955) / 3:.1f}</td>" in page  # its A_k column
    assert len(images(page)) == 4  # curves, two matrices, A_k
    plain = write_report(run_dir, tmp_path / "plain.html").read_text()
    assert "Task-aware" not in plain and len(images(plain)) == 3
    assert format_metrics(r["metrics"]) == format_metrics(json.loads((tmp_path / "result.json").read_text())["metrics"])


def test_grid_report_shows_joint_references_and_intransigence_per_task(tmp_path):
    from forgetless.experiment import Grid, compare

    SPLIT = dict(benchmark="split-digits", tasks=2, model="mlp:32", iterations=10, seed=0)
    rows = compare(Grid(base=SPLIT, axes={"strategy": ["naive"]}), tmp_path, with_joint=True, threads=1)
    page = write_report(tmp_path).read_text()
    naive = next(r for r in rows if r["strategy"] == "naive")
    ik = naive["intransigence_per_task"]
    assert "Intransigence per task" in page and "Joint references" in page
    assert all(f"{100 * mu:.2f} ± {100 * sd:.2f}" in page for mu, sd in zip(ik["mean"], ik["std"]))
    assert all(d in page for d in naive["per_run"][0]["references"])
    assert f"{100 * naive['intransigence']['mean']:.2f} ± " in page


def chromium(*args, profile: Path) -> subprocess.CompletedProcess:
    cmd = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        f"--user-data-dir={profile}",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_report_renders_in_chromium(grid_report, tmp_path):
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail("CI must install Chromium (apt-get install -y chromium)", pytrace=False)
        pytest.skip("headless Chromium is not installed (apt-get install -y chromium)")
    import matplotlib.image as mpimg

    page_path = grid_report[0]
    page = page_path.read_text()
    url = page_path.resolve().as_uri()
    shot = tmp_path / "shot.png"
    done = chromium(f"--screenshot={shot}", "--window-size=1200,3000", url, profile=tmp_path / "profile")
    assert shot.exists(), done.stderr[-2000:]
    pixels = mpimg.imread(shot)[..., :3]
    assert pixels.shape[:2] == (3000, 1200)
    assert pixels.std() > 0.1  # not blank
    # content all the way down: every 300-pixel band has text or figures in it
    bands = pixels.reshape(10, 300, 1200, 3)
    assert all(b.std() > 0.03 for b in bands), [round(float(b.std()), 3) for b in bands]
    # the figures were drawn: the page's own colours are greys, so saturated pixels come from the
    # embedded PNGs; they appear across the page, and in the exact Okabe-Ito bar colours
    rgb = np.round(pixels * 255).astype(int)
    saturated = (rgb.max(-1) - rgb.min(-1)) > 80
    rows = np.flatnonzero(saturated.any(axis=1))
    assert len(rows) > 1000 and rows.min() < 1000 and rows.max() > 2500

    def count(hex_colour):
        target = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)])
        return int((np.abs(rgb - target).max(-1) <= 3).sum())

    assert count("#0072B2") > 2000 and count("#D55E00") > 500 and count("#E69F00") > 500
    # the browser parsed the page: the DOM it built has the captions, the table and every image
    dom = chromium("--dump-dom", url, profile=tmp_path / "profile").stdout
    assert "Methods compared." in dom and "± 1 standard deviation over seeds" in dom
    assert dom.count("<img") == len(images(page)) == 6
    assert "<table" in dom and "forgetless comparison: permuted-digits" in dom
    for pixels_img, w, h in images(page):  # each embedded image decodes to the size the page gives it
        assert pixels_img.shape[:2] == (h, w)


def test_fscil_reports_draw_the_accuracy_after_each_session(tmp_path, run_dir):
    from forgetless import plots
    from forgetless.experiment import Grid, compare

    FSCIL = dict(
        benchmark="split-digits", scenario="fscil", base_classes=6, ways=2, shots=5, model="mlp:32", epochs=2, seed=0
    )
    rows = compare(Grid(base=FSCIL, axes={"strategy": ["naive", "prototype"]}), tmp_path / "grid", threads=1)
    figs = tmp_path / "figs"
    page = write_report(tmp_path / "grid", tmp_path / "grid.html", figures=figs).read_text()
    assert "Accuracy after each session" in page and (figs / "session_accuracy.png").exists()
    assert {r["strategy"] for r in rows} == {"naive", "prototype"}
    # the plotted line is 100 x the recorded session accuracy
    run_dirs = sorted((tmp_path / "grid").glob("*/result.json"))
    results = [json.loads(p.read_text()) for p in run_dirs]
    fig = plots.plot_session_accuracy({r["config"]["strategy"]: [r] for r in results})
    for line, r in zip(fig.axes[0].lines, results):
        assert np.allclose(line.get_ydata(), 100 * np.array(r["metrics"]["session_accuracy"]))
    one = write_report(run_dirs[0].parent).read_text()
    assert "Accuracy after each session" in one
    assert "Accuracy after each session" not in write_report(run_dir, tmp_path / "plain.html").read_text()
    with pytest.raises(UsageError, match="not an fscil run"):
        plots.plot_session_accuracy({"x": [json.loads((run_dir / "result.json").read_text())]})
