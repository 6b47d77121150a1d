"""onnxruntime sessions, configured the same way for every backend."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort

from service.errors import ModelUnavailable


def cpu_session(path: Path, threads: int) -> ort.InferenceSession:
    """A CPU session with an explicit thread count, so server threads x ORT threads never
    oversubscribe the cores; onnxruntime's own warnings are silenced below errors."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own untyped errors for bad graphs
        raise ModelUnavailable(f"cannot load ONNX model {path}: {err}") from err
