"""Build the documentation site: ``python docs/build.py`` from the repository root -> ``site/``.

Steps, each of which fails the build:

1. ``docs/check_docstrings.py``: every public name has a docstring (mkdocstrings does not check that).
2. Pages generated from the code, into ``docs/generated/`` (never edited by hand, not committed):
   the parameter table of every strategy (from its ``params``: ``Param`` default, check, help), the
   list of strategies, and the worked 3x3 example of every metric in ``forgetless.metrics.REGISTRY``
   (computed by forgetless.metrics, so the numbers on the page are the library's). A strategy
   without a page in docs/methods/, or a metric without an example, is an error.
3. The tutorials, ``docs/tutorials/t*.py``: each is a plain Python script in "percent" format
   (``# %%`` starts a code cell, ``# %% [markdown]`` a text cell whose lines start with ``# ``). Each
   runs in its own process, headless (matplotlib's Agg backend, one thread, in a scratch folder); its
   cells' printed output and figures are captured into ``docs/generated/tutorials/<name>.md``. A cell
   that raises fails the build. Why scripts and not notebooks: they run with ``python`` alone (no
   Jupyter kernel, nbconvert or notebook plugin to install), they diff and review like code, and a
   reader can run one directly (``python docs/tutorials/t1_forgetting.py``).
4. MathJax (the SVG build, no web fonts) copied from the ``django-static-mathjax`` wheel (MathJax 3
   as a data-only package, no dependencies) into the site, so the formulas render offline.
5. ``mkdocs build --strict --site-dir site``.

Options: ``--skip-tutorials`` (keep the pages of the last run; for editing the prose),
``--only NAME`` (run one tutorial), ``--site-dir DIR``. The timing of every tutorial and of the whole
build is printed and written to ``docs/generated/timings.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

DOCS = Path(__file__).resolve().parent
REPO = DOCS.parent
GEN = DOCS / "generated"
SNIPPETS = GEN / "snippets"  # included into pages by pymdownx.snippets; not pages themselves
TUTORIALS = DOCS / "tutorials"


# ---------------------------------------------------------------------------------------------------
# 2. pages generated from the code

# The worked example of the concepts page (tests/test_docs.py checks its metrics by hand).
EXAMPLE_R = [[0.90, 0.12, 0.10], [0.60, 0.88, 0.09], [0.45, 0.70, 0.92]]
EXAMPLE_B = [0.10, 0.11, 0.09]  # the untrained model's accuracies
EXAMPLE_REFERENCE = [0.90, 0.91, 0.94]  # a*_k: joint models on tasks 1..k
EXAMPLE_SIZES = [600, 50, 50]  # test examples per task (FSCIL: a base session and two small ones)
EXAMPLE_POINTS = [
    (0, [0.50, 0.10, 0.10]),
    (0, [0.90, 0.12, 0.10]),
    (1, [0.70, 0.60, 0.09]),
    (1, [0.60, 0.88, 0.09]),
    (2, [0.50, 0.75, 0.70]),
    (2, [0.45, 0.70, 0.92]),
]  # A_AUC


def _cell(v) -> str:
    s = repr(v) if not isinstance(v, str) else f'"{v}"'
    return "`" + s.replace("|", "\\|") + "`"


def _check_text(p) -> str:
    if isinstance(p.check, tuple):
        text = "one of " + ", ".join(f"`{c}`" for c in p.check)
    else:
        text = f"`{p.check}`" if p.check else ("`true` / `false`" if isinstance(p.default, bool) else "any")
    if p.optional:
        text += ", or `none`"
    if p.needs:
        text += f" (only with `{p.needs}=true`)"
    return text


FAMILIES = ["baseline", "regularization", "distillation", "replay", "isolation", "fscil"]


def generate_pages() -> None:
    import forgetless as fl
    from forgetless import metrics as M

    (SNIPPETS / "params").mkdir(parents=True, exist_ok=True)
    rows = []
    missing_pages = []
    for name, cls in sorted(fl.STRATEGIES.items()):
        scen = ", ".join(getattr(cls, "scenarios", ()) or ())
        lines = [f"Scenarios it accepts (its declaration in the code): **{scen}**.", ""]
        if cls.params:
            lines += ["| parameter | default | accepted values | meaning |", "|---|---|---|---|"]
            for key, p in cls.params.items():
                lines.append(f"| `{key}` | {_cell(p.default)} | {_check_text(p)} | {p.help.replace('|', '/')} |")
            lines += [
                "",
                f"Set one with `--param {next(iter(cls.params))}=VALUE` (or "
                f"`--param {name}.{next(iter(cls.params))}=VALUE` inside a composition such as "
                f"`{name}+ewc`); `forgetless list` prints the same table.",
            ]
        else:
            lines.append("It has no parameters.")
        (SNIPPETS / "params" / f"{name}.md").write_text("\n".join(lines) + "\n")
        family = getattr(cls, "family", "")
        rows.append(
            (
                FAMILIES.index(family) if family in FAMILIES else len(FAMILIES),
                name,
                f"| [`{name}`]({name}.md) | {family} | {scen} | {len(cls.params)} | {cls.help.replace('|', '/')} |",
            )
        )
        if not (DOCS / "methods" / f"{name}.md").exists():
            missing_pages.append(name)
    if missing_pages:
        raise SystemExit(
            f"docs: no page for strategy {', '.join(missing_pages)}: add docs/methods/NAME.md "
            "(and its nav entry in mkdocs.yml)"
        )
    head = (
        "| strategy | family | scenarios | parameters | what it is (as `forgetless list` says) |\n"
        "|---|---|---|---|---|\n"
    )
    (SNIPPETS / "strategies.md").write_text(head + "\n".join(r[2] for r in sorted(rows)) + "\n")

    # the worked 3x3 example: every metric of the registry computed by forgetless.metrics
    R, b, ref, sizes, points = EXAMPLE_R, EXAMPLE_B, EXAMPLE_REFERENCE, EXAMPLE_SIZES, EXAMPLE_POINTS
    values = dict(M.all_metrics(R, b=b, reference=ref))
    values.update(M.fscil_metrics(R, sizes))
    values["anytime_accuracy"] = M.anytime_accuracy(points)
    values["average_accuracies"] = M.average_accuracies(R)
    values["learning_accuracy"] = M.learning_accuracy(R)
    values["intransigence_per_task"] = M.intransigence_per_task(R, ref)
    absent = [k for k in M.REGISTRY if k not in values]
    if absent:
        raise SystemExit(
            f"docs: the worked example has no value for metric {', '.join(absent)}: add it in "
            "docs/build.py (generate_pages)"
        )

    def fmt(v):
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(f"{x:.4f}" for x in v) + "]"
        return "none" if v is None else f"{v:.4f}"

    out = [
        "The accuracy matrix of the example (row i: after training task i; column j: test accuracy on task j), "
        "the untrained model's accuracies b, the joint references a*, and the test sizes n:",
        "",
        "| after task | task 1 | task 2 | task 3 |",
        "|---|---|---|---|",
    ]
    for i, row in enumerate(R):
        out.append(f"| {i + 1} | " + " | ".join(f"{v:.2f}" for v in row) + " |")
    out += [
        "",
        f"b = {b}, a* = {ref}, n = {sizes}; for A_AUC, six evaluations during training "
        f"(task being trained, accuracies): {points}.",
        "",
        "| metric (key) | formula (the registry's) | value | better |",
        "|---|---|---|---|",
    ]
    for key, m in M.REGISTRY.items():
        direction = {True: "higher", False: "lower", None: "-"}[m.higher_is_better]
        out.append(f"| {m.label} (`{key}`) | `{m.formula}` | {fmt(values[key])} | {direction} |")
    out += [
        "",
        "Computed by `forgetless.metrics` when this page was built (docs/build.py), so they are the "
        "library's numbers; tests/test_docs.py checks the same values by hand.",
    ]
    (SNIPPETS / "metrics_example.md").write_text("\n".join(out) + "\n")


# ---------------------------------------------------------------------------------------------------
# 3. tutorials
def parse_cells(text: str) -> list[tuple[str, str]]:
    """[(kind, source)] of a percent-format script; kind is "markdown" or "code"."""
    cells: list[tuple[str, list[str]]] = []
    kind, buf = "code", []
    for line in text.splitlines():
        if line.startswith("# %%"):
            if any(s.strip() for s in buf):
                cells.append((kind, buf))
            kind, buf = ("markdown" if "[markdown]" in line else "code"), []
            continue
        buf.append(line)
    if any(s.strip() for s in buf):
        cells.append((kind, buf))
    out = []
    for kind, lines in cells:
        if kind == "markdown":
            lines = [ln[2:] if ln.startswith("# ") else ln[1:] if ln.startswith("#") else ln for ln in lines]
        out.append((kind, "\n".join(lines).strip("\n")))
    return out


def run_tutorial(script: Path, outdir: Path) -> None:
    """Run one tutorial in this process (called in a fresh subprocess by ``build``) and write its page."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch
    from matplotlib.figure import Figure

    torch.set_num_threads(1)
    name = script.stem
    figdir = outdir / name
    shutil.rmtree(figdir, ignore_errors=True)
    figdir.mkdir(parents=True)
    cells = parse_cells(script.read_text())
    ns = {"__name__": "__main__", "__file__": str(script)}
    md: list[str] = []
    nfig = 0
    shown: set[int] = set()
    t0 = time.perf_counter()
    for k, (kind, src) in enumerate(cells):
        if kind == "markdown":
            md += [src, ""]
            continue
        buf = io.StringIO()
        try:
            with contextlib.redirect_stdout(buf):
                exec(compile(src, f"{script.name} (cell {k + 1})", "exec"), ns)
        except Exception:
            sys.stdout.write(buf.getvalue())
            traceback.print_exc()
            raise SystemExit(f"tutorial {script.name}: cell {k + 1} failed") from None
        md += ["```python", src, "```", ""]
        text = buf.getvalue().rstrip()
        if text:
            md += ["```text", text, "```", ""]
        figures = [plt.figure(num) for num in plt.get_fignums()]
        # a Figure made without pyplot (Result.plot, forgetless.plots) is not in get_fignums: the ones
        # the cell left in a variable are shown too, once
        figures += [v for v in list(ns.values()) if isinstance(v, Figure) and id(v) not in shown and v not in figures]
        for fig in figures:
            shown.add(id(fig))
            nfig += 1
            fig.savefig(figdir / f"fig{nfig}.png", dpi=90, bbox_inches="tight")
            md += [f"![figure {nfig}]({name}/fig{nfig}.png)", ""]
        plt.close("all")
    seconds = time.perf_counter() - t0
    head = (
        f'!!! note "An executed tutorial"\n    This page is the output of `docs/tutorials/{script.name}`, run '
        f"headless by `python docs/build.py` ({seconds:.0f} s on one CPU thread when this site was built). "
        f"Run it yourself with `python docs/tutorials/{script.name}` from the repository root.\n"
    )
    (outdir / f"{name}.md").write_text(head + "\n" + "\n".join(md))


