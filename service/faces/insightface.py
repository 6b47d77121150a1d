"""InsightFace backend: SCRFD detection with five landmarks and ArcFace recognition (onnxruntime).

Works with an InsightFace model pack such as ``buffalo_s`` (``det_500m.onnx`` + ``w600k_mbf.onnx``)
or ``buffalo_l`` (``det_10g.onnx`` + ``w600k_r50.onnx``), loaded only after its files pass the
checksums pinned in the pack's ``SHA256SUMS``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from service.errors import ModelUnavailable
from service.faces import model_files
from service.faces.align import align_chip
from service.faces.base import (
    CHIP_SIZE,
    DetectedFace,
    FaceBackend,
    FloatArray,
    Image,
    l2_normalise,
)
from service.faces.onnx import batch_size_free, cpu_session

log = logging.getLogger(__name__)

STRIDES = (8, 16, 32)
# An SCRFD "kps" model has, in this order: scores, box distances, landmark distances per stride.
SCRFD_OUTPUTS = 3 * len(STRIDES)
OUTPUT_WIDTHS = (1, 4, 10)  # last dimension of the score, box and landmark outputs
NMS_IOU = 0.4
DET_MEAN, DET_STD = 127.5, 128.0
REC_MEAN, REC_STD = 127.5, 127.5


class ArcFaceRecogniser:
    """The recogniser of an InsightFace pack alone (ArcFace: a 112x112 aligned chip in, one
    unit-length template out), for any backend that aligns chips the ArcFace way."""

    def __init__(self, path: Path, *, threads: int = 1) -> None:
        if not path.is_file():
            raise ModelUnavailable(f"model file {path} is missing; {model_files.FETCH_HINT}")
        self._session = cpu_session(path, threads, dynamic_batch=True)
        self._input = _check_recogniser_input(self._session, path)
        self.dimension = _recogniser_dimension(self._session, path)
        self._batched = batch_size_free(self._session)
        digest = model_files.sha256_file(path)[:12]
        self.model_id = f"insightface:{path.parent.name}/{path.stem}:{digest}"

    def embed(self, chip: Image) -> FloatArray:
        """The unit-length template of an aligned chip (resized to 112x112 if need be)."""
        template: FloatArray = self.embed_chips([chip])[0]
        return template

    def embed_chips(self, chips: Sequence[Image]) -> FloatArray:
        """Unit-length templates of aligned chips, one row each, in one run when the graph
        takes a batch."""
        blob = np.concatenate([_blob(_chip_sized(chip), REC_MEAN, REC_STD) for chip in chips])
        if self._batched:
            outputs = [self._session.run(None, {self._input: blob})[0]]
        else:
            outputs = [self._session.run(None, {self._input: row[None]})[0] for row in blob]
        vectors = np.asarray(np.concatenate(outputs), np.float32)
        return l2_normalise(vectors.reshape(len(chips), self.dimension))


def _chip_sized(chip: Image) -> Image:
    if chip.shape[:2] == (CHIP_SIZE, CHIP_SIZE):
        return chip
    return np.asarray(cv2.resize(chip, (CHIP_SIZE, CHIP_SIZE)), dtype=np.uint8)


class InsightFaceBackend(FaceBackend):
    """SCRFD detector + ArcFace recogniser from one InsightFace pack."""

    name = "insightface"

    def __init__(
        self,
        detector_path: Path,
        recogniser_path: Path,
        *,
        threads: int = 1,
        det_threshold: float = 0.5,
        det_size: int = 640,
    ) -> None:
        for path in (detector_path, recogniser_path):
            if not path.is_file():
                raise ModelUnavailable(f"model file {path} is missing; {model_files.FETCH_HINT}")
        self.det_threshold = det_threshold
        self._detector = cpu_session(detector_path, threads)
        self._det_input = _check_detector(self._detector, detector_path)
        self._det_size = _detector_size(self._detector, det_size)
        self._anchors = _anchor_tables(self._detector, self._det_input, self._det_size)
        self._recogniser = ArcFaceRecogniser(recogniser_path, threads=threads)
        self.dimension = self._recogniser.dimension
        self.model_id = self._recogniser.model_id
        log.info(
            "loaded %s (detector %s, input %s)", self.model_id, detector_path.name, self._det_size
        )

    @classmethod
    def from_pack(
        cls, model_dir: Path, pack: str, *, threads: int = 1, det_threshold: float = 0.5
    ) -> InsightFaceBackend:
        """The pack ``model_dir/pack``, refused unless its files match its ``SHA256SUMS``."""
        detector, recogniser = model_files.insightface_files(model_dir, pack)
        return cls(detector, recogniser, threads=threads, det_threshold=det_threshold)

    def detect(self, image: Image) -> list[DetectedFace]:
        """Faces in the photo placed in the detector's input at most at its own size (never
        enlarged), and once more at half that size when none is found there. SCRFD misses
        faces that fill most of its input: enlarged to 640 px, FG-NET's small, tightly
        cropped photos had no face at score 0.6 for buffalo_s's SCRFD-500M in 546 of 1002;
        this way, in 1."""
        width, height = self._det_size
        factor = min(width / image.shape[1], height / image.shape[0], 1.0)
        faces = self._detect_at(image, factor)
        return faces or self._detect_at(image, factor / 2)

    def _detect_at(self, image: Image, factor: float) -> list[DetectedFace]:
        blob, scale = _letterbox(image, self._det_size, factor)
        outputs = self._detector.run(None, {self._det_input: blob})
        boxes, points, scores = self._decode(outputs)
        keep = _nms(boxes, scores, NMS_IOU)
        return [_face(boxes[i], points[i], scores[i], scale) for i in keep]

    def align(self, image: Image, face: DetectedFace) -> Image:
        return align_chip(image, face.landmarks)

    def embed(self, image: Image, face: DetectedFace, chip: Image) -> FloatArray:
        return self._recogniser.embed(chip)

    def embed_chips(self, chips: Sequence[Image]) -> FloatArray:
        return self._recogniser.embed_chips(chips)

    def _decode(self, outputs: list[Any]) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Boxes (n, 4) as x1 y1 x2 y2, landmarks (n, 5, 2) and scores (n,) above threshold,
        in detector-input pixels."""
        boxes, points, scores = [], [], []
        for i, (stride, centres) in enumerate(zip(STRIDES, self._anchors, strict=True)):
            score = np.asarray(outputs[i], np.float32).reshape(-1)
            keep = np.flatnonzero(score >= self.det_threshold)
            centre = centres[keep]
            dist = np.asarray(outputs[i + 3], np.float32).reshape(-1, 4)[keep] * stride
            kps = np.asarray(outputs[i + 6], np.float32).reshape(-1, 5, 2)[keep] * stride
            boxes.append(np.hstack([centre - dist[:, :2], centre + dist[:, 2:]]))
            points.append(centre[:, None, :] + kps)
            scores.append(score[keep])
        return np.concatenate(boxes), np.concatenate(points), np.concatenate(scores)


