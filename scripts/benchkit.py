"""Face-shaped templates for benchmarks: real templates embedded from package-shipped
photos (or a dataset folder such as FG-NET), and synthetic distractors drawn from a
distribution fitted to them, with identity structure.

Real templates. Each source photo (the six faces of insightface's ``t1.jpg``, its
``Tom_Hanks_54745.png`` and scikit-image's astronaut; or every photo of a dataset with a
``labels.csv`` of ``path,identity``) is augmented (mirror, rotation, scale, brightness and
contrast, blur, crop, JPEG quality) and embedded by the service's own pipeline (detector,
alignment, recogniser, mirror averaging), so they are the raw templates the registry would
hold. They are cached in the temp dir (``homeward-bench/``), never in the repository.

Distractors. A Gaussian model in template space: identity centres drawn around the real
templates' mean from the between-identity covariance (of the identity means), templates
drawn around each centre from the pooled within-identity covariance, both Ledoit-Wolf
shrunk towards a multiple of the identity (a few identities give a thin estimate), then
L2-normalised like real templates. Three scale factors (of the mean, the between and the
within covariance) are then matched to the real data's mean genuine cosine, mean impostor
cosine and impostor cosine spread, so that the synthetic
gallery's neighbour structure (near-ties among impostors, tight clusters per person) is
that of real templates, unlike isotropic random vectors.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from service.faces.pipeline import FacePipeline

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(tempfile.gettempdir()) / "homeward-bench"
AUGMENTED_VIEWS = 48  # per package photo

logger = logging.getLogger(__name__)

Floats = npt.NDArray[np.float32]
Image = npt.NDArray[Any]  # BGR, as OpenCV gives it


@dataclass(frozen=True)
class RealTemplates:
    vectors: Floats  # unit rows, raw (untransformed) templates
    identity: npt.NDArray[np.int64]  # person per row, 0..people-1
    source: str

    @property
    def people(self) -> int:
        return int(self.identity.max()) + 1 if len(self.identity) else 0


# -- real templates ---------------------------------------------------------------------


def package_photos() -> list[tuple[str, Image]]:
    """One-person photos that installed packages ship: (person, BGR image)."""
    sys.path.insert(0, str(ROOT))
    from tests.faces_of_t1 import face_crop
    from tests.images import astronaut_bgr, insightface_image

    photos: list[tuple[str, Image]] = [(f"t1-{i}", face_crop(i, margin=0.8)) for i in range(6)]
    photos.append(("astronaut", astronaut_bgr()))
    hanks = cv2.imread(str(insightface_image("Tom_Hanks_54745.png")), cv2.IMREAD_COLOR)
    if hanks is not None:
        photos.append(("tom-hanks", hanks))
    return photos


def augmented(image: Image, rng: np.random.Generator) -> Image:
    """One random view: mirror, rotation, scale, brightness/contrast, blur, crop, JPEG."""
    out = image[:, ::-1] if rng.random() < 0.5 else image
    h, w = out.shape[:2]
    angle, scale = rng.uniform(-12, 12), rng.uniform(0.6, 1.4)
    turn = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    out = cv2.warpAffine(np.ascontiguousarray(out), turn, (w, h), borderMode=cv2.BORDER_REFLECT)
    top, bottom, left, right = (int(rng.uniform(0, 0.1) * s) for s in (h, h, w, w))
    out = out[top : h - bottom, left : w - right]
    out = cv2.resize(out, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    out = cv2.convertScaleAbs(out, alpha=rng.uniform(0.7, 1.3), beta=rng.uniform(-30, 30))
    sigma = float(rng.choice([0.0, 0.0, 0.8, 1.5]))
    if sigma:
        out = cv2.GaussianBlur(out, (0, 0), sigma)
    quality = int(rng.integers(40, 96))
    jpeg = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, quality])[1]
    decoded = cv2.imdecode(jpeg, cv2.IMREAD_COLOR)
    assert decoded is not None
    return decoded


def largest_face_template(pipeline: FacePipeline, image: Image) -> Floats | None:
    faces = pipeline.detect(image)
    if not faces:
        return None
    template: Floats = pipeline.analyse(image, faces[0]).template
    return template


def dataset_photos(folder: Path) -> Iterator[tuple[str, Image]]:
    """(person, BGR image) for each row of ``folder/labels.csv`` (``path,identity,...``)."""
    with (folder / "labels.csv").open() as handle:
        for row in csv.DictReader(handle):
            image = cv2.imread(str(folder / row["path"]), cv2.IMREAD_COLOR)
            if image is not None:
                yield row["identity"], image


def real_templates(pipeline: FacePipeline, fit_on: Path | None, seed: int = 0) -> RealTemplates:
    """Real templates, embedded once and cached in the temp dir: augmented package photos,
    or each photo of the dataset ``fit_on`` as it is."""
    source = "package photos" if fit_on is None else str(fit_on.resolve())
    key = hashlib.sha256(f"{source}|{pipeline.model_id}|{seed}|v1".encode()).hexdigest()[:16]
    cache = CACHE / f"real-{key}.npz"
    if cache.exists():
        with np.load(cache) as data:
            return RealTemplates(data["vectors"], data["identity"], source)
    rng = np.random.default_rng(seed)
    rows: list[Floats] = []
    people: list[str] = []
    if fit_on is None:
        photos = [
            (person, image if view == 0 else augmented(image, rng))
            for person, image in package_photos()
            for view in range(AUGMENTED_VIEWS)
        ]
    else:
        photos = list(dataset_photos(fit_on))
    for person, image in photos:
        template = largest_face_template(pipeline, image)
        if template is not None:
            rows.append(template)
            people.append(person)
    names = sorted(set(people))
    identity = np.array([names.index(p) for p in people], np.int64)
    vectors = np.asarray(rows, np.float32)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(cache, vectors=vectors, identity=identity)
    return RealTemplates(vectors, identity, source)


# -- the distractor model ---------------------------------------------------------------


def ledoit_wolf(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Ledoit-Wolf shrunk covariance of the (already centred) rows of ``x``."""
    n, d = x.shape
    sample = x.T @ x / n
    target = np.trace(sample) / d
    delta = float(np.sum((sample - target * np.eye(d)) ** 2))
    beta = float(sum(np.sum((np.outer(r, r) - sample) ** 2) for r in x)) / n**2
    shrink = min(beta, delta) / delta if delta > 0 else 1.0
    covariance: npt.NDArray[np.float64] = shrink * target * np.eye(d) + (1 - shrink) * sample
    return covariance


