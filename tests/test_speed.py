"""The speed-ups of the recognisers change no template: the graph fixes made at load time
(service.faces.onnx), the face and its mirror in one batched run, and the thread choice
per call. Real weights (SFace from the repository, buffalo_s's ArcFace when fetched) on real
faces (insightface's t1.jpg, skimage's astronaut), and tiny generated graphs."""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from service.faces.base import DetectedFace, FaceBackend, l2_normalise
from service.faces.model_files import sface_files
from service.faces.onnx import batch_size_free, prepared_graph
from service.faces.pipeline import ChipBatchEmbedder, FacePipeline
from service.faces.quality import QualityThresholds
from service.faces.sface import SFaceBackend
from tests.conftest import REPO
from tests.images import astronaut_bgr, t1_bgr

PACK = REPO / "models" / "buffalo_s"


def chips(backend: FaceBackend) -> list[np.ndarray]:
    """Aligned chips of the seven real faces (t1's six and the astronaut)."""
    found = []
    for image in (t1_bgr(), astronaut_bgr()):
        found += [backend.align(image, face) for face in backend.detect(image)]
    assert len(found) == 7
    return found


def embed_one(backend: FaceBackend, chip: np.ndarray) -> np.ndarray:
    """One chip's template (the backends here use the chip alone)."""
    return backend.embed(chip, DetectedFace((0, 0, 1, 1), np.zeros((5, 2), np.float32), 1), chip)


