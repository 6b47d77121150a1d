"""Enrollment: a case photo becomes templates (the original and, with an age at photo, the
face aged to the child's expected age today); reembed and ageing refresh keep the stored
photos' templates current as the model or the calendar moves on."""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import date

import cv2

from service.ageing import AgedFace, AgeProgressor, contact_sheet
from service.ageing.templates import AgedTemplates, target_ages
from service.errors import Conflict, HomewardError, InvalidInput, NoFaceFound
from service.faces.base import DetectedFace, Image
from service.faces.factory import build_pipeline
from service.faces.intake import DecodedImage, decode_stored
from service.faces.pipeline import AnalysedFace, FaceChoice, FacePipeline, choose_face
from service.matching.actors import SYSTEM, Actor, Permission
from service.matching.ages import expected_age
from service.matching.cases import CaseService, NewCase
from service.matching.uploads import Uploads
from service.matching.views import CaseView, Enrollment, PhotoView
from service.registry.db import Database
from service.registry.models import Case, Photo, new_id
from service.registry.photostore import PhotoStore
from service.registry.templates import NewTemplate
from service.search.keeper import IndexKeeper
from service.settings import Settings

logger = logging.getLogger(__name__)
MAX_AGES_AT_ONCE = 8
IN_FLIGHT_PER_PROCESS = 2  # photos handed to each embedding process ahead of its results


@dataclass(frozen=True)
class PhotoDetails:
    taken_on: date | None = None
    age_at_photo: float | None = None
    choice: FaceChoice = field(default_factory=FaceChoice)


@dataclass(frozen=True)
class AgedUpload:
    """An uploaded photo and its face aged to each requested age."""

    pixels: Image
    age_at_photo: float
    aged: list[AgedFace]

    def sheet(self) -> Image:
        """The photo and its aged versions side by side, labelled (posters, reviewers)."""
        labels = [f"aged to {a.age:g}" for a in self.aged]
        images = [self.pixels, *(a.image for a in self.aged)]
        return contact_sheet(images, [f"photo (age {self.age_at_photo:g})", *labels])


