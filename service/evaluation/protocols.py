"""The dataset's labels and the protocols that turn them into a gallery and probes."""

from __future__ import annotations

import csv
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("path", "identity", "age")
ROLES = ("gallery", "probe")


@dataclass(frozen=True)
class Sample:
    """One labelled photo. ``name`` is its path as written in labels.csv."""

    name: str
    file: Path
    identity: str
    age: float | None
    role: str = ""
    landmarks: Path | None = None  # FG-NET-markup .pts file, if the labels give one


@dataclass(frozen=True)
class GalleryCase:
    """One case to create: ``key`` is its external ref, ``photos`` are enrolled into it."""

    key: str
    identity: str
    photos: tuple[Sample, ...]
    expected_age: float | None = None  # the child's age today, when the protocol knows it


@dataclass(frozen=True)
class Probe:
    sample: Sample
    own_case: str | None = None  # key of the probe's own case, left out of its ranking


@dataclass(frozen=True)
class Plan:
    protocol: str
    gallery: list[GalleryCase]
    probes: list[Probe]


def read_labels(dataset: Path) -> list[Sample]:
    """The rows of DIR/labels.csv, checked: columns, values, files present, no duplicates."""
    labels = dataset / "labels.csv"
    if not labels.is_file():
        raise click.UsageError(f"{labels} not found (the dataset needs a labels.csv)")
    with labels.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise click.UsageError(
                f"{labels} needs the columns {list(REQUIRED_COLUMNS)} (and optionally "
                f"'role' and 'landmarks'); missing: {missing}"
            )
        samples = [_sample(dataset, line, row) for line, row in enumerate(reader, start=2)]
    _check(labels, samples)
    return samples


def _sample(dataset: Path, line: int, row: dict[str, str]) -> Sample:
    name, identity = (row.get("path") or "").strip(), (row.get("identity") or "").strip()
    age_text, role = (row.get("age") or "").strip(), (row.get("role") or "").strip().lower()
    if not name or not identity:
        raise click.UsageError(f"labels.csv line {line}: empty path or identity")
    if role and role not in ROLES:
        raise click.UsageError(f"labels.csv line {line}: role {role!r} is not one of {ROLES}")
    try:
        age = float(age_text) if age_text else None
    except ValueError:
        raise click.UsageError(
            f"labels.csv line {line}: age {age_text!r} is not a number"
        ) from None
    landmarks = (row.get("landmarks") or "").strip()
    return Sample(
        name, dataset / name, identity, age, role, dataset / landmarks if landmarks else None
    )


def _check(labels: Path, samples: list[Sample]) -> None:
    if not samples:
        raise click.UsageError(f"{labels} has no rows")
    names = [s.name for s in samples]
    if len(set(names)) != len(names):
        raise click.UsageError(f"{labels} lists a path more than once")
    absent = [s.name for s in samples if not s.file.is_file()]
    absent += [str(s.landmarks) for s in samples if s.landmarks and not s.landmarks.is_file()]
    if absent:
        shown = ", ".join(absent[:5]) + (", ..." if len(absent) > 5 else "")
        raise click.ClickException(f"{len(absent)} file(s) of {labels} not found: {shown}")


def looi(samples: list[Sample]) -> Plan:
    """Leave one image out: one case per image; every image probes all the others."""
    gallery = [GalleryCase(s.name, s.identity, (s,)) for s in samples]
    return Plan("fgnet-looi", gallery, [Probe(s, own_case=s.name) for s in samples])


def child(samples: list[Sample], gallery_max_age: float = 10, min_gap: float = 5) -> Plan:
    """Each identity's earliest photo at age <= 10 (ties: the first file name) is its case;
    every photo of the same identity taken ``min_gap`` or more years later is a probe.
    A real case's age today is known from its dates and a found child is that age, so the
    case's expected age today is the median age of its identity's probes."""
    gallery: list[GalleryCase] = []
    probes: list[Probe] = []
    for identity, photos in _by_identity(s for s in samples if s.age is not None).items():
        first = min(photos, key=lambda s: (_age(s), s.name))
        if _age(first) > gallery_max_age:
            continue
        later = [s for s in photos if _age(s) >= _age(first) + min_gap]
        expected = float(np.median([_age(s) for s in later])) if later else None
        gallery.append(GalleryCase(identity, identity, (first,), expected))
        probes += [Probe(s) for s in later]
    return Plan("fgnet-child", gallery, probes)


def child_multi(samples: list[Sample], gallery_max_age: float = 10, min_gap: float = 5) -> Plan:
    """Each identity's photos at age <= 10 make its case (oldest last; identities with none
    are left out); every photo of the same identity taken ``min_gap`` or more years after
    the latest of them is a probe. The case's expected age today is, as in ``child``, the
    median age of its probes; identities with no probe still have their case."""
    gallery: list[GalleryCase] = []
    probes: list[Probe] = []
    for identity, photos in _by_identity(s for s in samples if s.age is not None).items():
        young = sorted((s for s in photos if _age(s) <= gallery_max_age), key=_by_age)
        if not young:
            continue
        later = sorted((s for s in photos if _age(s) >= _age(young[-1]) + min_gap), key=_by_age)
        expected = float(np.median([_age(s) for s in later])) if later else None
        gallery.append(GalleryCase(identity, identity, tuple(young), expected))
        probes += [Probe(s) for s in later]
    return Plan("fgnet-child-multi", gallery, probes)


def _by_age(sample: Sample) -> tuple[float, str]:
    return _age(sample), sample.name


def _age(sample: Sample) -> float:
    return sample.age if sample.age is not None else float("nan")


def roles(samples: list[Sample]) -> Plan:
    """role=gallery rows are enrolled, one case per identity; role=probe rows are matched."""
    if not any(s.role for s in samples):
        raise click.UsageError("the roles protocol needs a 'role' column (gallery or probe)")
    cases = _by_identity(s for s in samples if s.role == "gallery")
    gallery = [GalleryCase(identity, identity, tuple(p)) for identity, p in cases.items()]
    return Plan("roles", gallery, [Probe(s) for s in samples if s.role == "probe"])


def _by_identity(samples: Iterable[Sample]) -> dict[str, list[Sample]]:
    groups: dict[str, list[Sample]] = defaultdict(list)
    for sample in samples:
        groups[sample.identity].append(sample)
    return dict(groups)


PROTOCOLS: dict[str, Callable[[list[Sample]], Plan]] = {
    "fgnet-looi": looi,
    "fgnet-child": child,
    "fgnet-child-multi": child_multi,
    "roles": roles,
}
