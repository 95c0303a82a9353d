"""``forgetless report DIR``: one self-contained HTML page of a run or of a comparison.

DIR is a run directory (``forgetless run --out DIR``: result.json) or a grid directory
(``forgetless compare --out DIR``: summary.json and one sub-directory per run). The page,
``DIR/report.html`` by default, carries everything in one file: figures as base64 PNG, inline CSS,
no scripts and nothing fetched from a network, so it can be mailed, archived or opened offline.
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from .errors import UsageError
from .metrics import REGISTRY, scalar_metrics

CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; background: #f4f5f7; color: #1d1f23; line-height: 1.45;
       font: 15px/1.45 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", Helvetica, Arial, sans-serif; }
main { max-width: 1080px; margin: 0 auto; padding: 24px 20px 48px; }
header { background: #22262e; color: #f4f5f7; padding: 22px 20px; }
header .inner { max-width: 1040px; margin: 0 auto; }
header h1 { margin: 0 0 6px; font-size: 24px; font-weight: 650; }
header p { margin: 0; color: #c9ccd3; }
h2 { font-size: 19px; margin: 34px 0 10px; padding-bottom: 4px; border-bottom: 2px solid #d7dae0; }
h3 { font-size: 16px; margin: 22px 0 8px; }
section.card, figure { background: #fff; border: 1px solid #dcdfe5; border-radius: 6px; }
figure { margin: 14px 0 20px; padding: 12px; text-align: center; }
figure img { max-width: 100%; height: auto; display: block; margin: 0 auto; }
figcaption { margin-top: 8px; color: #3d424b; font-size: 14px; text-align: left; }
figcaption b { color: #1d1f23; }
.metrics { display: grid; grid-template-columns: repeat(auto-fit, minmax(190px, 1fr)); gap: 12px; margin: 16px 0; }
.metric { background: #fff; border: 1px solid #dcdfe5; border-radius: 6px; padding: 12px 14px; }
.metric .value { font-size: 26px; font-weight: 650; font-variant-numeric: tabular-nums; }
.metric .name { font-weight: 600; color: #30343b; }
.metric .help { font-size: 13px; color: #555b66; margin-top: 4px; }
table { border-collapse: collapse; background: #fff; margin: 8px 0 16px; font-size: 14px;
        font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #dcdfe5; padding: 5px 9px; text-align: right; vertical-align: top; }
th { background: #eceef2; font-weight: 600; }
td.l, th.l { text-align: left; }
td.code { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 13px;
          text-align: left; word-break: break-all; }
.wide { overflow-x: auto; }
table.values td:nth-child(2) { white-space: nowrap; }
td:not(.l):not(.code) { white-space: nowrap; }
table.summary td { white-space: nowrap; }
table.summary td:last-child { white-space: normal; font-size: 12.5px; color: #3d424b; min-width: 180px; }
.note { color: #555b66; font-size: 13.5px; }
footer { margin-top: 40px; color: #6a707b; font-size: 13px; }
"""


def _metric(key: str) -> tuple[str, str]:
    """(label, one-line help) of a metric, from ``metrics.REGISTRY``."""
    info = REGISTRY[key]
    return info.label, info.help


TASK_AWARE = "task_aware_accuracy_matrix"  # class-IL runs: each task's classes alone competing


# ---- formatting -----------------------------------------------------------------------------------


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def pct(v: float | None, digits: int = 2) -> str:
    """A fraction as a percentage, as printed by ``forgetless run``: 0.6176 -> '61.76 %'."""
    return "n/a" if v is None else f"{100 * v:.{digits}f} %"


def mean_std(cell: dict | None) -> str:
    """A summary cell {mean, std, ...} as '63.01 ± 1.77' (percent)."""
    if not isinstance(cell, dict):
        return "–"
    return f"{100 * cell['mean']:.2f} ± {100 * cell.get('std', 0.0):.2f}"


def _value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (dict, list)):
        return json.dumps(v, sort_keys=True)
    return str(v)


