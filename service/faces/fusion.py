"""Score fusion of two recognisers: SFace and the ArcFace recogniser of an InsightFace pack
(``buffalo_s``'s MobileFaceNet ``w600k_mbf`` in the measured setting), on one detection.

The pack's SCRFD finds the faces and their landmarks (through the insightface backend, as
it is); both recognisers take the same 112x112 chip aligned on the ArcFace reference
points, so the chip is aligned once. The template is ``concat(sface, arcface) / sqrt(2)``:
unit length, and the inner product of two templates is the mean of the two models' cosines
(the sum's ranking). With mirror averaging the pipeline sums a chip's and its mirror's
fused templates before normalising, so each half is weighted by its own model's
chip-mirror agreement: nearly, not exactly, equally.

FG-NET, everything on (aged templates, flip, transform fitted per fold, 5 folds), rank
1 / 5 / 10 / 20: fgnet-child 0.484 / 0.750 / 0.843 / 0.910 (buffalo_s alone 0.463 / 0.718 /
0.818 / 0.899, SFace 0.397 / 0.670 / 0.792 / 0.889); fgnet-looi 0.967 / 0.990 / 0.992 /
0.994 (buffalo_s 0.965 / 0.982 / 0.990 / 0.993, SFace 0.953 / 0.979 / 0.987 / 0.993).
SCRFD rather than YuNet: with YuNet's landmarks fgnet-looi rank-1 was 0.962, under
buffalo_s alone.

The InsightFace weights are for non-commercial research use only: this backend is never a
default and never loads without the pack on disk, fetched by the operator with
``--accept-non-commercial``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from service.errors import ModelUnavailable
from service.faces import model_files
from service.faces.base import DetectedFace, FaceBackend, FloatArray, Image
from service.faces.insightface import InsightFaceBackend
from service.faces.sface import SFaceBackend

log = logging.getLogger(__name__)

HALF = np.float32(1 / math.sqrt(2))


class FusionBackend(FaceBackend):
    """Detection and alignment from ``insightface`` (SCRFD); templates from ``sface`` and
    ``insightface``'s recogniser side by side, each half weighted equally."""

    name = "fusion"

    def __init__(self, insightface: InsightFaceBackend, sface: SFaceBackend) -> None:
        self.insightface = insightface
        self.sface = sface
        self.dimension = sface.dimension + insightface.dimension
        self.model_id = f"fusion:{sface.model_id}+{insightface.model_id}"
        log.info("fusion of %s and %s (%d-D)", sface.model_id, insightface.model_id, self.dimension)

    @classmethod
    def from_models(
        cls,
        model_dir: Path,
        pack: str,
        *,
        threads: int = 1,
        score_threshold: float = 0.5,
    ) -> FusionBackend:
        """The InsightFace pack ``model_dir/pack`` and SFace from ``model_dir``, each refused
        unless it matches its pinned checksums."""
        try:
            insightface = InsightFaceBackend.from_pack(
                model_dir, pack, threads=threads, det_threshold=score_threshold
            )
        except ModelUnavailable as err:
            raise ModelUnavailable(
                f"the fusion backend needs InsightFace's {pack} pack: {err}"
            ) from err
        detector, recogniser = model_files.sface_files(model_dir)
        return cls(insightface, SFaceBackend(detector, recogniser, threads=threads))

    def detect(self, image: Image) -> list[DetectedFace]:
        return self.insightface.detect(image)

    def align(self, image: Image, face: DetectedFace) -> Image:
        return self.insightface.align(image, face)

    def embed(self, image: Image, face: DetectedFace, chip: Image) -> FloatArray:
        template: FloatArray = self.embed_chips([chip])[0]
        return template

    def embed_chips(self, chips: Sequence[Image]) -> FloatArray:
        """Unit-length templates of aligned chips, one row each (each model runs once for
        all the chips: a face and its mirror image)."""
        both = np.hstack([self.sface.embed_chips(chips), self.insightface.embed_chips(chips)])
        fused: FloatArray = both.astype(np.float32) * HALF
        return fused
