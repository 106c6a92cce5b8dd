"""The HTML report of a backtest, with its PNG plots next to it.

`write_report` writes into one folder:

    report.html    tables of `rtml.backtest.metrics.summarize`'s summary (inline CSS, no script,
                   no external resource; every string escaped)
    roc.png        ROC curves, every model on one plot
    pr.png         precision-recall curves, with the fraud rate as the no-skill line
    scores.png     each model's score histogram, production's scores overlaid
    fallback.png   share of events scored by the fallback model or the default rule, per model

Plots are drawn on matplotlib's Agg canvas directly (no pyplot): no display is needed, and no
global backend is switched under the code that calls this. ROC and PR curves need fraud and
legitimate events; without both the report says so instead of linking a plot.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from rtml.backtest import metrics
from rtml.backtest.metrics import ScoredModel

REPORT_FILE = "report.html"
PLOT_FILES = {
    "roc": "roc.png",
    "pr": "pr.png",
    "scores": "scores.png",
    "fallback": "fallback.png",
}
PRODUCTION_COLOR = "black"
DPI = 100
MISSING = "–"


def write_report(
    frame: pd.DataFrame, models: list[ScoredModel], summary: dict, out_dir: Path
) -> Path:
    """Write report.html and its PNG plots into `out_dir` (created if needed); return the
    report's path. `summary` is what `metrics.summarize(frame, models)` returned, optionally with
    a `run` mapping (run id, range, elapsed seconds, command line...) shown as a table; or a run
    summary holding that dict under `metrics` (see `split_summary`)."""
    metrics.check_frame(frame, models)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Callable[[], Figure | None]] = {
        "roc": lambda: roc_figure(frame, models),
        "pr": lambda: pr_figure(frame, models),
        "scores": lambda: scores_figure(frame, models),
        "fallback": lambda: fallback_figure(frame, models),
    }
    plots: dict[str, str | None] = {}
    for key, draw in figures.items():
        path = out_dir / PLOT_FILES[key]
        figure = draw()
        if figure is None:
            path.unlink(missing_ok=True)  # a stale plot of an earlier run must not be mistaken
            plots[key] = None
        else:
            save_png(figure, path)
            plots[key] = PLOT_FILES[key]
    report = out_dir / REPORT_FILE
    report.write_text(render_html(models, summary, plots), encoding="utf-8")
    return report


# --- plots --------------------------------------------------------------------------------------


def save_png(figure: Figure, path: Path) -> None:
    FigureCanvasAgg(figure)
    figure.savefig(path, format="png", dpi=DPI)


def plot_label(model: ScoredModel) -> str:
    """A legend label that matplotlib shows as written: `$` would start mathtext, and a label
    starting with `_` is left out of legends."""
    label = f"{model.name} ({model.role})".replace("$", r"\$")
    return f" {label}" if label.startswith("_") else label


def model_style(model: ScoredModel) -> dict[str, Any]:
    return {"color": PRODUCTION_COLOR, "linestyle": "--"} if model.role == "production" else {}


def roc_figure(frame: pd.DataFrame, models: Sequence[ScoredModel]) -> Figure | None:
    """ROC curves of every model; None when the events hold only one class."""
    labels = metrics.fraud_labels(frame["label"])
    if not metrics.has_both_classes(labels):
        return None
    figure = Figure(figsize=(6, 5))
    axes = figure.add_subplot()
    for model in models:
        points = metrics.roc_points(labels, frame[metrics.score_column(model.name)].to_numpy())
        if points is not None:
            axes.plot(*points, label=plot_label(model), **model_style(model))
    axes.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle=":", label="chance")
    axes.set(xlabel="false positive rate", ylabel="true positive rate (recall)", title="ROC")
    axes.legend(loc="lower right", fontsize="small")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def pr_figure(frame: pd.DataFrame, models: Sequence[ScoredModel]) -> Figure | None:
    """Precision-recall curves of every model; None when the events hold only one class."""
    labels = metrics.fraud_labels(frame["label"])
    if not metrics.has_both_classes(labels):
        return None
    figure = Figure(figsize=(6, 5))
    axes = figure.add_subplot()
    for model in models:
        points = metrics.pr_points(labels, frame[metrics.score_column(model.name)].to_numpy())
        if points is not None:  # a step per threshold, as scikit-learn draws PR curves
            axes.plot(
                *points, label=plot_label(model), drawstyle="steps-post", **model_style(model)
            )
    fraud_rate = float(labels.mean())
    axes.axhline(fraud_rate, color="grey", linewidth=0.8, linestyle=":", label="fraud rate")
    axes.set(xlabel="recall", ylabel="precision", title="Precision-recall", ylim=(0, 1.02))
    axes.legend(loc="lower left", fontsize="small")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def scores_figure(frame: pd.DataFrame, models: Sequence[ScoredModel]) -> Figure:
    """One histogram per model (share of events per score bin, log scale: fraud scores are a thin
    tail), production's scores (recorded, else re-scored) overlaid, the threshold marked."""
    reference = metrics.production_reference(frame, metrics.production_model(models))[0]
    reference = reference[~np.isnan(reference)]
    all_scores = [frame[metrics.score_column(model.name)].to_numpy(dtype=float) for model in models]
    low = min(float(np.min(scores)) for scores in [*all_scores, reference] if len(scores))
    high = max(float(np.max(scores)) for scores in [*all_scores, reference] if len(scores))
    bins = np.linspace(low, high if high > low else low + 1.0, 41)
    figure = Figure(figsize=(7, 2.2 * len(models) + 0.6))
    for index, (model, scores) in enumerate(zip(models, all_scores, strict=True)):
        axes = figure.add_subplot(len(models), 1, index + 1)
        color = PRODUCTION_COLOR if model.role == "production" else f"C{index % 10}"
        axes.hist(
            scores,
            bins=bins,
            weights=np.full(len(scores), 1 / len(scores)),
            color=color,
            alpha=0.45,
            label=plot_label(model),
        )
        if len(reference):
            axes.hist(
                reference,
                bins=bins,
                weights=np.full(len(reference), 1 / len(reference)),
                histtype="step",
                color=PRODUCTION_COLOR,
                linewidth=1.2,
                label="production scores",
            )
        axes.axvline(model.threshold, color="red", linewidth=1, linestyle="--", label="threshold")
        axes.set_yscale("log")
        axes.set_ylabel("share of events")
        axes.legend(loc="upper right", fontsize="x-small")
    figure.axes[-1].set_xlabel("score")
    figure.suptitle("Score distributions")
    figure.tight_layout()
    return figure