def table(head: list[str], rows: list[list[Any]], left: int | set[int] = 1, cls: str = "") -> str:
    """An HTML table; the first ``left`` columns (or those in the set ``left``) are left-aligned.
    Cells are escaped."""

    def cell(tag, i, v):
        c = ' class="l"' if (i in left if isinstance(left, set) else i < left) else ""
        return f"<{tag}{c}>{esc(v)}</{tag}>"

    out = [
        f'<div class="wide"><table{f" class={esc(cls)!r}" if cls else ""}>',
        "<thead><tr>" + "".join(cell("th", i, h) for i, h in enumerate(head)) + "</tr></thead><tbody>",
    ]
    out += ["<tr>" + "".join(cell("td", i, v) for i, v in enumerate(r)) + "</tr>" for r in rows]
    return "\n".join(out) + "</tbody></table></div>"


def kv_table(items: list[tuple[str, Any]]) -> str:
    rows = "".join(f'<tr><th class="l">{esc(k)}</th><td class="code">{esc(_value(v))}</td></tr>' for k, v in items)
    return f'<div class="wide"><table>{rows}</table></div>'


class Figures:
    """Figures embedded as base64 PNG (and optionally saved as PNG + SVG files in a directory)."""

    def __init__(
        self, save_dir: Path | None = None, formats: tuple[str, ...] = ("png", "svg"), overwrite: bool = False
    ):
        self.save_dir, self.formats, self.overwrite = save_dir, tuple(formats), overwrite
        self.saved: list[Path] = []

    def embed(self, make: Callable[[], Any], name: str, alt: str, caption: str) -> str:
        from . import plots

        fig = make()
        png = plots.to_png(fig)
        if self.save_dir is not None:
            self.saved += _save_figure(fig, self.save_dir / name, self.formats, self.overwrite)
        w, h = _png_size(png)
        data = base64.b64encode(png).decode("ascii")
        return (
            f'<figure id="fig-{esc(name)}"><img src="data:image/png;base64,{data}" width="{w}" height="{h}" '
            f'alt="{esc(alt)}"><figcaption>{caption}</figcaption></figure>'
        )


def _save_figure(fig, path: Path, formats: tuple[str, ...], overwrite: bool) -> list[Path]:
    """``plots.save``'s files (``path.png``, ``path.svg``), each rendered in memory and written
    atomically (a full disk: one line, no half file), never over a file forgetless did not write."""
    import io

    from . import plots
    from .data.cache import atomic_write_bytes, refuse_foreign

    matplotlib, _, _ = plots._mpl()
    written = []
    for fmt in formats:
        out = path.with_name(path.name + "." + fmt)
        refuse_foreign(out, overwrite, _is_our_figure, what="--figures folder")
        meta = FIGURE_MARK.get(fmt)
        buf = io.BytesIO()
        with matplotlib.rc_context(plots.STYLE):  # (as plots.save: the same figure gives the same file)
            fig.savefig(buf, format=fmt, dpi=plots.DPI, metadata=meta)
        atomic_write_bytes(out, buf.getvalue())
        written.append(out)
    return written


# the figures of `report --figures` say who wrote them in their own metadata (no manifest in that folder)
FIGURE_MARK = {
    "png": {"Software": "forgetless report"},
    "svg": {"Date": None, "Creator": "forgetless report"},
    "pdf": {"Creator": "forgetless report"},
}


