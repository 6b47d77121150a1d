"""The ``homeward`` command: serve, bulk enroll, match, index and key administration."""

from __future__ import annotations

import csv
import logging
import re
import sys
from collections import Counter
from datetime import date
from pathlib import Path

import click
from pydantic import ValidationError
from tqdm import tqdm

from service.api.schemas import CaseCreate
from service.container import Services, build_services, ensure_admin_key, open_database
from service.errors import HomewardError
from service.registry.keys import ROLES, ApiKeys
from service.settings import Settings

logger = logging.getLogger("homeward")

CSV_CASE_COLUMNS = (
    "external_ref",
    "display_name",
    "sex",
    "birth_date",
    "age_at_disappearance",
    "missing_since",
    "region",
)


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


@click.group()
@click.pass_context
def main(ctx: click.Context) -> None:
    """Homeward: face matching for missing children. Results are candidates for review."""
    try:
        settings = Settings()
    except ValidationError as err:
        raise click.UsageError(f"bad HOMEWARD_* setting:\n{err}") from err
    configure_logging(settings.log_level)
    ctx.obj = settings


def services(ctx: click.Context) -> Services:
    try:
        return build_services(ctx.obj)
    except HomewardError as err:
        raise click.ClickException(str(err)) from err


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64))
@click.pass_obj
def serve(settings: Settings, host: str, port: int, workers: int) -> None:
    """Run the HTTP API (docs at /docs)."""
    import uvicorn

    # Migrate and create the first admin key once, before any worker starts.
    db = open_database(settings)
    ensure_admin_key(ApiKeys(db), settings)
    db.engine.dispose()
    uvicorn.run(
        "service.api.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=settings.log_level.lower(),
    )


@main.command()
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_context
def enroll(ctx: click.Context, csv_file: Path) -> None:
    """Bulk-enroll cases and photos from a CSV.

    One row per photo: external_ref, display_name, photo (path, relative to the CSV), and
    optionally sex, birth_date, age_at_disappearance, missing_since, region, taken_on,
    age_at_photo. Rows with the same external_ref belong to one case.
    """
    rows = read_csv(csv_file)
    svc = services(ctx)
    rejected: list[tuple[int, str, str]] = []
    enrolled = 0
    for line, row in tqdm(rows, desc="enrolling", unit="photo"):
        try:
            enroll_row(svc, row, csv_file.parent)
            enrolled += 1
        except (HomewardError, ValidationError, ValueError, OSError) as err:
            rejected.append((line, row.get("photo", ""), _reason(err)))
    svc.close()
    click.echo(f"enrolled {enrolled} photo(s); rejected {len(rejected)}")
    for reason, count in Counter(_kind(r) for _, _, r in rejected).most_common():
        click.echo(f"  {count:5d}  {reason}")
    for line, photo, reason in rejected:
        click.echo(f"  line {line}: {photo}: {reason}", err=True)


def read_csv(path: Path) -> list[tuple[int, dict[str, str]]]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        needed = {"external_ref", "display_name", "photo"}
        if not reader.fieldnames or not needed <= set(reader.fieldnames):
            raise click.UsageError(f"{path} needs the columns {sorted(needed)}")
        return [(n, row) for n, row in enumerate(reader, start=2)]


def enroll_row(svc: Services, row: dict[str, str], base: Path) -> None:
    fields = {k: row[k].strip() for k in CSV_CASE_COLUMNS if (row.get(k) or "").strip()}
    case = svc.registry.find_case_by_ref(fields.get("external_ref", ""))
    if case is None:
        case = svc.registry.create_case(CaseCreate.model_validate(fields).model_dump())
    photo = Path(row["photo"])
    data = (photo if photo.is_absolute() else base / photo).read_bytes()
    svc.homeward.enroll_photo(
        case.id,
        data,
        taken_on=date.fromisoformat(row["taken_on"]) if row.get("taken_on") else None,
        age_at_photo=float(row["age_at_photo"]) if row.get("age_at_photo") else None,
    )


def _reason(err: Exception) -> str:
    if isinstance(err, ValidationError):
        return "invalid case fields: " + "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors()
        )
    if isinstance(err, FileNotFoundError):
        return "photo file not found"
    return str(err)


