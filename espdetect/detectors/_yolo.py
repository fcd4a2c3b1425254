"""YOLO pre- and post-processing shared by the native (torch-free) backends.

Everything here is plain numpy (no OpenCV, no torch), so `OnnxDetector` and `OpenVinoDetector`
give the boxes Ultralytics gives for the same exported model in a server without either:

* `plan_letterbox` / `preprocess`: resize keeping the aspect ratio, pad with grey 114,
  BGR -> RGB, divide by 255, NCHW. The padding is split and rounded as Ultralytics'
  ``LetterBox`` does, and a model with dynamic input gets the smallest stride-aligned
  rectangle, which is what Ultralytics feeds such a model. The resize reproduces OpenCV's
  ``INTER_LINEAR`` (what ``LetterBox`` calls) to the bit; see `resize_linear`.
* `postprocess`: decodes a YOLOv8/YOLO11 head ``(1, 4 + nc, N)`` (confidence filter, best
  class, class-aware NMS, ``max_det``) or an end-to-end head ``(1, K, 6)`` (YOLOv10/YOLO26
  exports: ``x1 y1 x2 y2 score class``, already suppressed), then maps the boxes back to the
  input image's pixels and clips them.
* `parse_metadata`: the ``names``/``stride``/``imgsz``/``task`` an Ultralytics export stores
  as strings (ONNX ``metadata_props``, OpenVINO ``rt_info``) or values (``metadata.yaml``).
* `NativeYoloDetector`: the `Detector` flow on top of these; a backend adds the forward pass.
"""

from __future__ import annotations

import ast
import logging
import time
from abc import abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import numpy as np

from espdetect.detections import Detections, StageTimings
from espdetect.detectors.base import Detector, DetectParams, ModelInfo

__all__ = [
    "HeadSpec",
    "InputSpec",
    "Letterbox",
    "ModelMetadata",
    "NativeYoloDetector",
    "describe_head",
    "letterbox",
    "nms",
    "parse_metadata",
    "plan_letterbox",
    "postprocess",
    "preprocess",
    "resize_linear",
    "scale_boxes",
]

logger = logging.getLogger(__name__)

#: Grey Ultralytics pads with.
PAD_VALUE: Final = 114
#: Per-class coordinate offset that keeps boxes of different classes apart in one NMS pass.
#: Ultralytics' value: another one would round float32 coordinates differently.
_CLASS_OFFSET: Final = np.float32(7680)
#: Most candidates NMS considers, highest confidence first (Ultralytics' ``max_nms``).
_MAX_NMS: Final = 30_000
_PIXEL_MAX: Final = np.float32(255)
#: Side of the blank input a dynamic model is probed with, in strides.
_PROBE_STRIDES: Final = 10
#: OpenCV's fixed-point interpolation weights for 8-bit images: 11 fractional bits.
_COEF_BITS: Final = 11
#: Output rows `resize_linear` computes at a time.
_RESIZE_BAND: Final = 32


@dataclass(frozen=True)
class Letterbox:
    """How an image is fitted into the model input, and how to map boxes back.

    Example:
        >>> lb = plan_letterbox((1080, 810), (640, 640))
        >>> lb.resized_hw, (lb.top, lb.left), lb.padded_hw
        ((640, 480), (0, 80), (640, 640))
    """

    #: (height, width) of the original image.
    image_hw: tuple[int, int]
    #: (height, width) after resizing, before padding.
    resized_hw: tuple[int, int]
    #: Rows of padding above the resized image.
    top: int
    #: Rows of padding below it.
    bottom: int
    #: Columns of padding left of it.
    left: int
    #: Columns of padding right of it.
    right: int

    @property
    def padded_hw(self) -> tuple[int, int]:
        """(height, width) of the tensor fed to the model."""
        return self.resized_hw[0] + self.top + self.bottom, self.resized_hw[1] + self.left + self.right


