"""The ``homeward`` command: serve, bulk enroll, match, index and key administration."""

from __future__ import annotations

import csv
import logging
import re
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path

import click
import cv2
from pydantic import ValidationError
from tqdm import tqdm

from service.api.schemas import CaseCreate
from service.audit import Actor
from service.container import Core, Services, build_services, ensure_admin_key, open_core
from service.errors import HomewardError
from service.registry.keys import ADMIN_ORG, ROLES
from service.registry.models import Organisation
from service.registry.repository import CASE_FIELDS
from service.settings import Settings

logger = logging.getLogger("homeward")


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


@contextmanager
def user_errors() -> Iterator[None]:
    """Domain errors end the command with their message, not a traceback."""
    try:
        yield
    except HomewardError as err:
        raise click.ClickException(str(err)) from err


def services(ctx: click.Context) -> Services:
    with user_errors():
        return build_services(ctx.obj)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64))
@click.pass_obj
def serve(settings: Settings, host: str, port: int, workers: int) -> None:
    """Run the HTTP API (docs at /docs)."""
    import uvicorn

    # Migrate and create the first admin key once, before any worker starts.
    core = open_core(settings)
    ensure_admin_key(core.keys, settings)
    core.db.engine.dispose()
    uvicorn.run(
        "service.api.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=settings.log_level.lower(),
    )


def cli_actor(svc: Services | Core, org_name: str = ADMIN_ORG) -> Actor:
    """The command line acts as an administrator of ``org_name`` (created on first use)."""
    org = find_or_create_org(svc, org_name)
    return Actor("cli", org.id, frozenset({"admin"}))


def find_or_create_org(svc: Services | Core, name: str) -> Organisation:
    return next((o for o in svc.keys.list_orgs() if o.name == name), None) or svc.keys.create_org(
        name
    )


@main.command()
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--org",
    "org_name",
    default=ADMIN_ORG,
    show_default=True,
    help="the organisation that owns the new cases (created if missing)",
)
@click.pass_context
def enroll(ctx: click.Context, csv_file: Path, org_name: str) -> None:
    """Bulk-enroll cases and photos from a CSV.

    One row per photo: external_ref, display_name, photo (path, relative to the CSV), and
    optionally sex, birth_date, age_at_disappearance, missing_since, region, taken_on,
    age_at_photo. Rows with the same external_ref belong to one case.
    """
    rows = read_csv(csv_file)
    svc = services(ctx)
    actor = cli_actor(svc, org_name)
    rejected: list[tuple[int, str, str]] = []
    enrolled = 0
    for line, row in tqdm(rows, desc="enrolling", unit="photo"):
        try:
            enroll_row(svc, actor, row, csv_file.parent)
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


