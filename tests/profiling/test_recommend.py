from __future__ import annotations

import math

import pytest

pytest.importorskip("pandas", reason="profiling sweeps need pandas: pip install 'espdetect[profile]'")

import pandas as pd

from espdetect.profiling.recommend import NoConfigurationMeets, config_from_row, recommend


def table(*rows: tuple[str, str, float, float, float]) -> pd.DataFrame:
    """(model, skip, fps_output, latency_ms_p95, displayed_recall) rows, as a sweep summary."""
    records = []
    for model, skip, fps, latency, recall in rows:
        records.append(
            {
                "config_key": f"{model}-skip{skip}",
                "mode": "fast",
                "status": "ok",
                "model": model,
                "imgsz": 640,
                "half": False,
                "skip": skip,
                "jpeg_quality": 80,
                "conf": 0.25,
                "decode_reduce": "auto",
                "fps_output": fps,
                "latency_ms_p95": latency,
                "displayed_recall": recall,
            }
        )
    return pd.DataFrame(records)


RESULTS = table(
    ("m.onnx", "4", 20.0, 100.0, 0.60),
    ("m.onnx", "2", 12.0, 150.0, 0.90),
    ("m.onnx", "1", 8.0, 300.0, 0.95),
    ("m.yaml", "1", 40.0, 50.0, math.nan),
)


def test_the_most_accurate_configuration_meeting_fps_wins() -> None:
    rec = recommend(RESULTS, target_fps=10)
    assert rec.ok and rec.config is not None
    assert rec.config.key == "m.onnx@640-fp32-conf0.25-reduceauto-skip2-q80"
    assert rec.metrics["displayed_recall"] == 0.90
    assert "Recommended" in rec.summary()


def test_latency_limits_the_choice() -> None:
    rec = recommend(RESULTS, target_fps=10, max_latency_ms=120)
    assert rec.config is not None and rec.config.skip == 4


def test_ties_go_to_the_fastest() -> None:
    tied = pd.concat([RESULTS, table(("m.onnx", "3", 15.0, 140.0, 0.90))], ignore_index=True)
    rec = recommend(tied, target_fps=10)
    assert rec.config is not None and rec.config.skip == 3


def test_without_constraints_the_most_accurate_wins_and_unknown_accuracy_never_beats_known() -> None:
    rec = recommend(RESULTS)
    assert rec.config is not None and rec.config.skip == 1 and rec.config.model == "m.onnx"


def test_unknown_accuracy_is_picked_only_when_nothing_else_fits_and_is_flagged() -> None:
    rec = recommend(RESULTS, target_fps=30)
    assert rec.ok and rec.config is not None and rec.config.model == "m.yaml"
    assert any("known displayed_recall" in r for r in rec.reasons)


def test_an_unmeetable_fps_says_so_and_lists_the_closest() -> None:
    rec = recommend(RESULTS, target_fps=50, min_recall=0.8)
    assert not rec.ok and rec.config is None
    assert any("reaches 50 fps_output" in r and "40" in r for r in rec.reasons)
    assert len(rec.candidates) == 3
    assert rec.candidates["shortfall"].is_monotonic_increasing
    assert "Closest candidates" in rec.summary()


def test_an_unmeetable_recall_names_the_best_reachable() -> None:
    rec = recommend(RESULTS, target_fps=10, min_recall=0.95)
    assert not rec.ok
    assert any("fast enough reach displayed_recall 0.9" in r for r in rec.reasons)


def test_constraints_that_cannot_hold_together_are_explained() -> None:
    rec = recommend(RESULTS.iloc[:3], target_fps=15, max_latency_ms=90)
    assert not rec.ok
    assert any("latency_ms_p95 <= 90" in r for r in rec.reasons)
    rec = recommend(RESULTS.iloc[:3], target_fps=15, max_latency_ms=120, min_recall=0.9)
    assert any("0.6" in r for r in rec.reasons)


def test_strict_raises_with_the_reasons() -> None:
    with pytest.raises(NoConfigurationMeets, match="no configuration reaches 100") as info:
        recommend(RESULTS, target_fps=100, strict=True)
    assert info.value.reasons and not info.value.candidates.empty
    with pytest.raises(NoConfigurationMeets):
        recommend(RESULTS, target_fps=100).raise_if_unmet()


def test_unmeasured_rows_are_ignored() -> None:
    results = RESULTS.copy()
    results.loc[3, "status"] = "n/a: half needs CUDA"
    rec = recommend(results, target_fps=30)
    assert not rec.ok
    only_na = results.assign(status="n/a: half needs CUDA")
    assert "no configuration was measured" in recommend(only_na).reasons[0]


def test_config_from_row_round_trips() -> None:
    cfg = config_from_row(RESULTS.iloc[0])
    assert (cfg.model, cfg.skip, cfg.decode_reduce, cfg.jpeg_quality) == ("m.onnx", 4, "auto", 80)


def test_fps_and_latency_met_separately_but_never_together() -> None:
    results = table(("m.onnx", "1", 20.0, 200.0, 0.9), ("m.onnx", "2", 5.0, 50.0, 0.9))
    rec = recommend(results, target_fps=10, max_latency_ms=100)
    assert not rec.ok
    assert rec.reasons == (
        "1 configurations reach 10 fps_output and 1 keep latency_ms_p95 <= 100 ms, but none does both",
    )


def test_config_from_row_carries_motion_and_tracking_and_old_tables_mean_off() -> None:
    gated = RESULTS.iloc[0].copy()
    gated["motion"], gated["keepalive"], gated["tracking"] = True, 12.0, True
    cfg = config_from_row(gated)
    assert (cfg.motion, cfg.keepalive, cfg.tracking) == (True, 12.0, True)
    # A schema-1 table has none of these columns; a motion-off row has no keepalive.
    old = config_from_row(RESULTS.iloc[0])
    assert (old.motion, old.tracking) == (False, False)
    off = RESULTS.iloc[0].copy()
    off["motion"], off["keepalive"], off["tracking"] = False, math.nan, False
    assert config_from_row(off).key == old.key


def test_the_recommendation_knows_which_axes_were_swept() -> None:
    swept = RESULTS.assign(motion=[False, True, False, True], keepalive=[math.nan, 30.0] * 2, tracking=True)
    rec = recommend(swept, target_fps=10)
    assert rec.swept_axes == ("model", "skip", "motion")
    assert rec.config is not None and rec.config.motion and rec.config.tracking
    assert recommend(RESULTS).swept_axes == ("model", "skip")
