"""Chooses and loads the face backend named in the settings, once, at start-up."""

from __future__ import annotations

import logging

from service.errors import ModelUnavailable
from service.faces.base import FaceBackend
from service.faces.model_files import sface_files
from service.faces.pipeline import FacePipeline
from service.faces.quality import QualityThresholds
from service.settings import Settings

logger = logging.getLogger(__name__)


def resolve_backend_name(settings: Settings) -> str:
    """``auto`` means insightface when its pack is on disk, else sface."""
    if settings.model_backend != "auto":
        return settings.model_backend
    pack = settings.model_dir / settings.insightface_pack
    return "insightface" if pack.is_dir() else "sface"


def load_backend(settings: Settings) -> FaceBackend:
    name = resolve_backend_name(settings)
    backend: FaceBackend
    match name:
        case "sface":
            from service.faces.sface import SFaceBackend

            detector, recogniser = sface_files(settings.model_dir)
            backend = SFaceBackend(
                detector,
                recogniser,
                threads=settings.inference_threads,
                score_threshold=settings.min_detection_score,
                max_side=settings.detect_max_side,
            )
        case "insightface":
            from service.faces.insightface import InsightFaceBackend

            backend = InsightFaceBackend.from_pack(
                settings.model_dir,
                settings.insightface_pack,
                threads=settings.inference_threads,
                det_threshold=settings.min_detection_score,
            )
        case "fusion":
            from service.faces.fusion import FusionBackend

            backend = FusionBackend.from_models(
                settings.model_dir,
                settings.insightface_pack,
                threads=settings.inference_threads,
                score_threshold=settings.min_detection_score,
            )
        case "dlib":
            from service.faces.dlib_backend import DlibBackend

            backend = DlibBackend()
        case _:
            raise ModelUnavailable(f"unknown model backend {name!r}")
    logger.info(
        "face backend %s (requested %s), model id %s",
        name,
        settings.model_backend,
        backend.model_id,
    )
    return backend


def build_pipeline(settings: Settings, backend: FaceBackend | None = None) -> FacePipeline:
    thresholds = QualityThresholds(
        settings.min_face_px, settings.min_sharpness, settings.max_yaw_degrees
    )
    backend = backend or load_backend(settings)
    fallback = None
    if settings.fallback_detector and backend.name != "dlib":
        from service.faces.dlib_backend import HogFaceDetector

        fallback = HogFaceDetector(max_pixels=settings.fallback_max_pixels)
    return FacePipeline(
        backend,
        thresholds,
        settings.max_faces_per_image,
        flip=settings.tta_flip,
        fallback=fallback,
        detect_max_side=settings.detect_max_side,
    )
