from __future__ import annotations

import json
import math
import socket
from pathlib import Path

import pytest

pytest.importorskip("pandas", reason="profiling sweeps need pandas: pip install 'espdetect[profile]'")

import pandas as pd

from espdetect.detectors.base import Detector
from espdetect.exceptions import ConfigurationError, ModelLoadError
from espdetect.profiling.calibration import drift_summary, log_t_interval
from espdetect.profiling.config import ProfileConfig, grid
from espdetect.profiling.environment import cuda_available
from espdetect.profiling.results import (
    ADDED_IN_4,
    ADDED_IN_5,
    COLUMNS,
    SCHEMA_VERSION,
    ResultsStore,
    compare_configs,
    load_results,
    summarize,
)
from espdetect.profiling.sweep import HALF_NEEDS_CUDA, choose_baseline, sweep

from ._squares import FRAMES, SquareDetector, SquareFactory


class Stop(Exception):
    pass


def test_sweep_returns_the_documented_columns_and_writes_its_files(
    square_clip: Path, squares: SquareFactory, tmp_path: Path
) -> None:
    configs = grid(model="squares.pt", skip=[1, 3], jpeg_quality=[40, 90])
    df = sweep(square_clip, configs, tmp_path, repeats=2, warmup=1, progress=False, detector_factory=squares)

    assert list(df.columns) == list(COLUMNS)
    assert len(df) == 8
    assert set(df["status"]) == {"ok"}
    # Measured here: the node is this machine (a Ray sweep names the Ray node).
    assert set(df["node"]) == {socket.gethostname()}
    assert summarize(df)["node"].tolist() == [socket.gethostname()] * 4
    assert sorted(df.groupby("config_key")["repeat"].apply(sorted).tolist()) == [[0, 1]] * 4
    assert (df["frames_out"] == FRAMES).all()
    assert (df["fps_output"] > 0).all() and (df["cpu_percent"] > 0).all() and (df["rss_peak_mb"] > 0).all()
    by_skip = df.groupby("skip")["frames_detected"].first()
    assert by_skip["1"] == FRAMES and by_skip["3"] == math.ceil(FRAMES / 3)
    for col in ("inference_ms_p50", "encode_ms_p95", "latency_ms_p99", "bytes_per_frame", "bandwidth_kbps"):
        assert df[col].notna().all(), col
    quality = df.groupby("jpeg_quality")["bytes_per_frame"].median()
    assert quality[40] < quality[90]
    # One detector for all four configurations: they share model, imgsz and precision.
    assert len(squares.calls) == 1

    store = ResultsStore(tmp_path)
    assert pd.read_parquet(store.results_parquet).shape == df.shape
    env = json.loads(store.environment_json.read_text())
    assert env["cores_logical"] >= 1 and env["cpu_model"]
    assert {"torch", "ultralytics", "onnxruntime", "opencv"} <= set(env["versions"])
    assert env["clip"]["frames"] == FRAMES and env["sweep"]["repeats"] == 2
    assert "squares.pt" in env["models"]
    frames = store.load_frames()
    assert len(frames) == 8 * FRAMES


def test_run_order_is_shuffled_per_repeat_and_seeded(
    square_clip: Path, squares: SquareFactory, tmp_path: Path
) -> None:
    configs = grid(model="squares.pt", skip=[1, 2, 3, 4, 5, 6])
    a = sweep(
        square_clip, configs, tmp_path / "a", repeats=2, seed=7, progress=False, detector_factory=squares
    )
    b = sweep(
        square_clip, configs, tmp_path / "b", repeats=2, seed=7, progress=False, detector_factory=squares
    )
    order_a = a.sort_values("run_order")[["config_key", "repeat"]].to_numpy().tolist()
    order_b = b.sort_values("run_order")[["config_key", "repeat"]].to_numpy().tolist()
    assert order_a == order_b
    # Repeats are interleaved: every configuration runs once before any runs twice.
    assert [r for _, r in order_a] == [0] * 6 + [1] * 6
    assert [k for k, _ in order_a[:6]] != [c.key for c in configs]