class EnrollmentService:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        uploads: Uploads,
        photos: PhotoStore,
        pipeline: FacePipeline,
        index: IndexKeeper,
        aged: AgedTemplates,
        cases: CaseService,
    ) -> None:
        self.settings = settings
        self.db = db
        self.uploads = uploads
        self.photos = photos
        self.pipeline = pipeline
        self.index = index
        self.aged = aged
        self.cases = cases

    def enroll(self, actor: Actor, case_id: str, data: bytes, details: PhotoDetails) -> Enrollment:
        """One photo of a case, whatever its face's quality (a family may have no other):
        the quality issues are recorded on the photo and returned as warnings. Refused
        (422) only with no face, or several faces and no choice among them."""
        actor.require(Permission.CASES)
        if details.taken_on is not None and details.taken_on > date.today():
            raise InvalidInput("taken_on is in the future")
        with self.db.unit() as tx:  # 404 before any model work
            case = CaseView.of(tx.cases.get(case_id, actor.scope))
        image = self.uploads.decode(data)
        analysed = self.pipeline.analyse_for_enrollment(image.pixels, details.choice)
        issues = list(analysed.quality.issues)  # recorded and returned, never a refusal
        aged, warnings = self._aged_templates(
            image.pixels, analysed.face, case.sex, details.age_at_photo, case.expected_age_today
        )
        photo = _new_photo(image, details, analysed)
        original = NewTemplate(self.model_id, analysed.template, age=details.age_at_photo)
        self.photos.put(photo.stored_name, image.clean_jpeg)
        try:
            with self.db.unit() as tx:
                stored = tx.cases.get(case_id, actor.scope)
                if tx.cases.has_photo(case_id, image.upload_sha256):
                    raise Conflict("this photo is already enrolled for this case")
                tx.templates.add(tx.cases.add_photo(stored, photo), [original, *aged])
                tx.audit.record(
                    actor,
                    "photo.enroll",
                    target=case_id,
                    input_sha256=image.upload_sha256,
                    results=[photo.id],
                    detail={"aged_templates": len(aged), "quality_issues": issues},
                )
                view = PhotoView.of(photo)
        except BaseException:
            self.photos.delete(photo.stored_name)
            raise
        self.index.catch_up()
        ages = [t.age or 0.0 for t in aged]
        return Enrollment(view, analysed, self.model_id, ages, [*issues, *warnings])

    def enroll_record(
        self, actor: Actor, fields: NewCase, data: bytes, details: PhotoDetails
    ) -> Enrollment:
        """A photo of the case with this external ref in the actor's organisation, the case
        created first when there is none (bulk enrollment)."""
        actor.require(Permission.CASES)
        with self.db.unit() as tx:
            found = tx.cases.by_ref(actor.org_id or "", fields.external_ref or "")
            case_id = found.id if found is not None and fields.external_ref else None
        if case_id is None:
            case_id = self.cases.create(actor, fields).id
        return self.enroll(actor, case_id, data, details)

    @property
    def model_id(self) -> str:
        return self.pipeline.model_id

    def _aged_templates(
        self,
        pixels: Image,
        face: DetectedFace,
        sex: str,
        age_at_photo: float | None,
        expected_now: float | None,
    ) -> tuple[list[NewTemplate], list[str]]:
        aged = self.aged if self.settings.aged_templates else None
        return aged_templates(aged, pixels, face, sex, age_at_photo, expected_now)

    # -- keeping stored photos' templates current --------------------------------------------

    def refresh_aged(self, actor: Actor = SYSTEM) -> int:
        """Re-age every photo whose aged templates no longer sit at the case's expected age
        today (or came from an older growth model); returns how many photos changed."""
        actor.require(Permission.ADMIN)
        changed = 0
        if self.settings.aged_templates:
            with self.db.unit() as tx:
                photos = tx.cases.photos_with_age()
            for photo, case, existing in photos:
                if self._refresh_photo(photo, case, existing):
                    changed += 1
        with self.db.unit() as tx:
            tx.audit.record(actor, "ageing.refresh", detail={"photos": changed})
        self.index.catch_up()
        return changed

    def _refresh_photo(
        self, photo: Photo, case: Case, existing: list[tuple[float | None, str | None]]
    ) -> bool:
        expected = _expected_now(case)
        wanted = target_ages(photo.age_at_photo, expected)
        current = sorted(age or 0.0 for age, gen in existing if gen == self.aged.generator)
        if current == wanted and len(existing) == len(current):
            return False
        try:
            pixels, face = self._stored_face(photo)
        except HomewardError as err:
            logger.warning("photo %s not re-aged: %s", photo.id, err)
            return False
        templates, _ = self._aged_templates(pixels, face, case.sex, photo.age_at_photo, expected)
        with self.db.unit() as tx:
            stored = tx.cases.photo_by_id(photo.id)
            if stored is None:  # deleted meanwhile
                return False
            tx.templates.replace_aged(stored, templates)
        return True

    def reembed(
        self,
        actor: Actor = SYSTEM,
        progress: Callable[[int, int], None] | None = None,
        processes: int | None = None,
    ) -> int:
        """Template every stored photo that has none of the current model (after a model
        change, e.g. turning TTA_FLIP on), from the stored photo and its face box; returns
        how many photos were embedded. This process reads and unseals the photos; a pool of
        ``processes`` (default: the REEMBED_PROCESSES setting) finds the faces and embeds
        them, and this process writes the templates. ``progress(done, total)`` is called
        after each photo and may raise to stop (the photos written so far stay written)."""
        actor.require(Permission.ADMIN)
        with self.db.unit() as tx:
            todo = tx.cases.photos_without_model(self.model_id)
        processes = self.settings.reembed_processes if processes is None else processes
        stored = (self._stored(photo, case) for photo, case in todo)
        if processes > 1 and len(todo) > 1:
            results = _embedded_in_pool(self.settings, stored, min(processes, len(todo)))
        else:
            aged = self.aged if self.settings.aged_templates else None
            results = (
                s if isinstance(s, Embedded) else embed_stored(self.pipeline, aged, s)
                for s in stored
            )
        done = 0
        try:
            for seen, result in enumerate(results, 1):
                done += self._write_embedded(result)
                if progress is not None:
                    progress(seen, len(todo))
        finally:
            with self.db.unit() as tx:
                tx.audit.record(actor, "templates.reembed", detail={"photos": done})
            self.index.catch_up()
        return done

    def _stored(self, photo: Photo, case: Case) -> StoredPhoto | Embedded:
        """What embedding a stored photo needs, read and unsealed here (or why it cannot be)."""
        try:
            data = self.photos.read(photo.stored_name)
        except HomewardError as err:
            return Embedded(photo.id, [], [], str(err))
        x, y, w, h = json.loads(photo.face_box)
        expected = _expected_now(case)
        return StoredPhoto(photo.id, data, (x, y, w, h), photo.age_at_photo, case.sex, expected)

    def _write_embedded(self, result: Embedded) -> int:
        """A re-embedded photo's templates, written (1), or why it was not (0)."""
        if result.error is not None:
            logger.warning("photo %s not re-embedded: %s", result.photo_id, result.error)
            return 0
        if any(t.model_id != self.model_id for t in result.templates):
            raise ModelMismatch(
                f"the embedding processes made templates of another model than {self.model_id}"
            )
        with self.db.unit() as tx:
            stored = tx.cases.photo_by_id(result.photo_id)
            if stored is None:  # deleted meanwhile
                return 0
            stored.quality_issues = json.dumps(result.issues)
            tx.templates.add(stored, list(result.templates))
        return 1

    def _stored_face(self, photo: Photo) -> tuple[Image, DetectedFace]:
        """A stored photo's pixels and the face enrolled from it (found again by its box)."""
        pixels = decode_stored(self.photos.read(photo.stored_name))
        x, y, w, h = json.loads(photo.face_box)
        return pixels, _face_at(self.pipeline, pixels, (x, y, w, h))

    # -- age progression of an upload (posters, reviewers) -----------------------------------

    def age_upload(
        self,
        actor: Actor,
        data: bytes,
        age_at_photo: float,
        ages: list[float],
        sex: str | None = None,
        face_index: int | None = None,
    ) -> AgedUpload:
        """An uploaded photo's face aged to each age; audited."""
        actor.require(Permission.AGEING)
        if not ages or len(ages) > MAX_AGES_AT_ONCE:
            raise InvalidInput(f"give 1 to {MAX_AGES_AT_ONCE} target ages")
        if not all(math.isfinite(a) for a in [age_at_photo, *ages]):
            raise InvalidInput("ages must be finite numbers of years")
        image = self.uploads.decode(data)
        aged = self.aged.age_photo(image.pixels, age_at_photo, ages, sex, face_index)
        with self.db.unit() as tx:
            tx.audit.record(
                actor,
                "ageing",
                input_sha256=image.upload_sha256,
                detail={"from": age_at_photo, "to": ages},
            )
        return AgedUpload(image.pixels, age_at_photo, aged)

    def age_case_photo(
        self, actor: Actor, case_id: str, photo_id: str, ages: list[float]
    ) -> AgedUpload:
        """A stored case photo's enrolled face (found again by its box, so the right one in
        a photo of several people) aged to each age, from the photo's age; audited."""
        actor.require(Permission.CASES)
        actor.require(Permission.AGEING)
        if not ages or len(ages) > MAX_AGES_AT_ONCE:
            raise InvalidInput(f"give 1 to {MAX_AGES_AT_ONCE} target ages")
        with self.db.unit() as tx:
            photo = tx.cases.photo(case_id, photo_id, actor.scope)
            if photo.age_at_photo is None:
                raise InvalidInput("the photo has no age at photo to age it from")
            age_at_photo, sex = photo.age_at_photo, photo.case.sex
            tx.audit.record(
                actor,
                "ageing",
                target=case_id,
                input_sha256=photo.upload_sha256,
                results=[photo_id],
                detail={"from": photo.age_at_photo, "to": ages},
            )
        pixels, face = self._stored_face(photo)
        return AgedUpload(
            pixels, age_at_photo, self.aged.age_face(pixels, face, age_at_photo, ages, sex)
        )