def _is_our_figure(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(4096)
    return b"forgetless report" in head


def _is_our_report(path: Path) -> bool:
    """An HTML page forgetless wrote (its generator tag, or the footer of pages made before it)."""
    with open(path, "rb") as f:
        head = f.read(4096)
    return b'<meta name="generator" content="forgetless' in head or (
        head.startswith(b"<!DOCTYPE html>") and b"made by forgetless" in Path(path).read_bytes()[-4096:]
    )


def _png_size(png: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()[:60] or "method"


def _page(title: str, subtitle: str, body: str, versions: dict | None) -> str:
    v = versions or {}
    foot = f"made by forgetless {esc(v.get('forgetless', ''))}".strip()
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="generator" content="forgetless">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f'<header><div class="inner"><h1>{esc(title)}</h1><p>{subtitle}</p></div></header>\n'
        f"<main>\n{body}\n<footer>{foot}: <code>forgetless report</code>. Accuracies are test accuracies "
        "in percent unless said otherwise.</footer>\n</main>\n</body>\n</html>\n"
    )


def _metric_cards(get: Callable[[str], str | None]) -> str:
    cards = []
    for key in scalar_metrics():
        name, helptext = _metric(key)
        value = get(key)
        if value is None:
            continue
        cards.append(
            f'<div class="metric" id="metric-{key}"><div class="name">{esc(name)}</div>'
            f'<div class="value">{esc(value)}</div><div class="help">{esc(helptext)}</div></div>'
        )
    return '<div class="metrics">' + "".join(cards) + "</div>"


def _describe(c: dict) -> str:
    epochs = c.get("epochs")
    length = f"{c['iterations']} steps" if c.get("iterations") else f"{epochs} epoch{'s' if epochs != 1 else ''}"
    return (
        f"{c.get('scenario')}-incremental, {c.get('tasks')} tasks, model {c.get('model')}, {length} per task, "
        f"batch {c.get('batch_size')}, {c.get('optimizer')} lr {c.get('lr')}"
    )


# ---- one run ----------------------------------------------------------------------------------

CURVES_CAPTION = (
    "<b>Accuracy during training.</b> Test accuracy on every task (one line per task) as the "
    "model is trained on the tasks in turn; dashed vertical lines mark the task boundaries, and a "
    "task's faint dotted line is its accuracy before it was trained."
)
CURVES_CAPTION_NO_STEPS = (
    "<b>Accuracy after each task.</b> Test accuracy on every task (one line per task) at "
    "the end of each task (the run recorded no curves: <code>--eval-every N</code> adds "
    "them); a task's faint dotted line is its accuracy before it was trained."
)
MATRIX_CAPTION = (
    "<b>Accuracy matrix.</b> Row i: accuracy on every task after training task i. The bold "
    "diagonal is each task just after it was learnt; below it, how much of that is kept (forgetting "
    "shows as the values falling down a column); above it, accuracy on tasks not trained yet."
)
AVG_CAPTION = (
    "<b>Average accuracy A<sub>k</sub>.</b> Mean accuracy over the tasks seen so far (1..k) after "
    "training task k; a flat line means nothing is lost as tasks are added."
)
SESSION_CAPTION = (
    "<b>Accuracy after each session</b> (few-shot class-incremental learning): top-1 accuracy on "
    "the pooled test data of every class seen so far (session_accuracy; AVG is its mean, PD its "
    "first value minus its last). It is weighted by test examples, unlike A<sub>k</sub>, which "
    "averages over sessions; one line per method, the mean over seeds (band ± 1 std)."
)


TASK_AWARE_CAPTION = (
    "<b>Task-aware accuracy matrix.</b> The same evaluations with each task's classes alone "
    "competing (the task identity given): the gap to the matrix above is what the class-IL "
    "model loses to confusing tasks with one another."
)


def _title_of(r: dict, what: str) -> str:
    c = r.get("config", {})
    return f"{what}\n{c.get('benchmark')} ({c.get('scenario')}-incremental), {c.get('strategy')}, seed {c.get('seed')}"


def _matrix_table(R: list[list[float]], initial: list[float] | None, A: list[float]) -> str:
    T = len(R)
    head = ["", *[f"task {j + 1}" for j in range(T)], "A_k (tasks 1..k)"]
    rows = []
    if initial:
        rows.append(["untrained model", *[f"{100 * v:.1f}" for v in initial], ""])
    rows += [
        [f"after task {i + 1}", *[f"{100 * v:.1f}" for v in row], f"{100 * A[i]:.1f}" if i < len(A) else ""]
        for i, row in enumerate(R)
    ]
    return table(head, rows)


def render_run(r: dict, figures: Figures) -> str:
    from . import plots

    c, m, t = r.get("config", {}), r.get("metrics", {}), r.get("timing", {})
    R, initial = r["accuracy_matrix"], r.get("initial_accuracy")
    T = len(R)
    title = f"forgetless: {c.get('strategy', '?')} on {c.get('benchmark', '?')}"
    subtitle = esc(_describe(c) + f", seed {c.get('seed')}")
    parts = [_metric_cards(lambda k: pct(m[k]) if m.get(k) is not None else None)]
    has_steps = bool(r.get("curves")) and plots._task_ends(r) is not None
    parts.append("<h2>Figures</h2>")
    parts.append(
        figures.embed(
            lambda: plots.plot_curves(r),
            "curves",
            "accuracy of every task during training",
            CURVES_CAPTION if has_steps else CURVES_CAPTION_NO_STEPS,
        )
    )
    parts.append(figures.embed(lambda: plots.plot_matrix(r), "matrix", "accuracy matrix heatmap", MATRIX_CAPTION))
    if r.get(TASK_AWARE):
        parts.append(
            figures.embed(
                lambda: plots.plot_matrix(
                    r, key=TASK_AWARE, title=_title_of(r, "Task-aware accuracy matrix (%): each task's classes alone")
                ),
                "matrix-task-aware",
                "task-aware accuracy matrix heatmap",
                TASK_AWARE_CAPTION,
            )
        )
    if T > 1:
        label = c.get("strategy", "run")
        parts.append(
            figures.embed(
                lambda: plots.plot_average_accuracy({label: [r]}),
                "average_accuracy",
                "average accuracy after each task",
                AVG_CAPTION,
            )
        )
    if T > 1 and plots.has_sessions(r):
        label = c.get("strategy", "run")
        parts.append(
            figures.embed(
                lambda: plots.plot_session_accuracy({label: [r]}),
                "session_accuracy",
                "accuracy after each session",
                SESSION_CAPTION,
            )
        )

    A = m.get("average_accuracies") or []
    parts.append(
        "<h2>Accuracy matrix (%)</h2>"
        if not r.get(TASK_AWARE)
        else "<h2>Accuracy matrix (%), task-agnostic: every class seen so far competes</h2>"
    )
    parts.append(_matrix_table(R, initial, A))
    if r.get(TASK_AWARE):
        parts.append("<h2>Task-aware accuracy matrix (%): each task's classes alone compete</h2>")
        parts.append(
            '<p class="note">The same evaluations with the task identity given: task j is scored '
            "over its own classes only (as in task-IL). The metrics above are of the task-agnostic "
            "matrix.</p>"
        )
        TA = r[TASK_AWARE]
        parts.append(_matrix_table(TA, None, [sum(row[: i + 1]) / (i + 1) for i, row in enumerate(TA)]))

    parts.append("<h2>Metrics</h2>")
    mrows = []
    for k, info in REGISTRY.items():
        if m.get(k) is None and not (info.scalar and k in m):
            continue
        value = pct(m.get(k)) if info.scalar else " ".join(f"{100 * v:.1f}" for v in m[k])
        mrows.append([info.label, value, info.help + ("" if info.scalar else ", %")])
    parts.append(table(["metric", "value", "meaning"], mrows, left={0, 2}, cls="values"))

    bench = r.get("benchmark") or {}
    per_task = t.get("per_task") or []
    if per_task or bench.get("tasks"):
        parts.append("<h2>Tasks and timing</h2>")
        btasks = bench.get("tasks") or []
        trows = []
        for i in range(T):
            b = btasks[i] if i < len(btasks) else {}
            p = per_task[i] if i < len(per_task) else {}
            loss = p.get("mean_loss")
            trows.append(
                [
                    i + 1,
                    b.get("name", ""),
                    b.get("train", ""),
                    b.get("test", ""),
                    p.get("steps", ""),
                    p.get("samples", ""),
                    "" if loss is None else f"{loss:.4f}",
                    f"{p['train_seconds']:.2f}" if "train_seconds" in p else "",
                    f"{p['eval_seconds']:.3f}" if "eval_seconds" in p else "",
                ]
            )
        parts.append(
            table(
                ["task", "name", "train size", "test size", "steps", "samples seen", "mean loss", "train s", "eval s"],
                trows,
                left=2,
            )
        )
        tot = [
            f"{k.replace('_', ' ')}: {t[k]:.2f} s"
            for k in ("total_seconds", "setup_seconds", "train_seconds")
            if isinstance(t.get(k), (int, float))
        ]
        parts.append(f'<p class="note">{esc("; ".join(tot))}</p>')

    parts.append("<h2>Configuration</h2>")
    parts.append(kv_table(sorted(c.items())))
    parts.append("<h2>Versions</h2>")
    parts.append(kv_table(sorted((r.get("versions") or {}).items())))
    return _page(title, subtitle, "\n".join(parts), r.get("versions"))


# ---- a grid -----------------------------------------------------------------------------------


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}") from None
    except ValueError:
        raise UsageError(f"{path} is not valid JSON: run the command that wrote it again") from None