def test_an_interrupted_sweep_resumes_with_only_the_missing_runs(
    square_clip: Path, squares: SquareFactory, tmp_path: Path
) -> None:
    configs = grid(model="squares.pt", skip=[1, 2, 4], jpeg_quality=[50, 80])
    seen: list[dict[str, object]] = []

    def stop_after_four(row: dict[str, object]) -> None:
        seen.append(row)
        if len(seen) == 4:
            raise Stop

    with pytest.raises(Stop):
        sweep(
            square_clip,
            configs,
            tmp_path,
            repeats=2,
            progress=False,
            detector_factory=squares,
            on_result=stop_after_four,
        )
    assert len(ResultsStore(tmp_path).load()) == 4

    rerun: list[dict[str, object]] = []
    df = sweep(
        square_clip,
        configs,
        tmp_path,
        repeats=2,
        progress=False,
        detector_factory=squares,
        on_result=rerun.append,
    )
    assert len(rerun) == 12 - 4
    done_first = {(r["config_key"], r["repeat"]) for r in seen}
    assert done_first.isdisjoint({(r["config_key"], r["repeat"]) for r in rerun})
    assert len(df) == 12
    assert not df.duplicated(["config_key", "repeat"]).any()
    assert len(ResultsStore(tmp_path).load_frames()) == 12 * FRAMES

    again: list[dict[str, object]] = []
    sweep(
        square_clip,
        configs,
        tmp_path,
        repeats=2,
        progress=False,
        detector_factory=squares,
        on_result=again.append,
    )
    assert again == []


def test_another_clips_results_are_not_mixed_in(
    square_clip: Path, squares: SquareFactory, tmp_path: Path
) -> None:
    from ._squares import write_square_clip

    sweep(
        square_clip,
        grid(model="squares.pt"),
        tmp_path / "out",
        repeats=1,
        progress=False,
        detector_factory=squares,
    )
    other = write_square_clip(tmp_path / "other", frames=10)
    with pytest.raises(ConfigurationError, match="another clip"):
        sweep(
            other,
            grid(model="squares.pt"),
            tmp_path / "out",
            repeats=1,
            progress=False,
            detector_factory=squares,
        )
    df = sweep(
        other, grid(model="squares.pt"), tmp_path / "out", repeats=1, progress=False,
        detector_factory=squares, resume=False,
    )  # fmt: skip
    assert df["frames_in"].tolist() == [10]


@pytest.mark.skipif(cuda_available(), reason="this machine has CUDA: half precision applies")
def test_half_precision_without_cuda_is_marked_not_applicable(
    square_clip: Path, squares: SquareFactory, tmp_path: Path
) -> None:
    configs = grid(model="squares.pt", half=[False, True])
    df = sweep(square_clip, configs, tmp_path, repeats=1, progress=False, detector_factory=squares)
    half = df[df["half"]].iloc[0]
    full = df[~df["half"]].iloc[0]
    assert half["status"] == HALF_NEEDS_CUDA == "n/a: half needs CUDA"
    assert math.isnan(half["fps_output"]) and math.isnan(half["inference_ms_p50"])
    assert full["status"] == "ok"
    assert all(not c.half for c in squares.calls)
    summary = summarize(df)
    assert summary.set_index("config_key").loc[half["config_key"], "n_repeats"] == 0


