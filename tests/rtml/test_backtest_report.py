"""The backtest report: one HTML file and its PNG plots, on synthetic frames (no services)."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rtml.backtest import report
from rtml.backtest.metrics import ScoredModel, summarize

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
T0 = 1_795_000_000_000
CANDIDATE = ScoredModel("candidate-a", "candidate", 0.5, "fraud-candidate/1")
ODD_NAME = ScoredModel("<b>x</b>", "candidate", 0.4, "v&2")
PRODUCTION = ScoredModel("production", "production", 0.3, "fraud/3")
MODELS = [CANDIDATE, ODD_NAME, PRODUCTION]


def backtest_frame(models: list[ScoredModel], events: int = 400, seed: int = 5) -> pd.DataFrame:
    """Events with ~5% fraud, some unlabelled; each model separates fraud a little differently;
    production published a prediction for most events."""
    rng = np.random.default_rng(seed)
    fraud = rng.random(events) < 0.05
    fraud[:2] = True  # both classes, whatever the seed
    label = np.where(fraud, 1.0, np.where(rng.random(events) < 0.2, np.nan, 0.0))
    frame = pd.DataFrame(
        {
            "event_id": [f"tx-{i}" for i in range(events)],
            "entity": [f"card-{i % 30}" for i in range(events)],
            "ts": T0 + np.arange(events) * 1000,
            "label": label,
        }
    )
    for index, model in enumerate(models):
        scores = 1 / (1 + np.exp(-(rng.normal(0, 1, events) + (2 + index) * fraud - 2.5)))
        frame[f"score:{model.name}"] = scores
        frame[f"decision:{model.name}"] = scores >= model.threshold
        frame[f"path:{model.name}"] = rng.choice(
            ["primary", "fallback_model", "default"], events, p=[0.85, 0.1, 0.05]
        )
    published = rng.random(events) < 0.8
    recorded = frame[f"score:{models[-1].name}"].to_numpy() + rng.normal(0, 0.01, events)
    frame["recorded_score"] = np.where(published, recorded, np.nan)
    frame["recorded_decision"] = pd.Series(
        [
            bool(score >= PRODUCTION.threshold) if seen else None
            for score, seen in zip(recorded, published, strict=True)
        ],
        dtype=object,
    )
    frame["recorded_version"] = pd.Series(
        ["fraud/3" if seen else None for seen in published], dtype=object
    )
    return frame


class ReportParser(HTMLParser):
    """Collects what a report links to or runs."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.links: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        values = dict(attrs)
        if tag == "img":
            self.images.append(values["src"] or "")
        if "href" in values:
            self.links.append(values["href"] or "")


def parse(path: Path) -> tuple[str, ReportParser]:
    page = path.read_text(encoding="utf-8")
    parser = ReportParser()
    parser.feed(page)
    return page, parser


def write(tmp_path: Path, frame: pd.DataFrame, models: list[ScoredModel], **run: object) -> Path:
    summary = summarize(frame, models, top_disagreements=5)
    if run:
        summary["run"] = run
    return report.write_report(frame, models, summary, tmp_path / "out")


def test_the_report_and_every_plot_it_links_exist(tmp_path: Path) -> None:
    path = write(tmp_path, backtest_frame(MODELS), MODELS)
    assert path == tmp_path / "out" / "report.html"
    page, parsed = parse(path)
    assert sorted(parsed.images) == ["fallback.png", "pr.png", "roc.png", "scores.png"]
    for image in parsed.images:
        assert not image.startswith(("/", "http:", "https:"))  # next to the report
        assert (path.parent / image).read_bytes()[:8] == PNG_MAGIC
    # self-contained: no script, no external stylesheet or font
    assert not parsed.tags & {"script", "link", "iframe"}
    assert parsed.links == []
    assert "http://" not in page and "https://" not in page


def test_the_report_names_every_model_and_escapes_names(tmp_path: Path) -> None:
    page, _ = parse(write(tmp_path, backtest_frame(MODELS), MODELS))
    for name in ("candidate-a", "production", "&lt;b&gt;x&lt;/b&gt;", "v&amp;2"):
        assert name in page
    assert "<b>x</b>" not in page
    assert "v&2" not in page


