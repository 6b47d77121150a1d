"""A fitted linear map applied to templates as they enter the index and to queries before
search (then re-normalised), so cosine scores discount within-person variation such as
ageing. The registry keeps the raw templates; the index is derived with the transform,
and its snapshot records the transform's version (a different version means a rebuild).

Files are ``.npz`` with ``version``, ``model_id``, a ``mean`` (d) and a ``matrix`` (d x d):
a template x becomes ``matrix @ (x - mean)``, re-normalised; shipped ones live in
``service/search/data`` (see NOTE.md).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from service.faces.base import FloatArray, l2_normalise

logger = logging.getLogger(__name__)

SHIPPED = Path(__file__).parent / "data"


@dataclass(frozen=True)
class TemplateTransform:
    version: str
    model_id: str
    matrix: FloatArray | None  # None: identity
    mean: FloatArray | None = None  # subtracted first

    def apply(self, vectors: npt.NDArray[np.floating]) -> FloatArray:
        """Rows centred, mapped and re-normalised to unit length."""
        v = np.asarray(vectors, dtype=np.float32)
        if self.matrix is None:
            return v
        return l2_normalise((v - (0 if self.mean is None else self.mean)) @ self.matrix.T)

    def save(self, path: Path) -> None:
        if self.matrix is None:
            raise ValueError("the identity transform has no file")
        mean = np.zeros(len(self.matrix), np.float32) if self.mean is None else self.mean
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as handle:
            np.savez(handle, version=self.version, model_id=self.model_id, matrix=self.matrix,
                     mean=mean)  # fmt: skip

    @classmethod
    def load(cls, path: Path) -> TemplateTransform:
        with np.load(path) as data:
            matrix = np.asarray(data["matrix"], dtype=np.float32)
            mean = np.asarray(data["mean"], dtype=np.float32)
            return cls(str(data["version"]), str(data["model_id"]), matrix, mean)


IDENTITY = TemplateTransform("none", "", None)


def resolve_transform(setting: str, model_id: str, dimension: int) -> TemplateTransform:
    """``none``; ``default`` (the shipped file for this model id, else none); or a path.
    A transform fitted for another model or dimension is refused."""
    if setting == "none":
        return IDENTITY
    if setting == "default":
        shipped = [TemplateTransform.load(f) for f in sorted(SHIPPED.glob("*.npz"))]
        transform = next((t for t in shipped if t.model_id == model_id), IDENTITY)
        if transform is IDENTITY:
            return IDENTITY
    else:
        transform = TemplateTransform.load(Path(setting))
    shape = None if transform.matrix is None else transform.matrix.shape
    if transform.model_id != model_id or shape != (dimension, dimension):
        raise ValueError(
            f"template transform {transform.version} was fitted for {transform.model_id} "
            f"{shape}, not {model_id} ({dimension}-D)"
        )
    logger.info("template transform %s", transform.version)
    return transform


def fit_linear_map(
    x: npt.NDArray[np.floating],
    identity: npt.NDArray[np.str_],
    age: npt.NDArray[np.floating],
    reg: float = 0.5,
    age_dirs: int = 0,
) -> tuple[FloatArray, FloatArray]:
    """WCCN-like (matrix, mean) from unit templates (rows) labelled by person: centre on the
    mean, project out the ``age_dirs`` main directions of the people's own template-vs-age
    slopes, then whiten the within-person covariance regularised by ``reg`` times its mean
    eigenvalue."""
    mean = np.asarray(x, dtype=np.float64).mean(0)
    x = np.asarray(x, dtype=np.float64) - mean
    d = x.shape[1]
    people = [np.flatnonzero(identity == p) for p in np.unique(identity)]
    project = np.eye(d)
    if age_dirs > 0:
        slopes = []
        for rows in people:
            if len(rows) >= 3 and np.ptp(age[rows]) > 0:
                a = age[rows] - age[rows].mean()
                slopes.append((a @ (x[rows] - x[rows].mean(0))) / (a @ a))
        if slopes:
            _, _, vt = np.linalg.svd(np.array(slopes), full_matrices=False)
            u = vt[:age_dirs].T
            project = np.eye(d) - u @ u.T
    y = x @ project.T
    within = np.concatenate([y[rows] - y[rows].mean(0) for rows in people if len(rows) > 1])
    cov = within.T @ within / len(within)
    values, vectors = np.linalg.eigh(cov + reg * np.trace(cov) / d * np.eye(d))
    whiten = vectors @ np.diag(values**-0.5) @ vectors.T
    return (whiten @ project).astype(np.float32), mean.astype(np.float32)
