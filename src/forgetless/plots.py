"""Figures of continual-learning results: accuracy curves, the accuracy matrix, methods compared.

Every function takes plain data (a result dict as in result.json, or the rows of summary.json),
returns a matplotlib ``Figure`` and touches no global state: figures are drawn on the Agg canvas
without pyplot, so nothing opens a window and nothing accumulates in pyplot's figure list.
``save(fig, "dir/name")`` writes ``dir/name.png`` and ``dir/name.svg``.

matplotlib is imported only when a figure is drawn: the rest of forgetless works without it
(``pip install 'forgetless[report]'`` adds it). Colours are the Okabe–Ito palette, which stays
distinguishable with every common colour-vision deficiency; lines also differ in marker and dash.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import UsageError

# Okabe & Ito (2008), ordered for lines on white: the pale yellow comes last.
OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#F0E442"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
DASHES = ["-", "--", "-.", ":"]
# The methods bar chart: one colour per metric.
METRIC_COLOURS = {
    "average_accuracy": "#0072B2",
    "bwt": "#D55E00",
    "forgetting": "#E69F00",
    "fwt": "#009E73",
    "intransigence": "#CC79A7",
}
DPI = 100  # figures are shown 1:1 in the HTML report: a 10-inch figure is 1000 pixels wide

STYLE = {
    "font.size": 11,
    "axes.titlesize": 13,
    "axes.titleweight": "bold",
    "axes.labelsize": 11.5,
    "xtick.labelsize": 10.5,
    "ytick.labelsize": 10.5,
    "legend.fontsize": 10,
    "legend.title_fontsize": 10.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.7,
    "axes.axisbelow": True,
    "lines.linewidth": 2.0,
    "lines.markersize": 5,
    "figure.facecolor": "white",
    "axes.facecolor": "white",
    "savefig.facecolor": "white",
    "svg.hashsalt": "forgetless",
    "svg.fonttype": "path",
}


def _mpl():
    """matplotlib with its Agg canvas, or a UsageError saying how to install it."""
    try:
        import matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise UsageError(
            "figures and reports need matplotlib: pip install 'forgetless[report]' (or pip install matplotlib)"
        ) from None
    return matplotlib, Figure, FigureCanvasAgg


def _figure(width: float, height: float):
    matplotlib, Figure, FigureCanvasAgg = _mpl()
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _styled(fn):
    """Run a plotting function under the forgetless style (text and line defaults are read at draw time)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        matplotlib, _, _ = _mpl()
        with matplotlib.rc_context(STYLE):
            return fn(*args, **kwargs)

    return wrapper


def as_dict(result: Any) -> dict:
    """A result as a dict: a ``Result``, a dict, or a run directory / result.json path."""
    if hasattr(result, "to_dict"):
        return result.to_dict()
    if isinstance(result, (str, Path)):
        import json

        path = Path(result)
        path = path / "result.json" if path.is_dir() else path
        try:
            return json.loads(path.read_text())
        except OSError:
            raise UsageError(f"{path} not found: run `forgetless run --out DIR` first") from None
        except ValueError:
            raise UsageError(f"{path} is not valid JSON") from None
    if isinstance(result, Mapping):
        return dict(result)
    raise UsageError(f"expected a result (dict, Result or run directory), got {type(result).__name__}")


def _title(r: dict, what: str) -> str:
    c = r.get("config", {})
    bench = c.get("benchmark") or r.get("benchmark", {}).get("name", "")
    scenario = c.get("scenario") or r.get("benchmark", {}).get("scenario")
    head = bench + (f" ({scenario}-incremental)" if scenario else "")
    strategy = c.get("strategy")
    return (
        f"{what}\n{head}"
        + (f", {strategy}" if strategy else "")
        + (f", seed {c['seed']}" if "seed" in c and c.get("strategy") else "")
    )


def _task_ends(r: dict) -> list[int] | None:
    """The global optimizer step at the end of each task, from timing.per_task (None if unknown)."""
    per_task = r.get("timing", {}).get("per_task") or []
    T = len(r["accuracy_matrix"])
    if len(per_task) != T or any(p.get("steps") is None for p in per_task):
        return None
    ends, total = [], 0
    for p in per_task:
        total += int(p["steps"])
        ends.append(total)
    return ends


