"""The composition root: builds each part from the settings on first use, once per process,
and hands the edges the use cases they call. A command that only lists keys never loads a
face model; the server loads everything before it answers."""

from __future__ import annotations

import logging
from functools import cached_property

import faiss

from service.ageing import AgeProgressor
from service.ageing.templates import AgedTemplates
from service.errors import ModelUnavailable, StorageUnavailable
from service.faces.base import FaceBackend
from service.faces.factory import build_pipeline, resolve_backend_name
from service.faces.pipeline import FacePipeline
from service.matching.access import AccessService
from service.matching.admin import AdminService
from service.matching.backup import BackupService
from service.matching.cases import CaseService
from service.matching.chance import load_curve
from service.matching.duplicates import DuplicateService
from service.matching.egress import EgressPolicy
from service.matching.enrollment import EnrollmentService
from service.matching.index_source import RegistryTemplates
from service.matching.jobs import JobService
from service.matching.maintenance import MaintenanceService
from service.matching.preview import PreviewService
from service.matching.review import ReviewService
from service.matching.search import Matcher, SearchService
from service.matching.sightings import SightingService
from service.matching.uploads import Uploads
from service.matching.webhooks import WebhookSender
from service.metrics import Metrics
from service.registry.db import Database
from service.registry.photostore import PhotoStore
from service.registry.writer_lock import WriterLock
from service.search.backends import index_factory
from service.search.keeper import IndexKeeper
from service.search.transform import resolve_transform
from service.security import Sealer, Secrets, private_dir, private_file, resolve_secrets
from service.settings import Settings

logger = logging.getLogger(__name__)

PHOTO_KEY_FINGERPRINT = "photo_key_fingerprint"


