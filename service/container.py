"""Builds the service's parts from the settings, once; shared by the API and the CLI."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import faiss

from service.ageing import AgeProgressor
from service.ageing.templates import AgedTemplates
from service.audit import AuditLog
from service.errors import ModelUnavailable
from service.faces.base import FaceBackend
from service.faces.factory import build_pipeline
from service.matching import Homeward
from service.registry.db import Database, make_engine, migrate
from service.registry.keys import ApiKeys
from service.registry.models import Meta
from service.registry.photostore import PhotoStore
from service.registry.repository import Registry
from service.search.keeper import IndexKeeper
from service.search.transform import resolve_transform
from service.security import Sealer, resolve_secrets
from service.settings import Settings
from service.sightings import Sightings
from service.webhooks import Webhooks

logger = logging.getLogger(__name__)

PHOTO_KEY_FINGERPRINT = "photo_key_fingerprint"


@dataclass
class Services:
    settings: Settings
    db: Database
    registry: Registry
    keys: ApiKeys
    audit: AuditLog
    homeward: Homeward
    sightings: Sightings
    webhooks: Webhooks

    @property
    def photos_readable(self) -> bool:
        return self.homeward.photos.key_matches

    def close(self) -> None:
        self.homeward.keeper.save()
        self.db.engine.dispose()


@dataclass
class Core:
    """What needs no face model: the database, secrets, keys and the audit log."""

    settings: Settings
    db: Database
    sealer: Sealer
    keys: ApiKeys
    audit: AuditLog
    key_matches: bool


def open_core(settings: Settings) -> Core:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.resolved_database_url)
    migrate(engine)
    db = Database(engine)
    secrets = resolve_secrets(settings)
    sealer = Sealer(secrets.photo_key)
    keys = ApiKeys(db, secrets.api_key_hmac, sealer)
    return Core(settings, db, sealer, keys, AuditLog(db), _check_photo_key(db, sealer))


def _check_photo_key(db: Database, sealer: Sealer) -> bool:
    """Remember the photo key's fingerprint; a different key later means stored photos
    (and webhook secrets) cannot be read. The service still starts and says so."""
    with db.session() as s:
        known = s.get(Meta, PHOTO_KEY_FINGERPRINT)
        if known is None:
            s.add(Meta(key=PHOTO_KEY_FINGERPRINT, value=sealer.fingerprint))
            return True
        if known.value == sealer.fingerprint:
            return True
    logger.error(
        "the photo key (HOMEWARD_PHOTO_KEY or the secrets file) is not the key the "
        "stored photos were sealed with: photos are unreadable and new photos are "
        "refused until the right key is restored; matching on templates still works"
    )
    return False


def build_services(settings: Settings, backend: FaceBackend | None = None) -> Services:
    """Open the registry, load the model, and load or rebuild the index."""
    faiss.omp_set_num_threads(settings.faiss_threads)
    core = open_core(settings)
    registry = Registry(core.db)
    photos = PhotoStore(settings.photo_dir, core.sealer, key_matches=core.key_matches)
    photos.sweep(registry.photo_names())
    pipeline = build_pipeline(settings, backend)
    dimension = pipeline.backend.dimension
    try:
        transform = resolve_transform(settings.template_transform, pipeline.model_id, dimension)
    except (OSError, ValueError, KeyError) as err:
        raise ModelUnavailable(f"template transform unusable: {err}") from err
    keeper = IndexKeeper(registry, pipeline.model_id, dimension, settings.index_dir, transform)
    keeper.open()
    if missing := len(registry.photos_without_model(pipeline.model_id)):
        logger.error(
            "%d enrolled photo(s) have no template of the model %s and are not searched: "
            "run `homeward reembed`",
            missing,
            pipeline.model_id,
        )
    aged = AgedTemplates(pipeline, AgeProgressor())
    homeward = Homeward(settings, registry, photos, pipeline, keeper, core.audit, aged)
    webhooks = Webhooks(core.db, core.keys, settings)
    return Services(
        settings,
        core.db,
        registry,
        core.keys,
        core.audit,
        homeward,
        Sightings(homeward, webhooks),
        webhooks,
    )


def ensure_admin_key(keys: ApiKeys, settings: Settings) -> None:
    """Create the first admin key (or register ``HOMEWARD_ADMIN_KEY``); a created key is
    logged once, here, and never again."""
    configured = settings.admin_key.get_secret_value() if settings.admin_key else None
    key = keys.bootstrap_admin(configured)
    if key:
        logger.warning(
            "\n\n  First start: created the admin API key (shown once, store it now):\n"
            "    %s\n  Send it as the X-API-Key header. Set HOMEWARD_ADMIN_KEY to choose "
            "it yourself.\n",
            key,
        )
