"""Backups: the registry, the sealed photo store and the index snapshot in one checksummed
archive, taken while the service serves; restored only into an empty data dir.

The archive holds no key: photos stay sealed under ``PHOTO_KEY`` and API keys are HMACs
under ``SECRET_KEY``. Keep the secrets file apart from the archives (a thief needs both)
and safe (without it the photos cannot be read and every key must be issued again)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from service.errors import Conflict, InvalidInput
from service.matching.actors import Actor, Permission
from service.registry.db import Database
from service.security import PRIVATE_FILE, private_dir
from service.settings import Settings

FORMAT = 1
MANIFEST = "manifest.json"
REGISTRY = "registry.db"
FOLDERS = ("photos", "faiss")
Members = dict[str, dict[str, object]]  # archive name -> sha256 and size


@dataclass(frozen=True)
class BackupReport:
    archive: Path
    photos: int
    photos_gone: int  # deleted while the backup ran: their records are in it, files not
    registry: str  # "included", or how to back it up
    size_bytes: int


@dataclass(frozen=True)
class RestoreReport:
    data_dir: Path
    files: int
    created_at: str


class BackupService:
    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db

    def backup(self, actor: Actor, destination: Path) -> BackupReport:
        """Write the archive to ``destination`` (a file, or a folder to put it in)."""
        actor.require(Permission.ADMIN)
        if destination.is_dir():
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
            destination = destination / f"homeward-backup-{stamp}.tar"
        with self.db.unit() as tx:  # recorded first, so the archive holds its own record
            tx.audit.record(actor, "backup", detail={"archive": destination.name})
        with tempfile.TemporaryDirectory(dir=destination.parent, prefix=".backup-") as work:
            registry, names = self._registry_copy(Path(work))
            return self._write(destination, registry, names)

    def _registry_copy(self, work: Path) -> tuple[Path | None, set[str] | None]:
        """The registry at one moment and the photo files it references (None: PostgreSQL,
        whose dump is taken apart, so every photo file is kept)."""
        if not self.db.is_sqlite:
            return None, None
        copy = work / REGISTRY
        self.db.copy_to(copy)
        snapshot = Database.open(f"sqlite:///{copy}")
        try:
            with snapshot.unit() as tx:
                return copy, tx.cases.stored_names()
        finally:
            snapshot.close()

    def _write(
        self, destination: Path, registry: Path | None, names: set[str] | None
    ) -> BackupReport:
        members: Members = {}
        photos, gone = self._photo_files(names)
        tmp = destination.with_name(f".{destination.name}.tmp")
        with tarfile.open(tmp, "w") as archive:
            if registry is not None:
                _add(archive, members, REGISTRY, registry)
            for name, path in photos:
                _add(archive, members, f"photos/{name[:2]}/{name}", path)
            for path in sorted(self.settings.index_dir.glob("[!.]*")):
                _add(archive, members, f"faiss/{path.name}", path)
            manifest = {
                "format": FORMAT,
                "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "registry": "included" if registry is not None else "postgresql: use pg_dump",
                "photos_gone": sorted(gone),
                "members": members,
            }
            data = json.dumps(manifest, indent=1).encode()
            info = tarfile.TarInfo(MANIFEST)
            info.size, info.mode = len(data), PRIVATE_FILE
            archive.addfile(info, io.BytesIO(data))
        os.chmod(tmp, PRIVATE_FILE)
        with tmp.open("rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, destination)
        how = "included" if registry else "not included: back up PostgreSQL with pg_dump"
        return BackupReport(destination, len(photos), len(gone), how, destination.stat().st_size)

    def _photo_files(self, names: set[str] | None) -> tuple[list[tuple[str, Path]], set[str]]:
        root = self.settings.photo_dir
        present = {p.name: p for p in root.glob("*/[!.]*") if p.is_file()}
        wanted = set(present) if names is None else names
        return sorted((n, present[n]) for n in wanted if n in present), wanted - set(present)


def _add(archive: tarfile.TarFile, members: Members, name: str, path: Path) -> None:
    data = path.read_bytes()  # read once: what is checksummed is what is archived
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), PRIVATE_FILE
    archive.addfile(info, io.BytesIO(data))
    members[name] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


def restore(settings: Settings, archive: Path) -> RestoreReport:
    """Unpack a checked archive into the (empty or absent) data dir. A damaged archive, an
    unknown format or a non-empty target is refused before anything is written."""
    target = settings.data_dir
    if target.exists() and any(target.iterdir()):
        raise Conflict(f"{target} is not empty: restore only into an empty data dir")
    manifest, contents = _checked(archive)
    if manifest["registry"] == "included" and not settings.is_embedded:
        raise InvalidInput("the archive holds an SQLite registry; restore it with SQLite")
    private_dir(target)
    for name, data in contents.items():
        path = target / (settings.sqlite_path.name if name == REGISTRY else name)
        private_dir(path.parent)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    return RestoreReport(target, len(contents), str(manifest["created_at"]))


def _checked(archive: Path) -> tuple[dict[str, object], dict[str, bytes]]:
    """The manifest and every member's bytes, each checked against the manifest."""
    try:
        with tarfile.open(archive, "r") as tar:
            contents = {m.name: _read(tar, m) for m in tar.getmembers()}
    except (tarfile.TarError, OSError, EOFError) as err:
        raise InvalidInput(f"{archive} is not a readable backup archive: {err}") from err
    try:
        manifest = json.loads(contents.pop(MANIFEST))
        members: Members = manifest["members"]
        if manifest["format"] != FORMAT:
            raise InvalidInput(f"backup format {manifest['format']} is not {FORMAT}")
    except (KeyError, ValueError, TypeError) as err:
        raise InvalidInput("the archive has no readable manifest: it is damaged") from err
    if set(members) != set(contents):
        raise InvalidInput("the archive's files differ from its manifest: it is damaged")
    for name, data in contents.items():
        if not _safe(name) or hashlib.sha256(data).hexdigest() != members[name]["sha256"]:
            raise InvalidInput(f"{name} in the archive is damaged (checksum mismatch)")
    return manifest, contents


def _read(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    handle = tar.extractfile(member) if member.isfile() else None
    if handle is None:
        raise tarfile.TarError(f"{member.name} is not a regular file")
    return handle.read()


def _safe(name: str) -> bool:
    """Only the names a backup writes: the registry, or a file inside photos/ or faiss/."""
    path = PurePosixPath(name)
    if name == REGISTRY:
        return True
    return (
        not path.is_absolute()
        and ".." not in path.parts
        and len(path.parts) >= 2
        and path.parts[0] in FOLDERS
    )