def build_tutorials(only: str | None) -> dict[str, float]:
    outdir = GEN / "tutorials"
    outdir.mkdir(parents=True, exist_ok=True)
    scripts = sorted(TUTORIALS.glob("t*.py"))
    if only:
        scripts = [s for s in scripts if only in s.stem]
    times = {}
    env = dict(
        os.environ,
        MPLBACKEND="Agg",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join([str(REPO / "src")] + [p for p in [os.environ.get("PYTHONPATH")] if p]),
    )
    for script in scripts:
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="forgetless-tutorial-") as scratch:
            proc = subprocess.run(
                [sys.executable, str(Path(__file__).resolve()), "--run-tutorial", str(script), str(outdir)],
                cwd=scratch,
                env=env,
                text=True,
                capture_output=True,
            )
        times[script.stem] = round(time.perf_counter() - t0, 1)
        if proc.returncode != 0:
            sys.stderr.write(proc.stdout[-5000:] + proc.stderr[-5000:])
            raise SystemExit(f"docs: tutorial {script.name} failed (exit {proc.returncode}); see above")
        print(f"tutorial {script.stem}: {times[script.stem]:.1f} s", flush=True)
    return times


# ---------------------------------------------------------------------------------------------------
def copy_mathjax() -> None:
    try:
        import mathjax  # the django-static-mathjax wheel: MathJax 3.2 as package data, no dependencies
    except ImportError:
        raise SystemExit('docs: MathJax is not installed; pip install -e ".[docs]" (django-static-mathjax)') from None
    src = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5" / "tex-svg-full.js"
    if not src.exists():
        raise SystemExit(f"docs: {src} is missing; reinstall django-static-mathjax")
    (GEN / "mathjax").mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, GEN / "mathjax" / "tex-svg-full.js")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Build the documentation site (docs/ -> site/).")
    ap.add_argument("--skip-tutorials", action="store_true", help="keep the tutorial pages of the last run")
    ap.add_argument("--only", help="run only the tutorials whose name contains this")
    ap.add_argument("--site-dir", default=str(REPO / "site"))
    ap.add_argument("--run-tutorial", nargs=2, metavar=("SCRIPT", "OUTDIR"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.run_tutorial:
        run_tutorial(Path(args.run_tutorial[0]), Path(args.run_tutorial[1]))
        return 0

    t0 = time.perf_counter()
    sys.path.insert(0, str(REPO / "src"))
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO / "src")] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    steps = {}
    t = time.perf_counter()
    rc = subprocess.run([sys.executable, str(DOCS / "check_docstrings.py")]).returncode
    if rc:
        print("docs: the docstring check failed", file=sys.stderr)
        return 1
    steps["docstrings"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    GEN.mkdir(exist_ok=True)
    generate_pages()
    copy_mathjax()
    steps["generated pages"] = round(time.perf_counter() - t, 1)
    tutorials = {}
    if not args.skip_tutorials:
        t = time.perf_counter()
        tutorials = build_tutorials(args.only)
        steps["tutorials"] = round(time.perf_counter() - t, 1)
    missing = [s.stem for s in TUTORIALS.glob("t*.py") if not (GEN / "tutorials" / f"{s.stem}.md").exists()]
    if missing:
        print(f"docs: tutorial pages missing ({', '.join(missing)}): run without --skip-tutorials", file=sys.stderr)
        return 1
    t = time.perf_counter()
    rc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--clean",
            "--site-dir",
            args.site_dir,
            "--config-file",
            str(REPO / "mkdocs.yml"),
        ],
        cwd=REPO,
    ).returncode
    steps["mkdocs build --strict"] = round(time.perf_counter() - t, 1)
    if rc:
        print("docs: mkdocs build --strict failed (see its warnings above)", file=sys.stderr)
        return 1
    total = round(time.perf_counter() - t0, 1)
    timings = {"total_seconds": total, "steps": steps, "tutorials": tutorials}
    (GEN / "timings.json").write_text(json.dumps(timings, indent=2) + "\n")
    print(f"docs: built {args.site_dir}/index.html in {total:.1f} s ({json.dumps(steps)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
