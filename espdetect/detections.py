"""`Detections`: the boxes found in one image, as parallel numpy arrays."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import numpy as np

__all__ = ["Detections", "StageTimings", "box_iou"]


class StageTimings(NamedTuple):
    """Per-call detector timings in milliseconds."""

    #: Letterbox, colour conversion and tensor creation.
    preprocess_ms: float
    #: The model's forward pass.
    inference_ms: float
    #: NMS and box rescaling.
    postprocess_ms: float

    @property
    def total_ms(self) -> float:
        return self.preprocess_ms + self.inference_ms + self.postprocess_ms


@dataclass(eq=False)
class Detections:
    """Boxes in pixel ``xyxy`` coordinates with their confidence and class id.

    The arrays are parallel: row ``i`` of each describes detection ``i``. ``tracker_id`` is
    set once a `espdetect.tracking.Tracker` has matched the boxes to tracks (None before).
    ``names`` maps class ids to labels. Index with a boolean mask or an index array to filter.

    Example:
        >>> d = Detections(xyxy=np.array([[0, 0, 10, 10]], np.float32),
        ...                confidence=np.array([0.9], np.float32), class_id=np.array([0]),
        ...                names={0: "person"})
        >>> len(d[d.confidence > 0.5])
        1
    """

    xyxy: np.ndarray
    confidence: np.ndarray
    class_id: np.ndarray
    names: Mapping[int, str] = field(default_factory=dict)
    timings: StageTimings | None = None
    tracker_id: np.ndarray | None = None

    def __post_init__(self) -> None:
        xyxy = np.asarray(self.xyxy, dtype=np.float32)
        self.xyxy = xyxy.reshape(0, 4) if xyxy.size == 0 else xyxy
        self.confidence = np.asarray(self.confidence, dtype=np.float32)
        self.class_id = np.asarray(self.class_id, dtype=np.int64)
        if self.xyxy.ndim != 2 or self.xyxy.shape[1] != 4:
            raise ValueError(f"xyxy must have shape (N, 4), got {self.xyxy.shape}")
        n = len(self.xyxy)
        if self.confidence.shape != (n,):
            raise ValueError(f"confidence must have shape ({n},), got {self.confidence.shape}")
        if self.class_id.shape != (n,):
            raise ValueError(f"class_id must have shape ({n},), got {self.class_id.shape}")
        if self.tracker_id is not None:
            self.tracker_id = np.asarray(self.tracker_id, dtype=np.int64)
            if self.tracker_id.shape != (n,):
                raise ValueError(f"tracker_id must have shape ({n},), got {self.tracker_id.shape}")

    @classmethod
    def empty(cls, names: Mapping[int, str] | None = None) -> Detections:
        """No detections."""
        return cls(
            xyxy=np.zeros((0, 4), np.float32),
            confidence=np.zeros((0,), np.float32),
            class_id=np.zeros((0,), np.int64),
            names=dict(names or {}),
        )

    def __len__(self) -> int:
        return len(self.xyxy)

    def __getitem__(self, index: np.ndarray | slice | Sequence[int] | int | np.integer) -> Detections:
        # A scalar index (numpy's too) would drop the row axis; keep it so one box stays (1, 4).
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        return Detections(
            xyxy=self.xyxy[index],
            confidence=self.confidence[index],
            class_id=self.class_id[index],
            names=self.names,
            timings=self.timings,
            tracker_id=None if self.tracker_id is None else self.tracker_id[index],
        )

    @property
    def labels(self) -> list[str]:
        """Class names of each detection (the id as text when the name is unknown)."""
        return [self.names.get(int(c), str(int(c))) for c in self.class_id]

    def filter(
        self, *, min_confidence: float | None = None, classes: Sequence[int] | None = None
    ) -> Detections:
        """Keep detections at or above ``min_confidence`` and in ``classes`` (when given)."""
        mask = np.ones(len(self), dtype=bool)
        if min_confidence is not None:
            mask &= self.confidence >= min_confidence
        if classes is not None:
            mask &= np.isin(self.class_id, np.asarray(list(classes), dtype=np.int64))
        return self[mask]

    def scaled(self, factor: float) -> Detections:
        """The same detections with coordinates multiplied by ``factor`` (reduced-scale decoding)."""
        if factor == 1:
            return self
        return replace(self, xyxy=self.xyxy * factor)

    def with_tracker_ids(self, ids: np.ndarray) -> Detections:
        """The same detections carrying track ids (one per box)."""
        return replace(self, tracker_id=ids)

    def count_by_label(self) -> dict[str, int]:
        """How many detections of each label."""
        counts: dict[str, int] = {}
        for label in self.labels:
            counts[label] = counts.get(label, 0) + 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form: a list of boxes plus the timings."""
        boxes: list[dict[str, Any]] = [
            {
                "xyxy": [round(float(v), 1) for v in box],
                "confidence": round(float(conf), 4),
                "class_id": int(cid),
                "label": label,
            }
            for box, conf, cid, label in zip(
                self.xyxy, self.confidence, self.class_id, self.labels, strict=True
            )
        ]
        if self.tracker_id is not None:
            for box_json, track in zip(boxes, self.tracker_id, strict=True):
                box_json["track_id"] = int(track)
        out: dict[str, Any] = {"detections": boxes}
        if self.timings is not None:
            out["timings_ms"] = {k: round(float(v), 3) for k, v in self.timings._asdict().items()}
        return out


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of two (N, 4) and (M, 4) xyxy arrays, shape (N, M)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), np.float32)
    tl = np.maximum(a[:, None, :2], b[None, :, :2])
    br = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(br - tl, 0, None).prod(axis=2)
    area_a = (a[:, 2:] - a[:, :2]).clip(0).prod(axis=1)
    area_b = (b[:, 2:] - b[:, :2]).clip(0).prod(axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0).astype(np.float32)
