"""Builds the service's parts from the settings, once; shared by the API and the CLI."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import faiss

from service.faces.base import FaceBackend
from service.faces.factory import build_pipeline
from service.matching import Homeward
from service.registry.db import Database, make_engine, migrate
from service.registry.keys import ApiKeys
from service.registry.photostore import PhotoStore
from service.registry.repository import Registry
from service.search.keeper import IndexKeeper
from service.settings import Settings

logger = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    db: Database
    registry: Registry
    keys: ApiKeys
    homeward: Homeward

    def close(self) -> None:
        self.homeward.keeper.save()
        self.db.engine.dispose()


def open_database(settings: Settings) -> Database:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.resolved_database_url)
    migrate(engine)
    return Database(engine)


def build_services(settings: Settings, backend: FaceBackend | None = None) -> Services:
    """Open the registry, load the model, and load or rebuild the index."""
    faiss.omp_set_num_threads(settings.faiss_threads)
    db = open_database(settings)
    registry = Registry(db)
    photos = PhotoStore(settings.photo_dir)
    photos.sweep(registry.photo_names())
    pipeline = build_pipeline(settings, backend)
    keeper = IndexKeeper(
        registry, pipeline.model_id, pipeline.backend.dimension, settings.index_dir
    )
    keeper.open()
    homeward = Homeward(settings, registry, photos, pipeline, keeper)
    return Services(settings, db, registry, ApiKeys(db), homeward)


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