def _new_photo(image: DecodedImage, details: PhotoDetails, analysed: AnalysedFace) -> Photo:
    photo = Photo(
        id=new_id(),
        upload_sha256=image.upload_sha256,
        width=image.width,
        height=image.height,
        taken_on=details.taken_on,
        age_at_photo=details.age_at_photo,
        face_box=json.dumps([round(v, 1) for v in analysed.face.box]),
        quality_issues=json.dumps(list(analysed.quality.issues)),
    )
    photo.stored_name = f"{photo.id}.jpg"
    return photo


def aged_templates(
    aged: AgedTemplates | None,
    pixels: Image,
    face: DetectedFace,
    sex: str,
    age_at_photo: float | None,
    expected_now: float | None,
) -> tuple[list[NewTemplate], list[str]]:
    """A face's aged templates and warnings (none when ``aged`` is None: they are off)."""
    if aged is None or age_at_photo is None:
        return [], []
    ages = target_ages(age_at_photo, expected_now)
    return aged.make(pixels, face, age_at_photo, ages, sex) if ages else ([], [])


def _face_at(
    pipeline: FacePipeline, pixels: Image, box: tuple[float, float, float, float]
) -> DetectedFace:
    faces = pipeline.detect(pixels)
    if not faces:
        raise NoFaceFound("the enrolled face is no longer found in the stored photo")
    return choose_face(faces, FaceChoice(box=box))