@_styled
def plot_curves(result: Any):
    """The accuracy of every task over training, one line per task.

    x: optimizer steps over all tasks (from ``curves``, recorded every ``eval_every`` steps, plus
    the initial accuracy at step 0 and every task's end); without curves, the accuracy matrix rows
    at the task ends (x: tasks trained). A task's line is solid from where it is first trained; its
    accuracy before that (the untrained or other-task model) is drawn thin and dimmed. Dashed
    vertical lines mark the task boundaries; the task trained in each span is named at the top.
    """
    r = as_dict(result)
    R = r["accuracy_matrix"]
    T = len(R)
    if T == 0:
        raise UsageError("the result has an empty accuracy matrix: nothing to plot")
    initial = r.get("initial_accuracy") or [None] * T
    curves = r.get("curves") or []
    ends = _task_ends(r)
    by_steps = bool(curves) and ends is not None
    if by_steps:
        points: list[tuple[float, int, list]] = [(0, -1, initial)]  # (x, trained task, accuracies)
        end_set = {(e, i) for i, e in enumerate(ends)}
        points += [(c["step"], c["task"], c["accuracy"]) for c in curves if (c["step"], c["task"]) not in end_set]
        points += [(e, i, R[i]) for i, e in enumerate(ends)]
        points.sort(key=lambda p: (p[0], p[1]))
        starts = [0] + ends[:-1]
        spans = list(zip(starts, ends))
        boundaries = sorted({b for b in ends[:-1] if 0 < b < ends[-1]})
        xlabel = "optimizer steps (all tasks)"
    else:
        points = [(0, -1, initial)] + [(i + 1, i, R[i]) for i in range(T)]
        starts = list(range(T))
        boundaries = list(range(1, T))
        spans = [(i, i + 1) for i in range(T)]
        xlabel = "tasks trained (accuracy at the end of each task)"
    joint = "joint" in str(r.get("config", {}).get("strategy", "")).split("+")
    if joint:  # every task's data is trained at once, from the start
        starts = [0] * T

    fig = _figure(10, 5.0)
    ax = fig.add_subplot()
    for j in range(T):
        colour, marker, dash = OKABE_ITO[j % 8], MARKERS[j % 8], DASHES[(j // 8) % 4]
        pts = [(x, a[j]) for x, _, a in points if a is not None and a[j] is not None]
        before = [(x, 100 * y) for x, y in pts if x <= starts[j]]
        after = [(x, 100 * y) for x, y in pts if x >= starts[j]]
        if len(before) > 1:
            ax.plot(
                *zip(*before),
                color=colour,
                alpha=0.6,
                linewidth=1.4,
                linestyle=(0, (1.5, 1.5)),
                label=f"_task {j + 1} before training",
                gid=f"before-{j + 1}",
            )
        if after:
            marked = {e for _, e in spans} | {starts[j]}
            ax.plot(
                *zip(*after),
                color=colour,
                linestyle=dash,
                label=f"task {j + 1}",
                gid=f"task-{j + 1}",
                marker=marker,
                markersize=6,
                clip_on=False,
                markevery=[k for k, (x, _) in enumerate(after) if x in marked] if by_steps else None,
            )
    for b in boundaries:
        ax.axvline(b, color="#555555", linestyle="--", linewidth=1.0, alpha=0.8, gid="boundary", label="_boundary")
    from matplotlib.transforms import blended_transform_factory

    top = blended_transform_factory(ax.transData, ax.transAxes)
    total = spans[-1][1] or 1
    long_names = all((e - s) / total >= 0.15 for s, e in spans)
    for i, (s, e) in enumerate(spans):  # name the task trained in each span, where there is room
        if joint and (e - s) == total:
            ax.text(
                total / 2,
                1.01,
                "training all tasks at once (joint)",
                transform=top,
                ha="center",
                va="bottom",
                fontsize=9.5,
                color="#333333",
            )
        elif (e - s) / total >= 0.05:
            ax.text(
                (s + e) / 2,
                1.01,
                f"training task {i + 1}" if long_names else f"task {i + 1}",
                transform=top,
                ha="center",
                va="bottom",
                fontsize=9.5 if long_names else 8.5,
                color="#333333",
            )
    ax.set_xlim(0, total)
    if not by_steps:
        ax.set_xticks(range(T + 1), ["start"] + [str(i + 1) for i in range(T)])
    ax.set_ylim(0, 102)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(_title(r, "Accuracy on every task during training"), pad=22)
    from matplotlib.lines import Line2D

    handles, labels = ax.get_legend_handles_labels()
    if any(ln.get_gid() and ln.get_gid().startswith("before-") for ln in ax.get_lines()):
        handles.append(Line2D([], [], color="#555555", alpha=0.6, linestyle=(0, (1.5, 1.5)), linewidth=1.4))
        labels.append("before the task is trained")
    if boundaries:
        handles.append(Line2D([], [], color="#555555", linestyle="--", linewidth=1.0))
        labels.append("task boundary")
    ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, ncols=1 if T <= 16 else 2)
    return fig


def _text_colour(rgba) -> str:
    r, g, b = rgba[:3]
    return "black" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.45 else "white"


@_styled
def plot_matrix(result: Any, *, title: str | None = None, key: str = "accuracy_matrix"):
    """The accuracy matrix as a heatmap: row i after training task i, column j task j, values in %.

    Every cell is annotated (for up to 20 tasks), in black on light and white on dark cells; the
    diagonal (each task just after it was learnt) is in bold. ``key`` names another matrix of the
    result, e.g. ``task_aware_accuracy_matrix`` (class-IL: each task's classes alone competing).
    """
    import numpy as np

    r = as_dict(result)
    if key not in r:
        raise UsageError(f"the result has no {key}")
    M = 100 * np.array(r[key], dtype=float)
    T = len(M)
    size = min(11, max(5.5, 3.0 + 0.55 * T))
    fig = _figure(size + 1.6, size)
    ax = fig.add_subplot()
    ax.grid(False)
    im = ax.imshow(M, cmap="viridis", vmin=0, vmax=100, aspect="equal")
    cmap, norm = im.get_cmap(), im.norm
    if T <= 20:
        fs = 11 if T <= 6 else 9 if T <= 10 else 7
        for i in range(T):
            for j in range(T):
                ax.text(
                    j,
                    i,
                    f"{M[i, j]:.1f}",
                    ha="center",
                    va="center",
                    fontsize=fs + (i == j),
                    fontweight="bold" if i == j else "normal",
                    color=_text_colour(cmap(norm(M[i, j]))),
                    gid=f"cell-{i}-{j}",
                )
    ticks = range(T)
    ax.set_xticks(ticks, [f"task {j + 1}" for j in ticks], rotation=0 if T <= 8 else 90)
    ax.set_yticks(ticks, [f"after task {i + 1}" for i in ticks])
    ax.tick_params(length=0)
    for side in ("top", "right", "bottom", "left"):
        ax.spines[side].set_visible(False)
    ax.set_xlabel("evaluated on")
    ax.set_ylabel("trained up to")
    cb = fig.colorbar(im, ax=ax, shrink=0.85, pad=0.02)
    cb.set_label("test accuracy (%)")
    default = "Accuracy matrix (%)" if key == "accuracy_matrix" else key.replace("_", " ").capitalize() + " (%)"
    ax.set_title(title or _title(r, default), pad=12)
    return fig


def wrap(label: str, width: int = 24) -> str:
    """A long label on several lines (broken after commas and spaces)."""
    import textwrap

    if len(label) <= width:
        return label
    return "\n".join(textwrap.wrap(label.replace(",", ", ").replace(",  ", ", "), width, break_long_words=True))


def _row_labels(rows: Sequence[dict], width: int = 24) -> list[str]:
    """Method labels, with benchmark/scenario added when the rows span several of them."""
    contexts = {(r.get("benchmark"), r.get("scenario")) for r in rows}
    labels = [wrap(r.get("label") or r.get("strategy", "?"), width) for r in rows]
    if len(contexts) > 1:
        labels = [f"{lab}\n{r.get('benchmark')} ({r.get('scenario')})" for lab, r in zip(labels, rows)]
    return labels


def _metric_legend(key: str) -> str:
    """A metric's label and direction from ``metrics.REGISTRY``: 'forgetting\n(lower is better)'."""
    from .metrics import REGISTRY

    info = REGISTRY.get(key)
    if info is None:
        return key
    return info.label + {True: "\n(higher is better)", False: "\n(lower is better)", None: ""}[info.higher_is_better]


@_styled
def plot_methods(summary_rows: Sequence[dict], metrics: Iterable[str] = ("average_accuracy", "bwt", "forgetting")):
    """Methods side by side: one group of bars per method (final average accuracy, BWT, forgetting
    by default), bar height the mean over seeds, error bars one standard deviation over seeds."""
    import numpy as np

    rows = list(summary_rows)
    if not rows:
        raise UsageError("no summary rows to plot")
    metrics = [m for m in metrics if any(isinstance(r.get(m), Mapping) for r in rows)]
    n, k = len(rows), len(metrics)
    labels = _row_labels(rows, width=max(12, min(40, int(7 * max(k, 1) * (1 if n <= 4 else 4 / n)))))
    fig = _figure(min(16, max(8, 1.6 + 1.25 * n * max(k, 1) * 0.55 + 1.2 * n)), 5.2)
    ax = fig.add_subplot()
    width = 0.8 / max(k, 1)
    x = np.arange(n)
    span = [0.0, 0.0]
    for m_i, m in enumerate(metrics):
        means = [100 * r[m]["mean"] if isinstance(r.get(m), Mapping) else np.nan for r in rows]
        stds = [100 * r[m].get("std", 0.0) if isinstance(r.get(m), Mapping) else 0.0 for r in rows]
        pos = x + (m_i - (k - 1) / 2) * width
        bars = ax.bar(
            pos,
            means,
            width * 0.92,
            yerr=stds,
            capsize=4,
            color=METRIC_COLOURS.get(m, OKABE_ITO[m_i % 8]),
            edgecolor="black",
            linewidth=0.6,
            label=_metric_legend(m),
            error_kw={"elinewidth": 1.2, "ecolor": "#222222"},
            gid=f"bars-{m}",
        )
        for b, mean, std in zip(bars, means, stds):
            if np.isnan(mean):
                ax.text(b.get_x() + b.get_width() / 2, 0, "n/a", ha="center", va="bottom", fontsize=8.5)
                continue
            y = mean + std if mean >= 0 else mean - std
            span = [min(span[0], y), max(span[1], y)]
            ax.annotate(
                f"{mean:.1f}",
                (b.get_x() + b.get_width() / 2, y),
                xytext=(0, 3 if mean >= 0 else -3),
                textcoords="offset points",
                ha="center",
                va="bottom" if mean >= 0 else "top",
                fontsize=8.5,
            )
    ax.axhline(0, color="black", linewidth=0.9)
    low = min(0.0, span[0]) - 8 if span[0] < 0 else 0
    ax.set_ylim(low, max(100.0, span[1]) + 8)
    ax.set_xticks(x, labels)
    ax.grid(axis="x", visible=False)
    seeds = sorted({r.get("n", 1) for r in rows})
    seed_txt = f"{seeds[0]} seeds" if len(seeds) == 1 else f"{seeds[0]}–{seeds[-1]} seeds"
    ax.set_ylabel(
        "percent (one seed per method:\nno error bars)"
        if seeds == [1]
        else f"percent (mean over {seed_txt};\nerror bars: ± 1 std over seeds)"
    )
    ax.set_xlabel("method")
    bench = sorted({f"{r.get('benchmark')} ({r.get('scenario')}-incremental)" for r in rows})
    ax.set_title("Methods compared\n" + ", ".join(bench) if len(bench) <= 2 else "Methods compared")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, labelspacing=0.9)
    return fig