def plan_letterbox(
    image_hw: tuple[int, int], target_hw: tuple[int, int], *, auto: bool = False, stride: int = 32
) -> Letterbox:
    """Where an ``image_hw`` image lands in a ``target_hw`` input, as Ultralytics' ``LetterBox`` puts it.

    The image is scaled (up or down) to fit, keeping its aspect ratio. With ``auto`` the padding
    only reaches the next multiple of ``stride`` (the smallest rectangle a dynamic-input model
    takes) rather than the whole target.

    Example:
        >>> plan_letterbox((1080, 810), (640, 640), auto=True).padded_hw
        (640, 480)
    """
    h0, w0 = image_hw
    th, tw = target_hw
    r = min(th / h0, tw / w0)
    # Each side rounds on its own and keeps at least one pixel, as in Ultralytics.
    new_w, new_h = max(round(w0 * r), 1), max(round(h0 * r), 1)
    dw, dh = tw - new_w, th - new_h
    if auto:
        dw, dh = dw % stride, dh % stride
    half_w, half_h = dw / 2, dh / 2
    # The ±0.1 gives an odd pixel of padding to the bottom/right side rather than rounding both up.
    return Letterbox(
        image_hw=(h0, w0),
        resized_hw=(new_h, new_w),
        top=round(half_h - 0.1),
        bottom=round(half_h + 0.1),
        left=round(half_w - 0.1),
        right=round(half_w + 0.1),
    )


