"""Real processes killed with SIGKILL at random moments, then resumed: the result is exactly the
uninterrupted one. A grid (`forgetless compare`) killed mid-way finishes when run again.

Each test stores what it measured (kills, where they landed) with ``record``; set
FORGETLESS_RELIABILITY_RECORD=DIR to keep it (tools/reliability_table.py does, for
docs/reliability.md).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from unittest import mock

import pytest
import torch

import forgetless
from forgetless.checkpoint import CHECKPOINT
from forgetless.config import RunConfig
from forgetless.experiment import compare, run_dir

SRC = str(Path(forgetless.__file__).resolve().parents[1])  # children import this same forgetless
TASKS, EPOCHS = 5, 12  # a whole run lasts ~6 s on an idle core (~4 s of it starting up), ~1.5 s training
RUN = [
    sys.executable,
    "-m",
    "forgetless",
    "run",
    "--benchmark",
    "permuted-digits",
    "--tasks",
    str(TASKS),
    "--model",
    "mlp:256,128",
    "--epochs",
    str(EPOCHS),
    "--seed",
    "3",
    "--quiet",
]
MIN_KILLS, MAX_KILLS = 4, 7  # kill at least 4 times in a row; go on (up to 7) until one lands mid-task
KILL_SEED = 20240611

GRID = [
    "--benchmark",
    "split-digits",
    "--model",
    "mlp:32",
    "--epochs",
    "2",
    "--strategy",
    "naive",
    "--strategy",
    "er",
    "--seed",
    "0",
    "--seed",
    "1",
    "--workers",
    "2",
    "--quiet",
]
COMPARE = [sys.executable, "-m", "forgetless", "compare", *GRID]
GRID_RUNS = 4


def child_env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": SRC + (os.pathsep + path if path else "")}


def record(name: str, data: dict) -> None:
    """Keep a test's measurements as DIR/NAME.json when FORGETLESS_RELIABILITY_RECORD=DIR is set."""
    where = os.environ.get("FORGETLESS_RELIABILITY_RECORD")
    if where:
        Path(where).mkdir(parents=True, exist_ok=True)
        (Path(where) / f"{name}.json").write_text(json.dumps(data, indent=1))


def progress(out: Path) -> int:
    """Tasks finished according to the checkpoint in ``out`` (0 without one). The checkpoint must
    always be readable: it is written atomically, so a kill never leaves half of one."""
    path = out / CHECKPOINT
    if not path.exists():
        return 0
    return torch.load(path, map_location="cpu", weights_only=True)["state"]["done"]