@_styled
def _curves_by_method(
    results_by_label: Mapping[str, Any], values: Callable[[dict], Sequence[float]], xlabel: str, ylabel: str, title: str
):
    """One line per method (mean over its runs), a band of +- 1 std when it has several."""
    import numpy as np

    if not results_by_label:
        raise UsageError("no results to plot")
    fig = _figure(10, 5.0)
    ax = fig.add_subplot()
    T_max = 1
    multi = False
    for i, (label, results) in enumerate(results_by_label.items()):
        runs = [results] if isinstance(results, Mapping) or hasattr(results, "to_dict") else list(results)
        A = [values(as_dict(res)) for res in runs]
        T = min(len(a) for a in A)
        T_max = max(T_max, T)
        A = 100 * np.array([a[:T] for a in A], dtype=float)
        mean = A.mean(axis=0)
        k = np.arange(1, T + 1)
        colour = OKABE_ITO[i % 8]
        n = len(A)
        multi |= n > 1
        ax.plot(
            k,
            mean,
            color=colour,
            marker=MARKERS[i % 8],
            linestyle=DASHES[(i // 8) % 4],
            markersize=7,
            label=wrap(f"{label} (n={n})" if n > 1 else label, 30),
            gid=f"method-{i}",
        )
        if n > 1:
            std = A.std(axis=0, ddof=1)
            ax.fill_between(k, mean - std, mean + std, color=colour, alpha=0.18, linewidth=0, gid=f"band-{i}")
    ax.set_xticks(range(1, T_max + 1))
    ax.set_xlim(0.8, T_max + 0.2)
    ax.set_ylim(0, 102)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title + ("\nmean over seeds, band: ± 1 std" if multi else ""))
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, title="method")
    return fig