class Container:
    def __init__(self, settings: Settings, backend: FaceBackend | None = None) -> None:
        self.settings = settings
        self._backend = backend  # a loaded backend to share (tests), else loaded from settings
        self._writer_lock = WriterLock(settings.data_dir)

    # -- parts -------------------------------------------------------------------------------

    @cached_property
    def db(self) -> Database:
        private_dir(self.settings.data_dir)
        if self.settings.is_embedded and self.settings.database_url is None:
            for suffix in ("", "-wal", "-shm"):  # SQLite gives its -wal and -shm these modes
                path = self.settings.sqlite_path.with_name(self.settings.sqlite_path.name + suffix)
                if suffix == "" or path.exists():
                    private_file(path)
        return Database.open(self.settings.resolved_database_url)

    @cached_property
    def secrets(self) -> Secrets:
        return resolve_secrets(self.settings)

    @cached_property
    def sealer(self) -> Sealer:
        return Sealer(self.secrets.photo_key)

    @cached_property
    def photos_readable(self) -> bool:
        """Whether the photo key is the one the stored photos were sealed with. A different
        key makes them unreadable; the service still starts and says so."""
        with self.db.unit() as tx:
            known = tx.meta.set_default(PHOTO_KEY_FINGERPRINT, self.sealer.fingerprint)
        if known != self.sealer.fingerprint:
            logger.error(
                "the photo key (HOMEWARD_PHOTO_KEY or the secrets file) is not the key the "
                "stored photos were sealed with: photos are unreadable and new photos are "
                "refused until the right key is restored; matching on templates still works"
            )
        return known == self.sealer.fingerprint

    @cached_property
    def photos(self) -> PhotoStore:
        store = PhotoStore(self.settings.photo_dir, self.sealer, self.photos_readable)
        with self.db.unit() as tx:
            store.sweep(tx.cases.stored_names())
        return store

    @cached_property
    def pipeline(self) -> FacePipeline:
        return build_pipeline(self.settings, self._backend)

    @cached_property
    def index(self) -> IndexKeeper:
        faiss.omp_set_num_threads(self.settings.faiss_threads)
        model_id, dimension = self.pipeline.model_id, self.pipeline.backend.dimension
        try:
            transform = resolve_transform(self.settings.template_transform, model_id, dimension)
        except (OSError, ValueError, KeyError) as err:
            raise ModelUnavailable(f"template transform unusable: {err}") from err
        s = self.settings
        try:
            factory = index_factory(s.index_backend, s.index_type, s.resolved_milvus_uri)
        except ValueError as err:
            raise ModelUnavailable(str(err)) from err
        keeper = IndexKeeper(
            RegistryTemplates(self.db), model_id, dimension, s.index_dir, transform, factory
        )
        keeper.open()
        with self.db.unit() as tx:
            missing = tx.cases.count_photos_without_model(model_id)
        if missing:
            logger.error(
                "%d enrolled photo(s) have no template of the model %s and are not searched: "
                "run `homeward reembed`",
                missing,
                model_id,
            )
        return keeper

    @cached_property
    def aged(self) -> AgedTemplates:
        return AgedTemplates(self.pipeline, AgeProgressor())

    @cached_property
    def metrics(self) -> Metrics:
        """This process's metrics; the service's state is read at each scrape once loaded."""
        metrics = Metrics()
        metrics.watch(lambda: self.maintenance.vitals() if self.index_ready else None)
        return metrics

    @cached_property
    def uploads(self) -> Uploads:
        return Uploads(self.settings)

    @cached_property
    def _matcher(self) -> Matcher:
        curve = load_curve(self.pipeline.model_id, self.index.transform.version)
        return Matcher(self.settings, self.db, self.pipeline, self.index, self.metrics, curve)

    # -- use cases -------------------------------------------------------------------------------

    @cached_property
    def access(self) -> AccessService:
        egress = EgressPolicy(self.settings.webhook_allowed_targets)
        return AccessService(self.db, self.secrets.api_key_hmac, self.sealer, egress)

    @cached_property
    def cases(self) -> CaseService:
        return CaseService(self.db, self.photos, self.index)

    @cached_property
    def enrollment(self) -> EnrollmentService:
        return EnrollmentService(
            self.settings,
            self.db,
            self.uploads,
            self.photos,
            self.pipeline,
            self.index,
            self.aged,
            self.cases,
        )

    @cached_property
    def search(self) -> SearchService:
        return SearchService(self._matcher, self.uploads, self.db)

    @cached_property
    def sightings(self) -> SightingService:
        return SightingService(self.db, self.uploads, self.photos, self._matcher)

    @cached_property
    def preview(self) -> PreviewService:
        return PreviewService(self.uploads, self.pipeline)

    @cached_property
    def review(self) -> ReviewService:
        return ReviewService(self.db, self.photos)

    @cached_property
    def admin(self) -> AdminService:
        return AdminService(self.db)

    @cached_property
    def maintenance(self) -> MaintenanceService:
        return MaintenanceService(
            self.settings,
            self.db,
            self.photos,
            self.cases,
            self.index,
            resolve_backend_name(self.settings),
            self.photos_readable,
        )

    @cached_property
    def jobs(self) -> JobService:
        return JobService(self.db, lambda: self.maintenance, lambda: self.enrollment)

    @cached_property
    def duplicates(self) -> DuplicateService:
        return DuplicateService(self.settings, self.db, self.index)

    @cached_property
    def backups(self) -> BackupService:
        return BackupService(self.settings, self.db)

    @cached_property
    def webhooks(self) -> WebhookSender:
        return WebhookSender(self.settings, self.db, self.access)

    # -- life ------------------------------------------------------------------------------------

    def prepare(self) -> None:
        """What a server needs before it listens, and fails fast on: the data dir to itself
        (embedded), the registry (migrated), the first admin key, the face model."""
        self.claim_data_dir()
        self.ensure_admin_key()
        _ = self.pipeline

    def claim_data_dir(self) -> None:
        """A serving process (API or worker) on the embedded database is the data dir's only
        writer (DataDirInUse otherwise); on PostgreSQL, processes share the registry."""
        if self.settings.is_embedded:
            self._writer_lock.acquire()

    def load_all(self) -> None:
        """Everything a server needs, before it answers: the registry, the model, the
        index, the ageing models' holder and the use cases."""
        for name in ("access", "enrollment", "search", "sightings", "preview", "review", "admin"):
            getattr(self, name)
        _ = self.maintenance, self.webhooks, self.jobs

    @property
    def index_ready(self) -> bool:
        return "index" in self.__dict__ and self.index.ready

    def close(self) -> None:
        """Write the index snapshot (when it was loaded) and release the database. A snapshot
        that cannot be written (disk full) is logged: the next start replays the registry."""
        try:
            if "index" in self.__dict__:
                self.index.save()
        except StorageUnavailable as err:
            logger.error("index snapshot not written at shutdown: %s", err)
        finally:
            if "db" in self.__dict__:
                self.db.close()
            self._writer_lock.release()

    def ensure_admin_key(self) -> None:
        """Create the first admin key (or register ``HOMEWARD_ADMIN_KEY``); a created key is
        logged once, here, and never again."""
        configured = self.settings.admin_key.get_secret_value() if self.settings.admin_key else None
        key = self.access.bootstrap_admin(configured)
        if key:
            logger.warning(
                "\n\n  First start: created the admin API key (shown once, store it now):\n"
                "    %s\n  Send it as the X-API-Key header. Set HOMEWARD_ADMIN_KEY to choose "
                "it yourself.\n",
                key,
            )
