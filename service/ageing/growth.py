"""The craniofacial growth model: a mean landmark shape per year of age, and how a face's
landmarks move from one age to another under it.

A model holds one normalised, upright mean shape (68 x 2, dlib order) per integer age.
Ageing a face adds the change of the mean shape between the two ages, carried into the
face's own frame (the similarity that best maps the source-age mean onto the face), so
its expression and individual proportions stay as they are.

A model may also hold a pose model: the leading modes of how faces of one age differ
(head turn and nod), how much of each persists between two photos of one person
(little), and a limit. Ageing then also moves the face that share of the way towards
the frontal pose the later photo is most likely to have, never more than the limit, so
that a 2-D warp can still do it without visible distortion.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from service.ageing.shapes import N_POINTS, Points, as_points, deviation, similarity

logger = logging.getLogger(__name__)

Sex = Literal["female", "male"]
SEXES: tuple[Sex, ...] = ("female", "male")
DEFAULT_MODEL_FILE = Path(__file__).resolve().parent / "data" / "growth_v2.json"
Vector = npt.NDArray[np.float64]


@dataclass(frozen=True)
class PoseModel:
    """Modes of pose in the normalised frame of the mean shapes, and their fitted
    persistence between photos of one person; ``limits`` bound each mode's change."""

    modes: npt.NDArray[np.float64]  # (k, 68, 2), unit norm, orthogonal
    persistence: Vector  # (k,): regression of a later photo's coefficient on an earlier's
    limits: Vector  # (k,): largest change per mode, in coefficient units

    def __post_init__(self) -> None:
        k = len(self.modes)
        if self.modes.shape != (k, N_POINTS, 2) or self.persistence.shape != (k,):
            raise ValueError("pose modes must be (k, 68, 2) with one persistence per mode")
        if self.limits.shape != (k,) or (self.limits < 0).any():
            raise ValueError("pose limits must be k non-negative numbers")

    def change(self, deviation: Points) -> Points:
        """The change (normalised frame) of a face whose shape deviates from the mean shape
        at its age by ``deviation``: each mode's coefficient moved to its expected value in
        a later photo, within the limits."""
        flat = self.modes.reshape(len(self.modes), -1)
        step = np.clip(
            (self.persistence - 1) * (flat @ deviation.ravel()), -self.limits, self.limits
        )
        out: Points = (step @ flat).reshape(N_POINTS, 2)
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "modes": np.round(self.modes, 6).tolist(),
            "persistence": np.round(self.persistence, 4).tolist(),
            "limits": np.round(self.limits, 4).tolist(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PoseModel:
        return cls(
            modes=np.asarray(data["modes"], dtype=np.float64),
            persistence=np.asarray(data["persistence"], dtype=np.float64),
            limits=np.asarray(data["limits"], dtype=np.float64),
        )


@dataclass(frozen=True)
class GrowthModel:
    version: str
    ages: tuple[int, ...]  # consecutive integer years
    shapes: npt.NDArray[np.float64]  # (len(ages), 68, 2): the mean shape at each age
    metadata: dict[str, Any]  # source, method, fitting date...; informative only
    pose: PoseModel | None = None

    def __post_init__(self) -> None:
        expected = (len(self.ages), N_POINTS, 2)
        if self.shapes.shape != expected:
            raise ValueError(f"growth model shapes must be {expected}, got {self.shapes.shape}")
        if list(self.ages) != list(range(self.ages[0], self.ages[0] + len(self.ages))):
            raise ValueError("growth model ages must be consecutive integer years")

    @property
    def min_age(self) -> int:
        return self.ages[0]

    @property
    def max_age(self) -> int:
        return self.ages[-1]

    def mean_shape(self, age: float, sex: Sex | None = None) -> Points:
        """The mean shape at ``age`` (linear between whole years).

        ``sex`` is accepted for callers that know it, but no sex-specific shapes are
        fitted yet (the data have no sex labels): every sex gets the overall mean.
        """
        del sex
        if not self.min_age <= age <= self.max_age:
            raise ValueError(f"age {age} outside the model's {self.min_age}-{self.max_age}")
        position = age - self.min_age
        low = min(int(np.floor(position)), len(self.ages) - 1)
        high = min(low + 1, len(self.ages) - 1)
        weight = position - low
        shape: Points = (1 - weight) * self.shapes[low] + weight * self.shapes[high]
        return shape

    def age_points(
        self,
        points: Points,
        source_age: float,
        target_age: float,
        sex: Sex | None = None,
        *,
        pose: bool = True,
    ) -> Points:
        """``points`` (68 x 2, image pixels) as the model expects them at ``target_age``:
        moved by growth, plus the pose model's step if there is one and ``pose``."""
        points = as_points(points)
        source = self.mean_shape(source_age, sex)
        frame, _ = similarity(source, points)
        change = self.mean_shape(target_age, sex) - source
        if pose and self.pose is not None:
            change = change + self.pose.change(deviation(points, source))
        aged: Points = points + change @ frame.T
        return aged

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            **self.metadata,
            "ages": list(self.ages),
            "shapes": np.round(self.shapes, 5).tolist(),
            **({"pose": self.pose.to_json()} if self.pose else {}),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GrowthModel:
        fields = dict(data)
        try:
            version = str(fields.pop("version"))
            ages = tuple(int(a) for a in fields.pop("ages"))
            shapes = np.asarray(fields.pop("shapes"), dtype=np.float64)
            pose = fields.pop("pose", None)
            pose_model = PoseModel.from_json(pose) if pose is not None else None
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a growth model file: {exc}") from exc
        return cls(version=version, ages=ages, shapes=shapes, metadata=fields, pose=pose_model)


def save_growth_model(model: GrowthModel, path: Path) -> None:
    path.write_text(json.dumps(model.to_json(), separators=(",", ":")) + "\n")


def load_growth_model(path: Path = DEFAULT_MODEL_FILE) -> GrowthModel:
    """A growth model file; the shipped one by default (read once)."""
    return _load(path.resolve())


@cache
def _load(path: Path) -> GrowthModel:
    model = GrowthModel.from_json(json.loads(path.read_text()))
    logger.info("growth model %s loaded (ages %d-%d)", model.version, model.min_age, model.max_age)
    return model
