"""Comparing detectors' boxes, and an fp32 copy of the shared int8 model (used by several tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from espdetect.detections import Detections, box_iou

__all__ = ["assert_same_boxes", "dequantize"]


def assert_same_boxes(
    ours: Detections, theirs: Detections, *, min_iou: float = 0.98, conf_tol: float = 0.01
) -> None:
    """Every box matched one-to-one to a box of the same class, IoU >= min_iou, confidence within conf_tol."""
    assert len(ours) == len(theirs), (
        f"{len(ours)} boxes vs {len(theirs)}: {ours.to_dict()} vs {theirs.to_dict()}"
    )
    iou = box_iou(ours.xyxy, theirs.xyxy)
    iou[ours.class_id[:, None] != theirs.class_id[None, :]] = -1.0
    free = set(range(len(theirs)))
    for i in np.argsort(-ours.confidence):
        j = max(free, key=lambda k: iou[i, k])
        assert iou[i, j] >= min_iou, f"box {ours.xyxy[i]} best match {theirs.xyxy[j]} has IoU {iou[i, j]:.4f}"
        assert abs(float(ours.confidence[i]) - float(theirs.confidence[j])) <= conf_tol
        free.remove(j)


def dequantize(src: str | Path, dst: Path) -> Path:
    """An fp32 copy of an ONNX Runtime dynamically-quantized model (ConvInteger -> Conv, float weights).

    Weights are renamed to the PyTorch parameter names (``model.1.conv.weight``).
    """
    model = onnx.load(str(src))
    graph = model.graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    replaced: dict[str, onnx.NodeProto] = {}
    dropped: set[str] = set()
    weights = []
    for node in graph.node:
        if node.op_type != "ConvInteger":
            continue
        (cast,) = consumers[node.output[0]]
        (scaled,) = consumers[cast.output[0]]
        quantized, zero_point = node.input[1], node.input[3]
        stem = quantized.removesuffix("_quantized")
        w = (inits[quantized].astype(np.float32) - inits[zero_point].astype(np.float32)) * inits[
            stem + "_scale"
        ]
        weights.append(numpy_helper.from_array(w.astype(np.float32), stem))
        conv = helper.make_node(
            "Conv", [producer[node.input[0]].input[0], stem], [scaled.output[0]], name=node.name
        )
        conv.attribute.extend(node.attribute)
        replaced[node.name] = conv
        dropped |= {cast.name, scaled.name}
    nodes = [replaced.get(n.name, n) for n in graph.node if n.name not in dropped]
    outputs = {o.name for o in graph.output}
    while True:  # drop what fed only the removed nodes (DynamicQuantizeLinear, scale products)
        used = {name for n in nodes for name in n.input} | outputs
        live = [n for n in nodes if any(out in used for out in n.output)]
        if len(live) == len(nodes):
            break
        nodes = live
    used = {name for n in nodes for name in n.input}
    kept_inits = [i for i in graph.initializer if i.name in used]
    graph.ClearField("node")
    graph.node.extend(nodes)
    graph.ClearField("initializer")
    graph.initializer.extend([*kept_inits, *weights])
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    return dst
