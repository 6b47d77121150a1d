"""onnxruntime sessions, configured the same way for every backend, and the graph fixes that
make old exports run at full speed.

Two fixes are made to a graph when it is loaded (both leave its outputs the same to within
float rounding, about 1e-7; the weights file and so the model id are unchanged):

* initializers listed among the graph's inputs (MXNet-era exports such as SFace) are taken
  out of the inputs: onnxruntime treats such weights as overridable, so it folds no batch
  norm into its convolution;
* ``PRelu`` with a per-channel slope is written as ``Relu(x) + (-slope) * Relu(-x)``, the
  two scalings as 1x1 depthwise convolutions: onnxruntime's PRelu kernel works on plain
  NCHW tensors, so every PRelu cost a layout change there and back and a slow broadcast
  (over half of SFace's time); written so, the whole network stays in onnxruntime's
  blocked NCHWc layout. For x > 0 the result is x + 0, for x < 0 it is 0 + slope * x.

The fixes need the ``onnx`` package; without it the graph is loaded as it is (slower)."""

from __future__ import annotations

import logging
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from service.errors import ModelUnavailable

logger = logging.getLogger(__name__)


def cpu_session(path: Path, threads: int, *, dynamic_batch: bool = False) -> ort.InferenceSession:
    """A CPU session with an explicit thread count, so server threads x ORT threads never
    oversubscribe the cores; onnxruntime's own warnings are silenced below errors.

    ``dynamic_batch``: the first input's batch dimension is made free, so several images
    run in one call (see ``batch_size_free``)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    # Idle intra-op threads sleep rather than spin: spinning took cores that concurrent
    # requests needed (SFace face + mirror at 2 threads: 44 to 57 ms of CPU instead of 30;
    # at 1 thread, 29). Concurrent runs still queue for the session's one intra-op pool,
    # which is why the service runs one thread per inference (INFERENCE_THREADS).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        graph = prepared_graph(path, dynamic_batch)
        return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnx and onnxruntime raise their own untyped errors
        raise ModelUnavailable(f"cannot load ONNX model {path}: {err}") from err


def batch_size_free(session: ort.InferenceSession) -> bool:
    """Whether the session's first input takes any batch size."""
    return not isinstance(session.get_inputs()[0].shape[0], int)


def prepared_graph(path: Path, dynamic_batch: bool = False) -> bytes | str:
    """The serialised graph with the fixes above (the path itself without ``onnx``)."""
    onnx = _onnx()
    if onnx is None:
        return str(path)
    model = onnx.load(str(path))
    graph = model.graph
    _constant_initializers(graph)
    _prelu_as_relus(onnx, graph)
    if dynamic_batch:
        _free_batch_dimension(onnx, graph)
    serialised: bytes = model.SerializeToString()
    return serialised


@cache
def _onnx() -> Any:
    try:
        import onnx
    except ImportError:
        logger.warning(
            "the onnx package is not installed: models load unoptimised (about twice as "
            "slow for SFace); install onnx"
        )
        return None
    return onnx


def _constant_initializers(graph: Any) -> None:
    weights = {init.name for init in graph.initializer}
    inputs = [value for value in graph.input if value.name not in weights]
    del graph.input[:]
    graph.input.extend(inputs)


def _prelu_as_relus(onnx: Any, graph: Any) -> None:
    """Every PRelu whose slope is a (C, 1, 1) initializer, rewritten as described above."""
    slopes = {init.name: init for init in graph.initializer}
    nodes, replaced = [], set()
    for node in graph.node:
        slope = slopes.get(node.input[1]) if node.op_type == "PRelu" else None
        if slope is None or len(slope.dims) != 3 or list(slope.dims[1:]) != [1, 1]:
            nodes.append(node)
            continue
        values = onnx.numpy_helper.to_array(slope).astype(np.float32).reshape(-1)
        nodes.extend(_relu_pair(onnx, graph, node, values))
        replaced.add(slope.name)
    del graph.node[:]
    graph.node.extend(nodes)
    unused = replaced - {name for node in nodes for name in node.input}
    weights = [init for init in graph.initializer if init.name not in unused]
    del graph.initializer[:]
    graph.initializer.extend(weights)


def _relu_pair(onnx: Any, graph: Any, node: Any, slope: np.ndarray) -> list[Any]:
    (x, _), (y,) = node.input, node.output
    name = f"{y}__prelu"
    channels = len(slope)

    def depthwise(source: str, target: str, weights: np.ndarray) -> Any:
        kernel = weights.reshape(channels, 1, 1, 1).astype(np.float32)
        graph.initializer.append(onnx.numpy_helper.from_array(kernel, f"{target}_w"))
        return onnx.helper.make_node(
            "Conv", [source, f"{target}_w"], [target], group=channels, kernel_shape=[1, 1]
        )

    make = onnx.helper.make_node
    return [
        make("Relu", [x], [f"{name}_pos"]),
        depthwise(x, f"{name}_neg", -np.ones(channels, np.float32)),
        make("Relu", [f"{name}_neg"], [f"{name}_neg_pos"]),
        depthwise(f"{name}_neg_pos", f"{name}_scaled", -slope),
        make("Add", [f"{name}_pos", f"{name}_scaled"], [y]),
    ]


def _free_batch_dimension(onnx: Any, graph: Any) -> None:
    """The first input's and the outputs' first dimension made symbolic, unless a Reshape
    might fix the batch (a constant shape with a leading 1, or a computed shape, not
    checked): then it is left as it is, and ``batch_size_free`` says so. Flatten, Gemm and
    convolutions take any batch."""
    constants = {init.name: init for init in graph.initializer}
    for node in graph.node:
        if node.op_type != "Reshape":
            continue
        shape = constants.get(node.input[1])
        if shape is None or int(onnx.numpy_helper.to_array(shape).reshape(-1)[0]) not in (0, -1):
            return
    for value in (graph.input[0], *graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims:
            dims[0].dim_param = "batch"