def _grid_runs(path: Path) -> list[dict]:
    runs = []
    for f in sorted(path.glob("*/result.json")):
        try:
            r = json.loads(f.read_text())
        except (OSError, ValueError):
            continue  # an unfinished or broken run: summary.json already leaves it out
        r["_dir"] = f.parent.name
        runs.append(r)
    return runs


def _groups(rows: list[dict], runs: list[dict]) -> list[dict]:
    """One entry per summary row: its label and its runs, the directories the row lists in ``runs``
    (written by ``experiment.summarize``; a summary without them gets no runs)."""
    by_dir = {r["_dir"]: r for r in runs}
    contexts = {(row.get("benchmark"), row.get("scenario")) for row in rows}
    groups = []
    for row in rows:
        label = str(row.get("label") or row.get("strategy") or "?")
        if len(contexts) > 1:
            label += f" · {row.get('benchmark')} ({row.get('scenario')})"
        groups.append({"row": row, "label": label, "runs": [by_dir[d] for d in row.get("runs", []) if d in by_dir]})
    return groups


def _mean_result(runs: list[dict]) -> dict:
    """A result-like dict whose accuracy matrix is the mean over ``runs`` (same shape)."""
    import numpy as np

    out = {"config": runs[0]["config"], "benchmark": runs[0].get("benchmark", {})}
    for key in ("accuracy_matrix", TASK_AWARE):
        if all(r.get(key) for r in runs):
            out[key] = np.mean([np.array(r[key], dtype=float) for r in runs], axis=0).tolist()
    return out


