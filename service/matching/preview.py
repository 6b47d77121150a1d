"""Face preview: the faces of a photo and their quality, so that a person can pick the one
to send (a volunteer's sighting, a registry's case photo) and is warned about poor ones.

Nothing is kept: no template is computed, nothing is stored or searched, so nothing is
audited either."""

from __future__ import annotations

from dataclasses import dataclass

from service.errors import Forbidden
from service.faces.pipeline import FacePipeline
from service.faces.quality import assess
from service.matching.actors import Actor, Permission
from service.matching.uploads import Uploads

# Those who send photos: volunteers (sightings) and registry staff (case photos).
PREVIEW_PERMISSIONS = (Permission.SIGHTINGS, Permission.CASES)


@dataclass(frozen=True)
class PreviewFace:
    box: list[float]  # [x, y, width, height] in the photo's pixels
    size_px: float
    sharpness: float
    issues: list[str]  # what would make it a poor face to match or enroll


@dataclass(frozen=True)
class FacePreview:
    width: int
    height: int
    faces: list[PreviewFace]  # largest first, as the pipeline numbers them (face_index)


class PreviewService:
    def __init__(self, uploads: Uploads, pipeline: FacePipeline) -> None:
        self.uploads = uploads
        self.pipeline = pipeline

    def preview(self, actor: Actor, data: bytes) -> FacePreview:
        """Every face found (none is not an error here: the person is told and tries
        another photo), with the same quality checks as matching and enrollment."""
        if not any(actor.may(p) for p in PREVIEW_PERMISSIONS):
            roles = ", ".join(sorted(actor.roles)) or "none"
            raise Forbidden(f"this key's roles ({roles}) do not allow previewing faces")
        image = self.uploads.decode(data)
        faces = []
        for face in self.pipeline.detect(image.pixels):
            chip = self.pipeline.backend.align(image.pixels, face)
            quality = assess(face, chip, self.pipeline.thresholds)
            faces.append(
                PreviewFace(
                    box=[round(v, 1) for v in face.box],
                    size_px=quality.size_px,
                    sharpness=quality.sharpness,
                    issues=list(quality.issues),
                )
            )
        return FacePreview(image.width, image.height, faces)
