"""Accuracy lost against a reference configuration: box matching, the reference itself, metrics.

The reference is the clip run through the most faithful configuration (every frame, the
largest input size, the best model, full-scale decoding), computed once per sweep and cached.
A configuration's boxes count as right when they match a reference box of the same class with
IoU >= 0.5 (greedy, most confident first). Two views are measured:

* **detected frames** (``recall``, ``precision``): the boxes a configuration computed, on the
  frames it computed them for — what skipping does not change;
* **displayed frames** (``displayed_recall``, ``displayed_precision``, ``displayed_iou``,
  ``displayed_false_boxes_per_frame``): the boxes a viewer actually sees on every output frame,
  as drawn — stale boxes on frames that got no detection of their own, or the tracks' predicted
  boxes with tracking — compared with the reference boxes *of the frame shown*. The
  ``stale_*`` columns restrict this to frames showing boxes detected on an earlier frame.

``displayed_iou`` says how well the drawn boxes sit on the objects, not just whether they
overlap enough to count: on every output frame, each reference box is paired with a displayed
box of the same class (one-to-one, highest IoU first) and scores that IoU, or 0 when no
displayed box of its class overlaps it; the column is the mean over all reference boxes of all
output frames (NaN when the reference has none). Displayed boxes left over, on frames with
reference boxes or without, do not lower it: ``displayed_false_boxes_per_frame`` counts them
(displayed boxes matching no reference box at IoU >= 0.5, per output frame).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from espdetect.detections import box_iou
from espdetect.detectors.base import Detector, DetectParams
from espdetect.encoders.jpeg import JpegEncoder
from espdetect.pipeline import FrameProcessor
from espdetect.profiling.replay import ClipData, DetectionSample, RenderSample, RunTrace

__all__ = [
    "ACCURACY_COLUMNS",
    "BoxSet",
    "MatchCounts",
    "Reference",
    "accuracy_metrics",
    "compute_reference",
    "match_boxes",
    "reference_ious",
]

logger = logging.getLogger(__name__)

#: Columns `accuracy_metrics` fills (NaN when a ratio has no denominator).
ACCURACY_COLUMNS = (
    "recall",
    "precision",
    "displayed_recall",
    "displayed_precision",
    "displayed_iou",
    "displayed_false_boxes_per_frame",
    "stale_recall",
    "stale_precision",
    "stale_frames",
    "stale_age_ms_mean",
    "blank_frames",
)

_FORMAT = "espdetect-reference"


class BoxSet(NamedTuple):
    """Boxes of one frame: (N, 4) xyxy pixels, (N,) class ids, (N,) confidences."""

    xyxy: np.ndarray
    class_id: np.ndarray
    confidence: np.ndarray

    @classmethod
    def empty(cls) -> BoxSet:
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.int64), np.zeros((0,), np.float32))

    @classmethod
    def of(cls, sample: DetectionSample) -> BoxSet:
        return cls(sample.xyxy, sample.class_id, sample.confidence)

    @classmethod
    def drawn(cls, sample: RenderSample) -> BoxSet:
        """The boxes drawn on an output frame (what its viewer saw)."""
        return cls(sample.drawn_xyxy, sample.drawn_class_id, sample.drawn_confidence)


@dataclass
class MatchCounts:
    """Matched, predicted and reference box counts; add them up over frames."""

    matched: int = 0
    predicted: int = 0
    reference: int = 0

    def __add__(self, other: MatchCounts) -> MatchCounts:
        return MatchCounts(
            self.matched + other.matched, self.predicted + other.predicted, self.reference + other.reference
        )

    @property
    def recall(self) -> float:
        """Share of reference boxes matched (NaN when the reference has none)."""
        return self.matched / self.reference if self.reference else math.nan

    @property
    def precision(self) -> float:
        """Share of predicted boxes matched (NaN when nothing was predicted)."""
        return self.matched / self.predicted if self.predicted else math.nan


def match_boxes(pred: BoxSet, ref: BoxSet, iou_threshold: float = 0.5) -> MatchCounts:
    """Greedy one-to-one matching of predicted to reference boxes of the same class.

    Predictions are taken most confident first; each takes the unmatched same-class reference
    box it overlaps most, if that IoU reaches ``iou_threshold``.

    Example:
        >>> a = BoxSet(np.array([[0, 0, 10, 10]], np.float32), np.array([0]), np.array([0.9]))
        >>> match_boxes(a, a).recall
        1.0
    """
    counts = MatchCounts(0, len(pred.xyxy), len(ref.xyxy))
    if not counts.predicted or not counts.reference:
        return counts
    iou = _same_class_iou(pred, ref)
    taken = np.zeros(counts.reference, dtype=bool)
    for i in np.argsort(-np.asarray(pred.confidence), kind="stable"):
        row = np.where(taken, -1.0, iou[i])
        j = int(np.argmax(row))
        if row[j] >= iou_threshold:
            taken[j] = True
            counts.matched += 1
    return counts


def _same_class_iou(pred: BoxSet, ref: BoxSet) -> np.ndarray:
    """(predicted, reference) IoU, 0 between boxes of different classes."""
    iou = box_iou(np.asarray(pred.xyxy, np.float32), np.asarray(ref.xyxy, np.float32))
    iou[np.asarray(pred.class_id)[:, None] != np.asarray(ref.class_id)[None, :]] = 0.0
    return iou


def reference_ious(pred: BoxSet, ref: BoxSet) -> np.ndarray:
    """Each reference box's IoU with the predicted box paired with it, 0 when none is.

    Pairs are one-to-one and of one class, taken highest IoU first, so one large box over two
    objects scores for one of them only.

    Example:
        >>> ref = BoxSet(np.array([[0, 0, 10, 10], [20, 0, 30, 10]], np.float32), np.array([0, 0]),
        ...              np.array([1.0, 1.0]))
        >>> pred = BoxSet(np.array([[5, 0, 15, 10]], np.float32), np.array([0]), np.array([0.9]))
        >>> reference_ious(pred, ref).round(3).tolist()
        [0.333, 0.0]
    """
    out = np.zeros(len(ref.xyxy), np.float64)
    if not len(pred.xyxy) or not len(ref.xyxy):
        return out
    iou = _same_class_iou(pred, ref)
    pred_paired = np.zeros(len(pred.xyxy), dtype=bool)
    ref_paired = np.zeros(len(ref.xyxy), dtype=bool)
    for flat in np.argsort(-iou, axis=None, kind="stable"):
        i, j = divmod(int(flat), iou.shape[1])
        if iou[i, j] <= 0.0:
            break
        if not pred_paired[i] and not ref_paired[j]:
            pred_paired[i] = ref_paired[j] = True
            out[j] = iou[i, j]
    return out


@dataclass(frozen=True)
class Reference:
    """Reference boxes of every frame of one clip, with what produced them."""

    key: str
    clip_fingerprint: str
    boxes: Mapping[int, BoxSet]

    def save(self, path: str | Path) -> None:
        """Write as JSON (boxes rounded to 0.01 px)."""
        frames = {
            str(seq): {
                "xyxy": np.round(b.xyxy.astype(np.float64), 2).tolist(),
                "class_id": b.class_id.astype(int).tolist(),
                "confidence": np.round(b.confidence.astype(np.float64), 4).tolist(),
            }
            for seq, b in self.boxes.items()
        }
        doc = {"format": _FORMAT, "key": self.key, "clip": self.clip_fingerprint, "frames": frames}
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(target.suffix + ".tmp")
        tmp.write_text(json.dumps(doc), encoding="utf-8")
        tmp.replace(target)

    @classmethod
    def load(cls, path: str | Path) -> Reference:
        """Read a reference written by `save`.

        Raises:
            ValueError: the file is not a reference.
        """
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(doc, dict) or doc.get("format") != _FORMAT:
            raise ValueError(f"expected an {_FORMAT} JSON file, got something else in {path}")
        boxes = {
            int(seq): BoxSet(
                np.asarray(f["xyxy"], np.float32).reshape(-1, 4),
                np.asarray(f["class_id"], np.int64),
                np.asarray(f["confidence"], np.float32),
            )
            for seq, f in doc["frames"].items()
        }
        return cls(str(doc["key"]), str(doc["clip"]), boxes)


def compute_reference(
    clip: ClipData,
    detector: Detector,
    *,
    key: str,
    params: DetectParams | None = None,
    progress: bool = False,
) -> Reference:
    """Detect on every frame of ``clip`` at full-scale decoding: the reference boxes.

    ``params`` default to the detector's own.

    Example:
        >>> ref = compute_reference(clip, detector, key="yolov8n.pt@640")  # doctest: +SKIP
        >>> len(ref.boxes) == len(clip)
        True
    """
    from tqdm.auto import tqdm

    # Nothing is rendered: the encoder is never used.
    processor = FrameProcessor(detector, None, JpegEncoder(), params=params, decode_reduce=1)
    boxes: dict[int, BoxSet] = {}
    for i in tqdm(range(len(clip)), desc="reference", unit="frame", disable=not progress, leave=False):
        frame = clip.frame(i)
        det = processor.detect(frame).detections
        boxes[frame.seq] = BoxSet(det.xyxy.copy(), det.class_id.copy(), det.confidence.copy())
    return Reference(key, clip.fingerprint, boxes)


def _sum(counts: Iterable[MatchCounts]) -> MatchCounts:
    total = MatchCounts()
    for c in counts:
        total = total + c
    return total


def accuracy_metrics(
    trace: RunTrace, reference: Reference, clip: ClipData, *, iou_threshold: float = 0.5
) -> dict[str, float]:
    """The `ACCURACY_COLUMNS` of one run against ``reference`` (see the module documentation).

    Example:
        >>> accuracy_metrics(trace, ref, clip)["displayed_recall"]  # doctest: +SKIP
        0.87
    """
    if reference.clip_fingerprint != clip.fingerprint:
        raise ValueError(
            f"expected a reference of clip {clip.fingerprint[:12]}, "
            f"got one of {reference.clip_fingerprint[:12]}"
        )
    empty = BoxSet.empty()
    arrival = {f.seq: f.arrival_s for f in clip.frames}
    on_detected = _sum(
        match_boxes(BoxSet.of(d), reference.boxes.get(d.seq, empty), iou_threshold) for d in trace.detections
    )
    displayed = MatchCounts()
    stale = MatchCounts()
    stale_frames = 0
    blank_frames = 0
    ages: list[float] = []
    ious: list[np.ndarray] = []
    for r in trace.renders:
        shown = BoxSet.drawn(r)
        truth = reference.boxes.get(r.seq, empty)
        counts = match_boxes(shown, truth, iou_threshold)
        ious.append(reference_ious(shown, truth))
        displayed = displayed + counts
        if r.shown_seq is None:
            blank_frames += 1
        elif r.shown_seq != r.seq:
            stale_frames += 1
            stale = stale + counts
            ages.append((arrival.get(r.seq, math.nan) - arrival.get(r.shown_seq, math.nan)) * 1000.0)
    all_ious = np.concatenate(ious) if ious else np.zeros(0)
    frames = len(trace.renders)
    return {
        "recall": on_detected.recall,
        "precision": on_detected.precision,
        "displayed_recall": displayed.recall,
        "displayed_precision": displayed.precision,
        "displayed_iou": float(all_ious.mean()) if all_ious.size else math.nan,
        "displayed_false_boxes_per_frame": (
            (displayed.predicted - displayed.matched) / frames if frames else math.nan
        ),
        "stale_recall": stale.recall,
        "stale_precision": stale.precision,
        "stale_frames": float(stale_frames),
        "stale_age_ms_mean": float(np.mean(ages)) if ages else math.nan,
        "blank_frames": float(blank_frames),
    }
