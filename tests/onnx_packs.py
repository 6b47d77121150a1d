"""Tiny fake InsightFace packs built with onnx.helper (no real weights, no downloads).

The detector mimics SCRFD ``det_10g``: input ``input.1`` [1, 3, 640, 640], nine outputs (scores,
box distances and landmark distances at strides 8, 16, 32; two anchors per location). Every
output is a constant plus a small multiple of the input's mean, so the graph really depends on
the input while planting exactly one confident face, at ``PLANTED_BOX`` / ``PLANTED_LANDMARKS``
in detector-input pixels. The recogniser mimics ArcFace ``w600k_r50``: input ``input.1``
[N, 3, 112, 112], output [N, dim] = a fixed random projection of the 16x16-pooled chip.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

DETECTOR = "det_10g.onnx"
RECOGNISER = "w600k_r50.onnx"
DET_SIZE = 640
STRIDES = (8, 16, 32)
ANCHORS = 2
OPSET = 17
IR_VERSION = 8

# The planted face: anchor 1 of cell (row 6, column 10) at stride 32, i.e. centred on (320, 192).
PLANTED_STRIDE, PLANTED_ROW, PLANTED_COL, PLANTED_ANCHOR = 32, 6, 10, 1
PLANTED_SCORE = 0.9
PLANTED_BOX = (256.0, 112.0, 384.0, 272.0)  # x1, y1, x2, y2 in detector-input pixels
# Subject's right eye, left eye, nose, right mouth, left mouth (image-left first).
PLANTED_LANDMARKS = np.array(
    [[297.6, 176.0], [342.4, 176.0], [320.0, 198.4], [302.4, 222.4], [337.6, 222.4]],
    dtype=np.float32,
)
INPUT_NUDGE = 1e-3  # outputs move by this times the mean of the input blob


def write_tiny_pack(
    folder: Path,
    *,
    pack_name: str = "tinypack",
    dim: int = 512,
    checksums: bool = True,
    batched: bool = False,
    dynamic_input: bool = False,
    keypoints: bool = True,
    rec_input_size: int = 112,
) -> Path:
    """Write a pack into ``folder/pack_name`` and return that directory.

    ``batched`` gives the detector outputs a leading batch dimension of 1; ``dynamic_input``
    declares its input as [1, 3, "h", "w"]; ``keypoints=False`` drops the three landmark outputs
    (a 6-output SCRFD); ``rec_input_size`` other than 112 makes a recogniser the backend refuses.
    """
    pack = folder / pack_name
    pack.mkdir(parents=True, exist_ok=True)
    detector = tiny_detector(batched=batched, dynamic_input=dynamic_input, keypoints=keypoints)
    onnx.save(detector, pack / DETECTOR)
    onnx.save(tiny_recogniser(dim=dim, input_size=rec_input_size), pack / RECOGNISER)
    if checksums:
        write_checksums(pack)
    return pack


def write_checksums(pack: Path) -> None:
    """``SHA256SUMS`` in sha256sum format for every .onnx file of ``pack``."""
    lines = [
        f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.name}"
        for path in sorted(pack.glob("*.onnx"))
    ]
    (pack / "SHA256SUMS").write_text("\n".join(lines) + "\n")


def planted_outputs() -> dict[str, np.ndarray]:
    """The detector's constant outputs (no batch dimension), named as SCRFD orders them."""
    outputs: dict[str, np.ndarray] = {}
    for kind, width in (("score", 1), ("bbox", 4), ("kps", 10)):
        for stride in STRIDES:
            count = (DET_SIZE // stride) ** 2 * ANCHORS
            outputs[f"{kind}_{stride}"] = np.zeros((count, width), np.float32)
    cols = DET_SIZE // PLANTED_STRIDE
    index = (PLANTED_ROW * cols + PLANTED_COL) * ANCHORS + PLANTED_ANCHOR
    centre = np.array([PLANTED_COL, PLANTED_ROW], np.float32) * PLANTED_STRIDE
    x1, y1, x2, y2 = PLANTED_BOX
    distances = np.array([centre[0] - x1, centre[1] - y1, x2 - centre[0], y2 - centre[1]])
    outputs[f"score_{PLANTED_STRIDE}"][index] = PLANTED_SCORE
    outputs[f"bbox_{PLANTED_STRIDE}"][index] = distances / PLANTED_STRIDE
    landmarks = (PLANTED_LANDMARKS - centre) / PLANTED_STRIDE
    outputs[f"kps_{PLANTED_STRIDE}"][index] = landmarks.ravel()
    return outputs


def tiny_detector(
    *, batched: bool = False, dynamic_input: bool = False, keypoints: bool = True
) -> onnx.ModelProto:
    dims: list[int | str] = [1, 3, "h", "w"] if dynamic_input else [1, 3, DET_SIZE, DET_SIZE]
    lead = [1] if batched else []
    nudge_shape = np.array(lead + [1, 1], np.int64)
    nodes = [
        helper.make_node("ReduceMean", ["input.1"], ["mean"], keepdims=1),
        helper.make_node("Reshape", ["mean", "nudge_shape"], ["mean_flat"]),
        helper.make_node("Mul", ["mean_flat", "nudge_scale"], ["nudge"]),
    ]
    inits = [
        numpy_helper.from_array(nudge_shape, "nudge_shape"),
        numpy_helper.from_array(np.array([INPUT_NUDGE], np.float32), "nudge_scale"),
    ]
    outputs = []
    for name, value in planted_outputs().items():
        if not keypoints and name.startswith("kps"):
            continue
        value = value.reshape(lead + list(value.shape))
        inits.append(numpy_helper.from_array(value, f"{name}_const"))
        nodes.append(helper.make_node("Add", [f"{name}_const", "nudge"], [name]))
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, value.shape))
    image = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, dims)
    graph = helper.make_graph(nodes, "tiny_scrfd", [image], outputs, initializer=inits)
    return _model(graph)


def tiny_recogniser(*, dim: int = 512, input_size: int = 112, seed: int = 7) -> onnx.ModelProto:
    pooled = 3 * (input_size // 16) ** 2
    weight = np.random.default_rng(seed).standard_normal((pooled, dim)).astype(np.float32)
    nodes = [
        helper.make_node(
            "AveragePool", ["input.1"], ["pooled"], kernel_shape=[16, 16], strides=[16, 16]
        ),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "weight"], ["embedding"]),
    ]
    chip = helper.make_tensor_value_info(
        "input.1", TensorProto.FLOAT, ["N", 3, input_size, input_size]
    )
    embedding = helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", dim])
    graph = helper.make_graph(
        nodes,
        "tiny_arcface",
        [chip],
        [embedding],
        initializer=[numpy_helper.from_array(weight, "weight")],
    )
    return _model(graph)


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model