def _expected_now(case: Case) -> float | None:
    return expected_age(
        case.birth_date, case.age_at_disappearance, case.missing_since, date.today()
    )


# -- re-embedding in a pool of processes ---------------------------------------------------


class ModelMismatch(HomewardError):
    reason = "model_mismatch"


@dataclass(frozen=True)
class StoredPhoto:
    """A stored photo to embed again, as sent to an embedding process."""

    photo_id: str
    data: bytes  # the unsealed JPEG
    face_box: tuple[float, float, float, float]
    age_at_photo: float | None
    sex: str
    expected_now: float | None


@dataclass(frozen=True)
class Embedded:
    """A stored photo's new templates (the original first, then the aged ones) and its
    quality issues, or why it could not be embedded."""

    photo_id: str
    templates: list[NewTemplate]
    issues: list[str]
    error: str | None = None


def embed_stored(
    pipeline: FacePipeline, aged: AgedTemplates | None, photo: StoredPhoto
) -> Embedded:
    """Decode, find the enrolled face again by its box, align, embed (and age)."""
    try:
        pixels = decode_stored(photo.data)
        face = _face_at(pipeline, pixels, photo.face_box)
        analysed = pipeline.analyse(pixels, face)
    except HomewardError as err:
        return Embedded(photo.photo_id, [], [], str(err))
    original = NewTemplate(pipeline.model_id, analysed.template, age=photo.age_at_photo)
    extra, _ = aged_templates(aged, pixels, face, photo.sex, photo.age_at_photo, photo.expected_now)
    return Embedded(photo.photo_id, [original, *extra], list(analysed.quality.issues))


# One per embedding process, made by its initializer: the process's face models.
_process_models: tuple[FacePipeline, AgedTemplates | None] | None = None


def _start_embedding_process(settings: Settings) -> None:
    global _process_models
    cv2.setNumThreads(1)
    pipeline = build_pipeline(settings)
    aged = AgedTemplates(pipeline, AgeProgressor()) if settings.aged_templates else None
    _process_models = (pipeline, aged)


def _embed_in_process(photo: StoredPhoto) -> Embedded:
    assert _process_models is not None, "the process initializer loads the models"
    return embed_stored(*_process_models, photo)


def _embedded_in_pool(
    settings: Settings, photos: Iterable[StoredPhoto | Embedded], processes: int
) -> Iterator[Embedded]:
    """Each photo embedded by one of ``processes`` processes (spawned, each loading the
    face models once, one inference thread each), in order. Only a few photos are in
    flight at a time, so memory stays bounded; closing the iterator stops the pool."""
    one_thread = settings.model_copy(update={"inference_threads": 1})
    pool = ProcessPoolExecutor(
        processes,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_embedding_process,
        initargs=(one_thread,),
    )
    pending: deque[Future[Embedded]] = deque()
    try:
        for photo in photos:
            if isinstance(photo, Embedded):  # could not be read: nothing to embed
                pending.append(Future())
                pending[-1].set_result(photo)
            else:
                pending.append(pool.submit(_embed_in_process, photo))
            if len(pending) >= IN_FLIGHT_PER_PROCESS * processes:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
