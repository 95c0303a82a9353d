"""Write docs/reliability.md: every bad input of tests/bad_inputs.py with the exact error line and
exit code it gets, then what the reliability tests measured (kills survived, concurrent grids,
determinism, property tests, the malicious checkpoint).

Each bad input runs the way tests/test_bad_inputs.py runs it: ``forgetless.cli.main`` in this
process, from an empty working directory, with a private cache, no $FORGETLESS_DATA, and ``--out``
pointing at a folder that already holds a result, which must come out untouched. With
``--real-processes`` every case runs as ``python -m forgetless`` instead (slower).

    python tools/reliability_table.py [--mnist DIR] [--out docs/reliability.md] [--no-tests]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import pickle
import shlex
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"
sys.path.insert(0, str(TESTS))
sys.path.insert(0, str(REPO / "src"))

from bad_inputs import CASES, ENV, make_places  # noqa: E402

EARLIER = '{"accuracy_matrix": [[1.0]]}'
RELIABILITY_TESTS = [
    "tests/test_kill_resume.py",
    "tests/test_determinism.py",
    "tests/test_properties.py",
    "tests/test_resume.py::test_malicious_checkpoint_cannot_run_code",
    "tests/test_faults.py",
    "tests/test_fuzz.py",
    "tests/test_security.py",
]


def run_case(args: list[str], work: Path, real_process: bool, extra_env: dict | None = None) -> dict:
    """One bad input, as tests/test_bad_inputs.py runs it; returns exit code, stderr, checks."""
    from forgetless.cli import main

    work.mkdir(parents=True)
    earlier = work / "earlier"
    earlier.mkdir()
    (earlier / "result.json").write_text(EARLIER)
    if args[0] in ("run", "compare") and "--out" not in args:
        args = args + ["--out", str(earlier)]
    env = {k: v for k, v in os.environ.items() if k != "FORGETLESS_DATA"}
    env["XDG_CACHE_HOME"] = str(work / "cache")
    env.update(extra_env or {})
    if real_process:
        env["PYTHONPATH"] = str(REPO / "src") + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        p = subprocess.run(
            [sys.executable, "-m", "forgetless", *args], capture_output=True, text=True, cwd=work, env=env, timeout=300
        )
        code, err = p.returncode, p.stderr
    else:
        saved_env, saved_cwd = dict(os.environ), os.getcwd()
        os.environ.clear()
        os.environ.update(env)
        os.chdir(work)
        buf = io.StringIO()
        try:
            with contextlib.redirect_stderr(buf), contextlib.redirect_stdout(io.StringIO()):
                code = main(args)
        finally:
            os.chdir(saved_cwd)
            os.environ.clear()
            os.environ.update(saved_env)
        err = buf.getvalue()
    return {
        "args": args,
        "code": code,
        "stderr": err,
        "lines": err.strip().splitlines(),
        "untouched": (earlier / "result.json").read_text() == EARLIER,
        "out": str(earlier),
    }


def anonymize(text: str, places: dict[str, str], out: str) -> str:
    """Temporary paths -> the placeholders of tests/bad_inputs.py, so the table is stable."""
    cache = str(Path(out).parent / "cache")
    names = [(out, "{earlier}"), (cache, "$XDG_CACHE_HOME")] + [(v, "{" + k + "}") for k, v in places.items()]
    for path, name in sorted(names, key=lambda pv: -len(pv[0])):
        text = text.replace(path, name)
    return text


def cell(text: str) -> str:
    """A table cell showing ``text`` verbatim as code (a backtick inside needs double delimiters)."""
    text = text.replace("|", "\\|")  # GitHub tables: \| shows as | even in code
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def bad_input_rows(mnist: Path, real_processes: bool) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="forgetless-bad-") as tmp:
        (Path(tmp) / "places").mkdir()
        places = make_places(Path(tmp) / "places", mnist)
        for i, (what, args, fragment) in enumerate(CASES, 1):
            r = run_case([a.format(**places) for a in args], Path(tmp) / f"case-{i}", real_processes, ENV.get(what))
            line = r["lines"][0] if r["lines"] else ""
            ok = (
                r["code"] == 2
                and len(r["lines"]) == 1
                and line.startswith("forgetless: error: ")
                and fragment in line
                and "Traceback" not in r["stderr"]
                and r["untouched"]
            )
            shown = anonymize(
                shlex.join([*(f"{k}={v}" for k, v in ENV.get(what, {}).items()), "forgetless", *r["args"]]),
                places,
                r["out"],
            )
            rows.append(
                {
                    "what": what,
                    "command": shown,
                    "line": anonymize(line, places, r["out"]),
                    "code": r["code"],
                    "ok": ok,
                    "lines": len(r["lines"]),
                    "untouched": r["untouched"],
                }
            )
            print(f"{i:2} {'ok ' if ok else 'BAD'} {what}: {rows[-1]['line']}", file=sys.stderr)
    return rows


def malicious_checkpoint_demo() -> dict:
    """`forgetless run --resume` on a directory whose checkpoint.pt would run a shell command."""
    import torch

    from forgetless.cli import main

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    with tempfile.TemporaryDirectory(prefix="forgetless-evil-") as tmp:
        marker = Path(tmp) / "pwned"
        out = Path(tmp) / "run"
        out.mkdir()
        torch.save({"config": Evil()}, out / "checkpoint.pt", pickle_module=pickle)
        buf = io.StringIO()
        with contextlib.redirect_stderr(buf), contextlib.redirect_stdout(io.StringIO()):
            code = main(["run", "--tasks", "1", "--model", "mlp:32", "--quiet", "--resume", "--out", str(out)])
        line = buf.getvalue().strip().replace(str(out), "{out}")
        return {"code": code, "line": line, "ran": marker.exists()}


def run_reliability_tests(record: Path) -> dict:
    """pytest on the reliability tests with FORGETLESS_RELIABILITY_RECORD set; per-test outcomes."""
    xml = record / "junit.xml"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FORGETLESS_RELIABILITY_RECORD": str(record)}
    env["PYTHONPATH"] = str(REPO / "src") + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    t0, load = time.monotonic(), os.getloadavg()[0]
    p = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}", *RELIABILITY_TESTS],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = time.monotonic() - t0
    files: dict[str, dict] = {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        name = case.get("classname", "").split(".")[-1]
        f = files.setdefault(name, {"passed": 0, "failed": 0, "skipped": 0, "seconds": 0.0})
        outcome = (
            "failed"
            if case.find("failure") is not None or case.find("error") is not None
            else "skipped"
            if case.find("skipped") is not None
            else "passed"
        )
        f[outcome] += 1
        f["seconds"] += float(case.get("time", 0))
    records = {p.stem: json.loads(p.read_text()) for p in record.glob("*.json")}
    return {
        "returncode": p.returncode,
        "seconds": seconds,
        "files": files,
        "records": records,
        "load": load,
        "output": p.stdout[-3000:],
    }


def write(doc: Path, rows: list[dict], evil: dict, tests: dict | None, real_processes: bool) -> None:
    n_ok = sum(r["ok"] for r in rows)
    how = (
        "each as a real process, `python -m forgetless ...`"
        if real_processes
        else "through `forgetless.cli.main` in one process, exactly as `tests/test_bad_inputs.py` does "
        "(that test also runs five of them as real processes and checks that no traceback is printed)"
    )
    out = [
        "# Reliability",
        "",
        "What forgetless guarantees when something goes wrong, and the tests that check it. "
        "This file is written by `python tools/reliability_table.py`; every number below was "
        "measured by that run.",
        "",
        "- **Bad input → one line, exit code 2.** A mistake the user can fix (a misspelt name, a "
        "wrong value, a broken data or config file) prints exactly one line, "
        "`forgetless: error: ...`, saying what is wrong and what to do; the exit code is 2; no "
        "traceback is printed; results written earlier are left untouched.",
        "- **Atomic writes.** `result.json`, `checkpoint.pt`, summaries and downloaded data go to a "
        "temporary file in the same directory, are fsynced and then renamed into place: a reader "
        "(or a resumed run) sees the old file or the new one, never half of one.",
        "- **Checkpoint resume.** `forgetless run --resume` (and every `forgetless compare`) "
        "continues after the last finished task; the result is identical to an uninterrupted "
        "run — accuracy matrix, initial accuracies and metrics compared with `==`, not "
        "approximately. A truncated or corrupt checkpoint is reported in a warning and ignored "
        "(the run starts over); a directory another process is writing is locked.",
        "- **Safe loading.** Checkpoints are read with `torch.load(weights_only=True)`: a crafted "
        "pickle that would run code is refused with a one-line error; nothing runs.",
        "- **Strict specs (issue 18).** Strategy compositions, `--model`, `--classes`, `--angles`, "
        "`--data-dir`, `--param` keys and values, grid files and their `KEY=VALUE` overrides each have "
        "one grammar (`src/forgetless/spec.py`); every other spelling is refused with one line and, "
        "when one can be derived, the closest valid spelling. An empty grid file is an error.",
        "- **Nothing forgetless did not write is replaced.** Every folder forgetless writes into gets a "
        "manifest, `.forgetless`, of the files it wrote; `run`, `compare` and `report` refuse to replace "
        "any other file (and `compare` the summary of another grid) unless `--overwrite`.",
        "- **Full disks.** A full disk or quota (ENOSPC, EDQUOT) on any write — checkpoint, its checksum, "
        "`result.json`, the logs, summaries, reports, figures, the data cache, downloads — ends in one "
        "line naming the file and the free space needed (when known); for a run, that it resumes from "
        "its last checkpoint (with `--resume`). No temporary file stays behind.",
        "- **Checked checkpoints.** Each `checkpoint.pt` has its SHA-256 in `checkpoint.pt.sha256`, "
        "checked before `torch.load` reads a byte; a corrupt or truncated one is reported in a warning "
        "saying the run restarts from task 1, and it does.",
        "- **SIGTERM is Ctrl-C.** `run` and `compare` (and `compare`'s workers) stop cleanly on SIGTERM, "
        "as schedulers send it, and resume; a worker killed alone costs only its run, which starts again.",
        "",
        f"## Bad inputs ({len(rows)} cases, {n_ok} behave as guaranteed)",
        "",
        f"Every case of `tests/bad_inputs.py`, run {how}. Each gets `--out {{earlier}}` (a folder "
        "holding an earlier `result.json`) unless it names its own. `{tmp}` is a scratch folder "
        "with `broken.toml` (invalid TOML), `unknown.toml` (a misspelt option), `a-file` (a "
        "file) and `empty/`; `{bad}/truncated`, `{bad}/magic` and `{bad}/count` are copies of the "
        "MNIST subset with one damaged IDX file each (half the training images; a wrong magic "
        "number; 10 test labels fewer than images); `{mnist}` is the intact subset; `$XDG_CACHE_HOME` "
        "is a private, empty cache folder. The grid files (`empty.toml`, `no-values.toml`, ...) and the "
        "folders holding a user's files (`foreign-run/log.csv`, `foreign-grid/summary.csv`, "
        "`figs/matrix.png`, `page.html`) are built by `make_places` in `tests/bad_inputs.py`.",
        "",
        "| # | bad input | command | error (exact line) | exit |",
        "|---|---|---|---|---|",
    ]
    for i, r in enumerate(rows, 1):
        flag = (
            ""
            if r["ok"]
            else " **(not as guaranteed: "
            + (
                f"{r['lines']} lines"
                if r["lines"] != 1
                else "earlier result changed"
                if not r["untouched"]
                else "unexpected message"
            )
            + ")**"
        )
        out.append(f"| {i} | {r['what']}{flag} | {cell(r['command'])} | {cell(r['line'])} | {r['code']} |")
    out += [
        "",
        "## The malicious checkpoint",
        "",
        "`tests/test_resume.py::test_malicious_checkpoint_cannot_run_code` saves a checkpoint "
        'holding an object whose unpickling calls `os.system("touch /tmp/forgetless-pwned")` '
        "(plain `pickle`, as an attacker would write it) and checks that loading it raises the "
        "one-line error and that the file was not created. The same through the command line, "
        "measured now: `forgetless run --tasks 1 --model mlp:32 --quiet --resume --out {out}` "
        "with such a `{out}/checkpoint.pt` gives",
        "",
        f"    {evil['line']}",
        "",
        f"exit code {evil['code']}; the command {'**ran**' if evil['ran'] else 'did not run'} "
        f"(its marker file {'exists' if evil['ran'] else 'was not created'}).",
    ]
    if tests is None:
        out += [
            "",
            "## Kill/resume, determinism and property tests",
            "",
            "Not run this time (`--no-tests`); run `python tools/reliability_table.py` to measure them.",
        ]
    else:
        out += tests_sections(tests)
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text("\n".join(out) + "\n")


def outcome(tests: dict, name: str) -> str:
    f = tests["files"].get(name)
    if f is None:
        return "not run"
    parts = [f"{f['passed']} passed"] + [f"{f[k]} {k}" for k in ("failed", "skipped") if f[k]]
    return ", ".join(parts) + f" in {f['seconds']:.1f} s"


def tests_sections(tests: dict) -> list[str]:
    rec = tests["records"]
    kr, ck, cc, props = (rec.get(k, {}) for k in ("kill_resume", "compare_kill", "concurrent_compare", "properties"))
    out = ["", "## Kill and resume (`tests/test_kill_resume.py`: " + outcome(tests, "test_kill_resume") + ")", ""]
    if kr:
        detail = "; ".join(
            f"{k['at_seconds']:.2f} s ({k['tasks_done_before']}→{k['tasks_done_after']} tasks, {k['where']})"
            for k in kr["detail"]
        )
        out += [
            "A real `python -m forgetless run --benchmark permuted-digits --tasks 5 --model mlp:256,128 "
            "--epochs 12 --seed 3 --quiet --out D` (its own process group, one OpenMP thread) is "
            "killed with SIGKILL at seeded random moments — between 0.3 s and 90 % of the time the rest of "
            "the run would take (start-up plus the tasks still to do, as measured on an uninterrupted "
            "run) — then restarted with `--resume` in the same D, at least 4 times in a row and until "
            "one kill has interrupted a task (at most 7); the last restart finishes.",
            "",
            f"- An uninterrupted run took {kr['run_seconds']:.1f} s: {kr['startup_seconds']:.1f} s "
            f"starting up (interpreter, PyTorch, data, model) and {kr['task_seconds']:.2f} s per task.",
            f"- **{kr['kills']} kills in a row survived** ({kr['attempts']} processes in D): "
            f"{kr['mid_task']} interrupted a task, {kr['between_tasks']} came between tasks, "
            f"{kr['startup']} came while the process was still starting up (where a kill landed is "
            "read from what it left: the checkpoint's progress and the log's and checkpoint's times). "
            f"Kill times (tasks done before → after each attempt): {detail}."
            + (
                f" ({kr['series_restarted']} earlier series ended because a run finished before its kill.)"
                if kr.get("series_restarted")
                else ""
            ),
            "- After every kill the checkpoint was readable (atomic writes: never half a file).",
            "- The final `result.json` equals the uninterrupted run's exactly (`==`): accuracy matrix, "
            "initial accuracies, metrics; `log.csv` (loss at every step) and `accuracy.csv` are "
            "identical byte for byte.",
            "- The log check found a bug, now fixed in `loop.py` (`RunLog`): a resumed run truncated "
            "`log.csv` and `accuracy.csv` and wrote the earlier rows back through a 64 KB buffer that "
            "only the end of the next task flushed, so a kill in between lost every earlier row (and a "
            "kill in the middle of a flush could leave a torn last row that the next resume kept). The "
            "earlier rows are now rewritten atomically before training goes on, and torn rows dropped; "
            "`test_a_kill_right_after_resuming_keeps_the_earlier_log_rows` checks this without "
            "depending on where a random kill lands.",
        ]
    if ck:
        out += [
            "",
            f"`forgetless compare` on a grid of {ck['runs']} runs (split-digits, mlp:32, naive and er, "
            "seeds 0 and 1, 2 epochs, `--workers 2`) is killed (`os.killpg`, SIGKILL to the parent and its "
            f"workers) as soon as the first `result.json` appears — {ck['finished_at_kill']} run(s) "
            f"finished then, {ck['partial_at_kill']} more had a checkpoint — and the same command is run "
            "again: it exits 0, every run directory holds exactly one complete `result.json` of its run, "
            "and `summary.json` equals an uninterrupted grid's (ignoring `train_seconds`).",
        ]
    out += [
        "",
        "## Determinism and concurrent grids (`tests/test_determinism.py`: " + outcome(tests, "test_determinism") + ")",
        "",
        "- The same seed twice gives identical results — accuracy matrix, initial accuracies, metrics "
        "and the accuracy curves of `--eval-every 10` — for naive, ewc, si, er and lwf on "
        "permuted-digits (mlp:64, 3 tasks, 1 epoch); two different seeds give different matrices.",
    ]
    if cc:
        statuses = ", ".join(f"{v} {k}" for k, v in sorted(cc["statuses"].items()))
        out += [
            f"- Two `forgetless compare` processes started at the same moment on the same grid and "
            f"`--out` ({cc['workers_each']} workers each, {cc['runs']} runs): both exit 0; no run is "
            "written by two processes at once (a run directory is locked; every `log.csv` has steps "
            "1..N exactly once); every directory holds one consistent `result.json`; `summary.json` "
            f"equals an uninterrupted grid's. Statuses reported by the two: {statuses}. A process "
            'that finds a run locked ("busy") waits for the other to finish it (or runs it itself '
            "if the other dies), so its summary includes every run; a test holds a run's lock "
            "to check both cases."
        ]
    out += [
        "",
        "## Property tests (`tests/test_properties.py`: " + outcome(tests, "test_properties") + ")",
        "",
        "With hypothesis, a bounded number of generated examples each (`FORGETLESS_PROPERTY_EXAMPLES` raises it):",
        "",
        "- IDX: `write_idx` → `read_idx` gives back the array bit for bit (1–4 dimensions, sizes "
        "0–6, uint8/int8/int16/int32/float32/float64, raw or gzipped); every truncation of a valid "
        "file (random cut points, raw or gzipped) raises `DataError` naming the file and never "
        "returns data; random byte flips in the header, or anywhere in a gzipped file, give data or "
        "a `DataError` and nothing else. These tests found one crash, now fixed in "
        "`data/idx.py`: a header with a zero dimension and huge other ones raised numpy's "
        "`ValueError` (and the data size was computed in int64, which wraps around for huge "
        "dimensions).",
        "- Options: `parse_value(str(v))` gives back ints, finite floats and bools with their type (inf "
        "and nan are refused: issue 18's strict values); `parse_params` of generated `KEY=VALUE` lists "
        "gives the expected dict, spaces around a key are refused, and items without `=` or without a "
        "key are refused.",
        "- Metrics on random matrices in [0, 1]: BWT is 0 when every column is constant from the "
        "diagonal down; forgetting is then 0 exactly when no accuracy above the diagonal beats the "
        "diagonal (Chaudhry et al.'s max runs over every earlier row, before the task was learned "
        "too); forgetting ≥ −BWT always; forgetting ≥ 0 when no final accuracy beats its diagonal "
        "(and it is negative when one beats every earlier value); average accuracy is in [0, 1]; "
        "no metric modifies its input (numpy arrays or lists); FWT is 0 when the upper triangle "
        "equals the initial accuracies b.",
    ]
    if props:
        out += ["", "Examples generated in this run: " + ", ".join(f"{k} {v}" for k, v in props.items()) + "."]
    out += faults_sections(tests)
    total = {k: sum(f[k] for f in tests["files"].values()) for k in ("passed", "failed", "skipped")}
    out += [
        "",
        f"All these tests together (`{' '.join(RELIABILITY_TESTS)}`, `OMP_NUM_THREADS=1`): "
        f"{total['passed']} passed, {total['failed']} failed, {total['skipped']} skipped (exit code "
        f"{tests['returncode']}) in {tests['seconds']:.0f} s on {os.cpu_count()} CPU cores (load average "
        f"{tests['load']:.1f} when they started: other jobs share them). Most of that time goes into "
        "starting Python processes (about 20 of them, each importing PyTorch and scikit-learn).",
    ]
    return out


def faults_sections(tests: dict) -> list[str]:
    """Issue 18: faults in bulk, fuzzing, security (tests/test_faults.py, test_fuzz.py, test_security.py)."""
    bulk = tests["records"].get("faults_in_bulk", {})
    out = [
        "",
        "## Faults (`tests/test_faults.py`: " + outcome(tests, "test_faults") + ")",
        "",
        "- Overwrites: `run`, `compare` and `report` (page and figures) each refuse a file of the user's "
        "in their way, leave it untouched, and replace it with `--overwrite`; `compare` refuses the "
        "summary of another grid and accepts one it extends.",
        "- Full disk, injected (ENOSPC from the file object) on every write path: the checkpoint (first "
        "and second task), its checksum file, `result.json`, `log.csv`'s header and `accuracy.csv`'s rows "
        "(append mode), `summary.json`, `summary.csv`, `report.html`, a figure, the data cache's "
        "`atomic_write_bytes`, a download; EDQUOT too. Each ends in one line naming the file; no `.part` "
        "file remains; every run then resumes with `--resume` to the undisturbed accuracy matrix.",
        "- Full disk, for real: a 2 MB tmpfs (as root; skipped where `mount` is not permitted) with room "
        "for one checkpoint but not two: the run stops after task 1 with one line, and `--resume` "
        "finishes it with the undisturbed matrix.",
        "- Checkpoints: a flipped byte is caught by the checksum (warning, restart from task 1, same "
        "result); a kill between the checksum file and the checkpoint leaves a loadable checkpoint.",
        "- SIGTERM: a real `forgetless run` exits 130 with no traceback and resumes to the same matrix; a "
        "real `forgetless compare --workers 2` exits 130 within seconds, every worker stopped, and the "
        "same command completes the grid.",
    ]
    if bulk:
        out += [
            "",
            f"**Faults in bulk.** A grid of **{bulk['runs']} runs** (permuted-digits and split-digits, "
            "er, agem, ewc, si, lwf and der, 5 seeds, mlp:16, 2 tasks of 6 steps) through `compare` with 2 "
            "local workers, while the test kills the worker processes at seeded random moments: "
            f"**{bulk['kills']} kills** ({bulk['sigkill']} SIGKILL, {bulk['sigterm']} SIGTERM), "
            f"**{bulk['disk_full']} full disk** (the grid's 64 MB tmpfs filled for 0.6 s: "
            f"{bulk['runs_failed_by_disk_full']} runs stopped with the one-line error) and "
            f"**{bulk['corrupted']} corrupted checkpoint**; then the same grid again "
            f"({bulk['passes']} passes, {bulk['seconds']} s in all). **Results lost: "
            f"{bulk['results_lost']}** — every result equals an undisturbed run's (accuracy matrix, "
            "initial accuracies, metrics, with `==`), no temporary file remains, and `summary.json` "
            "equals the undisturbed summary (ignoring `train_seconds`).",
        ]
    tr = tests["records"].get("torchrun_kill", {})
    if tr:
        out += [
            "",
            "**Under torchrun** (2 processes, gloo): `forgetless run` on permuted-digits (4 tasks, mlp:128) "
            f"has rank 1 killed with SIGKILL after its first checkpoint; rank 0 ended {tr['ended_seconds']} s "
            f"later with one line, `{tr['survivor_lines'][0] if tr['survivor_lines'] else ''}`, and no "
            "traceback from forgetless (torchrun then prints its own report of the killed rank); the same "
            "torchrun command with `--resume` completed with "
            + ("exactly the one-process accuracy matrix." if tr["identical"] else "**another** matrix."),
        ]
    out += [
        "",
        "## Fuzzing (`tests/test_fuzz.py`: " + outcome(tests, "test_fuzz") + ")",
        "",
        "Hypothesis, with a deadline per example (a hang fails): 300 examples for each spec parser "
        "(strategy, model, classes, angles, data dir, `--param` lists), 150 random and 150 mutated TOML "
        "grid files, 150 YAML documents, 300 `KEY=VALUE` override lists (each grid expanded and every "
        "config resolved), 100 checkpoints with flipped bytes and 100 truncated ones (with their "
        "checksum: always refused) and 100 damaged ones without a checksum file (torch's parser sees "
        "them): only acceptance or one-line `UsageError`s. `FORGETLESS_FUZZ_SCALE=10` multiplies the "
        "counts. Fuzzing found, now fixed: grid-file options of the wrong type (`angles = 1`, "
        "`strategy = 0`, `benchmark = 0`) raised TypeError/AttributeError; `params=...` as an override "
        "raised ValueError; `1e400` overflowed to an infinite angle or parameter; a checkpoint without a "
        "checksum file whose pickle had one flipped byte loaded as a string instead of a dict (now refused, "
        "and resuming checks the keys it needs).",
        "",
        "## Security (`tests/test_security.py`: " + outcome(tests, "test_security") + ")",
        "",
        "A crafted checkpoint with a valid checksum file is still refused (`weights_only`), also through "
        "`run --resume` (the loader every torchrun rank uses); every loader call in the source is checked "
        "statically (`torch.load` with `weights_only=True`, `np.load` never with `allow_pickle`, no "
        "`pickle.load`, `yaml.load` or `tarfile.extractall`, Keras `load_model` only with "
        "`safe_mode=True`); CIFAR archives with `../`, absolute-path, symlink and hard-link members "
        "write nothing anywhere, a data member that is a link is refused, a pickle in a member is only "
        "bytes; the HTML report escapes markup in a run directory's path, a strategy parameter, the "
        "strategy and a custom model's name.",
    ]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--mnist",
        default=str(REPO / "tests" / "data" / "mnist-subset"),
        help="the MNIST subset (default tests/data/mnist-subset)",
    )
    ap.add_argument("--out", default=str(REPO / "docs" / "reliability.md"))
    ap.add_argument("--real-processes", action="store_true", help="run every bad input as its own process")
    ap.add_argument("--no-tests", action="store_true", help="only the bad inputs and the malicious checkpoint")
    a = ap.parse_args()
    mnist = Path(a.mnist)
    if not (mnist / "train-images-idx3-ubyte.gz").exists():
        print(f"reliability_table: the MNIST subset is not at {mnist} (--mnist DIR)", file=sys.stderr)
        return 2
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    rows = bad_input_rows(mnist, a.real_processes)
    evil = malicious_checkpoint_demo()
    tests = None
    if not a.no_tests:
        with tempfile.TemporaryDirectory(prefix="forgetless-record-") as tmp:
            tests = run_reliability_tests(Path(tmp))
    write(Path(a.out), rows, evil, tests, a.real_processes)
    bad = [r["what"] for r in rows if not r["ok"]]
    if tests and tests["returncode"]:
        print(tests["output"], file=sys.stderr)
    print(
        f"wrote {a.out}: {len(rows)} bad inputs ({len(rows) - len(bad)} as guaranteed)"
        + (f"; tests exit code {tests['returncode']}" if tests else ""),
        file=sys.stderr,
    )
    return 1 if bad or evil["ran"] or evil["code"] != 2 or (tests and tests["returncode"]) else 0


if __name__ == "__main__":
    sys.exit(main())