def _check_detector(session: Any, path: Path) -> str:
    """The detector's input name, once its inputs and outputs are those of SCRFD with keypoints."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(inputs[0].shape) != 4 or inputs[0].shape[1] != 3:
        raise ModelUnavailable(
            f"detector {path} is not an SCRFD model: it takes {[i.shape for i in inputs]}, "
            "expected one [1, 3, H, W] image"
        )
    widths = [out.shape[-1] if out.shape else None for out in outputs]
    expected = [w for w in OUTPUT_WIDTHS for _ in STRIDES]
    if len(outputs) != SCRFD_OUTPUTS or any(
        isinstance(got, int) and got != want for got, want in zip(widths, expected, strict=True)
    ):
        raise ModelUnavailable(
            f"detector {path} is not an SCRFD model with keypoints: it has {len(outputs)} "
            f"outputs {[out.shape for out in outputs]}; expected 9 (scores, boxes and five "
            "landmarks at strides 8, 16, 32). Homeward needs the landmarks to align faces."
        )
    return str(inputs[0].name)


def _detector_size(session: Any, det_size: int) -> tuple[int, int]:
    """(width, height) the detector runs at: its fixed input size if it has one, else det_size."""
    height, width = session.get_inputs()[0].shape[2:4]
    if isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0:
        if (width, height) != (det_size, det_size):
            log.warning(
                "detector input is fixed at %dx%d; det_size %d ignored", width, height, det_size
            )
        size = (width, height)
    else:
        size = (det_size, det_size)
    if size[0] % STRIDES[-1] or size[1] % STRIDES[-1]:
        raise ValueError(f"detector input size {size} must be a multiple of {STRIDES[-1]}")
    return size


def _anchor_tables(session: Any, input_name: str, size: tuple[int, int]) -> list[FloatArray]:
    """Anchor centres (n, 2) per stride, sized from one trial run on a blank image, which also
    proves the model runs at this input size."""
    width, height = size
    blank = np.zeros((1, 3, height, width), np.float32)
    try:
        scores = session.run(None, {input_name: blank})[: len(STRIDES)]
    except Exception as err:  # onnxruntime raises its own exception types
        raise ModelUnavailable(f"detector fails on a {width}x{height} input: {err}") from err
    tables = []
    for stride, score in zip(STRIDES, scores, strict=True):
        rows, cols = height // stride, width // stride
        anchors, remainder = divmod(int(np.asarray(score).size), rows * cols)
        if anchors < 1 or remainder:
            raise ModelUnavailable(
                f"detector gives {np.asarray(score).size} scores at stride {stride} for a "
                f"{width}x{height} input; expected a multiple of {rows * cols}"
            )
        ys, xs = np.mgrid[:rows, :cols]
        centres = np.stack([xs, ys], axis=-1).reshape(-1, 2).astype(np.float32) * stride
        tables.append(np.repeat(centres, anchors, axis=0))
    return tables


def _check_recogniser_input(session: Any, path: Path) -> str:
    inputs = session.get_inputs()
    shape = list(inputs[0].shape) if len(inputs) == 1 else []
    batch_ok = bool(shape) and (shape[0] in (1, None) or isinstance(shape[0], str))
    chip_ok = shape[1:] == [3, CHIP_SIZE, CHIP_SIZE] and inputs[0].type == "tensor(float)"
    if not (batch_ok and chip_ok):
        raise ModelUnavailable(
            f"recogniser {path} is not an ArcFace model: it takes "
            f"{[(i.shape, i.type) for i in inputs]}, expected one float32 "
            f"[1, 3, {CHIP_SIZE}, {CHIP_SIZE}] chip"
        )
    return str(inputs[0].name)


def _recogniser_dimension(session: Any, path: Path) -> int:
    outputs = session.get_outputs()
    shape = outputs[0].shape if len(outputs) == 1 else []
    if len(shape) != 2 or not isinstance(shape[1], int) or shape[1] <= 0:
        raise ModelUnavailable(
            f"recogniser {path} is not an ArcFace model: it gives "
            f"{[out.shape for out in outputs]}, expected one [1, dimension] embedding"
        )
    return int(shape[1])


def _blob(image: Image, mean: float, std: float) -> FloatArray:
    """BGR uint8 H x W x 3 to a normalised RGB 1 x 3 x H x W float32 tensor."""
    rgb = image[:, :, ::-1].astype(np.float32)
    return np.ascontiguousarray(((rgb - mean) / std).transpose(2, 0, 1)[None])


def _letterbox(image: Image, size: tuple[int, int], factor: float) -> tuple[FloatArray, FloatArray]:
    """The detector blob (image scaled by ``factor``, at most to fit, padded right and
    bottom) and the (x, y) scale."""
    width, height = size
    rows, cols = image.shape[:2]
    new_w = min(width, max(1, round(cols * factor)))
    new_h = min(height, max(1, round(rows * factor)))
    canvas = np.zeros((height, width, 3), np.uint8)
    canvas[:new_h, :new_w] = cv2.resize(image, (new_w, new_h))
    return _blob(canvas, DET_MEAN, DET_STD), np.array([new_w / cols, new_h / rows], np.float32)


def _nms(boxes: FloatArray, scores: FloatArray, max_iou: float) -> list[int]:
    """Indices kept by greedy non-maximum suppression, best score first."""
    order = np.argsort(-scores, kind="stable")
    sides = np.clip(boxes[:, 2:] - boxes[:, :2], 0, None)
    areas = sides[:, 0] * sides[:, 1]
    keep: list[int] = []
    while order.size:
        best, rest = int(order[0]), order[1:]
        top_left = np.maximum(boxes[best, :2], boxes[rest, :2])
        bottom_right = np.minimum(boxes[best, 2:], boxes[rest, 2:])
        overlap = np.clip(bottom_right - top_left, 0, None).prod(axis=1)
        union = areas[best] + areas[rest] - overlap
        iou = np.divide(overlap, union, out=np.zeros_like(overlap), where=union > 0)
        keep.append(best)
        order = rest[iou <= max_iou]
    return keep


def _face(
    box: FloatArray, points: FloatArray, score: np.floating[Any], scale: FloatArray
) -> DetectedFace:
    """A detection in detector-input pixels, mapped back to the original image."""
    x1, y1, x2, y2 = (float(v) for v in np.concatenate([box[:2] / scale, box[2:] / scale]))
    landmarks: npt.NDArray[np.float32] = (points / scale).astype(np.float32)
    return DetectedFace(box=(x1, y1, x2 - x1, y2 - y1), landmarks=landmarks, score=float(score))