def test_the_report_shows_the_summary(tmp_path: Path) -> None:
    frame = backtest_frame(MODELS)
    summary = summarize(frame, MODELS, top_disagreements=5)
    page, _ = parse(report.write_report(frame, MODELS, summary, tmp_path))
    candidate = summary["models"]["candidate-a"]
    for shown in (
        f"{candidate['average_precision']:.4g}",
        f"{candidate['agreement']['share']:.2%}",
        f"{candidate['fallback_rate']:.2%}",
        f"{candidate['psi']:.4g}",
        f'<td class="num">{candidate["at_threshold"]["fp"]}</td>',
        "precision @ 0.3",  # production's threshold
    ):
        assert shown in page
    for row in summary["top_disagreements"]["candidate-a"]:
        assert f"<td>{row['event_id']}</td>" in page
    assert len(summary["top_disagreements"]["candidate-a"]) == 5
    # the ranking table lists models best first
    ranked = [page.index(f"<td>{report.html.escape(name)}</td>") for name in summary["ranking"]]
    assert ranked == sorted(ranked)


def test_run_information_is_a_table_of_whatever_is_there(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        backtest_frame(MODELS),
        MODELS,
        run_id="bt-42",
        range="2026-11-20T00:00 .. 2026-11-21T00:00",
        elapsed_s=12.5,
        command="rtml backtest --candidate 'a<b' && echo",
    )
    page, _ = parse(path)
    assert "<title>rtml backtest bt-42</title>" in page
    assert "2026-11-20T00:00 .. 2026-11-21T00:00" in page
    assert "<td>elapsed_s</td><td>12.5</td>" in page
    assert "rtml backtest --candidate &#x27;a&lt;b&#x27; &amp;&amp; echo" in page


def test_a_run_summary_with_the_metrics_nested(tmp_path: Path) -> None:
    """The layout `rtml.backtest.run` writes to summary.json: run entries at the top (its own
    `models` is a list), the metrics under `metrics`."""
    frame = backtest_frame(MODELS)
    metrics = summarize(frame, MODELS)
    run_summary = {
        "run_id": "bt-7",
        "range": {"topic": "rtml.fraud.transactions", "from": "2026-11-20T00:00", "to": None},
        "models": [{"name": model.name, "threshold": model.threshold} for model in MODELS],
        "elapsed_s": 3.5,
        "metrics": metrics,
    }
    page, parsed = parse(report.write_report(frame, MODELS, run_summary, tmp_path))
    assert "<title>rtml backtest bt-7</title>" in page
    assert "<p>rtml.fraud.transactions: 2026-11-20T00:00 .. –</p>" in page
    assert "<td>elapsed_s</td><td>3.5</td>" in page
    assert f"{metrics['models']['candidate-a']['average_precision']:.4g}" in page
    assert len(parsed.images) == 4


def test_without_both_classes_the_curves_are_not_drawn(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "roc.png").write_bytes(PNG_MAGIC)  # from an earlier run
    frame = backtest_frame(MODELS)
    frame["label"] = 0.0
    page, parsed = parse(write(tmp_path, frame, MODELS))
    assert sorted(parsed.images) == ["fallback.png", "scores.png"]
    assert "ROC curves: not drawn" in page and "Precision-recall curves: not drawn" in page
    assert not (out / "roc.png").exists()


def test_a_report_without_production(tmp_path: Path) -> None:
    models = [CANDIDATE]
    frame = backtest_frame(models)
    frame["recorded_score"] = np.nan
    frame["recorded_decision"] = None
    page, parsed = parse(write(tmp_path, frame, models))
    assert "@" not in page  # no production threshold to compare at
    assert "No event has a production score to compare with." in page
    assert len(parsed.images) == 4


def test_a_bad_frame_fails_before_anything_is_written(tmp_path: Path) -> None:
    frame = backtest_frame(MODELS).drop(columns=["path:production"])
    with pytest.raises(ValueError, match="no column.*path:production"):
        report.write_report(frame, MODELS, {}, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_value_formatting() -> None:
    assert report.text(None) == report.text(float("nan")) == "–"
    assert report.text(0.123456) == "0.1235"
    assert report.text(True) == "yes"
    assert report.text({"a": 1}) == '{"a": 1}'
    assert report.timestamp(T0 + 250) == "2026-11-18 11:06:40.250Z"  # date -u -d @1795000000.25
    assert report.timestamp("soon") == "soon"
    assert report.label_text(1.0) == "fraud"
    assert report.label_text(None) == report.label_text(float("nan")) == "none"
    assert report.cell(report.percent(0.5)) == '<td class="num">50.00%</td>'
    assert report.cell("<i>") == "<td>&lt;i&gt;</td>"


def test_plot_labels_show_as_written() -> None:
    assert report.plot_label(ScoredModel("$x$", "candidate", 0.5)) == r"\$x\$ (candidate)"
    hidden = report.plot_label(ScoredModel("_m", "candidate", 0.5))
    assert not hidden.startswith("_") and hidden.strip() == "_m (candidate)"
