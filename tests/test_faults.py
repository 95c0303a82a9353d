"""Faults (issue 18): nothing forgetless did not write is overwritten; a full disk on every write path
ends in one line and leaves no temporary file; checkpoints are verified by checksum; SIGTERM stops
a run or a grid like Ctrl-C; and a grid of many tiny runs survives workers killed at random, a full
disk and a corrupt checkpoint with every result equal to an undisturbed run's.

The full-disk tests inject ENOSPC into the file objects forgetless writes through, and (as root, when
``mount`` is permitted: CI) also fill a real 2 MB tmpfs. Runs use the CPU (tiny MLPs on sklearn
digits; the CLI has no device fixture to honour here).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import forgetless
from forgetless.checkpoint import CHECKPOINT, load_checkpoint, sidecar
from forgetless.cli import main
from forgetless.config import RunConfig
from forgetless.data import cache
from forgetless.errors import UsageError
from forgetless.experiment import BUG_REPORT, Grid, compare, run_dir, summarize
from forgetless.run import run

SRC = str(Path(forgetless.__file__).resolve().parents[1])
TINY = ["--benchmark", "split-digits", "--tasks", "2", "--iterations", "5", "--model", "mlp:16", "--quiet"]


def tiny(**kw) -> RunConfig:
    return RunConfig(**{**dict(benchmark="split-digits", tasks=2, iterations=5, model="mlp:16"), **kw})


def one_line_error(capsys, *args) -> str:
    assert main(list(map(str, args))) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("forgetless: error: "), lines
    return lines[0]


def temp_files(root: Path) -> list[Path]:
    return [p for p in Path(root).rglob("*") if p.name.endswith(".part")]


def child_env(**extra) -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": SRC + (os.pathsep + path if path else ""), **extra}


# ---- 1. never overwrite what forgetless did not write -------------------------------------------


def test_run_refuses_files_it_did_not_write(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "log.csv").write_text("my own notes\n")
    err = one_line_error(capsys, "run", *TINY, "--out", out)
    assert "log.csv exists and was not written by forgetless" in err and "--overwrite" in err
    assert (out / "log.csv").read_text() == "my own notes\n" and not (out / "result.json").exists()
    (out / "result.json").write_text('{"accuracy_matrix": [[1.0]]}')  # not a forgetless result either
    err = one_line_error(capsys, "run", *TINY, "--out", out)
    assert "result.json exists and was not written by forgetless" in err
    assert main(["run", *TINY, "--out", str(out), "--overwrite"]) == 0  # deliberately
    manifest = json.loads((out / cache.MANIFEST).read_text())
    assert {"result.json", CHECKPOINT, "log.csv"} <= set(manifest["files"])
    assert main(["run", *TINY, "--out", str(out)]) == 0  # its own files: the same config runs again


def test_compare_refuses_foreign_files_and_another_grids_summary(tmp_path, capsys):
    out = tmp_path / "grid"
    out.mkdir()
    (out / "summary.csv").write_text("a spreadsheet of mine\n")
    grid = [*TINY, "--strategy", "naive", "--seed", "0"]
    err = one_line_error(capsys, "compare", *grid, "--out", out)
    assert "summary.csv exists and was not written by forgetless" in err
    assert (out / "summary.csv").read_text() == "a spreadsheet of mine\n"
    assert main(["compare", *grid, "--out", str(out), "--overwrite"]) == 0
    first = (out / "summary.json").read_text()
    assert main(["compare", *grid, "--seed", "1", "--out", str(out)]) == 0  # an extension: more seeds
    capsys.readouterr()
    other = [*TINY, "--strategy", "er", "--seed", "0"]
    err = one_line_error(capsys, "compare", *other, "--out", out)
    assert "holds the summary of another grid" in err and "--overwrite" in err
    assert json.loads((out / "summary.json").read_text())[0]["strategy"] == "naive"
    assert main(["compare", *other, "--out", str(out), "--overwrite"]) == 0
    assert json.loads((out / "summary.json").read_text())[0]["strategy"] == "er" and first


def test_report_refuses_files_it_did_not_write(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", *TINY, "--out", str(out)]) == 0
    capsys.readouterr()
    mine = tmp_path / "page.html"
    mine.write_text("<html>my page</html>")
    err = one_line_error(capsys, "report", out, "--out", mine)
    assert "page.html exists and was not written by forgetless" in err and mine.read_text() == "<html>my page</html>"
    assert main(["report", str(out)]) == 0 and main(["report", str(out)]) == 0  # its own page: replaced
    figs = tmp_path / "figs"
    figs.mkdir()
    (figs / "matrix.png").write_bytes(b"my picture")
    err = one_line_error(capsys, "report", out, "--out", tmp_path / "r.html", "--figures", figs)
    assert "matrix.png exists and was not written by forgetless" in err
    assert (figs / "matrix.png").read_bytes() == b"my picture"
    assert main(["report", str(out), "--out", str(tmp_path / "r.html"), "--figures", str(figs), "--overwrite"]) == 0
    assert main(["report", str(out), "--out", str(tmp_path / "r.html"), "--figures", str(figs)]) == 0  # now its own
    assert main(["report", str(out), "--out", str(mine), "--overwrite"]) == 0


# ---- 2. a full disk on every write path -----------------------------------------------------------


class FullDisk:
    """ENOSPC from the n-th write to a file whose name contains ``name`` (writes through forgetless's
    atomic temporary files and through the append-mode logs of a run)."""

    def __init__(self, monkeypatch, name: str, after: int = 0):
        self.name, self.after, self.hits = name, after, 0
        real_tmp = cache.tempfile.NamedTemporaryFile
        fault = self

        class Wrapped:
            def __init__(self, f, target):
                self._f, self._target = f, target

            def write(self, data):
                fault.maybe_fail(self._target)
                return self._f.write(data)

            def __getattr__(self, a):
                return getattr(self._f, a)

            def __enter__(self):
                self._f.__enter__()
                return self

            def __exit__(self, *exc):
                return self._f.__exit__(*exc)

        def tmp_file(*args, **kw):
            f = real_tmp(*args, **kw)
            return Wrapped(f, kw.get("prefix", ""))

        monkeypatch.setattr(cache.tempfile, "NamedTemporaryFile", tmp_file)
        import builtins

        run_module = sys.modules["forgetless.run"]  # (forgetless.run is also the function)
        real_open = builtins.open

        def opener(path, mode="r", *a, **kw):
            f = real_open(path, mode, *a, **kw)
            return Wrapped(f, Path(path).name) if "a" in mode else f

        monkeypatch.setattr(run_module, "open", opener, raising=False)

    def maybe_fail(self, target: str):
        if target.strip(".") == self.name:
            self.hits += 1
            if self.hits > self.after:
                raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize(
    "name, after, resumes",
    [
        ("checkpoint.pt", 0, "there is no checkpoint yet"),
        ("checkpoint.pt", 1, "after task 1 of 2"),  # the second task's checkpoint
        ("checkpoint.pt.sha256", 2, "after task 1 of 2"),  # (written twice per checkpoint)
        ("result.json", 0, "after task 2 of 2"),
        ("log.csv", 0, "there is no checkpoint yet"),  # its header, rewritten atomically at the start
        ("accuracy.csv", 1, "there is no checkpoint yet"),  # its rows (append mode), after task 1
    ],
)
def test_full_disk_during_a_run_is_one_line_and_resumes(name, after, resumes, tmp_path, capsys, monkeypatch):
    reference = run(tiny())
    out = tmp_path / "run"
    fault = FullDisk(monkeypatch, name, after)
    err = one_line_error(capsys, "run", *TINY, "--out", out)
    assert fault.hits > after
    assert "no space left on device while writing" in err and (f"/{name};" in err or f"/{name} (" in err), err
    assert "free" in err and "--resume" in err and resumes in err, err
    assert temp_files(tmp_path) == []
    monkeypatch.undo()
    assert main(["run", *TINY, "--out", str(out), "--resume"]) == 0
    assert json.loads((out / "result.json").read_text())["accuracy_matrix"] == reference.accuracy_matrix


def test_full_disk_in_the_tensorboard_writer_thread_is_one_line(tmp_path, capsys, monkeypatch):
    """TensorBoard writes events from a thread of its own: its ENOSPC becomes the same one line."""
    gfile = pytest.importorskip("tensorboard.compat.tensorflow_stub.io.gfile")
    real = gfile.io.open

    def full(name, mode="r", *a, **k):
        if "tfevents" in str(name) and ("a" in mode or "w" in mode):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(name, mode, *a, **k)

    monkeypatch.setattr(gfile.io, "open", full)
    err = one_line_error(capsys, "run", *TINY, "--out", tmp_path / "run")
    assert "no space left on device while writing" in err and "tensorboard" in err and "--resume" in err
    assert temp_files(tmp_path) == []


@pytest.mark.parametrize("name", ["summary.json", "summary.csv"])
def test_full_disk_writing_a_summary(name, tmp_path, capsys, monkeypatch):
    FullDisk(monkeypatch, name)
    err = one_line_error(capsys, "compare", *TINY, "--strategy", "naive", "--out", tmp_path / "g")
    assert f"while writing {tmp_path / 'g' / name}" in err and "free" in err
    assert temp_files(tmp_path) == []


@pytest.mark.parametrize("name", ["report.html", "matrix.png"])
def test_full_disk_writing_a_report_or_a_figure(name, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    assert main(["run", *TINY, "--out", str(out)]) == 0
    capsys.readouterr()
    FullDisk(monkeypatch, name)
    err = one_line_error(capsys, "report", out, "--figures", tmp_path / "figs")
    assert name in err and "no space left on device" in err and "needs about" in err
    assert temp_files(tmp_path) == []


def test_full_disk_in_the_data_cache_and_downloads(tmp_path, monkeypatch):
    fault = FullDisk(monkeypatch, "blob.bin")
    with pytest.raises(cache.DiskFull, match=r"while writing .*blob\.bin; it needs about 3.0 kB free"):
        cache.atomic_write_bytes(tmp_path / "blob.bin", b"x" * 3000)
    assert fault.hits == 1 and not (tmp_path / "blob.bin").exists() and temp_files(tmp_path) == []
    source = tmp_path / "served"
    source.mkdir()
    (source / "blob.gz").write_bytes(b"y" * 5000)
    url = (source / "blob.gz").as_uri()
    FullDisk(monkeypatch, "blob.gz")
    with pytest.raises(cache.DiskFull, match=r"while writing .*dl/blob\.gz; it needs about 5.0 kB free"):
        cache.fetch("blob.gz", [url, url], cache.sha256_file(source / "blob.gz"), tmp_path / "dl", progress=False)
    assert not (tmp_path / "dl" / "blob.gz").exists() and temp_files(tmp_path) == []


def test_disk_quota_is_named_too(tmp_path, monkeypatch):
    def edquot(*a, **k):
        raise OSError(errno.EDQUOT, "Disk quota exceeded")

    monkeypatch.setattr(cache.os, "fsync", edquot)
    with pytest.raises(UsageError, match="disk quota exceeded while writing"):
        cache.atomic_write_text(tmp_path / "x.txt", "hello")
    assert temp_files(tmp_path) == []


@pytest.fixture
def small_tmpfs(tmp_path):
    """A real 2 MB tmpfs (root and mount needed: CI; skipped elsewhere)."""
    where = tmp_path / "tmpfs"
    where.mkdir()
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(where)], capture_output=True)
    if p.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({p.stderr.decode().strip() or 'not root'})")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_real_full_disk_ends_in_one_line_and_the_run_resumes(small_tmpfs, tmp_path, capsys):
    args = [
        "run",
        "--benchmark",
        "permuted-digits",
        "--tasks",
        "3",
        "--iterations",
        "5",
        "--model",
        "mlp:256",
        "--quiet",
    ]
    assert main([*args, "--out", str(tmp_path / "ref")]) == 0
    reference = json.loads((tmp_path / "ref" / "result.json").read_text())
    size = (tmp_path / "ref" / CHECKPOINT).stat().st_size
    free = os.statvfs(small_tmpfs).f_bavail * os.statvfs(small_tmpfs).f_frsize
    ballast = small_tmpfs / "ballast"
    ballast.write_bytes(b"\0" * (free - int(1.6 * size) - 64 * 1024))  # room for one checkpoint, not two
    out = small_tmpfs / "run"
    err = one_line_error(capsys, *args, "--out", out)
    assert "no space left on device while writing" in err and "--resume" in err, err
    assert "after task 1 of 3" in err, err
    assert temp_files(small_tmpfs) == []
    ballast.unlink()
    assert main([*args, "--out", str(out), "--resume"]) == 0
    assert json.loads((out / "result.json").read_text())["accuracy_matrix"] == reference["accuracy_matrix"]


# ---- 4. checkpoint integrity ------------------------------------------------------------------------


def test_a_flipped_byte_is_caught_by_the_checksum_and_the_run_restarts(tmp_path, capsys):
    out = tmp_path / "run"
    full = run(tiny(benchmark="permuted-digits", tasks=3), out=out)
    path = out / CHECKPOINT
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    assert load_checkpoint(path) is None
    err = capsys.readouterr().err
    assert "SHA-256 does not match checkpoint.pt.sha256" in err and "restarts from task 1" in err
    (out / "result.json").unlink()
    again = run(tiny(benchmark="permuted-digits", tasks=3), out=out, resume=True)
    assert again.accuracy_matrix == full.accuracy_matrix


def test_the_sidecar_keeps_the_checkpoint_on_disk_valid_at_every_moment(tmp_path, monkeypatch):
    """Killed between the sidecar (listing the new and the current hash) and the checkpoint: the
    current checkpoint still loads. A checkpoint forgetless wrote but whose sidecar is gone does not."""
    out = tmp_path / "run"
    run(tiny(tasks=2), out=out)
    path = out / CHECKPOINT
    before = path.read_bytes()
    import forgetless.checkpoint as ck

    def killed(p, data):  # the checkpoint write never happens
        raise KeyboardInterrupt

    monkeypatch.setattr(ck, "atomic_write_bytes", killed)
    with pytest.raises(KeyboardInterrupt):
        ck.save_checkpoint(path, {"state": {"done": 9}})
    assert len(sidecar(path).read_text().split()) == 3  # two hashes and the name
    assert path.read_bytes() == before and load_checkpoint(path, quiet=True)["state"]["done"] == 2
    sidecar(path).unlink()
    assert load_checkpoint(path, quiet=True) is None


def test_a_checkpoint_from_before_checksums_still_loads(tmp_path):
    import torch

    torch.save({"state": {"done": 1}}, tmp_path / CHECKPOINT)
    assert load_checkpoint(tmp_path / CHECKPOINT) == {"state": {"done": 1}}


# ---- 4. SIGTERM behaves like SIGINT --------------------------------------------------------------


def _wait_for(predicate, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_sigterm_stops_a_run_cleanly_and_it_resumes_identically(tmp_path):
    args = ["--benchmark", "permuted-digits", "--tasks", "4", "--epochs", "3", "--model", "mlp:64", "--quiet"]
    reference = run(RunConfig(benchmark="permuted-digits", tasks=4, epochs=3, model="mlp:64"))
    out = tmp_path / "run"
    p = subprocess.Popen(
        [sys.executable, "-m", "forgetless", "run", *args, "--out", str(out)],
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert _wait_for(lambda: (out / CHECKPOINT).exists() or p.poll() is not None)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    if p.returncode == 0:
        pytest.skip("the run finished before SIGTERM arrived")
    assert p.returncode == 130 and "Traceback" not in err and "interrupted" in err, err
    assert temp_files(out) == []
    p = subprocess.run(
        [sys.executable, "-m", "forgetless", "run", *args, "--out", str(out), "--resume"],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr
    assert json.loads((out / "result.json").read_text())["accuracy_matrix"] == reference.accuracy_matrix


def lock_holders(root: Path) -> dict[int, Path]:
    """{pid: run directory} of the processes holding a ``.lock`` under ``root`` open (Linux /proc)."""
    found = {}
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            for fd in fd_dir.iterdir():
                target = os.readlink(fd)
                if target.endswith("/.lock") and target.startswith(str(root)):
                    found[int(fd_dir.parent.name)] = Path(target).parent
        except OSError:
            continue
    return found


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs Linux /proc")
def test_sigterm_stops_a_compare_and_its_workers_cleanly(tmp_path):
    grid = [
        "--benchmark",
        "permuted-digits",
        "--tasks",
        "3",
        "--epochs",
        "2",
        "--model",
        "mlp:64",
        "--strategy",
        "naive",
        "--strategy",
        "ewc",
        "--seed",
        "0",
        "--seed",
        "1",
        "--workers",
        "2",
        "--quiet",
    ]
    out = tmp_path / "grid"
    p = subprocess.Popen(
        [sys.executable, "-m", "forgetless", "compare", *grid, "--out", str(out)],
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert _wait_for(lambda: lock_holders(out) or p.poll() is not None)
    workers = set(lock_holders(out))
    p.send_signal(signal.SIGTERM)
    t = time.monotonic()
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130 and "Traceback" not in err, err
    assert time.monotonic() - t < 30
    assert _wait_for(lambda: not (workers & set(lock_holders(out))), 30)  # every worker has stopped
    assert temp_files(out) == []
    p = subprocess.run(
        [sys.executable, "-m", "forgetless", "compare", *grid, "--out", str(out)],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert p.returncode == 0, p.stderr
    assert len(json.loads((out / "summary.json").read_text())) == 2


# ---- 5. faults in bulk ---------------------------------------------------------------------------

BULK_STRATEGIES = ["er", "agem", "ewc", "si", "lwf", "der"]
BULK_BENCHMARKS = ["permuted-digits", "split-digits"]
BULK_SEEDS = [0, 1, 2, 3, 4]
BULK_BASE = dict(tasks=2, iterations=40, model="mlp:16", batch_size=32)
MIN_KILLS = 30
MAX_PASSES = 8
KILL_SEED = 18


def same_result(a: dict, b: dict) -> bool:
    return (
        a["accuracy_matrix"] == b["accuracy_matrix"]
        and a["initial_accuracy"] == b["initial_accuracy"]
        and a["metrics"] == b["metrics"]
    )


def without_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "train_seconds"} for r in rows]


@pytest.fixture
def grid_disk(tmp_path):
    """A 64 MB tmpfs for the grid (so that it can be filled for real), or a plain folder when mounting
    is not permitted (then the full disk is not injected, and the record says so)."""
    where = tmp_path / "disk"
    where.mkdir()
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(where)], capture_output=True)
    try:
        yield where, p.returncode == 0
    finally:
        if p.returncode == 0:
            subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="finds the workers through Linux /proc")
def test_a_grid_survives_kills_a_full_disk_and_a_corrupt_checkpoint(grid_disk, tmp_path):
    import torch

    disk, can_fill = grid_disk
    out = disk / "grid"
    grid = Grid(
        base=dict(BULK_BASE), axes={"benchmark": BULK_BENCHMARKS, "strategy": BULK_STRATEGIES, "seed": BULK_SEEDS}
    )
    configs = grid.configs()
    assert len(configs) >= 60
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # (as every worker: the same arithmetic, so the same bits)
    try:
        reference = {run_dir(out, c).name: run(c).to_dict() for c in configs}  # undisturbed, in memory
    finally:
        torch.set_num_threads(threads)

    rng = random.Random(KILL_SEED)
    stats = {
        "runs": len(configs),
        "kills": 0,
        "sigkill": 0,
        "sigterm": 0,
        "disk_full": 0,
        "corrupted": 0,
        "runs_failed_by_disk_full": 0,
        "passes": 0,
    }
    outcome: dict = {}

    def grid_pass():
        try:
            outcome["rows"] = compare(grid, out, workers=2, threads=1)
        except UsageError as e:
            outcome["error"] = str(e)
        except BaseException as e:  # reported by the test
            outcome["crash"] = repr(e)

    t0 = time.monotonic()
    me = os.getpid()
    # disturbed passes until MIN_KILLS kills are made (a pass ends early when the full disk stops its runs,
    # or when every run is done; the next pass resumes what is left)
    for _ in range(MAX_PASSES):
        outcome.clear()
        worker = threading.Thread(target=grid_pass)
        worker.start()
        while worker.is_alive():
            time.sleep(rng.uniform(0.05, 0.3))
            holders = {pid: d for pid, d in lock_holders(out).items() if pid != me}
            if stats["kills"] < MIN_KILLS and holders:
                pid = rng.choice(sorted(holders))
                sig = rng.choice([signal.SIGKILL, signal.SIGTERM])
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    continue
                stats["kills"] += 1
                stats["sigkill" if sig == signal.SIGKILL else "sigterm"] += 1
            if can_fill and stats["kills"] == 10 and not stats["disk_full"]:
                vfs = os.statvfs(disk)
                ballast = disk / "ballast"
                with open(ballast, "wb") as f, contextlib.suppress(OSError):  # the whole disk, for a moment
                    f.write(b"\0" * (vfs.f_bavail * vfs.f_frsize))
                time.sleep(0.6)
                ballast.unlink()
                stats["disk_full"] += 1
            if stats["kills"] >= 15 and not stats["corrupted"]:
                running = set(lock_holders(out).values())
                for d in sorted(out.iterdir()) if out.is_dir() else []:
                    ck = d / CHECKPOINT
                    if d.is_dir() and d not in running and ck.exists() and not (d / "result.json").exists():
                        data = bytearray(ck.read_bytes())
                        data[len(data) // 3] ^= 0xFF
                        ck.write_bytes(bytes(data))
                        stats["corrupted"] += 1
                        break
        worker.join()
        stats["passes"] += 1
        assert "crash" not in outcome, outcome
        if "error" in outcome:  # runs the full disk stopped: one line each; they resume in the next pass
            # a run that failed otherwise left its traceback (error.txt): shown and counted; the next pass
            # retries it, and the final undisturbed pass must finish every run identically (results_lost)
            bugs = {p.parent.name: p.read_text() for p in out.glob(f"*/{BUG_REPORT}")}
            for name, tb in bugs.items():
                print(f"\nrun {name} failed in pass {stats['passes']} other than by the full disk:\n{tb}")
            stats["runs_failed_otherwise"] = stats.get("runs_failed_otherwise", 0) + len(bugs)
            n_failed = int(outcome["error"].split(" of ")[0])
            assert "no space left on device" in outcome["error"] or bugs, outcome["error"]
            stats["runs_failed_by_disk_full"] += n_failed - len(bugs)
            for p in out.glob(f"*/{BUG_REPORT}"):
                p.unlink()  # (counted once)
        if stats["kills"] >= MIN_KILLS or (
            "rows" in outcome and all((out / name / "result.json").exists() for name in reference)
        ):
            break

    if not stats["corrupted"]:  # every run finished between two looks: corrupt a finished run's checkpoint
        d = out / sorted(reference)[0]
        (d / "result.json").unlink()  # (as if killed between its last checkpoint and its result)
        data = bytearray((d / CHECKPOINT).read_bytes())
        data[len(data) // 3] ^= 0xFF
        (d / CHECKPOINT).write_bytes(bytes(data))
        stats["corrupted"] += 1
    rows = compare(grid, out, workers=2, threads=1)  # the resume pass, undisturbed
    stats["passes"] += 1
    stats["seconds"] = round(time.monotonic() - t0, 1)

    results = {
        name: json.loads((out / name / "result.json").read_text()) if (out / name / "result.json").exists() else None
        for name in reference
    }
    stats["results_lost"] = sum(r is None or not same_result(r, reference[name]) for name, r in results.items())
    print(f"\nfaults in bulk: {json.dumps(stats)}")
    _record("faults_in_bulk", stats)
    assert stats["kills"] >= MIN_KILLS and stats["sigkill"] and stats["sigterm"]
    assert stats["corrupted"] == 1 and (stats["disk_full"] == 1 or not can_fill)
    assert stats["results_lost"] == 0
    assert temp_files(disk) == []
    assert without_timing(rows) == without_timing(summarize(reference, None))
    assert without_timing(json.loads((out / "summary.json").read_text())) == without_timing(rows)


def _record(name: str, data: dict) -> None:
    """Keep the figures as DIR/NAME.json when FORGETLESS_RELIABILITY_RECORD=DIR (tools/reliability_table.py)."""
    where = os.environ.get("FORGETLESS_RELIABILITY_RECORD")
    if where:
        Path(where).mkdir(parents=True, exist_ok=True)
        (Path(where) / f"{name}.json").write_text(json.dumps(data, indent=1))


# ---- 5b. the same under torchrun: killing one rank ends the other cleanly ------------------------


def _children(pid: int) -> list[int]:
    out = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
        except OSError:
            continue
        if fields.get("PPid", "").strip() == str(pid):
            out.append(int(status.parent.name))
    return out


def _rank_of(pid: int) -> int | None:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for item in env:
        if item.startswith(b"RANK="):
            return int(item[5:])
    return None


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="finds the ranks through Linux /proc")
@pytest.mark.parametrize("victim", [1])
def test_killing_one_rank_under_torchrun_ends_the_other_cleanly_and_resume_completes(tmp_path, victim):
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    args = [
        "--benchmark",
        "permuted-digits",
        "--tasks",
        "4",
        "--epochs",
        "4",
        "--model",
        "mlp:128",
        "--seed",
        "4",
        "--quiet",
        "--device",
        "cpu",
    ]
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "forgetless",
        "run",
    ]
    out = tmp_path / "ddp"
    p = subprocess.Popen(
        [*torchrun, *args, "--out", str(out)],
        env=child_env(),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert _wait_for(lambda: (out / CHECKPOINT).exists() or p.poll() is not None, 300)
        ranks = {_rank_of(c): c for c in _children(p.pid)}
        if p.poll() is not None or victim not in ranks:
            pytest.skip(f"the run ended before a rank could be killed ({p.poll()})")
        os.kill(ranks[victim], signal.SIGKILL)
        t = time.monotonic()
        _, err = p.communicate(timeout=120)
        ended = time.monotonic() - t
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    survivor = ranks[1 - victim]
    assert not Path(f"/proc/{survivor}").exists() or "zombie" in Path(f"/proc/{survivor}/status").read_text()
    assert p.returncode != 0
    forgetless_lines = [line for line in err.splitlines() if line.startswith("forgetless:")]
    # the survivor says one line; torchrun's own report of the killed rank follows (its traceback is
    # torchrun's, from torch/distributed/run.py): no traceback comes from forgetless's code
    assert len(forgetless_lines) == 1 and "another process of this torchrun run stopped" in forgetless_lines[0], err
    assert "--resume" in forgetless_lines[0]
    assert not [line for line in err.splitlines() if 'File "' in line and "/forgetless/" in line], err[-3000:]
    assert temp_files(out) == []
    resumed = subprocess.run(
        [*torchrun, *args, "--out", str(out), "--resume"],
        env=child_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        reference = run(RunConfig(benchmark="permuted-digits", tasks=4, epochs=4, model="mlp:128", seed=4))
    finally:
        torch.set_num_threads(threads)
    got = json.loads((out / "result.json").read_text())
    _record(
        "torchrun_kill",
        {
            "ended_seconds": round(ended, 1),
            "survivor_lines": forgetless_lines,
            "identical": got["accuracy_matrix"] == reference.accuracy_matrix,
        },
    )
    print(f"\ntorchrun: rank {1 - victim} ended {ended:.1f} s after rank {victim} was killed; {forgetless_lines}")
    assert ended < 60
    assert got["accuracy_matrix"] == reference.accuracy_matrix


def test_a_checkpoint_without_what_resuming_needs_starts_the_run_over(tmp_path, capsys):
    import torch

    out = tmp_path / "run"
    full = run(tiny(benchmark="permuted-digits", tasks=2), out=out)
    (out / "result.json").unlink()
    sidecar(out / CHECKPOINT).unlink()
    (out / cache.MANIFEST).unlink()  # (as a checkpoint from before checksums and manifests)
    torch.save({"config": full.config, "state": {"done": 1}}, out / CHECKPOINT)
    again = run(tiny(benchmark="permuted-digits", tasks=2), out=out, resume=True)
    assert "it lacks model" in capsys.readouterr().err
    assert again.accuracy_matrix == full.accuracy_matrix