def mtime_ns(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return 0


def where_killed(out: Path, started_ns: int, killed_ns: int, done: int, task_seconds: float) -> str:
    """Where in the run a kill landed, from what the killed process left on disk.

    log.csv is (re)opened when training starts and flushed right before each checkpoint, so an
    older log.csv means the process was still starting up (imports, data, model, checkpoint load,
    first evaluation). Otherwise the kill came between tasks if it fell during the checkpoint
    write (a temporary file is left), after the last task, or within 5 % of a task's time after
    a checkpoint; else it interrupted a task.
    """
    if mtime_ns(out / "log.csv") < started_ns:
        return "startup"
    if any(mtime_ns(p) >= started_ns for p in out.glob(f".{CHECKPOINT}.*.part")) or done == TASKS:
        return "between tasks"
    ck = mtime_ns(out / CHECKPOINT)
    if ck >= started_ns and killed_ns - ck < 0.05 * task_seconds * 1e9:
        return "between tasks"
    return "mid-task"


def same_result(a: dict, b: dict) -> bool:
    return (
        a["accuracy_matrix"] == b["accuracy_matrix"]
        and a["initial_accuracy"] == b["initial_accuracy"]
        and a["metrics"] == b["metrics"]
    )


def test_sigkilled_run_resumes_to_exactly_the_uninterrupted_result(tmp_path):
    env = child_env()
    t0 = time.monotonic()
    whole = subprocess.run(
        RUN + ["--out", str(tmp_path / "whole")], env=env, capture_output=True, text=True, timeout=300
    )
    length = time.monotonic() - t0
    assert whole.returncode == 0, whole.stderr
    expected = json.loads((tmp_path / "whole" / "result.json").read_text())
    timing = expected["timing"]
    work = timing["total_seconds"] - timing["setup_seconds"]  # first evaluation, training, evaluations
    startup = length - work  # interpreter, imports, data, model
    task_seconds = work / TASKS

    rng = random.Random(KILL_SEED)
    kills: list[dict] = []
    series = 0
    out = tmp_path / "killed-0"
    attempt = 0
    while True:
        done = progress(out)
        stop_killing = len(kills) >= MIN_KILLS and (
            any(k["where"] == "mid-task" for k in kills) or len(kills) >= MAX_KILLS
        )
        cmd = RUN + ["--out", str(out)] + (["--resume"] if attempt else [])
        with open(tmp_path / f"stderr-{series}-{attempt}.txt", "w+") as log:
            started_ns, start = time.time_ns(), time.monotonic()
            p = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=log)
            attempt += 1
            try:
                if stop_killing:
                    rc = p.wait(timeout=300)
                    log.seek(0)
                    assert rc == 0, log.read()
                    break
                remaining = startup + (TASKS - done) * task_seconds  # how long this attempt would take
                # a series restarted because runs finished before their kill (the machine got faster
                # than the reference run measured) kills earlier
                at = rng.uniform(0.3, max(0.31, 0.9 * remaining * 0.5**series))
                while p.poll() is None and time.monotonic() - start < at:
                    time.sleep(0.005)
                if p.poll() is None:
                    killed_ns = time.time_ns()
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
                    after = progress(out)
                    assert not (out / "result.json").exists() or after == TASKS
                    kills.append(
                        {
                            "at_seconds": round(at, 3),
                            "tasks_done_before": done,
                            "tasks_done_after": after,
                            "where": where_killed(out, started_ns, killed_ns, after, task_seconds),
                        }
                    )
                    continue
            finally:
                if p.poll() is None:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
            # it finished before its kill
            log.seek(0)
            assert p.returncode == 0, log.read()
        if len(kills) >= MIN_KILLS:
            break  # enough kills in a row: this was the final run
        # too few kills in a row: check this result anyway, then start over in a new directory
        assert same_result(json.loads((out / "result.json").read_text()), expected)
        series += 1
        out, attempt, kills = tmp_path / f"killed-{series}", 0, []
        assert series < 6, "runs kept finishing before their kill"
    got = json.loads((out / "result.json").read_text())
    where = [k["where"] for k in kills]
    summary = {
        "kills": len(kills),
        "mid_task": where.count("mid-task"),
        "between_tasks": where.count("between tasks"),
        "startup": where.count("startup"),
        "run_seconds": round(length, 2),
        "startup_seconds": round(startup, 2),
        "task_seconds": round(task_seconds, 3),
        "series_restarted": series,
        "attempts": attempt,
        "detail": kills,
    }
    record("kill_resume", summary)
    msg = (
        f"{len(kills)} SIGKILLs in a row: {summary['mid_task']} mid-task, {summary['between_tasks']} between "
        f"tasks, {summary['startup']} during startup; detail {kills}"
    )
    assert len(kills) >= MIN_KILLS, msg
    assert got["accuracy_matrix"] == expected["accuracy_matrix"], msg
    assert got["initial_accuracy"] == expected["initial_accuracy"], msg
    assert got["metrics"] == expected["metrics"], msg
    # the per-step log and the accuracy log are the uninterrupted ones too, row for row
    for name in ("log.csv", "accuracy.csv"):
        assert (out / name).read_text() == (tmp_path / "whole" / name).read_text(), (name, msg)


def test_a_kill_right_after_resuming_keeps_the_earlier_log_rows(tmp_path):
    """What a SIGKILL would leave on disk at any moment of a resumed run: the rows up to the
    checkpoint, never an empty log (found by the test above: the log was truncated, then rewritten
    through a 64 KB buffer that only the end of the next task flushed). A torn last row (a kill in
    the middle of a buffer flush) is dropped rather than kept as a bogus step."""
    from forgetless.run import RunLog

    rows = [f"{step},0,0,0.5\n" for step in range(1, 11)]
    for name, head in (("log.csv", "step,task,epoch,loss\n"), ("accuracy.csv", "step,after_task,task,accuracy\n")):
        (tmp_path / name).write_text(head + "".join(rows) + "11,0,0,0.4\n1")  # rows after step 10, torn
    log = RunLog(tmp_path, resume_step=10, tensorboard=False)
    try:
        for name in ("log.csv", "accuracy.csv"):  # nothing flushed yet: exactly what a kill leaves
            assert (tmp_path / name).read_text().splitlines(keepends=True)[1:] == rows, name
        log.step(11, 0, 0, 0.25)
    finally:
        log.close()
    assert (tmp_path / "log.csv").read_text().splitlines()[-2:] == ["10,0,0,0.5", "11,0,0,0.25"]
    (tmp_path / "log.csv").write_text("step,task,epoch,loss\n" + "".join(rows[:3]) + "1")  # torn "1..."
    RunLog(tmp_path, resume_step=10, tensorboard=False).close()
    assert (tmp_path / "log.csv").read_text().splitlines()[1:] == ["1,0,0,0.5", "2,0,0,0.5", "3,0,0,0.5"]


# ---- a grid killed mid-way -------------------------------------------------------------------

_REFERENCE: dict[str, Path] = {}


