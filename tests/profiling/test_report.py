from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

pytest.importorskip("pandas", reason="profiling sweeps need pandas: pip install 'espdetect[profile]'")

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from espdetect.profiling import plots
from espdetect.profiling.config import grid
from espdetect.profiling.recommend import recommend
from espdetect.profiling.report import report
from espdetect.profiling.results import ResultsStore, load_results
from espdetect.profiling.sweep import sweep

from ._squares import SquareFactory

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def results(square_clip: Path, tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    configs = grid(model="squares.pt", skip=[1, 4], jpeg_quality=[30, 90]) + grid(
        model="squares.yaml", imgsz=320
    )
    out = tmp_path_factory.mktemp("sweep")
    return sweep(
        square_clip, configs, out, repeats=2, warmup=1, progress=False, detector_factory=SquareFactory()
    )


def test_html_report_is_self_contained_with_embedded_figures(results: pd.DataFrame, tmp_path: Path) -> None:
    path = report(results, tmp_path)
    assert path == tmp_path / "report.html" and path.is_file()
    text = path.read_text()
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", text)
    assert len(images) == 5  # the four figures and speed against the baseline
    assert all(base64.b64decode(img).startswith(PNG_MAGIC) for img in images)
    assert "Recommendation" in text and "Environment" in text and "cpu_model" in text
    assert "untrained network" in text  # the .yaml rows are explained
    assert "squares.pt@640-fp32-conf0.25-reduceauto-skip4-q30" in text
    assert not re.search(r"(src|href)=['\"](?!data:)", text)  # nothing loaded from elsewhere


def test_markdown_report_writes_png_files(results: pd.DataFrame, tmp_path: Path) -> None:
    path = report(results, tmp_path, "markdown")
    text = path.read_text()
    pngs = sorted((tmp_path / "figures").glob("*.png"))
    assert len(pngs) == 5 and all(p.read_bytes().startswith(PNG_MAGIC) for p in pngs)
    for png in pngs:
        assert f"(figures/{png.name})" in text
    assert "| config_key |" in text
    header = next(line for line in text.splitlines() if line.startswith("| config_key |"))
    for col in ("fps_vs_baseline", "fps_vs_baseline_ci_low", "fps_output_norm", "drifted_runs"):
        assert f" {col} " in header, col
    assert "| fps_vs_baseline_ci_high | 95 % confidence interval of fps_vs_baseline" in text  # glossary


def test_report_says_in_words_how_much_the_machine_drifted(results: pd.DataFrame, tmp_path: Path) -> None:
    text = report(results, tmp_path, "markdown").read_text()
    assert re.search(
        r"The machine's speed \(the probe: [\d.]+ to [\d.]+ calls/s\) moved by up to \d+ % between "
        r"runs and \d+ % within one; \d+ of 10 runs flagged \(drift above 10 %\)\.",
        text,
    )
    assert "Repeats of one configuration differ in fps by up to" in text
    assert "fps_vs_baseline compares each run with the baseline (squares.pt@640" in text
    assert "replayed alongside it" in text
    assert "| sweep: baseline | squares.pt@640-fp32-conf0.25-reduceauto-skip1-q30 |" in text
    assert "| sweep: speed probe | 5 calls of squares.pt at 640 on frame 0 of the clip |" in text


def test_report_from_a_sweep_folder_with_a_given_recommendation(
    results: pd.DataFrame, tmp_path: Path
) -> None:
    folder = Path(results.attrs["out_dir"])
    rec = recommend(load_results(folder), target_fps=1e9)
    path = report(folder, tmp_path, recommendation=rec)
    assert "No configuration meets the constraints" in path.read_text()


def test_plots_return_figures_with_the_expected_content(results: pd.DataFrame, tmp_path: Path) -> None:
    frames = ResultsStore(results.attrs["out_dir"]).load_frames()
    figures = {
        "accuracy": plots.plot_accuracy_vs_fps(results),
        "stages": plots.plot_stage_times(results),
        "latency": plots.plot_latency(results, frames),
        "latency_percentiles": plots.plot_latency(results),
        "bandwidth": plots.plot_bandwidth_vs_quality(results),
        "baseline": plots.plot_fps_vs_baseline(results),
    }
    for name, fig in figures.items():
        assert isinstance(fig, Figure)
        assert plots.save_figure(fig, tmp_path / f"{name}.png").read_bytes().startswith(PNG_MAGIC)
    accuracy_ax = figures["accuracy"].axes[0]
    assert "1 without accuracy not shown" in accuracy_ax.get_title()
    legend = figures["stages"].axes[0].get_legend()
    assert legend is not None
    stage_labels = {t.get_text() for t in legend.get_texts()}
    assert {"decode", "inference", "annotate", "encode"} <= stage_labels
    # Intervals are drawn: error bars around the ratio to the baseline and around the speed.
    baseline_ax = figures["baseline"].axes[0]
    assert len(baseline_ax.containers) == 1 and len(baseline_ax.get_yticklabels()) == 5
    assert "95 % intervals" in baseline_ax.get_title()
    accuracy_legend = accuracy_ax.get_legend()
    assert accuracy_legend is not None
    assert "95 % interval" in {t.get_text() for t in accuracy_legend.get_texts()}
    no_baseline = plots.plot_fps_vs_baseline(results.assign(fps_vs_baseline=float("nan")))
    assert "no baseline runs" in no_baseline.axes[0].texts[0].get_text()


def test_pareto_front() -> None:
    mask = plots.pareto_front([10, 20, 30, 15], [0.9, 0.8, 0.5, 0.7])
    assert mask.tolist() == [True, True, True, False]


def test_labels_name_only_what_varies(results: pd.DataFrame) -> None:
    summary = results.drop_duplicates("config_key")
    labels = plots.config_labels(summary).tolist()
    assert "squares 640 s4 q30" in labels
    assert "squares* 320 s1 q80" in labels  # * marks the untrained model


def test_report_and_figures_show_motion_gating_and_tracking(square_clip: Path, tmp_path: Path) -> None:
    configs = grid(model="squares.pt", skip=2, motion=[False, True], tracking=[False, True])
    df = sweep(square_clip, configs, tmp_path / "sweep", repeats=1, warmup=0, progress=False,
               detector_factory=SquareFactory())  # fmt: skip
    text = report(df, tmp_path, "markdown").read_text()
    header = next(line for line in text.splitlines() if line.startswith("| config_key |"))
    for col in ("model_calls_per_min", "gated_fraction", "cpu_core_hours_per_camera_hour", "displayed_iou"):
        assert f" {col} " in header, col
    assert "Motion gating depends on the scene" in text
    assert "| results schema version | 5 |" in text
    labels = sorted(plots.config_labels(df.drop_duplicates("config_key")).tolist())
    assert labels == ["motion", "motion track", "no motion no track", "track"]
    legend = plots.plot_stage_times(df).axes[0].get_legend()
    assert legend is not None and "motion" in {t.get_text() for t in legend.get_texts()}


def test_accuracy_plot_labels_the_pareto_front_without_collisions() -> None:
    # Twelve configurations, all on the front, crowded close together: their labels must not
    # overlap; two dominated ones get no label.
    n = 12
    fps = np.r_[10 + 0.15 * np.arange(n - 2), 10.2, 10.5]
    recall = np.r_[0.95 - 0.003 * np.arange(n - 2), 0.5, 0.6]
    df = pd.DataFrame(
        {
            "config_key": [f"m.onnx@640-fp32-conf0.25-reduceauto-skip{i}-q80" for i in range(n)],
            "status": "ok",
            "mode": "fast",
            "repeat": 0,
            "skip": list(range(n)),
            "imgsz": [320, 640] * (n // 2),
            "jpeg_quality": [50, 80, 95] * (n // 3),
            "fps_output": fps,
            "displayed_recall": recall,
        }
    )
    fig = plots.plot_accuracy_vs_fps(df)
    ax = fig.axes[0]
    front = plots.pareto_front(fps, recall)
    texts = [t for t in ax.texts]
    assert len(texts) == int(front.sum()) >= 2
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    fig.draw_without_rendering()
    boxes = [t.get_window_extent(renderer) for t in texts]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert not a.overlaps(b), (a, b)
    assert "dominated, unlabelled" in ax.get_title()