def cosine_stats(vectors: Floats, identity: npt.NDArray[np.int64]) -> tuple[float, float, float]:
    """(mean genuine cosine, mean impostor cosine, impostor cosine std) over all pairs of a
    sample of at most 2000 rows."""
    rows = np.arange(len(vectors))[:2000]
    v, who = vectors[rows], identity[rows]
    cos = v @ v.T
    same = who[:, None] == who[None, :]
    upper = np.triu(np.ones_like(same), 1)
    genuine, impostor = cos[same & upper], cos[~same & upper]
    return float(genuine.mean()), float(impostor.mean()), float(impostor.std())


@dataclass(frozen=True)
class TemplateModel:
    """Identity centres ~ N(mean, B), templates ~ N(centre, W), then unit length."""

    mean: npt.NDArray[np.float64]
    between: npt.NDArray[np.float64]  # a square root of B
    within: npt.NDArray[np.float64]  # a square root of W
    shrinkage: float = 0.0  # of B towards a multiple of the identity

    @classmethod
    def fit(cls, real: RealTemplates, seed: int = 0) -> TemplateModel:
        """Shapes from the real templates (the between-identity covariance of the identity
        means, the pooled within-identity covariance, Ledoit-Wolf shrunk), sizes from their
        cosines: on unit vectors in many dimensions the mean impostor cosine is about
        |mean|^2, the mean genuine cosine |mean|^2 + tr B and 1 = |mean|^2 + tr B + tr W.
        B's shrinkage is then chosen so that the impostor cosines spread as the real ones
        (a few identities' sample covariance has too few directions, the identity too many)."""
        x = real.vectors.astype(np.float64)
        centres = np.array([x[real.identity == p].mean(0) for p in range(real.people)])
        mean = x.mean(0)
        genuine, impostor, spread = cosine_stats(real.vectors, real.identity)
        direction = mean / np.linalg.norm(mean) * np.sqrt(max(impostor, 0.0))
        sample = (centres - centres.mean(0)).T @ (centres - centres.mean(0)) / len(centres)
        isotropic = np.trace(sample) / len(mean) * np.eye(len(mean))
        within = ledoit_wolf(x - centres[real.identity])
        within_root = _root(within * (1 - genuine) / np.trace(within))

        def model(shrink: float) -> TemplateModel:
            between = (1 - shrink) * sample + shrink * isotropic
            between *= (genuine - impostor) / np.trace(between)
            return cls(direction, _root(between), within_root, shrink)

        low, high = 0.0, 1.0  # the impostor spread falls as the shrinkage grows
        for _ in range(12):
            mid = (low + high) / 2
            low, high = (mid, high) if model(mid).stats(seed)[2] > spread else (low, mid)
        return model((low + high) / 2)

    def stats(self, seed: int = 0) -> tuple[float, float, float]:
        rng = np.random.default_rng(seed)
        identity = np.repeat(np.arange(500), 4)
        vectors = self.templates(self.centres(rng, 500), identity, rng)
        return cosine_stats(vectors, identity)

    def centres(self, rng: np.random.Generator, count: int) -> npt.NDArray[np.float64]:
        drawn: npt.NDArray[np.float64] = self.mean + rng.standard_normal(
            (count, len(self.mean))
        ) @ (self.between.T)
        return drawn

    def templates(
        self,
        centres: npt.NDArray[np.float64],
        identity: npt.NDArray[np.int64],
        rng: np.random.Generator,
    ) -> Floats:
        """One unit template per entry of ``identity`` (rows of ``centres``)."""
        noise = rng.standard_normal((len(identity), len(self.mean))) @ self.within.T
        x = (centres[identity] + noise).astype(np.float32)
        out: Floats = x / np.linalg.norm(x, axis=1, keepdims=True)
        return out


def _root(covariance: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """R with R @ R.T == covariance (symmetric, positive semi-definite)."""
    values, vectors = np.linalg.eigh(covariance)
    root: npt.NDArray[np.float64] = vectors * np.sqrt(np.clip(values, 0, None))
    return root