def _kind(reason: str) -> str:
    """A reason with its numbers blanked, so the summary groups alike rejections."""
    return re.sub(r"\d+(\.\d+)?", "#", reason)


@main.command()
@click.argument("photo", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--top-k", default=10, show_default=True, type=click.IntRange(1, 50))
@click.pass_context
def match(ctx: click.Context, photo: Path, top_k: int) -> None:
    """Match a photo and print the candidates of each face (for human review)."""
    svc = services(ctx)
    try:
        result = svc.homeward.match(photo.read_bytes(), top_k=top_k)
    except HomewardError as err:
        raise click.ClickException(str(err)) from err
    finally:
        svc.db.engine.dispose()
    click.echo(f"model {result.model_id}, index generation {result.index_generation}")
    for n, face in enumerate(result.faces):
        x, y, w, h = (round(v) for v in face.analysed.face.box)
        issues = "; ".join(face.analysed.quality.issues) or "ok"
        click.echo(f"\nface {n} at x={x} y={y} w={w} h={h} (quality: {issues})")
        click.echo(f"  {'rank':>4}  {'score':>6}  {'case':32}  {'external ref':20}  kind")
        for c in face.candidates:
            click.echo(
                f"  {c.rank:>4}  {c.score:6.3f}  {c.case_id:32}  "
                f"{(c.external_ref or '-'):20}  {c.template_kind}"
            )
    click.echo("\nThese are candidates for people to review, not matches.")


@main.group()
def index() -> None:
    """The vector index (derived from the registry)."""


@index.command()
@click.pass_context
def stats(ctx: click.Context) -> None:
    """Model, size and generation of the index."""
    svc = services(ctx)
    keeper = svc.homeward.keeper
    click.echo(
        f"model id        {keeper.model_id}\ndimension       {keeper.dimension}\n"
        f"templates       {len(keeper.index)}\n"
        f"registry count  {svc.registry.template_count(keeper.model_id)}\n"
        f"generation      {keeper.generation}\nopened          {keeper.last_open}\n"
        f"snapshot dir    {keeper.folder}"
    )
    svc.db.engine.dispose()


@index.command()
@click.pass_context
def rebuild(ctx: click.Context) -> None:
    """Rebuild the index from the registry's templates and write a new snapshot."""
    svc = services(ctx)
    svc.homeward.keeper.rebuild()
    svc.close()
    click.echo(
        f"rebuilt: {len(svc.homeward.keeper.index)} templates, "
        f"generation {svc.homeward.keeper.generation}"
    )


@main.group()
def keys() -> None:
    """API keys (stored hashed; a key is shown only when created)."""


def _keys(settings: Settings) -> ApiKeys:
    return ApiKeys(open_database(settings))


@keys.command("create")
@click.option("--name", required=True)
@click.option("--role", type=click.Choice(ROLES), default="registry", show_default=True)
@click.pass_obj
def keys_create(settings: Settings, name: str, role: str) -> None:
    row, key = _keys(settings).create(name, role)
    click.echo(f"created key {row.key_id} ({role}); shown once, store it now:\n{key}")


@keys.command("list")
@click.pass_obj
def keys_list(settings: Settings) -> None:
    click.echo(f"{'id':12}  {'role':8}  {'created':20}  {'revoked':20}  name")
    for row in _keys(settings).list():
        revoked = row.revoked_at.strftime("%Y-%m-%d %H:%M") if row.revoked_at else "-"
        click.echo(
            f"{row.key_id:12}  {row.role:8}  {row.created_at:%Y-%m-%d %H:%M}{'':4}  "
            f"{revoked:20}  {row.name}"
        )


@keys.command("revoke")
@click.argument("key_id")
@click.pass_obj
def keys_revoke(settings: Settings, key_id: str) -> None:
    try:
        row = _keys(settings).revoke(key_id)
    except HomewardError as err:
        raise click.ClickException(str(err)) from err
    click.echo(f"revoked {row.key_id} ({row.name})")


if __name__ == "__main__":
    sys.exit(main())