def render_grid(path: Path, rows: list[dict], runs: list[dict], selection: list | None, figures: Figures) -> str:
    from . import plots

    groups = _groups(rows, runs)
    listed = {d for row in rows for d in row.get("runs", [])}
    ref_dirs = {d for row in rows for p in row.get("per_run", []) for d in p.get("references", [])} - listed
    references = [r for r in runs if r["_dir"] in ref_dirs]  # joint runs on the first k tasks (intransigence)
    runs = [r for g in groups for r in g["runs"]]
    benches = sorted({f"{r.get('benchmark')} ({r.get('scenario')}-incremental)" for r in rows})
    title = "forgetless comparison: " + ", ".join(sorted({str(r.get("benchmark")) for r in rows}))
    seeds = sorted({s for r in rows for s in r.get("seeds", [])})
    subtitle = esc(
        f"{len(rows)} method{'s' if len(rows) != 1 else ''} on {', '.join(benches)}; "
        f"{len(runs)} runs, seeds {', '.join(map(str, seeds))}"
    )
    if runs:
        subtitle += "<br>" + esc(_describe(runs[0]["config"]))
    shown = [m for m in scalar_metrics() if any(isinstance(r.get(m), dict) for r in rows)]
    parts = [
        "<h2>Summary</h2>",
        '<p class="note">Percent, mean ± standard deviation over seeds (n runs each). '
        + "; ".join(f"<b>{esc(_metric(m)[0])}</b>: {esc(_metric(m)[1])}" for m in shown)
        + ".</p>",
    ]
    srows = [
        [
            g["label"],
            g["row"].get("benchmark"),
            g["row"].get("scenario"),
            g["row"].get("n"),
            *[mean_std(g["row"].get(m)) for m in shown],
            f"{g['row']['train_seconds']:.2f}" if isinstance(g["row"].get("train_seconds"), (int, float)) else "",
            ", ".join(f"{k}={_value(v)}" for k, v in sorted((g["row"].get("params") or {}).items())) or "–",
        ]
        for g in groups
    ]
    parts.append(
        table(
            ["method", "benchmark", "scenario", "n", *[_metric(m)[0] for m in shown], "train s (mean)", "parameters"],
            srows,
            left={0, 1, 2, 5 + len(shown)},
            cls="summary",
        )
    )
    with_ik = [g for g in groups if isinstance(g["row"].get("intransigence_per_task"), dict)]
    if with_ik:
        T = max(len(g["row"]["intransigence_per_task"]["mean"]) for g in with_ik)
        parts.append("<h3>Intransigence per task</h3>")
        parts.append(
            '<p class="note">I<sub>k</sub> = a*<sub>k</sub> − R<sub>k,k</sub> (Chaudhry et al. 2018), '
            "percent, mean ± std over seeds: a*<sub>k</sub> is the accuracy on task k of the joint run "
            "trained and evaluated on tasks 1..k only (same seed and options).</p>"
        )
        irows = []
        for g in with_ik:
            ik = g["row"]["intransigence_per_task"]
            irows.append(
                [
                    g["label"],
                    *[mean_std({"mean": mu, "std": sd}) for mu, sd in zip(ik["mean"], ik["std"])],
                    *[""] * (T - len(ik["mean"])),
                ]
            )
        parts.append(table(["method", *[f"I_{k + 1}" for k in range(T)]], irows))

    parts.append("<h2>Figures</h2>")
    labelled_rows = [dict(g["row"], label=g["label"]) for g in groups]
    parts.append(
        figures.embed(
            lambda: plots.plot_methods(labelled_rows),
            "methods",
            "methods compared",
            "<b>Methods compared.</b> Final average accuracy, backward transfer (BWT) and "
            "forgetting of each method: bar height is the mean over seeds, the error bar one "
            "standard deviation over seeds; BWT below zero and forgetting above zero mean "
            "earlier tasks were forgotten.",
        )
    )
    with_runs = [g for g in groups if g["runs"]]
    if with_runs and max(len(g["runs"][0]["accuracy_matrix"]) for g in with_runs) > 1:
        by_label = {g["label"]: g["runs"] for g in with_runs}
        parts.append(
            figures.embed(
                lambda: plots.plot_average_accuracy(by_label),
                "average_accuracy",
                "average accuracy after each task, per method",
                "<b>Average accuracy A<sub>k</sub> after each task k</b>, one line per method: "
                "the mean over seeds, the shaded band ± 1 standard deviation over seeds.",
            )
        )
        if all(plots.has_sessions(x) for g in with_runs for x in g["runs"]):
            parts.append(
                figures.embed(
                    lambda: plots.plot_session_accuracy(by_label),
                    "session_accuracy",
                    "accuracy after each session, per method",
                    SESSION_CAPTION,
                )
            )
    for g in with_runs:
        name = _slug(g["label"])
        n = len(g["runs"])
        parts.append(f"<h3>{esc(g['label'])}</h3>")
        mean = _mean_result(g["runs"])
        c = mean["config"]
        mtitle = (
            f"Accuracy matrix (%), mean over {n} seed{'s' if n != 1 else ''}\n"
            f"{c.get('benchmark')} ({c.get('scenario')}-incremental), {g['label']}"
        )
        parts.append(
            figures.embed(
                partial(plots.plot_matrix, mean, title=mtitle),
                f"matrix-{name}",
                f"accuracy matrix of {g['label']}",
                f"<b>Accuracy matrix of {esc(g['label'])}</b>, mean over {n} "
                f"seed{'s' if n != 1 else ''}: row i is the accuracy on every task after "
                "training task i; the bold diagonal is each task just after it was learnt.",
            )
        )
        if TASK_AWARE in mean:
            ta_title = (
                f"Task-aware accuracy matrix (%): each task's classes alone, mean over {n} "
                f"seed{'s' if n != 1 else ''}\n{c.get('benchmark')} ({c.get('scenario')}-incremental), "
                f"{g['label']}"
            )
            parts.append(
                figures.embed(
                    partial(plots.plot_matrix, mean, key=TASK_AWARE, title=ta_title),
                    f"matrix-task-aware-{name}",
                    f"task-aware accuracy matrix of {g['label']}",
                    f"<b>Task-aware accuracy matrix of {esc(g['label'])}</b>: the same "
                    "evaluations with each task's classes alone competing (the task identity "
                    "given), next to the task-agnostic matrix above.",
                )
            )
        first = g["runs"][0]
        has_steps = bool(first.get("curves")) and plots._task_ends(first) is not None
        parts.append(
            figures.embed(
                partial(plots.plot_curves, first),
                f"curves-{name}",
                f"accuracy during training of {g['label']}",
                f"<b>Accuracy of every task during training, {esc(g['label'])}</b>, seed "
                f"{esc(first['config'].get('seed'))} (one run): one line per task, dashed lines "
                "at task boundaries, a task's faint dotted line before it is trained."
                + ("" if has_steps else " Only task ends: the run recorded no curves."),
            )
        )

    if selection:
        parts.append("<h2>Hyperparameter selection</h2>")
        sel_rows = []
        for s in selection:
            metric = s.get("metric")
            tried = "; ".join(
                f"{_value(t.get('values'))}: {'n/a' if t.get(metric) is None else f'{t[metric]:.4f}'}"
                for t in s.get("tried", [])
            )
            sel_rows.append(
                [s.get("strategy"), s.get("benchmark"), metric, _value(s.get("chosen")), tried, s.get("split", "")]
            )
        parts.append(
            table(
                ["strategy", "benchmark", "metric", "chosen", "tried (value on validation)", "data"], sel_rows, left=6
            )
        )

    if runs:
        parts.append("<h2>Runs</h2>")
        label_of = {id(r): g["label"] for g in groups for r in g["runs"]}
        rrows = [
            [
                label_of.get(id(r), r["config"].get("strategy")),
                r["config"].get("seed"),
                pct(r["metrics"].get("average_accuracy")),
                pct(r["metrics"].get("bwt")),
                pct(r["metrics"].get("forgetting")),
                f"{r['timing'].get('train_seconds', 0):.2f}",
                r["_dir"],
            ]
            for g in groups
            for r in g["runs"]
        ]
        parts.append(
            table(
                ["method", "seed", "average accuracy", "BWT", "forgetting", "train s", "directory"], rrows, left={0, 6}
            )
        )
        if references:
            parts.append("<h2>Joint references</h2>")
            parts.append(
                '<p class="note">Joint runs trained and evaluated on the first k tasks only: a*<sub>k</sub> '
                "of intransigence is the last row, entry k, of run k (k = T is the joint row above).</p>"
            )
            parts.append(
                table(
                    ["strategy", "first tasks", "seed", "final row (%)", "directory"],
                    [
                        [
                            r["config"].get("strategy"),
                            r["config"].get("first_tasks") or r["config"].get("tasks"),
                            r["config"].get("seed"),
                            " ".join(f"{100 * v:.1f}" for v in r["accuracy_matrix"][-1]),
                            r["_dir"],
                        ]
                        for r in sorted(
                            references, key=lambda r: (r["config"].get("seed", 0), r["config"].get("first_tasks") or 0)
                        )
                    ],
                    left={0, 4},
                )
            )
        parts.append("<h2>Configuration</h2>")
        keys = sorted({k for r in runs for k in r["config"]})
        common = [
            (k, runs[0]["config"].get(k))
            for k in keys
            if len({json.dumps(r["config"].get(k), sort_keys=True, default=str) for r in runs}) == 1
        ]
        varying = [k for k in keys if k not in dict(common)]
        parts.append(
            '<p class="note">Options shared by every run'
            + (f"; varying between runs: {esc(', '.join(varying))}" if varying else "")
            + ".</p>"
        )
        parts.append(kv_table(common))
        parts.append("<h2>Timing</h2>")
        total_train = sum(r["timing"].get("train_seconds", 0) for r in runs)
        total = sum(r["timing"].get("total_seconds", 0) for r in runs)
        parts.append(
            kv_table(
                [
                    ("runs", len(runs)),
                    ("training time, all runs", f"{total_train:.2f} s"),
                    ("total time, all runs", f"{total:.2f} s"),
                ]
            )
        )
        parts.append("<h2>Versions</h2>")
        vkeys = sorted({k for r in runs for k in (r.get("versions") or {})})
        vitems = []
        for k in vkeys:
            vals = sorted({str((r.get("versions") or {}).get(k)) for r in runs})
            vitems.append((k, vals[0] if len(vals) == 1 else " | ".join(vals)))
        parts.append(kv_table(vitems))
    else:
        parts.append(
            f'<p class="note">No run directories with result.json were found in {esc(path)}: '
            "only the summary is shown.</p>"
        )
    return _page(title, subtitle, "\n".join(parts), runs[0].get("versions") if runs else None)