def test_models_that_fail_or_do_not_apply_get_a_status_and_the_sweep_goes_on(
    square_clip: Path, tmp_path: Path
) -> None:
    def factory(config: ProfileConfig) -> Detector:
        if config.model == "broken.onnx":
            raise ModelLoadError(config.model, "expected an ONNX file, got garbage")
        return SquareDetector(fixed_imgsz=320)

    configs = grid(model=["squares.pt", "broken.onnx"], imgsz=[320, 640])
    df = sweep(
        square_clip, configs, tmp_path, repeats=1, progress=False, detector_factory=factory, reference=None
    )
    status = dict(zip(df["config_key"], df["status"], strict=True))
    assert status[configs[0].key] == "ok"
    assert status[configs[1].key].startswith("n/a: expected imgsz 320: model 'squares' was exported")
    assert status[configs[2].key].startswith("error: ModelLoadError")
    assert df.loc[df["status"] == "ok", "accuracy_status"].tolist() == ["n/a: no reference requested"]
    assert set(df.loc[df["status"] != "ok", "accuracy_status"]) == {"n/a: not measured"}


def test_untrained_models_get_no_accuracy(square_clip: Path, squares: SquareFactory, tmp_path: Path) -> None:
    configs = grid(model=["squares.pt", "squares.yaml"], skip=[1, 2])
    df = sweep(square_clip, configs, tmp_path, repeats=1, progress=False, detector_factory=squares)
    yaml_rows = df[df["model"] == "squares.yaml"]
    assert set(yaml_rows["accuracy_status"]) == {"n/a: untrained model (.yaml), speed only"}
    assert yaml_rows["recall"].isna().all() and yaml_rows["displayed_recall"].isna().all()
    trained = df[df["model"] == "squares.pt"]
    assert set(trained["accuracy_status"]) == {"ok"}
    assert set(trained["reference_key"]) == {"squares.pt@640-fp32-conf0.25-reduce1-skip1-q80"}


def test_realtime_mode_replays_at_camera_pace_through_the_server_pipeline(
    square_clip: Path, squares: SquareFactory, tmp_path: Path
) -> None:
    df = sweep(
        square_clip, grid(model="squares.pt", skip=[2]), tmp_path, mode="realtime", repeats=1,
        progress=False, detector_factory=squares,
    )  # fmt: skip
    row = df.iloc[0]
    assert row["status"] == "ok" and row["mode"] == "realtime"
    assert 0 < row["frames_out"] <= FRAMES
    assert row["frames_dropped"] == FRAMES - row["frames_out"]
    assert 0 < row["frames_detected"] <= row["frames_out"]
    # Paced by the recorded arrival times, the run cannot be faster than the camera.
    assert row["fps_output"] <= 15.0 * 1.2
    assert row["latency_ms_p50"] > 0
    assert row["accuracy_status"] == "ok" and 0 < row["displayed_recall"] <= 1


def test_runs_sharing_the_cpu_are_measured_again(
    square_clip: Path, squares: SquareFactory, tmp_path: Path
) -> None:
    configs = grid(model="squares.pt")
    # A threshold below zero treats every run as disturbed: the retry budget is used up.
    always = sweep(
        square_clip, configs, tmp_path / "a", repeats=1, progress=False, detector_factory=squares,
        busy_threshold=-1.0, busy_retries=2,
    )  # fmt: skip
    assert always["attempts"].tolist() == [3]
    never = sweep(
        square_clip, configs, tmp_path / "b", repeats=1, progress=False, detector_factory=squares,
        busy_threshold=None, busy_retries=2,
    )  # fmt: skip
    assert never["attempts"].tolist() == [1]
    assert (never["background_cpu_percent"] >= 0).all()


def test_results_with_other_columns_load_but_are_not_appended_to(
    square_clip: Path, squares: SquareFactory, tmp_path: Path
) -> None:
    df = sweep(
        square_clip, grid(model="squares.pt"), tmp_path, repeats=1, progress=False, detector_factory=squares
    )
    store = ResultsStore(tmp_path)
    # A results.csv without one column.
    store.results_csv.write_text(
        df.drop(columns=["camera_bytes_per_frame"]).to_csv(index=False), encoding="utf-8"
    )
    old = load_results(tmp_path)
    assert list(old.columns) == list(COLUMNS) and old["camera_bytes_per_frame"].isna().all()
    with pytest.raises(ConfigurationError, match="columns other than this version's"):
        sweep(
            square_clip,
            grid(model="squares.pt", skip=2),
            tmp_path,
            repeats=1,
            progress=False,
            detector_factory=squares,
        )


