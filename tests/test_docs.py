"""The documentation: the docstring check, the generated pages, the tutorial runner, and the whole
strict build (docs/build.py) when MkDocs is installed (``pip install -e ".[docs]"``).

The build test runs the five tutorials (about 2 minutes on one busy core) and ``mkdocs build --strict``
into a temporary folder; it is skipped, with the reason, where the docs extra is missing.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"_docs_{name}", DOCS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def build():
    return _load("build")


def test_worked_example_metrics_by_hand(build):
    """The 3x3 example of the concepts page, every registry metric computed by hand here."""
    from forgetless import metrics as M

    R, b, ref = build.EXAMPLE_R, build.EXAMPLE_B, build.EXAMPLE_REFERENCE
    sizes, points = build.EXAMPLE_SIZES, build.EXAMPLE_POINTS
    assert M.average_accuracy(R) == pytest.approx((0.45 + 0.70 + 0.92) / 3)
    assert M.average_accuracies(R) == pytest.approx([0.90, (0.60 + 0.88) / 2, 0.69])
    assert M.backward_transfer(R) == pytest.approx(((0.45 - 0.90) + (0.70 - 0.88)) / 2)
    assert M.forward_transfer(R, b) == pytest.approx(((0.12 - 0.11) + (0.09 - 0.09)) / 2)
    assert M.forgetting(R) == pytest.approx(((0.90 - 0.45) + (0.88 - 0.70)) / 2)
    assert M.learning_accuracy(R) == pytest.approx([0.90, 0.88, 0.92])
    assert M.intransigence_per_task(R, ref) == pytest.approx([0.0, 0.03, 0.02])
    assert M.intransigence(R, ref) == pytest.approx(0.05 / 3)
    S = [0.90, (600 * 0.60 + 50 * 0.88) / 650, (600 * 0.45 + 50 * 0.70 + 50 * 0.92) / 700]
    f = M.fscil_metrics(R, sizes)
    assert f["session_accuracy"] == pytest.approx(S)
    assert f["avg"] == pytest.approx(sum(S) / 3)
    assert f["pd"] == pytest.approx(S[0] - S[2])
    assert f["base_accuracy"] == pytest.approx(0.45)
    assert f["novel_accuracy"] == pytest.approx((0.70 + 0.92) / 2)
    assert f["harmonic_mean"] == pytest.approx(2 * 0.45 * 0.81 / (0.45 + 0.81))
    assert M.anytime_accuracy(points) == pytest.approx((0.50 + 0.90 + 0.65 + 0.74 + 0.65 + 0.69) / 6)


def test_generated_pages(build, tmp_path, monkeypatch):
    """Every strategy gets its parameter table from its Params, every metric a value in the example."""
    import forgetless as fl
    from forgetless import metrics as M

    monkeypatch.setattr(build, "SNIPPETS", tmp_path)
    build.generate_pages()
    for name, cls in fl.STRATEGIES.items():
        text = (tmp_path / "params" / f"{name}.md").read_text()
        for key, p in cls.params.items():
            assert f"| `{key}` |" in text and p.help.replace("|", "/") in text, (name, key)
    example = (tmp_path / "metrics_example.md").read_text()
    for key in M.REGISTRY:
        assert f"(`{key}`)" in example
    assert "-0.3150" in example  # BWT of the example, as computed
    index = (tmp_path / "strategies.md").read_text()
    assert all(f"[`{name}`]({name}.md)" in index for name in fl.STRATEGIES)


def test_every_strategy_has_a_page_in_the_nav():
    import forgetless as fl

    nav = (REPO / "mkdocs.yml").read_text()
    for name in fl.STRATEGIES:
        assert (DOCS / "methods" / f"{name}.md").exists(), name
        assert f"methods/{name}.md" in nav, name


def test_docstring_check_passes_and_can_fail():
    check = _load("check_docstrings")
    assert check.missing(check.public_modules()) == []
    fake = types.ModuleType("fake")
    fake.__doc__ = None

    def documented():
        """Yes."""

    def bare():
        pass

    class Bare:
        pass

    fake.documented, fake.bare, fake.Bare = documented, bare, Bare
    fake.__all__ = ["documented", "bare", "Bare", "gone"]
    problems = check.missing([fake])
    assert "fake: module has no docstring" in problems
    assert "fake.bare: no docstring" in problems and "fake.Bare: no docstring" in problems
    assert any("gone" in p for p in problems) and not any("documented" in p for p in problems)


def test_parse_cells(build):
    cells = build.parse_cells(
        textwrap.dedent("""\
        # %% [markdown]
        # # Title
        #
        # text
        # %%
        x = 1
        print(x)
        # %% [markdown]
        # more
        """)
    )
    assert cells == [("markdown", "# Title\n\ntext"), ("code", "x = 1\nprint(x)"), ("markdown", "more")]


def _run_tutorial(script: Path, out: Path):
    env = dict(
        os.environ,
        MPLBACKEND="Agg",
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
    )
    return subprocess.run(
        [sys.executable, str(DOCS / "build.py"), "--run-tutorial", str(script), str(out)],
        cwd=out,
        env=env,
        capture_output=True,
        text=True,
    )


def test_tutorial_runner_captures_output_and_figures(tmp_path):
    script = tmp_path / "t9_demo.py"
    script.write_text(
        textwrap.dedent("""\
        # %% [markdown]
        # # Demo
        # %%
        import matplotlib.pyplot as plt
        print("hello", 6 * 7)
        fig, ax = plt.subplots()
        ax.plot([0, 1], [1, 0])
        """)
    )
    proc = _run_tutorial(script, tmp_path)
    assert proc.returncode == 0, proc.stderr
    page = (tmp_path / "t9_demo.md").read_text()
    assert "# Demo" in page and "hello 42" in page and "![figure 1](t9_demo/fig1.png)" in page
    assert (tmp_path / "t9_demo" / "fig1.png").stat().st_size > 1000


def test_a_failing_tutorial_fails(tmp_path):
    script = tmp_path / "t9_broken.py"
    script.write_text("# %%\nprint('before')\n# %%\nraise ValueError('the tutorial is broken')\n")
    proc = _run_tutorial(script, tmp_path)
    assert proc.returncode != 0
    assert "cell 2 failed" in proc.stderr and "the tutorial is broken" in proc.stderr
    assert not (tmp_path / "t9_broken.md").exists()


def _docs_tools_missing() -> str | None:
    for mod in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python", "mathjax"):
        if importlib.util.find_spec(mod.split(".")[0]) is None:
            return f'{mod} is not installed: pip install -e ".[docs]" to build the documentation'
    return None


@pytest.mark.skipif(_docs_tools_missing() is not None, reason=str(_docs_tools_missing()))
def test_the_site_builds_strictly(tmp_path):
    """docs/build.py: docstring check, generated pages, every tutorial executed, mkdocs build --strict."""
    site = tmp_path / "site"
    env = dict(os.environ, OMP_NUM_THREADS="1", NO_MKDOCS_2_WARNING="1")
    proc = subprocess.run(
        [sys.executable, str(DOCS / "build.py"), "--site-dir", str(site)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (site / "index.html").exists() and (site / "generated" / "mathjax" / "tex-svg-full.js").exists()
    for t in sorted((DOCS / "tutorials").glob("t*.py")):
        html = (site / "generated" / "tutorials" / f"{t.stem}.html").read_text()
        assert re.search(r'<img[^>]+src="' + t.stem + r'/fig1\.png"', html), t.stem
        assert (site / "generated" / "tutorials" / t.stem / "fig1.png").exists()
    for page in site.rglob("*.html"):  # offline: no script or stylesheet from the network
        remote = re.findall(r'<(?:script|link)[^>]+(?:src|href)="(https?://[^"]+)"', page.read_text())
        assert not remote, (page, remote[:3])
    ewc = (site / "methods" / "ewc.html").read_text()
    assert "<code>fisher</code>" in ewc and "arithmatex" in ewc  # the generated table, the formula
    timings = json.loads((DOCS / "generated" / "timings.json").read_text())
    assert set(timings["tutorials"]) == {t.stem for t in (DOCS / "tutorials").glob("t*.py")}