def enroll_row(svc: Services, actor: Actor, row: dict[str, str], base: Path) -> None:
    fields = {k: row[k].strip() for k in CASE_FIELDS if (row.get(k) or "").strip()}
    case = svc.registry.find_case_by_ref(fields.get("external_ref", ""), actor.org_id)
    if case is None:
        case = svc.homeward.create_case(actor, CaseCreate.model_validate(fields).model_dump())
    photo = Path(row["photo"])
    data = (photo if photo.is_absolute() else base / photo).read_bytes()
    svc.homeward.enroll_photo(
        actor,
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
        with user_errors():
            result = svc.homeward.match(cli_actor(svc), photo.read_bytes(), top_k=top_k)
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


@main.command("age")
@click.argument("photo", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--from",
    "age_from",
    type=click.FloatRange(0, 20),
    required=True,
    help="age at the photo, years",
)
@click.option(
    "--to",
    "ages",
    type=click.FloatRange(0, 25),
    multiple=True,
    required=True,
    help="target age; repeat for several",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="output image (with several ages and no --sheet: OUT stem + -age<N>)",
)
@click.option("--sheet", is_flag=True, help="one contact sheet with the ages labelled")
@click.option("--sex", type=click.Choice(["female", "male"]))
@click.option("--face-index", type=click.IntRange(0, 100), help="0 = largest face")
@click.pass_obj
def age(
    settings: Settings,
    photo: Path,
    age_from: float,
    ages: tuple[float, ...],
    output: Path,
    sheet: bool,
    sex: str | None,
    face_index: int | None,
) -> None:
    """Age the child's face in PHOTO to the given ages (age progression)."""
    from service.ageing import AgeProgressor, contact_sheet
    from service.ageing.templates import AgedTemplates
    from service.faces.factory import build_pipeline
    from service.faces.intake import decode_upload

    with user_errors():
        pixels = decode_upload(
            photo.read_bytes(), max_bytes=settings.max_upload_bytes, max_pixels=settings.max_pixels
        ).pixels
        ager = AgedTemplates(build_pipeline(settings), AgeProgressor())
        aged = ager.age_photo(pixels, age_from, list(ages), sex, face_index)
    if sheet:
        labels = [f"photo (age {age_from:g})", *(f"aged to {a.age:g}" for a in aged)]
        outputs = [(output, contact_sheet([pixels, *(a.image for a in aged)], labels))]
    elif len(aged) == 1:
        outputs = [(output, aged[0].image)]
    else:
        outputs = [
            (output.with_name(f"{output.stem}-age{a.age:g}{output.suffix}"), a.image) for a in aged
        ]
    for path, image in outputs:
        if not cv2.imwrite(str(path), image):
            raise click.ClickException(f"cannot write {path} (use a .jpg or .png name)")
        click.echo(f"wrote {path}")


@main.group()
def ageing() -> None:
    """Aged templates (age progression) of enrolled case photos."""


@ageing.command("refresh")
@click.pass_context
def ageing_refresh(ctx: click.Context) -> None:
    """Re-age case photos whose aged templates no longer match the child's age today
    (run daily from cron)."""
    svc = services(ctx)
    changed = svc.homeward.refresh_aged(cli_actor(svc))
    svc.close()
    click.echo(f"refreshed the aged templates of {changed} photo(s)")


@main.command()
@click.pass_context
def reembed(ctx: click.Context) -> None:
    """Template the stored photos that have no template of the current model (after a
    model change such as HOMEWARD_TTA_FLIP); until then they are not searched."""
    svc = services(ctx)
    with user_errors():
        done = svc.homeward.reembed(cli_actor(svc))
    svc.close()
    click.echo(f"embedded {done} photo(s) with {svc.homeward.model_id}")


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
    """API keys (stored as HMACs; a key is shown only when created)."""


def _core(settings: Settings) -> Core:
    with user_errors():
        return open_core(settings)


def _audited(core: Core, action: str, target: str) -> None:
    core.audit.record(cli_actor(core), action, target=target)


@keys.command("create")
@click.option("--name", required=True)
@click.option("--org", "org_name", required=True, help="organisation name (created if missing)")
@click.option(
    "--role",
    "roles",
    type=click.Choice(ROLES),
    multiple=True,
    required=True,
    help="repeat for several roles",
)
@click.option("--expires", type=click.DateTime(), help="expiry (UTC)")
@click.pass_obj
def keys_create(
    settings: Settings, name: str, org_name: str, roles: tuple[str, ...], expires: datetime | None
) -> None:
    core = _core(settings)
    org = find_or_create_org(core, org_name)
    with user_errors():
        row, key = core.keys.create(
            name, org.id, roles, expires.replace(tzinfo=UTC) if expires else None
        )
    _audited(core, "key.create", row.key_id)
    click.echo(
        f"created key {row.key_id} ({','.join(sorted(roles))} in {org.name}); "
        f"shown once, store it now:\n{key}"
    )


@keys.command("list")
@click.pass_obj
def keys_list(settings: Settings) -> None:
    core = _core(settings)
    orgs = {o.id: o.name for o in core.keys.list_orgs()}
    click.echo(
        f"{'id':12}  {'roles':24}  {'created':16}  {'expires':16}  {'revoked':16}  org / name"
    )
    for row in core.keys.list():
        click.echo(
            f"{row.key_id:12}  {row.roles:24}  {_when(row.created_at):16}  "
            f"{_when(row.expires_at):16}  {_when(row.revoked_at):16}  "
            f"{orgs.get(row.org_id, '?')} / {row.name}"
        )


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M") if moment else "-"


@keys.command("revoke")
@click.argument("key_id")
@click.pass_obj
def keys_revoke(settings: Settings, key_id: str) -> None:
    core = _core(settings)
    with user_errors():
        row = core.keys.revoke(key_id)
    _audited(core, "key.revoke", key_id)
    click.echo(f"revoked {row.key_id} ({row.name})")


@main.group()
def orgs() -> None:
    """Organisations (they own cases and receive confirmed candidates)."""


@orgs.command("create")
@click.argument("name")
@click.pass_obj
def orgs_create(settings: Settings, name: str) -> None:
    core = _core(settings)
    with user_errors():
        org = core.keys.create_org(name)
    _audited(core, "org.create", org.id)
    click.echo(f"created organisation {org.id} ({org.name})")


@orgs.command("list")
@click.pass_obj
def orgs_list(settings: Settings) -> None:
    for org in _core(settings).keys.list_orgs():
        click.echo(f"{org.id}  {org.name}  webhook: {org.webhook_url or '-'}")


@main.group()
def audit() -> None:
    """The hash-chained audit log."""


@audit.command("verify")
@click.pass_obj
def audit_verify(settings: Settings) -> None:
    """Check every record's hash and the chain; exit 1 if anything was edited or removed."""
    result = _core(settings).audit.verify()
    for problem in result.problems:
        click.echo(f"  {problem}", err=True)
    if not result.ok:
        raise click.ClickException(
            f"audit log damaged: {len(result.problems)} problem(s) in {result.records} records"
        )
    click.echo(f"audit log intact: {result.records} records")


@main.group()
def retention() -> None:
    """Purging what the retention periods say must go."""


@retention.command("run")
@click.pass_context
def retention_run(ctx: click.Context) -> None:
    """Purge closed cases and unconfirmed sightings past their periods; print the counts."""
    from service.retention import run_retention

    svc = services(ctx)
    report = run_retention(svc.homeward)
    svc.close()
    click.echo(
        f"purged {report.cases_purged} closed case(s) and {report.sightings_purged} sighting(s)"
    )


from service.evaluation.command import evaluate  # noqa: E402

main.add_command(evaluate)

if __name__ == "__main__":
    sys.exit(main())