def plot_average_accuracy(results_by_label: Mapping[str, Any]):
    """Average accuracy A_k over the tasks seen so far, after each task k: one line per method,
    the mean over its runs (seeds), with a shaded band of ± 1 standard deviation when it has several."""

    def values(d):
        a = d.get("metrics", {}).get("average_accuracies")
        if a is None:
            from .metrics import average_accuracies

            a = average_accuracies(d["accuracy_matrix"])
        return a

    return _curves_by_method(
        results_by_label,
        values,
        "tasks trained (k)",
        "average accuracy A$_k$ over tasks 1..k (%)",
        "Average accuracy after each task",
    )


def has_sessions(result: Any) -> bool:
    """Whether a result is a few-shot class-incremental run (its metrics hold session_accuracy)."""
    return bool(as_dict(result).get("metrics", {}).get("session_accuracy"))


def plot_session_accuracy(results_by_label: Mapping[str, Any]):
    """Few-shot class-IL: the pooled accuracy on every class seen so far after each session (the
    curve every FSCIL paper draws), one line per method, mean over its runs (± 1 std band)."""

    def values(d):
        s = d.get("metrics", {}).get("session_accuracy")
        if not s:
            raise UsageError("plot_session_accuracy: a result has no session_accuracy (not an fscil run)")
        return s

    return _curves_by_method(
        results_by_label,
        values,
        "session",
        "accuracy on all classes seen (%)",
        "Accuracy after each session (few-shot class-incremental)",
    )


def save(fig, path: str | Path, formats: Sequence[str] = ("png", "svg")) -> list[Path]:
    """Write ``path.png`` and ``path.svg`` (``path`` without suffix); returns the files written."""
    path = Path(path)
    if path.suffix.lower() in (".png", ".svg"):
        path = path.with_suffix("")
    path.parent.mkdir(parents=True, exist_ok=True)
    written = []
    matplotlib, _, _ = _mpl()
    for fmt in formats:
        out = path.with_name(path.name + "." + fmt)
        meta = {"Date": None} if fmt == "svg" else {"Software": None} if fmt == "png" else None
        with matplotlib.rc_context(STYLE):  # the SVG hash salt: the same figure gives the same file
            fig.savefig(out, format=fmt, dpi=DPI, metadata=meta)
        written.append(out)
    return written


def to_png(fig) -> bytes:
    """The figure as PNG bytes (what the HTML report embeds)."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


__all__ = [
    "OKABE_ITO",
    "as_dict",
    "plot_average_accuracy",
    "plot_curves",
    "plot_matrix",
    "plot_methods",
    "save",
    "to_png",
]