def _linear_taps(
    n_src: int, n_dst: int, *, clamp: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """First and second source index and their fixed-point weights, per output pixel on one axis.

    OpenCV's arithmetic, step for step: the half-pixel-centre position in float32, its floor,
    each weight rounded to 11 bits on its own. Columns (``clamp``) outside the image take the
    edge pixel with weight 1; rows keep their fraction and read the edge row twice, as OpenCV
    does (the two give different rounding).
    """
    scale = 1.0 / (n_dst / n_src)  # OpenCV's double, inverted as it inverts it
    pos = ((np.arange(n_dst) + 0.5) * scale - 0.5).astype(np.float32)
    floor = np.floor(pos)
    frac = pos - floor
    first = floor.astype(np.intp)
    if clamp:
        before, after = first < 0, first >= n_src - 1
        frac[before | after] = 0
        first[before] = 0
        first[after] = n_src - 1
    one = np.float32(1 << _COEF_BITS)
    w0 = np.rint((np.float32(1) - frac) * one).astype(np.int32)
    w1 = np.rint(frac * one).astype(np.int32)
    return np.clip(first, 0, n_src - 1), np.clip(first + 1, 0, n_src - 1), w0, w1


def resize_linear(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """``image`` (H, W, C uint8) resized to ``width`` x ``height`` as ``cv2.resize(INTER_LINEAR)`` does.

    Bit for bit, so that the letterbox, and therefore the boxes, are Ultralytics' own without
    OpenCV installed (a server image leaves out its 170 MB). OpenCV's 8-bit path is integer
    arithmetic: 11-bit weights, a horizontal pass into int32, then a vertical pass that drops 4
    bits, multiplies by the row weights, keeps the top 16 bits of each product and rounds the
    sum by 2 bits. The same steps in numpy give the same bytes (checked against OpenCV on
    random images of random sizes, up and down); an exact half-size shrink comes out equal to
    OpenCV's INTER_AREA, which OpenCV switches to there.

    Why not Pillow's ``resize(BILINEAR)``: it filters over the whole footprint when shrinking
    (antialiasing), so its pixels, and some boxes and scores, differ from Ultralytics' (on
    zidane.jpg at 800x600 a fourth box appears and one box's IoU falls to 0.55), and it is no
    faster. On a 2-core VM this takes about 1.3 ms for 640x480 -> 320x240 and 5-7 ms for
    800x600 or 1600x1200 -> 640x480, against OpenCV's threaded SIMD 0.1-0.6 ms; the server's
    reduced JPEG decode usually leaves little or nothing to resize.

    Example:
        >>> resize_linear(np.array([[[0], [100]]], np.uint8), 4, 1)[0, :, 0].tolist()
        [0, 25, 75, 100]
    """
    h, w, c = image.shape
    x0, x1, wx0, wx1 = _linear_taps(w, width, clamp=True)
    y0, y1, wy0, wy1 = _linear_taps(h, height, clamp=False)
    # Channels interleaved: gathering whole pixels from a (h, w * c) view is a single take.
    channel = np.arange(c)
    cols0 = (x0[:, None] * c + channel).ravel()
    cols1 = (x1[:, None] * c + channel).ravel()
    wx0, wx1 = np.repeat(wx0, c), np.repeat(wx1, c)
    flat = np.ascontiguousarray(image).reshape(h, w * c)

    def horizontal(rows: np.ndarray) -> np.ndarray:
        out: np.ndarray = rows.take(cols0, axis=1) * wx0  # uint8 x int32 -> int32, no separate cast
        out += rows.take(cols1, axis=1) * wx1
        out >>= 4
        return out

    resized = np.empty((height, width * c), np.uint8)
    # A band of output rows at a time keeps the int32 temporaries in cache: twice as fast as
    # whole-image passes from 640x480 outputs up.
    for top in range(0, height, _RESIZE_BAND):
        band = slice(top, min(top + _RESIZE_BAND, height))
        first, last = int(y0[band][0]), int(y1[band][-1])
        if last - first < 2 * (band.stop - band.start):
            # Neighbouring output rows share source rows: filter the source band once.
            rows = horizontal(flat[first : last + 1])
            upper, lower = rows.take(y0[band] - first, axis=0), rows.take(y1[band] - first, axis=0)
        else:  # shrinking over 2x: filter only the rows read
            upper, lower = horizontal(flat.take(y0[band], axis=0)), horizontal(flat.take(y1[band], axis=0))
        upper *= wy0[band, None]
        upper >>= 16
        lower *= wy1[band, None]
        lower >>= 16
        upper += lower
        upper += 2
        upper >>= 2
        resized[band] = upper
    return resized.reshape(height, width, c)


def _resized(image: np.ndarray, plan: Letterbox) -> np.ndarray:
    """``image`` scaled to the plan's size (the same array when it already is), as Ultralytics does."""
    new_h, new_w = plan.resized_hw
    if (new_h, new_w) == image.shape[:2]:
        return image
    return resize_linear(image, new_w, new_h)


def letterbox(image: np.ndarray, plan: Letterbox) -> np.ndarray:
    """``image`` (H, W, 3 uint8) resized and padded per ``plan``, still BGR uint8.

    Example:
        >>> image = np.zeros((1080, 810, 3), np.uint8)
        >>> letterbox(image, plan_letterbox(image.shape[:2], (640, 640))).shape
        (640, 640, 3)
    """
    image = _resized(image, plan)
    if not (plan.top or plan.bottom or plan.left or plan.right):
        return image
    new_h, new_w = plan.resized_hw
    padded = np.full((*plan.padded_hw, image.shape[2]), PAD_VALUE, np.uint8)
    padded[plan.top : plan.top + new_h, plan.left : plan.left + new_w] = image
    return padded


@dataclass(frozen=True)
class InputSpec:
    """The model's image input: a fixed (h, w) or any size, and the dtype it takes.

    Example:
        >>> InputSpec(fixed_hw=(480, 640), dtype=np.dtype(np.float32)).fixed_imgsz
        640
    """

    #: (height, width) of a fixed-shape export; None when the input size is dynamic.
    fixed_hw: tuple[int, int] | None
    #: float32 or float16.
    dtype: np.dtype
    #: Input sizes must be multiples of this.
    stride: int = 32

    @property
    def fixed_imgsz(self) -> int | None:
        """The long side of a fixed input (what `DetectParams.imgsz` must be), else None."""
        return None if self.fixed_hw is None else max(self.fixed_hw)

    def plan(self, image_hw: tuple[int, int], imgsz: int) -> Letterbox:
        """The letterbox of an ``image_hw`` image for this input at ``imgsz``."""
        if self.fixed_hw is not None:
            return plan_letterbox(image_hw, self.fixed_hw)
        return plan_letterbox(image_hw, (imgsz, imgsz), auto=True, stride=self.stride)


def preprocess(image: np.ndarray, spec: InputSpec, imgsz: int) -> tuple[np.ndarray, Letterbox]:
    """A (1, 3, h, w) RGB tensor in [0, 1] of ``spec.dtype`` for a BGR ``image``, and its letterbox.

    A fixed-shape model gets its own (h, w); a dynamic one the smallest stride-aligned rectangle
    holding ``image`` scaled to ``imgsz`` on its long side, as Ultralytics feeds it.

    Example:
        >>> spec = InputSpec(fixed_hw=None, dtype=np.dtype(np.float32))
        >>> preprocess(np.zeros((1080, 810, 3), np.uint8), spec, 640)[0].shape
        (1, 3, 640, 480)
    """
    plan = spec.plan((image.shape[0], image.shape[1]), imgsz)
    image = _resized(image, plan)
    new_h, new_w = plan.resized_hw
    ph, pw = plan.padded_hw
    # Dividing the resized pixels straight into a grey-filled tensor skips a padded uint8 copy
    # and a transpose copy; float32 x / 255 is what Ultralytics computes, bit for bit.
    tensor = np.full((1, 3, ph, pw), np.float32(PAD_VALUE) / _PIXEL_MAX, np.float32)
    window = tensor[0, :, plan.top : plan.top + new_h, plan.left : plan.left + new_w]
    np.divide(image.transpose(2, 0, 1)[::-1], _PIXEL_MAX, out=window, dtype=np.float32)
    if spec.dtype != np.float32:
        tensor = tensor.astype(spec.dtype)
    return tensor, plan


def scale_boxes(xyxy: np.ndarray, plan: Letterbox) -> np.ndarray:
    """``xyxy`` (N, 4, model-input pixels) mapped to the original image and clipped to it, in place.

    Example:
        >>> plan = plan_letterbox((1080, 810), (640, 640))
        >>> scale_boxes(np.array([[80.0, 0, 560, 640]], np.float32), plan).round().tolist()
        [[0.0, 0.0, 810.0, 1080.0]]
    """
    h0, w0 = plan.image_hw
    # The gain per axis comes from the rounded resized size, as Ultralytics' scale_boxes computes it.
    gain_y, gain_x = plan.resized_hw[0] / h0, plan.resized_hw[1] / w0
    xyxy[:, [0, 2]] -= plan.left
    xyxy[:, [1, 3]] -= plan.top
    xyxy[:, [0, 2]] /= gain_x
    xyxy[:, [1, 3]] /= gain_y
    xyxy[:, [0, 2]] = xyxy[:, [0, 2]].clip(0, w0)
    xyxy[:, [1, 3]] = xyxy[:, [1, 3]].clip(0, h0)
    return xyxy


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float, limit: int | None = None) -> np.ndarray:
    """Indices of the boxes greedy NMS keeps, highest score first (at most ``limit``).

    A box is dropped when its IoU with a kept, higher-scoring box is above ``iou``; the IoU is
    computed as torchvision and Ultralytics do (no +1 on sizes).

    Example:
        >>> boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], np.float32)
        >>> nms(boxes, np.array([0.9, 0.8, 0.7], np.float32), 0.5).tolist()
        [0, 2]
    """
    if len(boxes) == 0:
        return np.zeros((0,), np.int64)
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x2 - x1) * (y2 - y1)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    max_keep = len(boxes) if limit is None else limit
    while order.size and len(keep) < max_keep:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        if not rest.size:
            break
        w = np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest])
        h = np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest])
        inter = w.clip(0) * h.clip(0)
        # Two zero-area boxes would divide 0 by 0; they do not overlap, so keep both.
        union = np.maximum(areas[i] + areas[rest] - inter, np.finfo(np.float32).tiny)
        order = rest[inter / union <= iou]
    return np.asarray(keep, np.int64)