#: Columns the results table had before schema versions (version 1).
_ADDED_IN_2 = (
    "schema_version", "motion", "keepalive", "tracking", "video_s", "model_calls_per_min",
    "cpu_core_hours_per_camera_hour", "motion_checks", "moving_frames", "keepalive_calls",
    "gated_frames", "gated_fraction", "displayed_iou", "displayed_false_boxes_per_frame",
    *(c for c in COLUMNS if c.startswith("motion_ms_")),
)  # fmt: skip


def test_a_sweep_of_schema_1_loads_but_resuming_it_is_refused_with_what_to_do(
    square_clip: Path, squares: SquareFactory, tmp_path: Path
) -> None:
    df = sweep(
        square_clip, grid(model="squares.pt"), tmp_path, repeats=1, progress=False, detector_factory=squares
    )
    assert df["schema_version"].tolist() == [SCHEMA_VERSION] == [5]
    assert ResultsStore(tmp_path).environment()["schema_version"] == SCHEMA_VERSION
    store = ResultsStore(tmp_path)
    store.results_csv.write_text(df.drop(columns=list(_ADDED_IN_2)).to_csv(index=False), encoding="utf-8")

    old = load_results(tmp_path)
    assert old["schema_version"].tolist() == [1]
    assert old["displayed_iou"].isna().all() and old["model_calls_per_min"].isna().all()
    with pytest.raises(ConfigurationError, match="schema version 1") as info:
        sweep(
            square_clip, grid(model="squares.pt", motion=True), tmp_path, repeats=1, progress=False,
            detector_factory=squares,
        )  # fmt: skip
    message = str(info.value)
    assert (
        "motion, keepalive and tracking" in message
        and "--fresh" in message
        and "new output folder" in message
    )
    assert len(load_results(tmp_path)) == 1  # nothing was appended
    fresh = sweep(
        square_clip, grid(model="squares.pt", motion=True), tmp_path, repeats=1, progress=False,
        detector_factory=squares, resume=False,
    )  # fmt: skip
    assert fresh["schema_version"].tolist() == [5] and fresh["motion"].tolist() == [True]


def test_rows_of_a_newer_schema_are_not_appended_to(
    square_clip: Path, squares: SquareFactory, tmp_path: Path
) -> None:
    df = sweep(
        square_clip, grid(model="squares.pt"), tmp_path, repeats=1, progress=False, detector_factory=squares
    )
    store = ResultsStore(tmp_path)
    store.results_csv.write_text(df.assign(schema_version=6).to_csv(index=False), encoding="utf-8")
    with pytest.raises(ConfigurationError, match="schema version 6, written by a newer espdetect"):
        sweep(
            square_clip, grid(model="squares.pt", skip=2), tmp_path, repeats=1, progress=False,
            detector_factory=squares,
        )  # fmt: skip


def test_a_sweep_of_schema_3_resumes_as_camera_unchanged(
    square_clip: Path, squares: SquareFactory, tmp_path: Path
) -> None:
    df = sweep(
        square_clip, grid(model="squares.pt"), tmp_path, repeats=1, progress=False, detector_factory=squares
    )
    store = ResultsStore(tmp_path)
    v3 = df.drop(columns=[*ADDED_IN_4, *ADDED_IN_5]).assign(schema_version=3)
    store.results_csv.write_text(v3.to_csv(index=False), encoding="utf-8")
    assert store.schema_versions() == {3}

    resumed = sweep(
        square_clip, grid(model="squares.pt", skip=[1, 2]), tmp_path, repeats=1, progress=False,
        detector_factory=squares,
    )  # fmt: skip
    assert list(resumed.columns) == list(COLUMNS) and len(resumed) == 2
    assert resumed["schema_version"].tolist() == [5, 5]
    assert resumed["camera_framesize"].tolist() == ["", ""] and resumed["camera_quality"].isna().all()
    # The old row is kept as it was (no camera columns measured); the new one has them.
    old, new = resumed.sort_values("skip")["camera_bytes_per_frame"].tolist()
    assert math.isnan(old) and new > 0
    assert resumed.sort_values("skip")["node"].tolist() == ["", socket.gethostname()]
    assert store.environment()["schema_version"] == 5