def fallback_figure(frame: pd.DataFrame, models: Sequence[ScoredModel]) -> Figure:
    """Stacked bars per model: share of events scored by the fallback model and by the default
    rule (together, the fallback rate)."""
    counts = [metrics.path_counts(frame[metrics.path_column(model.name)]) for model in models]
    shares = {
        path: [c[path] / len(frame) for c in counts] for path in ("fallback_model", "default")
    }
    positions = np.arange(len(models))
    figure = Figure(figsize=(max(4.0, 1.2 * len(models) + 2), 4))
    axes = figure.add_subplot()
    axes.bar(positions, shares["fallback_model"], color="C1", label="fallback model")
    axes.bar(
        positions,
        shares["default"],
        bottom=shares["fallback_model"],
        color="C3",
        label="default rule",
    )
    for position, (model_share, default_share) in enumerate(
        zip(shares["fallback_model"], shares["default"], strict=True)
    ):
        axes.annotate(
            f"{model_share + default_share:.1%}",
            (position, model_share + default_share),
            ha="center",
            va="bottom",
            fontsize="small",
        )
    axes.set_xticks(
        positions, [plot_label(model) for model in models], rotation=15, fontsize="small"
    )
    top = max([a + b for a, b in zip(shares["fallback_model"], shares["default"], strict=True)])
    axes.set(ylabel="share of events", title="Fallback rate", ylim=(0, max(0.05, top * 1.2)))
    axes.legend(fontsize="small")
    figure.tight_layout()
    return figure


