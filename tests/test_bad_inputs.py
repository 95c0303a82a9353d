"""Every bad input gets one line on stderr, exit code 2, no traceback, and earlier results stay."""

import subprocess
import sys
from pathlib import Path

import pytest
from bad_inputs import CASES, ENV, make_places  # tests/ is on sys.path under pytest's rootdir import mode

from forgetless.cli import main


@pytest.fixture(scope="module")
def places(tmp_path_factory, mnist_dir):
    return make_places(tmp_path_factory.mktemp("bad"), mnist_dir)


def test_there_are_well_over_60_cases():
    assert len(CASES) >= 100 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("what, args, fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_input(what, args, fragment, places, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("FORGETLESS_DATA", raising=False)
    for key, value in ENV.get(what, {}).items():
        monkeypatch.setenv(key, value)
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "result.json").write_text('{"accuracy_matrix": [[1.0]]}')
    args = [a.format(**places) for a in args]
    if args[0] in ("run", "compare") and "--out" not in args:
        args += ["--out", str(earlier)]
    assert main(args) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("forgetless: error: ") and fragment in lines[0], lines[0]
    assert (earlier / "result.json").read_text() == '{"accuracy_matrix": [[1.0]]}'
    assert not list(tmp_path.rglob("*.part")) and not list(Path(places["tmp"]).rglob("*.part"))


def test_errors_print_no_traceback_in_a_real_process(places, tmp_path):
    for what, args, fragment in CASES[:3] + CASES[15:17]:
        p = subprocess.run(
            [sys.executable, "-m", "forgetless", *[a.format(**places) for a in args]],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=120,
        )
        assert p.returncode == 2 and "Traceback" not in p.stderr and fragment in p.stderr, (what, p.stderr)