@dataclass(frozen=True)
class HeadSpec:
    """What the model's first output holds.

    Example:
        >>> describe_head((1, 84, 8400), ModelMetadata()).num_classes
        80
    """

    #: True for ``(1, K, 6)`` end-to-end outputs (already suppressed), False for ``(1, 4 + nc, N)``.
    end2end: bool
    #: Number of classes; 0 when an end-to-end model without metadata does not say.
    num_classes: int


@dataclass(frozen=True)
class ModelMetadata:
    """What an Ultralytics export says about itself (all optional: third-party exports say nothing).

    Example:
        >>> parse_metadata({"names": "{0: 'person'}", "stride": "32"}).names
        {0: 'person'}
    """

    names: dict[int, str] | None = None
    stride: int | None = None
    #: (height, width) the model was exported at.
    imgsz: tuple[int, int] | None = None
    task: str | None = None
    end2end: bool | None = None
    #: Whether the export asked for dynamic input sizes.
    dynamic: bool | None = None


def _literal(key: str, value: object) -> object:
    """``value`` with a Python-literal string (how ONNX and OpenVINO store it) evaluated."""
    if not isinstance(value, str):
        return value
    try:
        return ast.literal_eval(value.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        logger.warning("ignoring model metadata %r: not a Python literal: %.80r", key, value)
        return None


def _as_names(value: object) -> dict[int, str] | None:
    if isinstance(value, Mapping):
        try:
            return {int(k): str(v) for k, v in value.items()}
        except (TypeError, ValueError):
            return None
    if isinstance(value, list | tuple):
        return {i: str(v) for i, v in enumerate(value)}
    return None


def _as_bool(value: object) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return {"true": True, "false": False}.get(value.strip().lower())
    return None


def parse_metadata(raw: Mapping[str, object]) -> ModelMetadata:
    """Typed metadata from an export's key -> value map; malformed or missing entries become None.

    Example:
        >>> meta = parse_metadata({"imgsz": "[640, 640]", "task": "detect", "end2end": "False"})
        >>> meta.imgsz, meta.task, meta.end2end
        ((640, 640), 'detect', False)
    """
    names = _as_names(_literal("names", raw["names"])) if "names" in raw else None
    stride: int | None = None
    if "stride" in raw:
        value = _literal("stride", raw["stride"])
        stride = int(value) if isinstance(value, int | float) and value >= 1 else None
    imgsz: tuple[int, int] | None = None
    if "imgsz" in raw:
        value = _literal("imgsz", raw["imgsz"])
        if isinstance(value, int):
            imgsz = (value, value)
        elif isinstance(value, list | tuple) and len(value) == 2 and all(isinstance(v, int) for v in value):
            imgsz = (int(value[0]), int(value[1]))
    task = str(raw["task"]).strip() if "task" in raw else None
    end2end = _as_bool(raw["end2end"]) if "end2end" in raw else None
    dynamic: bool | None = None
    args = _literal("args", raw["args"]) if "args" in raw else None
    if isinstance(args, Mapping):
        if isinstance(args.get("dynamic"), bool):
            dynamic = bool(args["dynamic"])
        # An export with NMS baked in has an end-to-end output whatever its head says.
        if args.get("nms") is True:
            end2end = True
    return ModelMetadata(names=names, stride=stride, imgsz=imgsz, task=task, end2end=end2end, dynamic=dynamic)


def describe_head(shape: tuple[int, ...], meta: ModelMetadata) -> HeadSpec:
    """How to decode an output of ``shape`` (from a real run, so every dimension is known).

    Raises:
        ValueError: the output is not one a YOLO detection head produces (the message says why).
    """
    if len(shape) != 3 or shape[0] != 1:
        raise ValueError(
            f"expected a (1, 4 + classes, boxes) or (1, boxes, 6) detection output, got shape {shape}"
        )
    end2end = meta.end2end if meta.end2end is not None else shape[2] == 6
    nc_meta = len(meta.names) if meta.names else None
    if end2end:
        if shape[2] != 6:
            raise ValueError(
                f"expected an end-to-end output (1, boxes, 6) (x1 y1 x2 y2 score class), got shape {shape}"
            )
        return HeadSpec(end2end=True, num_classes=nc_meta or 0)
    channels, anchors = shape[1], shape[2]
    # Without class names to count, only the layout tells the two head styles apart.
    if channels < 5 or (nc_meta is None and channels >= anchors):
        raise ValueError(
            f"expected a YOLOv8-style output (1, 4 + classes, boxes), got shape {shape} "
            "(YOLOv5-style (1, boxes, 5 + classes) outputs are not supported)"
        )
    if nc_meta is not None and channels != 4 + nc_meta:
        raise ValueError(
            f"expected {4 + nc_meta} output channels (4 box + {nc_meta} classes named in the metadata), "
            f"got {channels}: not a detection head (segmentation and pose models are not supported)"
        )
    return HeadSpec(end2end=False, num_classes=channels - 4)


def postprocess(
    output: np.ndarray, head: HeadSpec, plan: Letterbox, params: DetectParams
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(xyxy, confidence, class_id) of what ``output`` finds, in the original image's pixels.

    Reproduces Ultralytics' ``non_max_suppression``: a box is a candidate when its best class
    score is above ``params.conf``; it takes that class (then ``params.classes`` filters); NMS
    runs per class; the ``params.max_det`` best survive. End-to-end outputs are only filtered.

    Example:
        >>> out = np.zeros((1, 6, 1), np.float32); out[0, :, 0] = [320, 320, 64, 64, 0.9, 0.1]
        >>> plan = plan_letterbox((640, 640), (640, 640))
        >>> postprocess(out, HeadSpec(False, 2), plan, DetectParams())[0].tolist()
        [[288.0, 288.0, 352.0, 352.0]]
    """
    pred = output[0]
    if pred.dtype != np.float32:
        pred = pred.astype(np.float32)
    classes = None if params.classes is None else np.asarray(params.classes, np.int64)
    if head.end2end:
        keep = pred[:, 4] > params.conf
        cls = pred[:, 5].astype(np.int64)
        if classes is not None:
            keep &= np.isin(cls, classes)
        # The model already suppressed and ranked its boxes; keep its order, as Ultralytics does.
        idx = np.flatnonzero(keep)[: params.max_det]
        xyxy = np.array(pred[idx, :4], np.float32)
        return scale_boxes(xyxy, plan), pred[idx, 4].copy(), cls[idx]

    scores = pred[4 : 4 + head.num_classes]
    best = scores.max(axis=0)
    cand = np.flatnonzero(best > params.conf)
    if classes is not None and cand.size:
        cls = scores[:, cand].argmax(axis=0)
        inside = np.isin(cls, classes)
        cand, cls = cand[inside], cls[inside]
    else:
        cls = scores[:, cand].argmax(axis=0)
    conf = best[cand]
    if cand.size > _MAX_NMS:
        top = np.argsort(-conf, kind="stable")[:_MAX_NMS]
        cand, cls, conf = cand[top], cls[top], conf[top]
    xywh = pred[:4, cand].T
    half_wh = xywh[:, 2:] / np.float32(2)
    xyxy = np.concatenate((xywh[:, :2] - half_wh, xywh[:, :2] + half_wh), axis=1)
    offset = cls.astype(np.float32)[:, None] * _CLASS_OFFSET
    kept = nms(xyxy + offset, conf, params.iou, limit=params.max_det)
    return scale_boxes(xyxy[kept], plan), conf[kept], cls[kept].astype(np.int64)


class NativeYoloDetector(Detector):
    """A `Detector` for an exported YOLO model whose forward pass a runtime provides.

    Subclasses load the model, set ``_info``, ``_input``, ``_head`` (see `probe_head`) and
    ``params``, and implement `_infer`. Pre- and post-processing happen here, with the timings.

    Example:
        >>> detector = OnnxDetector("yolov8n.onnx")  # a subclass  # doctest: +SKIP
        >>> detector.detect(image).timings  # doctest: +SKIP
        StageTimings(preprocess_ms=1.1, inference_ms=38.2, postprocess_ms=0.4)
    """

    _info: ModelInfo
    _input: InputSpec
    _head: HeadSpec

    @property
    def info(self) -> ModelInfo:
        return self._info

    @abstractmethod
    def _infer(self, tensor: np.ndarray) -> np.ndarray:
        """The model's first output for a (1, 3, h, w) input tensor.

        Raises:
            DetectorError: the runtime failed.
        """

    def probe_head(self, meta: ModelMetadata) -> HeadSpec:
        """Run the model once on a blank input and describe its output (``_input`` must be set).

        A dynamic-input model runs at ten strides (320 px), small but with far more boxes than
        channels, which is how a head without metadata is recognised.

        Raises:
            ValueError: the output is not a detection head (see `describe_head`).
            DetectorError: the runtime failed.
        """
        hw = self._input.fixed_hw or (_PROBE_STRIDES * self._input.stride,) * 2
        blank = np.full((1, 3, *hw), PAD_VALUE / 255, self._input.dtype)
        output = self._infer(blank)
        return describe_head(tuple(int(d) for d in output.shape), meta)

    def _detect(self, image: np.ndarray, params: DetectParams) -> Detections:
        imgsz = params.imgsz if params.imgsz is not None else self._info.default_imgsz
        t0 = time.perf_counter()
        tensor, plan = preprocess(image, self._input, imgsz)
        t1 = time.perf_counter()
        output = self._infer(tensor)
        t2 = time.perf_counter()
        xyxy, conf, cls = postprocess(output, self._head, plan, params)
        t3 = time.perf_counter()
        return Detections(
            xyxy=xyxy,
            confidence=conf,
            class_id=cls,
            names=self._info.names,
            timings=StageTimings((t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3),
        )

    def __repr__(self) -> str:
        info, p = self._info, self.params
        return (
            f"{type(self).__name__}(model={info.model!r}, device={info.device!r}, imgsz={p.imgsz}, "
            f"conf={p.conf}, iou={p.iou}, half={info.half})"
        )