def plain_session(path: Path) -> ort.InferenceSession:
    """The graph as the file has it, as the service loaded it before the fixes."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def sface_reference(session: ort.InferenceSession, chip: np.ndarray) -> np.ndarray:
    blob = chip[:, :, ::-1].astype(np.float32).transpose(2, 0, 1)[None]
    (output,) = session.run(None, {"data": blob})
    return l2_normalise(np.asarray(output).reshape(-1))


@pytest.fixture(scope="module")
def sface_two_threads() -> SFaceBackend:
    detector, recogniser = sface_files(REPO / "models")
    return SFaceBackend(detector, recogniser, threads=2)


def test_sface_templates_are_those_of_the_unmodified_graph(sface_backend: FaceBackend) -> None:
    _, recogniser = sface_files(REPO / "models")
    reference = plain_session(recogniser)
    for chip in chips(sface_backend):
        expected = sface_reference(reference, chip)
        np.testing.assert_allclose(embed_one(sface_backend, chip), expected, atol=1e-5)


def test_the_sface_graph_is_fixed_and_takes_a_batch() -> None:
    _, recogniser = sface_files(REPO / "models")
    model = onnx.load_from_string(prepared_graph(recogniser, dynamic_batch=True))
    ops = {node.op_type for node in model.graph.node}
    assert "PRelu" not in ops
    assert [value.name for value in model.graph.input] == ["data"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


@pytest.mark.parametrize("threads", [1, 2])
def test_a_face_and_its_mirror_in_one_run_equal_two_runs(
    sface_backend: FaceBackend, sface_two_threads: SFaceBackend, threads: int
) -> None:
    backend = sface_backend if threads == 1 else sface_two_threads
    assert isinstance(backend, ChipBatchEmbedder)
    for chip in chips(backend):
        mirror = np.ascontiguousarray(chip[:, ::-1])
        both = backend.embed_chips([chip, mirror])
        one_by_one = [embed_one(backend, c) for c in (chip, mirror)]
        np.testing.assert_allclose(both, np.stack(one_by_one), atol=1e-5)


def test_the_flip_template_is_the_mean_of_two_runs(sface_backend: FaceBackend) -> None:
    pipeline = FacePipeline(sface_backend, QualityThresholds(40, 10.0, 65.0), 10, flip=True)
    image = astronaut_bgr()
    (face,) = pipeline.analyse_all(image)
    chip = sface_backend.align(image, face.face)
    _, recogniser = sface_files(REPO / "models")
    reference = plain_session(recogniser)
    mirror = np.ascontiguousarray(chip[:, ::-1])
    expected = l2_normalise(sface_reference(reference, chip) + sface_reference(reference, mirror))
    np.testing.assert_allclose(face.template, expected, atol=1e-5)


def test_arcface_templates_are_those_of_the_unmodified_graph() -> None:
    if not (PACK / "w600k_mbf.onnx").is_file():
        pytest.fail("buffalo_s is missing: scripts/fetch_models.py --insightface buffalo_s")
    from service.faces.insightface import InsightFaceBackend

    backend = InsightFaceBackend.from_pack(REPO / "models", "buffalo_s", threads=2)
    reference = plain_session(PACK / "w600k_mbf.onnx")
    name = reference.get_inputs()[0].name
    found = chips(backend)
    for chip in found:
        blob = ((chip[:, :, ::-1].astype(np.float32) - 127.5) / 127.5).transpose(2, 0, 1)[None]
        expected = l2_normalise(np.asarray(reference.run(None, {name: blob})[0]).reshape(-1))
        np.testing.assert_allclose(embed_one(backend, chip), expected, atol=1e-5)
    batched = backend.embed_chips(found)
    one_by_one = [embed_one(backend, chip) for chip in found]
    np.testing.assert_allclose(batched, np.stack(one_by_one), atol=1e-5)


def prelu_graph(path: Path, reshape_batch: int | None = None) -> None:
    """Conv -> PRelu (per-channel slope, some negative) -> Flatten, with the weights listed
    among the inputs as old exporters did; optionally a Reshape fixing the batch."""
    rng = np.random.default_rng(0)
    weights = {
        "w": rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
        "slope": np.array([0.25, -0.5, 1.5, 0.0], np.float32).reshape(4, 1, 1),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("PRelu", ["c", "slope"], ["p"]),
        helper.make_node("Flatten", ["p"], ["y"]),
    ]
    if reshape_batch is not None:
        weights["shape"] = np.array([reshape_batch, -1], np.int64)
        nodes[-1] = helper.make_node("Reshape", ["p", "shape"], ["y"])
    inits = [numpy_helper.from_array(v, k) for k, v in weights.items()]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])]
    inputs += [helper.make_tensor_value_info(i.name, i.data_type, list(i.dims)) for i in inits]
    graph = helper.make_graph(
        nodes, "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 256])], inits
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    model.ir_version = 7
    onnx.save(model, path)


def test_prelu_rewritten_gives_the_same_outputs(tmp_path: Path) -> None:
    path = tmp_path / "prelu.onnx"
    prelu_graph(path)
    x = np.random.default_rng(1).normal(size=(1, 3, 8, 8)).astype(np.float32)
    (expected,) = plain_session(path).run(None, {"x": x})
    fixed = ort.InferenceSession(prepared_graph(path, dynamic_batch=True))
    assert [i.name for i in fixed.get_inputs()] == ["x"] and batch_size_free(fixed)
    np.testing.assert_allclose(fixed.run(None, {"x": x})[0], expected, rtol=1e-5, atol=1e-5)
    twice = fixed.run(None, {"x": np.concatenate([x, x])})[0]
    np.testing.assert_allclose(twice, np.concatenate([expected, expected]), atol=1e-5)


def test_a_reshape_fixing_the_batch_keeps_it_fixed(tmp_path: Path) -> None:
    path = tmp_path / "reshape.onnx"
    prelu_graph(path, reshape_batch=1)
    assert not batch_size_free(ort.InferenceSession(prepared_graph(path, dynamic_batch=True)))
    prelu_graph(path, reshape_batch=0)  # 0: "as the input", any batch
    assert batch_size_free(ort.InferenceSession(prepared_graph(path, dynamic_batch=True)))


def test_yunet_detects_the_same_from_several_threads(sface_backend: FaceBackend) -> None:
    images = [t1_bgr(), astronaut_bgr(), cv2.resize(t1_bgr(), None, fx=0.5, fy=0.5)]
    expected = [len(sface_backend.detect(image)) for image in images]
    counts: list[list[int]] = [[] for _ in images]

    def detect(i: int) -> None:
        for _ in range(5):
            counts[i].append(len(sface_backend.detect(images[i])))

    threads = [threading.Thread(target=detect, args=(i,)) for i in range(len(images))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [set(c) for c in counts] == [{n} for n in expected]


def test_without_onnx_the_graph_loads_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    _, recogniser = sface_files(REPO / "models")
    monkeypatch.setattr("service.faces.onnx._onnx", lambda: None)
    assert prepared_graph(recogniser, dynamic_batch=True) == str(recogniser)
    backend = SFaceBackend(*sface_files(REPO / "models"))  # batch 1 only: one run per chip
    chip = np.full((112, 112, 3), 128, np.uint8)
    assert backend.embed_chips([chip, chip[:, ::-1]]).shape == (2, 128)
