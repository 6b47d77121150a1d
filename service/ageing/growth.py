"""The craniofacial growth model: a mean landmark shape per year of age, and how a face's
landmarks move from one age to another under it.

A model holds one normalised, upright mean shape (68 x 2, dlib order) per integer age.
Ageing a face adds the change of the mean shape between the two ages, carried into the
face's own frame (the similarity that best maps the source-age mean onto the face). Only
similarity is removed from the face, so its pose, expression and individual proportions
stay as they are; what changes is what changes on average between the two ages.
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

from service.ageing.shapes import N_POINTS, Points, as_points, similarity

logger = logging.getLogger(__name__)

Sex = Literal["female", "male"]
SEXES: tuple[Sex, ...] = ("female", "male")
DEFAULT_MODEL_FILE = Path(__file__).resolve().parent / "data" / "growth_v1.json"


@dataclass(frozen=True)
class GrowthModel:
    version: str
    ages: tuple[int, ...]  # consecutive integer years
    shapes: npt.NDArray[np.float64]  # (len(ages), 68, 2): the mean shape at each age
    metadata: dict[str, Any]  # source, method, fitting date...; informative only

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

    def shape_change(
        self, points: Points, source_age: float, target_age: float, sex: Sex | None = None
    ) -> Points:
        """Per-landmark displacement (image pixels) that ages ``points`` to ``target_age``."""
        points = as_points(points)
        source = self.mean_shape(source_age, sex)
        frame, _ = similarity(source, points)
        change: Points = (self.mean_shape(target_age, sex) - source) @ frame.T
        return change

    def age_points(
        self, points: Points, source_age: float, target_age: float, sex: Sex | None = None
    ) -> Points:
        """``points`` (68 x 2, image pixels) as the model expects them at ``target_age``."""
        aged: Points = as_points(points) + self.shape_change(points, source_age, target_age, sex)
        return aged

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            **self.metadata,
            "ages": list(self.ages),
            "shapes": np.round(self.shapes, 5).tolist(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GrowthModel:
        fields = dict(data)
        try:
            version = str(fields.pop("version"))
            ages = tuple(int(a) for a in fields.pop("ages"))
            shapes = np.asarray(fields.pop("shapes"), dtype=np.float64)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a growth model file: {exc}") from exc
        return cls(version=version, ages=ages, shapes=shapes, metadata=fields)


def save_growth_model(model: GrowthModel, path: Path) -> None:
    path.write_text(json.dumps(model.to_json(), separators=(",", ":")) + "\n")


def load_growth_model(path: Path = DEFAULT_MODEL_FILE) -> GrowthModel:
    """A growth model file; the shipped ``growth_v1`` by default (read once)."""
    return _load(path.resolve())


@cache
def _load(path: Path) -> GrowthModel:
    model = GrowthModel.from_json(json.loads(path.read_text()))
    logger.info("growth model %s loaded (ages %d-%d)", model.version, model.min_age, model.max_age)
    return model
