"""Same seed -> identical results; different seeds -> different ones. Two `forgetless compare`
processes on the same grid and --out share the runs without ever writing one run at once, and a
run another process holds is waited for rather than left out of the summary.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from unittest import mock

import pytest
import torch
from test_kill_resume import (
    COMPARE,
    GRID,
    GRID_RUNS,
    check_run_dirs,
    child_env,
    record,
    reference_grid,
    summary_without_times,
)

import forgetless as fl
from forgetless.cli import _grid, build_parser
from forgetless.experiment import compare, run_dir
from forgetless.run import lock_dir

STRATEGIES = ["naive", "ewc", "si", "er", "lwf"]
pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: no spinning OpenMP threads


def small(strategy: str, seed: int = 11) -> fl.RunConfig:
    return fl.RunConfig(
        benchmark="permuted-digits", tasks=3, model="mlp:64", epochs=1, seed=seed, strategy=strategy, eval_every=10
    )


def outcome(r: fl.Result) -> dict:
    return {
        "accuracy_matrix": r.accuracy_matrix,
        "initial_accuracy": r.initial_accuracy,
        "metrics": r.metrics,
        "curves": r.curves,
    }


# Two compare processes on the same grid and --out, started at once (before the in-process tests
# below, which run meanwhile).
@pytest.fixture(scope="module", autouse=True)
def two_compares(tmp_path_factory):
    out = tmp_path_factory.mktemp("shared-grid")
    cmd = [a for a in COMPARE if a != "--quiet"] + ["--out", str(out)]  # statuses on stderr
    logs = [open(out.parent / f"compare-{i}.txt", "w+") for i in range(2)]  # noqa: SIM115 (open across the yield)
    procs = [
        subprocess.Popen(cmd, env=child_env(), start_new_session=True, stdout=subprocess.DEVNULL, stderr=log)
        for log in logs
    ]
    yield out, procs, logs
    for p in procs:  # only if a test failed before they finished: stop them and their workers
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    for log in logs:
        log.close()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_same_seed_gives_identical_results(strategy):
    first, second = fl.run(small(strategy)), fl.run(small(strategy))
    assert len(first.curves) > 3  # eval_every gave curves
    assert outcome(first) == outcome(second)


def test_different_seeds_give_different_results():
    for strategy in ("naive", "er"):
        assert fl.run(small(strategy, seed=1)).accuracy_matrix != fl.run(small(strategy, seed=2)).accuracy_matrix


def steps_in(log_csv: Path) -> list[int]:
    return [int(line.split(",")[0]) for line in log_csv.read_text().splitlines()[1:]]


def test_two_compares_on_one_grid_never_write_a_run_at_once(two_compares, tmp_path_factory):
    out, procs, logs = two_compares
    reference = reference_grid(tmp_path_factory)  # in this process, while the two run
    codes = [p.wait(timeout=600) for p in procs]
    texts = []
    for log in logs:
        log.seek(0)
        texts.append(log.read())
    assert codes == [0, 0], texts
    results = check_run_dirs(out)
    assert len(results) == GRID_RUNS
    for d in (p for p in out.iterdir() if p.is_dir()):
        r = json.loads((d / "result.json").read_text())
        n = sum(t["steps"] for t in r["timing"]["per_task"])
        assert steps_in(d / "log.csv") == list(range(1, n + 1)), d.name  # one writer: no step twice
    assert summary_without_times(out) == summary_without_times(reference)
    statuses = [
        line.strip().split(":")[0]
        for text in texts
        for line in text.splitlines()
        if line.startswith("  ") and not line.startswith("  waiting")
    ]
    counts = {s: statuses.count(s) for s in sorted(set(statuses))}
    record("concurrent_compare", {"processes": 2, "workers_each": 2, "runs": GRID_RUNS, "statuses": counts})


# ---- a run another process holds ---------------------------------------------------------------


def _compare_in_thread(out: Path, messages: list[str]):
    grid = _grid(build_parser().parse_args(["compare", *GRID]))
    box: dict = {}

    def target():
        try:
            box["rows"] = compare(grid, out, workers=1, say=messages.append)
        except BaseException as e:  # reported by the test
            box["error"] = e

    t = threading.Thread(target=target)
    t.start()
    return t, box, grid


def _wait_for(messages: list[str], text: str, thread: threading.Thread, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not any(text in m for m in messages) and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert any(text in m for m in messages), messages


@pytest.mark.parametrize("other", ["finishes it", "dies"])
def test_compare_waits_for_a_run_another_process_holds(tmp_path, tmp_path_factory, other):
    reference = reference_grid(tmp_path_factory)
    grid = _grid(build_parser().parse_args(["compare", *GRID]))
    held = run_dir(tmp_path, grid.configs()[0])
    held.mkdir(parents=True)
    lock = lock_dir(held)  # "another process" is writing this run
    messages: list[str] = []
    threads = torch.get_num_threads()
    try:
        with mock.patch("os.cpu_count", return_value=1):
            thread, box, _ = _compare_in_thread(tmp_path, messages)
            _wait_for(messages, f"waiting for another process to finish {held.name}", thread)
            if other == "finishes it":
                (held / "result.json").write_text((reference / held.name / "result.json").read_text())
            lock.close()
            thread.join(timeout=300)
    finally:
        lock.close()
        torch.set_num_threads(threads)
    assert "error" not in box, box.get("error")
    expected = "done by another process" if other == "finishes it" else "done"
    assert f"  {expected}: {held.name}" in messages, messages
    check_run_dirs(tmp_path)
    assert summary_without_times(tmp_path) == summary_without_times(reference)
