"""Engine, migrations and units of work. SQLite runs in WAL mode with synchronous=FULL and
foreign keys on."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DataError, IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from service.errors import Conflict, InvalidInput, StorageFull, StorageUnavailable
from service.registry.audit import AuditRepository
from service.registry.cases import CaseRepository
from service.registry.jobs import JobRepository
from service.registry.keys import KeyRepository
from service.registry.links import LinkRepository
from service.registry.meta import MetaRepository
from service.registry.outbox import OutboxRepository
from service.registry.sightings import SightingRepository
from service.registry.templates import TemplateRepository

MIGRATIONS = Path(__file__).with_name("migrations")
SQLITE_FULL = 13  # "database or disk is full"
POSTGRES_DISK_FULL = "53100"


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
    event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
    # SQLite's lower() folds ASCII only: "élodie" would not find "Élodie" (PostgreSQL does).
    dbapi_connection.create_function(
        "lower", 1, lambda v: v.lower() if isinstance(v, str) else v, deterministic=True
    )


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (the newest by default; an older one downgrades).

    On SQLite, foreign keys are off while the migrations run: Alembic rebuilds a table to
    alter it (copy, drop, rename), and dropping ``cases`` with foreign keys on would
    cascade to every photo and template. The keys are checked before the commit."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as connection:
        if sqlite:  # a pragma that is a no-op inside a transaction: set before it begins
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
            connection.commit()
        try:
            with connection.begin():
                config.attributes["connection"] = connection
                current = MigrationContext.configure(connection).get_current_revision()
                if revision == "head" or _is_ahead(config, revision, current):
                    command.upgrade(config, revision)
                else:
                    command.downgrade(config, revision)
                if sqlite and connection.exec_driver_sql("PRAGMA foreign_key_check").first():
                    raise RuntimeError("a migration left rows pointing at nothing")
        finally:
            if sqlite:
                connection.exec_driver_sql("PRAGMA foreign_keys=ON")


def _is_ahead(config: Config, revision: str, current: str | None) -> bool:
    """Whether ``revision`` comes after ``current`` in the migration history."""
    if current is None:
        return True
    script = ScriptDirectory.from_config(config)
    return current in {r.revision for r in script.iterate_revisions(revision, "base")}


class UnitOfWork:
    """One transaction and the repositories bound to it."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.cases = CaseRepository(session)
        self.templates = TemplateRepository(session)
        self.sightings = SightingRepository(session)
        self.keys = KeyRepository(session)
        self.links = LinkRepository(session)
        self.audit = AuditRepository(session)
        self.outbox = OutboxRepository(session)
        self.meta = MetaRepository(session)
        self.jobs = JobRepository(session)


class Database:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def open(cls, url: str) -> Database:
        """Connect and migrate to the newest schema."""
        engine = make_engine(url)
        migrate(engine)
        return cls(engine)

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def unit(self) -> Iterator[UnitOfWork]:
        """A unit of work: committed when the block ends, rolled back on any error. Database
        failures leave as domain errors, so no caller above the registry sees SQL."""
        try:
            with self._sessions.begin() as session:
                yield UnitOfWork(session)
        except IntegrityError as err:
            raise Conflict("the change conflicts with what is stored") from err
        except DataError as err:
            raise InvalidInput("a value cannot be stored (bad characters or out of range)") from err
        except OperationalError as err:
            if _disk_full(err):
                raise StorageFull("the registry database's disk is full; nothing changed") from err
            raise StorageUnavailable("the registry database is unavailable") from err

    def ping(self) -> None:
        """Raises StorageUnavailable unless the database answers."""
        try:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except OperationalError as err:
            raise StorageUnavailable("the registry database is unavailable") from err

    def copy_to(self, target: Path) -> None:
        """A consistent copy of an SQLite registry at one moment, taken while it serves
        (SQLite's online backup API); PostgreSQL registries are copied with pg_dump."""
        if not self.is_sqlite:
            raise InvalidInput("a PostgreSQL registry is backed up with pg_dump, not here")
        destination = sqlite3.connect(target)
        try:
            with self.engine.connect() as connection:
                source = connection.connection.driver_connection
                assert isinstance(source, sqlite3.Connection)
                source.backup(destination)
        finally:
            destination.close()

    def close(self) -> None:
        self.engine.dispose()


def _disk_full(err: OperationalError) -> bool:
    """Whether the database refused a write for want of space (SQLite's SQLITE_FULL,
    PostgreSQL's disk_full), rather than being unreachable or read-only."""
    code = getattr(err.orig, "sqlite_errorcode", None)
    if isinstance(code, int) and code & 0xFF == SQLITE_FULL:
        return True
    return getattr(err.orig, "sqlstate", None) == POSTGRES_DISK_FULL