def reference_grid(tmp_path_factory) -> Path:
    """GRID run once, uninterrupted, in this process with one thread like the workers (shared with
    test_determinism.py; in-process saves starting three interpreters)."""
    if "dir" not in _REFERENCE:
        from forgetless.cli import _grid, build_parser

        out = tmp_path_factory.mktemp("grid-reference")
        threads = torch.get_num_threads()
        try:
            with mock.patch("os.cpu_count", return_value=1):  # the workers' share: 1 thread each
                compare(_grid(build_parser().parse_args(["compare", *GRID])), out, workers=1)
        finally:
            torch.set_num_threads(threads)
        _REFERENCE["dir"] = out
    return _REFERENCE["dir"]


def summary_without_times(out: Path) -> list[dict]:
    return [
        {k: v for k, v in row.items() if k != "train_seconds"} for row in json.loads((out / "summary.json").read_text())
    ]


def grid_configs() -> dict[str, RunConfig]:
    """The grid's configs by run directory name."""
    from forgetless.cli import _grid, build_parser

    grid = _grid(build_parser().parse_args(["compare", *GRID]))
    return {run_dir(Path("."), c).name: c for c in grid.configs()}


def check_run_dirs(out: Path) -> list[dict]:
    """Every run directory of GRID in ``out`` holds one complete result.json of that very run: the
    directory's name is the stamp of the config that was asked for (``experiment.run_dir``), and
    the result's config is that config with defaults filled in (tasks, scenario, parameters).
    Returns the results."""
    configs = grid_configs()
    dirs = sorted(p for p in out.iterdir() if p.is_dir())
    assert [d.name for d in dirs] == sorted(configs), [d.name for d in dirs]
    results = []
    for d in dirs:
        assert len(list(d.glob("result.json"))) == 1, d
        r = json.loads((d / "result.json").read_text())
        asked = configs[d.name].resolved().to_dict()
        got = r["config"]
        assert all(got[k] == v for k, v in asked.items() if v is not None and k != "params"), d
        assert all(got["params"][k] == v for k, v in asked["params"].items()), d
        T = got["tasks"]
        assert len(r["accuracy_matrix"]) == T and all(len(row) == T for row in r["accuracy_matrix"]), d
        results.append(r)
    return results


class KilledGrid(threading.Thread):
    """`forgetless compare` on GRID, its process group SIGKILLed as soon as the first result.json
    appears, then the same command again. Runs in the background from the start of this module
    (the kill/resume test runs meanwhile); the test below checks what it left."""

    def __init__(self, out: Path):
        super().__init__(daemon=True)
        self.out, self.error, self.procs = out, None, []
        self.finished_at_kill = self.partial_at_kill = None
        self.returncode, self.stderr = None, ""

    def start_group(self, stderr) -> subprocess.Popen:
        p = subprocess.Popen(
            COMPARE + ["--out", str(self.out)],
            env=child_env(),
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        self.procs.append(p)
        return p

    def run(self) -> None:
        try:
            p = self.start_group(subprocess.DEVNULL)
            deadline = time.monotonic() + 300
            while p.poll() is None and time.monotonic() < deadline and not list(self.out.glob("*/result.json")):
                time.sleep(0.01)
            with contextlib.suppress(ProcessLookupError):  # it had finished: the test reports how many runs were done
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            dirs = list(self.out.glob("*/"))
            self.finished_at_kill = sum((d / "result.json").exists() for d in dirs)
            self.partial_at_kill = sum((d / CHECKPOINT).exists() and not (d / "result.json").exists() for d in dirs)
            with open(self.out.parent / "again.txt", "w+") as log:
                self.returncode = self.start_group(log).wait(timeout=600)
                log.seek(0)
                self.stderr = log.read()
        except BaseException as e:  # reported by the test
            self.error = e

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:  # (not reaped yet: its group exists)
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


@pytest.fixture(scope="module", autouse=True)
def killed_grid(tmp_path_factory):
    scenario = KilledGrid(tmp_path_factory.mktemp("killed-grid") / "grid")
    scenario.start()
    yield scenario
    scenario.join(timeout=600)
    scenario.stop()


def test_killed_compare_finishes_when_run_again(killed_grid, tmp_path_factory):
    reference = reference_grid(tmp_path_factory)  # while the grid may still be running
    killed_grid.join(timeout=600)
    assert killed_grid.error is None, repr(killed_grid.error)
    assert 1 <= killed_grid.finished_at_kill < GRID_RUNS, killed_grid.finished_at_kill
    assert killed_grid.returncode == 0, killed_grid.stderr
    check_run_dirs(killed_grid.out)
    assert summary_without_times(killed_grid.out) == summary_without_times(reference)
    record(
        "compare_kill",
        {
            "runs": GRID_RUNS,
            "finished_at_kill": killed_grid.finished_at_kill,
            "partial_at_kill": killed_grid.partial_at_kill,
        },
    )