def test_a_sweep_of_schema_4_resumes_with_the_node_of_its_rows_unknown(
    square_clip: Path, squares: SquareFactory, tmp_path: Path
) -> None:
    df = sweep(
        square_clip, grid(model="squares.pt"), tmp_path, repeats=1, progress=False, detector_factory=squares
    )
    store = ResultsStore(tmp_path)
    v4 = df.drop(columns=list(ADDED_IN_5)).assign(schema_version=4)
    store.results_csv.write_text(v4.to_csv(index=False), encoding="utf-8")
    old = load_results(tmp_path)
    assert old["schema_version"].tolist() == [4] and old["node"].tolist() == [""]

    resumed = sweep(
        square_clip, grid(model="squares.pt", skip=[1, 2]), tmp_path, repeats=1, progress=False,
        detector_factory=squares,
    )  # fmt: skip
    assert list(resumed.columns) == list(COLUMNS) and len(resumed) == 2
    assert resumed["schema_version"].tolist() == [5, 5]
    # The old row keeps its figures (only the node is unknown); the new one is this machine's.
    assert resumed.sort_values("skip")["node"].tolist() == ["", socket.gethostname()]
    assert resumed.sort_values("skip")["fps_output"].iloc[0] == df["fps_output"].iloc[0]
    assert store.environment()["schema_version"] == 5


def test_camera_axes_need_a_live_camera(square_clip: Path, squares: SquareFactory, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="live camera"):
        sweep(
            square_clip, grid(model="squares.pt", camera_framesize=["QVGA", "VGA"]), tmp_path,
            progress=False, detector_factory=squares,
        )  # fmt: skip


#: Columns schema version 3 added (noise-aware measurement).
_ADDED_IN_3 = (
    "label", "probe_before", "probe_after", "speed_index", "drift", "drift_flag", "baseline_key",
    "baseline_fps_output", "fps_vs_baseline", "fps_output_norm",
)  # fmt: skip


def test_a_sweep_of_schema_2_loads_without_noise_figures_but_resuming_it_is_refused(
    square_clip: Path, squares: SquareFactory, tmp_path: Path
) -> None:
    df = sweep(
        square_clip, grid(model="squares.pt"), tmp_path, repeats=1, progress=False, detector_factory=squares
    )
    assert set(_ADDED_IN_3) <= set(COLUMNS)
    store = ResultsStore(tmp_path)
    v2 = df.drop(columns=list(_ADDED_IN_3)).assign(schema_version=2)
    store.results_csv.write_text(v2.to_csv(index=False), encoding="utf-8")

    old = load_results(tmp_path)
    assert old["schema_version"].tolist() == [2] and list(old.columns) == list(COLUMNS)
    assert old["speed_index"].isna().all() and old["fps_vs_baseline"].isna().all()
    assert old["label"].tolist() == [""] and old["drift_flag"].tolist() == [False]
    assert "unknown" in drift_summary(old).sentence
    assert summarize(old)["fps_vs_baseline"].isna().all()
    from espdetect.profiling.report import report

    text = report(old, tmp_path / "report", "markdown").read_text()
    assert "how much the machine drifted is unknown" in text and "fps_vs_baseline.png" not in text
    with pytest.raises(ConfigurationError, match="schema version 2") as info:
        sweep(
            square_clip, grid(model="squares.pt", skip=2), tmp_path, repeats=1, progress=False,
            detector_factory=squares,
        )  # fmt: skip
    message = str(info.value)
    assert "version 3 added a speed probe" in message and "--fresh" in message
    assert "motion, keepalive" not in message  # only what changed since the folder's version
    assert len(load_results(tmp_path)) == 1