# ---- entry points -----------------------------------------------------------------------------


def write_report(
    path: str | Path,
    out: str | Path | None = None,
    *,
    figures: str | Path | None = None,
    figure_formats: tuple[str, ...] = ("png", "svg"),
    overwrite: bool = False,
) -> Path:
    """Write the HTML report of a run directory or a grid directory; returns the file written.

    ``out``: the HTML file (default ``DIR/report.html``; a directory means ``out/report.html``).
    ``figures``: also save every figure in that directory, in ``figure_formats`` (PNG and SVG).
    A file forgetless did not write (not in its folder's ``.forgetless`` manifest, not a forgetless
    page) is never replaced, unless ``overwrite``; every file is written atomically.
    """
    path = Path(path)
    if path.is_file() and path.name in ("result.json", "summary.json"):
        path = path.parent
    if not path.is_dir():
        raise UsageError(
            f"{path} is not a directory: give a run directory (`forgetless run --out DIR`) "
            f"or a comparison directory (`forgetless compare --out DIR`)"
        )
    target = Path(out) if out is not None else path / "report.html"
    if target.is_dir():
        target = target / "report.html"
    from .data.cache import atomic_write_text, record_written, refuse_foreign

    refuse_foreign(target, overwrite, _is_our_report, what="report file (--out)")  # (before any work)
    figs = Figures(Path(figures) if figures is not None else None, figure_formats, overwrite)
    if (path / "summary.json").is_file():
        rows = _load_json(path / "summary.json")
        if not isinstance(rows, list):
            raise UsageError(f"{path / 'summary.json'} is not a list of summary rows")
        selection = _load_json(path / "selection.json") if (path / "selection.json").is_file() else None
        text = render_grid(path, rows, _grid_runs(path), selection, figs)
    elif (path / "result.json").is_file():
        result = _load_json(path / "result.json")
        if not isinstance(result, dict) or "accuracy_matrix" not in result:
            raise UsageError(f"{path / 'result.json'} has no accuracy_matrix: not a forgetless result")
        text = render_run(result, figs)
    else:
        raise UsageError(
            f"{path} has no result.json or summary.json: run `forgetless run --out {path}` "
            f"or `forgetless compare --out {path}` first"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    record_written(target.parent, target.name)
    atomic_write_text(target, text)
    target.chmod(0o644)  # a page to share: readable like any file written with open()
    return target


__all__ = ["write_report"]
