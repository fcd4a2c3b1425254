"""The profiler on the recorded yard clip (``data/clips/yard-qvga``: 10 s of still yard, then
people who walk in, stand, leave and cross): what viewers see with and without tracking, and
what gating does to recall.

* **tracking against the last boxes** (``fast`` replays, so the model calls are the same by
  construction: a fixed ``skip``): displayed IoU and displayed recall of the boxes drawn on
  every frame, against the reference (the model on every frame), with ``tracking`` on and off;
* **gating at ``skip=auto``** (``realtime`` replays: the server's own pipeline reading the clip
  at its recorded pace): recall of the detected frames and of what is displayed, with
  ``motion`` on and off, ``--clip-repeats`` times each in a shuffled order. The recall that
  matters is that of the boxes shown on every frame (``displayed_recall``): the detected frames'
  own recall against a same-model reference is 1.0 whichever frames the model runs on.

Figures are the medians over repeats; every row is in results.json.
"""

from __future__ import annotations

import logging
import statistics
from pathlib import Path
from typing import Any

from benchmarks._harness.report import markdown_table
from espdetect.profiling.config import ProfileConfig, grid
from espdetect.profiling.sweep import sweep

__all__ = ["CLIP", "SKIPS", "clip_section"]

logger = logging.getLogger(__name__)

CLIP = Path(__file__).resolve().parents[2] / "data" / "clips" / "yard-qvga"
SKIPS = (2, 3, 5, 8)
_SHOWN = (
    "model_calls_per_min",
    "frames_detected",
    "displayed_iou",
    "displayed_recall",
    "displayed_precision",
    "recall",
    "precision",
    "gated_fraction",
    "cpu_core_hours_per_camera_hour",
)


def _median(rows: list[dict[str, Any]], column: str) -> float:
    return float(statistics.median(float(r[column]) for r in rows))


def _by_config(df: Any, configs: list[ProfileConfig]) -> dict[ProfileConfig, list[dict[str, Any]]]:
    records: list[dict[str, Any]] = df.to_dict("records")
    return {c: [r for r in records if r["config_key"] == c.key] for c in configs}


def clip_section(logs: Path, repeats: int = 3) -> tuple[dict[str, Any], list[list[object]], list[str]]:
    """Both comparisons; (results for results.json, target rows, Markdown lines)."""
    tracking_configs = grid(skip=list(SKIPS), tracking=[False, True], decode_reduce=1)
    fast = sweep(
        CLIP, tracking_configs, logs / "sweep-tracking", mode="fast", repeats=1, progress=False, resume=False
    )
    gating_configs = grid(skip="auto", motion=[False, True], tracking=True, decode_reduce=1)
    live = sweep(
        CLIP, gating_configs, logs / "sweep-gating", mode="realtime", repeats=repeats, progress=False,
        resume=False,
    )  # fmt: skip

    targets: list[list[object]] = []
    table: list[list[object]] = []
    fast_rows = _by_config(fast, tracking_configs)
    for skip in SKIPS:
        pair = [c for c in tracking_configs if c.skip == skip]
        last, tracked = (fast_rows[next(c for c in pair if c.tracking is t)] for t in (False, True))
        iou = (_median(last, "displayed_iou"), _median(tracked, "displayed_iou"))
        recall = (_median(last, "displayed_recall"), _median(tracked, "displayed_recall"))
        calls = (_median(last, "frames_detected"), _median(tracked, "frames_detected"))
        ok = iou[1] > iou[0] and recall[1] >= recall[0] and calls[0] == calls[1]
        targets.append(
            [
                f"yard clip, skip={skip} ({calls[1]:.0f} model calls either way): displayed boxes with "
                "tracking match the reference better than draw_last (mean IoU and displayed recall)",
                "higher IoU, recall not lower",
                f"IoU {iou[1]:.3f} vs {iou[0]:.3f}; recall {recall[1]:.3f} vs {recall[0]:.3f}",
                "PASS" if ok else "FAIL",
            ]
        )
        for name, rows in (("draw_last", last), ("tracking", tracked)):
            table.append([f"skip={skip}", name, *(round(_median(rows, c), 3) for c in _SHOWN)])
    live_rows = _by_config(live, gating_configs)
    off, on = (live_rows[next(c for c in gating_configs if c.motion is m)] for m in (False, True))
    # Against a reference from the same model on every frame, the recall of the detected frames
    # is the same (1.0 at full decode) whichever frames run: what gating could lose is what is
    # known on the frames it skips, i.e. the recall of the boxes shown on every frame.
    shown = (_median(off, "displayed_recall"), _median(on, "displayed_recall"))
    targets.append(
        [
            "yard clip, skip=auto, realtime, tracking: recall (of the boxes shown on every frame) with "
            "gating on is not lower than with gating off",
            f">= {shown[0]:.3f}",
            f"{shown[1]:.3f} (detected frames: {_median(on, 'recall'):.3f} vs {_median(off, 'recall'):.3f}; "
            f"model calls/min {_median(on, 'model_calls_per_min'):.0f} vs "
            f"{_median(off, 'model_calls_per_min'):.0f})",
            "PASS" if shown[1] >= shown[0] else "FAIL",
        ]
    )
    for name, rows in (("skip=auto, gating off", off), ("skip=auto, gating on", on)):
        table.append([name, "realtime, tracking", *(round(_median(rows, c), 3) for c in _SHOWN)])
    lines = [
        "## The yard clip in the profiler",
        "",
        f"`{CLIP.relative_to(CLIP.parents[2])}`; reference: the model on every frame. Fast replays for "
        f"tracking (one run each: deterministic), realtime replays ({repeats} each, medians) for gating.",
        "",
        markdown_table(["configuration", "drawing", *_SHOWN], table, align="ll" + "r" * len(_SHOWN)),
        "",
    ]
    # "model" is this machine's path to the file; "model_name" says which model it was.
    results = {
        "tracking": fast.drop(columns="model").to_dict("records"),
        "gating": live.drop(columns="model").to_dict("records"),
    }
    return results, targets, lines