# --- HTML ---------------------------------------------------------------------------------------

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1200px; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; }
th { background: #f3f3f3; text-align: left; } td.num { text-align: right; }
p.note { color: #555; font-size: 0.9em; max-width: 60em; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.4em 0; }
"""
PLOT_CAPTIONS = {
    "roc": "ROC curves",
    "pr": "Precision-recall curves",
    "scores": "Score distributions, production overlaid",
    "fallback": "Fallback rate per model",
}
CONFUSION = ("tp", "fp", "tn", "fn")
RATES = ("precision", "recall", "f1")
HOW_TO_READ = """
<h2>How to read this</h2>
<p class="note"><b>Agreement</b>: among the events for which production published a prediction
on the predictions topic, the share where the model made the same decision as production did.
For the production model re-scored by the backtest, less than 100% means the backtest does not
reproduce what production decided (other feature values, another version, fallbacks).</p>
<p class="note"><b>PSI</b> (population stability index) compares a model's score distribution
with production's (recorded scores, else production re-scored): production's deciles cut 10 bins,
and PSI = &Sigma; (p &minus; q) &middot; ln(p / q) over the bins, with p and q the shares of the
model's and production's scores in a bin (each floored at 0.0001). Below 0.1 the distributions
are similar; 0.1 to 0.25 is a moderate shift; above 0.25 a large one: a threshold carried over
from production would flag a different volume of events.</p>
"""


def text(value: Any) -> str:
    """A value as short text: None as a dash, floats to 4 significant digits, containers as JSON."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return MISSING if value != value else f"{value:.4g}"
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value, default=str)
    return str(value)


class Share(float):
    """A fraction shown as a percentage."""


def percent(value: float | None) -> Share | None:
    return None if value is None else Share(value)


def timestamp(ms: Any) -> str:
    """Epoch milliseconds as UTC time (the raw value when it is not a number)."""
    try:
        moment = datetime.fromtimestamp(int(ms) / 1000, UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return text(ms)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def label_text(label: Any) -> str:
    """1.0 fraud, 0.0 legit, anything else (no label by the cut-off) none."""
    return {1.0: "fraud", 0.0: "legit"}.get(label, "none")


def cell(value: Any, tag: str = "td") -> str:
    """One escaped table cell; numbers right-aligned."""
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    shown = f"{value:.2%}" if isinstance(value, Share) else text(value)
    css = ' class="num"' if numeric and tag == "td" else ""
    return f"<{tag}{css}>{html.escape(shown)}</{tag}>"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """An HTML table; every header and value is escaped."""
    head = "".join(cell(header, "th") for header in headers)
    body = "".join("<tr>" + "".join(cell(value) for value in row) + "</tr>\n" for row in rows)
    return f"<table>\n<tr>{head}</tr>\n{body}</table>\n"


def note(words: str) -> str:
    """A paragraph of explanation (`words` is trusted markup written here, not data)."""
    return f'<p class="note">{words}</p>\n'


def ordered_names(models: Sequence[ScoredModel], summary: Mapping[str, Any]) -> list[str]:
    """Model names in the summary's ranking, then any model it does not rank."""
    names = [model.name for model in models]
    ranked = [name for name in summary.get("ranking", []) if name in names]
    return ranked + [name for name in names if name not in ranked]


def split_summary(summary: Mapping[str, Any]) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    """The metrics (`metrics.summarize`'s dict) and the run information in `summary`.

    Two layouts are accepted: the metrics at the top with the run under `run`, or a run summary
    with the metrics under `metrics` (then every other top-level entry describes the run).
    """
    if isinstance(summary.get("metrics"), Mapping):
        run = {key: value for key, value in summary.items() if key != "metrics"}
        return summary["metrics"], run
    return summary, summary.get("run") or {}


def range_text(value: Any) -> str:
    """A run's range in one line: a string as it is; `rtml.offline` range summaries as
    "topic: from .. to"."""
    if isinstance(value, Mapping):
        span = f"{text(value.get('from'))} .. {text(value.get('to'))}"
        return f"{value['topic']}: {span}" if value.get("topic") else span
    return text(value)


def render_html(
    models: Sequence[ScoredModel], summary: Mapping[str, Any], plots: Mapping[str, str | None]
) -> str:
    """The report page: run, events, ranking, metrics, confusion counts, comparison with
    production, score quantiles, plots (relative links), top disagreements, how to read PSI and
    agreement. Missing summary entries show as a dash."""
    summary, run = split_summary(summary)
    names = ordered_names(models, summary)
    per_model = summary.get("models")
    per_model = per_model if isinstance(per_model, Mapping) else {}
    stats = {name: per_model.get(name, {}) for name in names}
    title = f"rtml backtest {run['run_id']}" if run.get("run_id") else "rtml backtest"
    subtitle = run.get("range") or run.get("range_description")
    return "".join(
        [
            '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n',
            f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
            f"<h1>{html.escape(title)}</h1>\n",
            f"<p>{html.escape(range_text(subtitle))}</p>\n" if subtitle else "",
            run_section(run),
            events_section(summary),
            ranking_section(models, names, stats),
            metrics_section(names, stats, summary.get("production_threshold")),
            confusion_section(names, stats),
            production_section(names, stats),
            quantiles_section(names, stats),
            plots_section(plots),
            disagreements_section(summary.get("top_disagreements", {})),
            HOW_TO_READ,
            "</body>\n</html>\n",
        ]
    )


def run_section(run: Mapping[str, Any]) -> str:
    if not run:
        return ""
    return "<h2>Run</h2>\n" + table(["", "value"], [(str(key), text(v)) for key, v in run.items()])


def events_section(summary: Mapping[str, Any]) -> str:
    labelled = summary.get("labelled", {})
    reference = summary.get("production_reference", {})
    versions = summary.get("recorded", {}).get("versions") or {}
    counts = [summary.get("events"), *(labelled.get(k) for k in ("fraud", "legit", "unlabelled"))]
    sources = [reference.get(k) for k in ("recorded", "rescored", "none")]
    return "".join(
        [
            "<h2>Events</h2>\n",
            table(["events", "fraud", "legitimate", "unlabelled (counted legitimate)"], [counts]),
            table(["production scores", "recorded", "re-scored", "none"], [["events", *sources]]),
            table(["recorded production version", "events"], versions.items()) if versions else "",
        ]
    )


def ranking_section(
    models: Sequence[ScoredModel], names: Sequence[str], stats: Mapping[str, Mapping[str, Any]]
) -> str:
    by_name = {model.name: model for model in models}
    rows = [
        [
            rank,
            name,
            by_name[name].role,
            by_name[name].version,
            stats[name].get("average_precision"),
            stats[name].get("auc"),
            stats[name].get("at_threshold", {}).get("f1"),
        ]
        for rank, name in enumerate(names, start=1)
    ]
    headers = ["rank", "model", "role", "version", "average precision", "ROC AUC", "F1"]
    return (
        "<h2>Ranking</h2>\n"
        + note(
            "Best first by average precision, then ROC AUC. Average precision leads because fraud "
            "is rare: ROC AUC stays high even when the top of a model's ranking, the events it "
            "would block, holds many false alarms. F1 at the model's own threshold."
        )
        + table(headers, rows)
    )


def metrics_section(
    names: Sequence[str], stats: Mapping[str, Mapping[str, Any]], production_threshold: Any
) -> str:
    headers = ["model", "threshold", "ROC AUC", "average precision", "precision", "recall", "F1"]
    if production_threshold is not None:
        at = f"@ {text(production_threshold)}"
        headers += [f"precision {at}", f"recall {at}", f"F1 {at}"]
    rows = []
    for name in names:
        model = stats[name]
        row = [name, model.get("threshold"), model.get("auc"), model.get("average_precision")]
        row += [model.get("at_threshold", {}).get(key) for key in RATES]
        if production_threshold is not None:
            row += [model.get("at_production_threshold", {}).get(key) for key in RATES]
        rows.append(row)
    at_production = " and at production's threshold (@)" if production_threshold is not None else ""
    return (
        "<h2>Metrics</h2>\n"
        + note(
            "Precision, recall and F1 deciding fraud at score &ge; the model's own threshold"
            f"{at_production}. Events without a label count as legitimate."
        )
        + table(headers, rows)
    )


def confusion_section(names: Sequence[str], stats: Mapping[str, Mapping[str, Any]]) -> str:
    headers = ["model", *CONFUSION, *(f"{key} as decided" for key in CONFUSION)]
    rows = [
        [
            name,
            *(stats[name].get("at_threshold", {}).get(key) for key in CONFUSION),
            *(stats[name].get("as_decided", {}).get(key) for key in CONFUSION),
        ]
        for name in names
    ]
    return (
        "<h2>Confusion counts</h2>\n"
        + note(
            "At the model's threshold, and as decided: the decisions the scoring made, where a "
            "fallback path decides with its own threshold."
        )
        + table(headers, rows)
    )


def production_section(names: Sequence[str], stats: Mapping[str, Mapping[str, Any]]) -> str:
    headers = [
        "model",
        "agreement with recorded decisions",
        "events compared",
        "PSI vs production",
        "fallback rate",
        "primary",
        "fallback model",
        "default rule",
    ]
    rows = [
        [
            name,
            percent(stats[name].get("agreement", {}).get("share")),
            stats[name].get("agreement", {}).get("compared"),
            stats[name].get("psi"),
            percent(stats[name].get("fallback_rate")),
            *(stats[name].get("paths", {}).get(path) for path in metrics.PATHS),
        ]
        for name in names
    ]
    return "<h2>Against production</h2>\n" + table(headers, rows)


def quantiles_section(names: Sequence[str], stats: Mapping[str, Mapping[str, Any]]) -> str:
    rows = [
        [name, *(stats[name].get("score_quantiles", {}).get(key) for key in metrics.QUANTILES)]
        for name in names
    ]
    return "<h2>Score quantiles</h2>\n" + table(["model", *metrics.QUANTILES], rows)


def plots_section(plots: Mapping[str, str | None]) -> str:
    parts = ["<h2>Plots</h2>\n"]
    for key, caption in PLOT_CAPTIONS.items():
        file = plots.get(key)
        if file:
            parts.append(
                f"<h3>{html.escape(caption)}</h3>\n"
                f'<img src="{html.escape(file)}" alt="{html.escape(caption)}">\n'
            )
        else:
            parts.append(note(f"{caption}: not drawn, they need both fraud and legitimate events."))
    return "".join(parts)


def disagreements_section(top: Mapping[str, Sequence[Mapping[str, Any]]]) -> str:
    parts = ["<h2>Top disagreements with production</h2>\n"]
    if not top:
        parts.append(note("No candidate model."))
    headers = [
        "event",
        "entity",
        "time (UTC)",
        "label",
        "candidate score",
        "production score",
        "difference",
        "candidate decision",
        "production decision",
        "production score from",
    ]
    for candidate, events in top.items():
        parts.append(f"<h3>{html.escape(candidate)}</h3>\n")
        if not events:
            parts.append(note("No event has a production score to compare with."))
            continue
        rows = [
            [
                event.get("event_id"),
                event.get("entity"),
                timestamp(event.get("ts")),
                label_text(event.get("label")),
                event.get("candidate_score"),
                event.get("production_score"),
                event.get("difference"),
                event.get("candidate_decision"),
                event.get("production_decision"),
                event.get("production_source"),
            ]
            for event in events
        ]
        parts.append(table(headers, rows))
    return "".join(parts)
