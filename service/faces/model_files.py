"""Model files on disk: the pinned manifest and checksum verification before loading."""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path
from typing import Any

from service.errors import ModelUnavailable

FETCH_HINT = "run `python scripts/fetch_models.py` (the README's run command does it)"


@cache
def manifest() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((Path(__file__).with_name("manifest.json")).read_text())
    return data


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verified(path: Path, expected_sha256: str) -> Path:
    """``path`` if it exists and its sha256 is the pinned one; otherwise a clear refusal."""
    if not path.is_file():
        raise ModelUnavailable(f"model file {path} is missing; {FETCH_HINT}")
    actual = sha256_file(path)
    if actual != expected_sha256.lower():
        raise ModelUnavailable(
            f"model file {path} failed its checksum (sha256 {actual}, expected "
            f"{expected_sha256}); refusing to load it. Delete it and {FETCH_HINT}"
        )
    return path


def read_checksums(path: Path) -> dict[str, str]:
    """Parse a ``sha256sum``-style file: ``<hex>  <name>`` per line."""
    if not path.is_file():
        raise ModelUnavailable(
            f"{path} is missing: a model pack is loaded only with pinned checksums; "
            f"run `python scripts/fetch_models.py --pin {path.parent}` after checking the pack"
        )
    sums: dict[str, str] = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and len(parts[0]) == 64:
            sums[parts[1].lstrip("*")] = parts[0].lower()
    return sums


def sface_files(model_dir: Path) -> tuple[Path, Path]:
    """Verified (detector, recogniser) paths of the YuNet + SFace pair."""
    entry = manifest()["sface"]
    folder = model_dir / entry["dir"]
    det, rec = entry["files"]["detector"], entry["files"]["recogniser"]
    return verified(folder / det["name"], det["sha256"]), verified(
        folder / rec["name"], rec["sha256"]
    )


def insightface_files(model_dir: Path, pack: str) -> tuple[Path, Path]:
    """Verified (detector, recogniser) paths of an InsightFace pack in ``model_dir/pack``."""
    packs = manifest()["insightface"]["packs"]
    folder = model_dir / pack
    if not folder.is_dir():
        hint = (
            f"; fetch it with `python scripts/fetch_models.py --insightface {pack} "
            "--accept-non-commercial` (its weights are for non-commercial research use only)"
            if pack in packs
            else ""
        )
        raise ModelUnavailable(f"insightface pack {pack!r} not found in {model_dir}{hint}")
    sums = read_checksums(folder / manifest()["insightface"]["checksums_file"])
    detector, recogniser = _pack_members(folder, packs.get(pack))
    for path in (detector, recogniser):
        if path.name not in sums:
            raise ModelUnavailable(f"{path} has no pinned checksum in {folder}/SHA256SUMS")
        verified(path, sums[path.name])
    return detector, recogniser


def _pack_members(folder: Path, entry: dict[str, Any] | None) -> tuple[Path, Path]:
    """Known packs name their files; an unknown pack must hold one det_* and one other .onnx."""
    if entry:
        return folder / entry["detector"], folder / entry["recogniser"]
    onnx = sorted(folder.glob("*.onnx"))
    detectors = [p for p in onnx if p.name.startswith("det_")]
    recognisers = [p for p in onnx if p.name.startswith(("w600k", "glintr", "arcface"))]
    if len(detectors) != 1 or len(recognisers) != 1:
        raise ModelUnavailable(
            f"pack {folder} must hold one det_*.onnx detector and one recogniser "
            f"(w600k*/glintr*/arcface*.onnx); found {[p.name for p in onnx]}"
        )
    return detectors[0], recognisers[0]