def test_identical_configurations_under_two_labels_are_measured_and_compared(
    square_clip: Path, squares: SquareFactory, tmp_path: Path
) -> None:
    a = ProfileConfig(model="squares.pt", skip=2)
    b = a.replace(label="twin")
    base = a.replace(skip=1)
    df = sweep(
        square_clip, [a, b], tmp_path, repeats=3, warmup=0, progress=False, detector_factory=squares,
        baseline=base, probe_calls=2,
    )  # fmt: skip
    assert sorted(df["label"].unique()) == ["", "twin"] and b.key == a.key + "-label_twin"
    assert set(df["baseline_key"]) == {base.key}
    assert df["fps_vs_baseline"].notna().all() and df["speed_index"].gt(0).all()
    iv = compare_configs(df, a.key, b.key)
    assert iv.n == 3 and iv.low <= iv.center <= iv.high
    paired = df.set_index(["config_key", "repeat"])["fps_vs_baseline"]
    expected = [paired[(a.key, r)] / paired[(b.key, r)] for r in range(3)]
    assert iv == log_t_interval(expected)
    # The baseline's own key compares through each run's paired ratio.
    assert compare_configs(df, a.key, base.key) == log_t_interval(
        df[df["config_key"] == a.key]["fps_vs_baseline"]
    )
    inverse = compare_configs(df, base.key, a.key)
    assert inverse.center == pytest.approx(
        1 / log_t_interval(df[df["config_key"] == a.key]["fps_vs_baseline"]).center
    )
    with pytest.raises(ValueError, match="measured runs"):
        compare_configs(df, a.key, "nope")
    summary = summarize(df).set_index("config_key")
    for key in (a.key, b.key):
        row = summary.loc[key]
        assert row["fps_vs_baseline_ci_low"] <= row["fps_vs_baseline"] <= row["fps_vs_baseline_ci_high"]
        assert row["fps_output_ci_low"] <= row["fps_output_ci_high"]


def test_the_baseline_alternates_sides_and_realtime_mode_pairs_none_by_default(
    square_clip: Path, squares: SquareFactory, tmp_path: Path
) -> None:
    configs = grid(model="squares.pt", skip=[1, 2, 3])
    assert choose_baseline(configs) == configs[0]
    assert choose_baseline(grid(model="squares.pt", half=[True, False])) == ProfileConfig(model="squares.pt")
    assert choose_baseline(configs, "realtime") is None
    df = sweep(
        square_clip, grid(model="squares.pt", skip=[2]), tmp_path, mode="realtime", repeats=1,
        progress=False, detector_factory=squares,
    )  # fmt: skip
    assert df["baseline_key"].tolist() == [""] and df["fps_vs_baseline"].isna().all()
    assert df["speed_index"].gt(0).all()
    assert df.attrs["environment"]["sweep"]["baseline"] is None


def test_a_baseline_that_fails_leaves_the_rows_without_ratios(square_clip: Path, tmp_path: Path) -> None:
    def factory(config: ProfileConfig) -> Detector:
        if config.model == "broken.onnx":
            raise ModelLoadError(config.model, "expected an ONNX file, got garbage")
        return SquareDetector()

    df = sweep(
        square_clip, grid(model="squares.pt", skip=[1, 2]), tmp_path, repeats=1, progress=False,
        detector_factory=factory, reference=None, baseline=ProfileConfig(model="broken.onnx"),
    )  # fmt: skip
    assert set(df["status"]) == {"ok"}
    assert df["fps_vs_baseline"].isna().all() and set(df["baseline_key"]) == {""}
    # The probe falls back to the first configuration's model.
    assert df["speed_index"].gt(0).all()
    assert df.attrs["environment"]["sweep"]["probe"]["model"] == "squares.pt"
