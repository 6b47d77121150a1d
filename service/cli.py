"""The ``homeward`` command. Each command is one call into the application layer (the same
use case, permissions and audit record as the API's route for it), acting as the CLI's
administrator; a command builds only the parts its use case needs."""

from __future__ import annotations

import csv
import logging
import re
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Any

import click
import cv2
from pydantic import ValidationError
from tqdm import tqdm

from service.container import Container
from service.errors import HomewardError
from service.faces.pipeline import FaceChoice
from service.matching.access import ADMIN_ORG
from service.matching.actors import ROLES, Actor
from service.matching.backup import restore as restore_archive
from service.matching.cases import CASE_FIELDS_OF_CSV, NewCase
from service.matching.enrollment import PhotoDetails
from service.matching.jobs import JobView
from service.matching.search import MatchQuery
from service.observability import configure_logging
from service.settings import Settings

logger = logging.getLogger("homeward")
CLI_ACTOR = Actor("cli", None, frozenset({"admin"}))
JOB_POLL_SECONDS = 0.5
JOB_UNITS = {"embedding": "photo", "indexing": "template"}


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="show the service's log (INFO and up)")
@click.pass_context
def main(ctx: click.Context, verbose: bool) -> None:
    """Homeward: face matching for missing children. Results are candidates for review."""
    try:
        settings = Settings()
    except ValidationError as err:
        raise click.UsageError(f"bad HOMEWARD_* setting:\n{err}") from err
    quiet = ctx.invoked_subcommand not in ("serve", "worker") and not verbose
    configure_logging("WARNING" if quiet else settings.log_level, settings.log_format)
    ctx.obj = Container(settings)
    ctx.call_on_close(ctx.obj.close)


@contextmanager
def user_errors() -> Iterator[None]:
    """Domain errors end the command with their message, not a traceback."""
    try:
        yield
    except HomewardError as err:
        raise click.ClickException(str(err)) from err


def admin_of(c: Container, org: str = ADMIN_ORG, *, create: bool = False) -> Actor:
    """The CLI acts as an administrator, in ``org`` (id or name) for what belongs to one."""
    with user_errors():
        if create and not _org_exists(c, org):
            c.access.create_org(CLI_ACTOR, org)
        found = c.access.find_org(CLI_ACTOR, org) if org != ADMIN_ORG else _admin_org(c)
    return Actor("cli", found.id, CLI_ACTOR.roles)


def _org_exists(c: Container, org: str) -> bool:
    try:
        c.access.find_org(CLI_ACTOR, org)
    except HomewardError:
        return False
    return True


def _admin_org(c: Container) -> Any:
    return c.access.administrators(CLI_ACTOR)


# -- serving -------------------------------------------------------------------------------


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64))
@click.option(
    "--with-worker/--no-worker",
    default=None,
    help="run the background loops in the API process [default: yes on SQLite]",
)
@click.pass_obj
def serve(c: Container, host: str, port: int, workers: int, with_worker: bool | None) -> None:
    """Run the HTTP API (docs at /docs)."""
    import os

    import uvicorn

    if workers > 1 and c.settings.is_embedded:
        raise click.UsageError(
            "--workers > 1 needs PostgreSQL (HOMEWARD_DATABASE_URL): the embedded SQLite "
            "database and FAISS index have one writer"
        )
    with user_errors():  # migrate and make the first admin key once, before any process
        c.ensure_admin_key()
    c.close()
    if with_worker is not None:  # the API processes build their settings from the environment
        os.environ["HOMEWARD_WITH_WORKER"] = "true" if with_worker else "false"
    uvicorn.run(
        "service.api.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=c.settings.log_level.lower(),
        log_config=None,  # keep this process's logging (request ids, JSON)
        access_log=False,  # the API logs each request itself, without query strings
    )


@main.command()
@click.pass_obj
def worker(c: Container) -> None:
    """Run the background loops: webhook deliveries, index snapshots, retention and
    ageing refresh (for deployments whose API runs with --no-worker)."""
    from service.worker import Worker

    with user_errors():
        c.claim_data_dir()
        c.load_all()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    click.echo("homeward worker running; Ctrl-C to stop")
    try:
        Worker(c).run_forever()
    except KeyboardInterrupt:
        pass


# -- cases and matching --------------------------------------------------------------------


@main.command()
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--org",
    default=ADMIN_ORG,
    show_default=True,
    help="id or name of the organisation that owns the new cases",
)
@click.option("--create-org", is_flag=True, help="create the organisation --org names")
@click.pass_obj
def enroll(c: Container, csv_file: Path, org: str, create_org: bool) -> None:
    """Bulk-enroll cases and photos from a CSV.

    One row per photo: external_ref, display_name, photo (path, relative to the CSV), and
    optionally sex, birth_date, age_at_disappearance, missing_since, region, taken_on,
    age_at_photo, face_index (0 = largest; needed when the photo shows several faces).
    Rows with the same external_ref belong to one case. A poor face (small, blurred,
    turned) is enrolled with its issues recorded.
    """
    rows = read_csv(csv_file)
    actor = admin_of(c, org, create=create_org)
    rejected: list[tuple[int, str, str]] = []
    flagged = 0
    for line, row in tqdm(rows, desc="enrolling", unit="photo"):
        try:
            fields, data, details = parse_row(row, csv_file.parent)
            enrolled = c.enrollment.enroll_record(actor, fields, data, details)
            flagged += bool(enrolled.photo.quality_issues)
        except (HomewardError, ValidationError, ValueError, OSError) as err:
            rejected.append((line, row.get("photo", ""), _reason(err)))
    click.echo(
        f"enrolled {len(rows) - len(rejected)} photo(s) ({flagged} with quality issues); "
        f"rejected {len(rejected)}"
    )
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


def parse_row(row: dict[str, str], base: Path) -> tuple[NewCase, bytes, PhotoDetails]:
    """A CSV row as the use case takes it: the case's fields, the photo, its details."""
    fields = {k: row[k].strip() for k in CASE_FIELDS_OF_CSV if (row.get(k) or "").strip()}
    photo = Path(row["photo"])
    data = (photo if photo.is_absolute() else base / photo).read_bytes()
    details = PhotoDetails(
        taken_on=date.fromisoformat(row["taken_on"]) if row.get("taken_on") else None,
        age_at_photo=float(row["age_at_photo"]) if row.get("age_at_photo") else None,
        choice=FaceChoice(int(row["face_index"]) if row.get("face_index") else None),
    )
    return NewCase.model_validate(fields), data, details


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
@click.pass_obj
def match(c: Container, photo: Path, top_k: int) -> None:
    """Match a photo and print the candidates of each face (for human review)."""
    with user_errors():
        result = c.search.match(admin_of(c), photo.read_bytes(), MatchQuery(top_k=top_k))
    click.echo(f"model {result.model_id}, index generation {result.index_generation}")
    for n, face in enumerate(result.faces):
        x, y, w, h = (round(v) for v in face.face.face.box)
        issues = "; ".join(face.face.quality.issues) or "ok"
        click.echo(f"\nface {n} at x={x} y={y} w={w} h={h} (quality: {issues})")
        click.echo(f"  {'rank':>4}  {'score':>6}  {'case':32}  {'external ref':20}  kind")
        for cand in face.candidates:
            click.echo(
                f"  {cand.rank:>4}  {cand.score:6.3f}  {cand.case_id:32}  "
                f"{(cand.external_ref or '-'):20}  {cand.template_kind}"
            )
    click.echo("\nThese are candidates for people to review, not matches.")


@main.command("age")
@click.argument("photo", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--from", "age_from", type=click.FloatRange(0, 20), required=True, help="age at the photo"
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
    c: Container,
    photo: Path,
    age_from: float,
    ages: tuple[float, ...],
    output: Path,
    sheet: bool,
    sex: str | None,
    face_index: int | None,
) -> None:
    """Age the child's face in PHOTO to the given ages (age progression)."""
    with user_errors():
        aged = c.enrollment.age_upload(
            admin_of(c), photo.read_bytes(), age_from, list(ages), sex, face_index
        )
    if sheet:
        outputs = [(output, aged.sheet())]
    elif len(aged.aged) == 1:
        outputs = [(output, aged.aged[0].image)]
    else:
        outputs = [
            (output.with_name(f"{output.stem}-age{a.age:g}{output.suffix}"), a.image)
            for a in aged.aged
        ]
    for path, image in outputs:
        if not cv2.imwrite(str(path), image):
            raise click.ClickException(f"cannot write {path} (use a .jpg or .png name)")
        click.echo(f"wrote {path}")


@main.group()
def ageing() -> None:
    """Aged templates (age progression) of enrolled case photos."""


@ageing.command("refresh")
@click.pass_obj
def ageing_refresh(c: Container) -> None:
    """Re-age case photos whose aged templates no longer match the child's age today
    (the worker does it daily)."""
    with user_errors():
        changed = c.enrollment.refresh_aged(admin_of(c))
    click.echo(f"refreshed the aged templates of {changed} photo(s)")


@main.command()
@click.pass_obj
def reembed(c: Container) -> None:
    """Template the stored photos that have no template of the current model (after a
    model change such as HOMEWARD_TTA_FLIP); until then they are not searched."""
    actor = admin_of(c)
    with user_errors(), tqdm(desc="embedding", unit="photo") as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        done = c.enrollment.reembed(actor, progress)
    click.echo(f"embedded {done} photo(s) with {c.pipeline.model_id}")


# -- duplicate cases -----------------------------------------------------------------------


@main.group(invoke_without_command=True)
@click.option("--min-score", type=click.FloatRange(-1, 1), help="only raises the threshold")
@click.option("--same-org", is_flag=True, help="also pairs within one organisation")
@click.option("--offset", default=0, show_default=True, type=click.IntRange(0))
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 100))
@click.pass_context
def duplicates(
    ctx: click.Context, min_score: float | None, same_org: bool, offset: int, limit: int
) -> None:
    """Pairs of cases, across organisations, whose photos score at or above the calibrated
    threshold (possible duplicates, strongest first); `duplicates link` links a pair."""
    if ctx.invoked_subcommand is not None:
        return
    c: Container = ctx.obj
    with user_errors():
        found = c.duplicates.find(admin_of(c), min_score, same_org, offset, limit)
    click.echo(f"model {found.model_id}, threshold {found.threshold:.4f}: {found.total} pair(s)")
    click.echo(f"  {'score':>6}  {'case a':42}  {'case b':42}  linked")
    for pair in found.pairs:
        sides = [
            f"{side.external_ref or side.case_id} ({side.org_name})"
            for side in (pair.case_a, pair.case_b)
        ]
        linked = f"yes (link {pair.link_id})" if pair.linked else "no"
        click.echo(f"  {pair.score:6.3f}  {sides[0]:42}  {sides[1]:42}  {linked}")
        click.echo(f"  {'':6}  {pair.case_a.case_id:42}  {pair.case_b.case_id:42}")
    if found.total > offset + len(found.pairs):
        click.echo(f"{found.total - offset - len(found.pairs)} more: --offset {offset + limit}")
    click.echo("These are possible duplicates for people to check, not matches.")


@duplicates.command("link")
@click.argument("case_a")
@click.argument("case_b")
@click.option("--note", help="why they are one child (e.g. who checked)")
@click.pass_obj
def duplicates_link(c: Container, case_a: str, case_b: str, note: str | None) -> None:
    """Record that the cases CASE_A and CASE_B (ids) are the same child."""
    with user_errors():
        link = c.duplicates.link(admin_of(c), case_a, case_b, note)
    click.echo(
        f"linked {link.case_a.external_ref or link.case_a.case_id} ({link.case_a.org_name}) "
        f"and {link.case_b.external_ref or link.case_b.case_id} ({link.case_b.org_name}): "
        f"link {link.id}"
    )


@duplicates.command("unlink")
@click.argument("link_id", type=int)
@click.pass_obj
def duplicates_unlink(c: Container, link_id: int) -> None:
    """Remove a link (its id is shown by `duplicates` and `duplicates links`)."""
    with user_errors():
        c.duplicates.unlink(admin_of(c), link_id)
    click.echo(f"removed link {link_id}")


@duplicates.command("links")
@click.option("--offset", default=0, show_default=True, type=click.IntRange(0))
@click.pass_obj
def duplicates_links(c: Container, offset: int) -> None:
    """The links people recorded, oldest first (100 at a time)."""
    with user_errors():
        page = c.duplicates.links(admin_of(c), offset)
    click.echo(f"{page.total} link(s)")
    for link in page.items:
        sides = [
            f"{side.external_ref or side.case_id} ({side.org_name})"
            for side in (link.case_a, link.case_b)
        ]
        click.echo(
            f"  {link.id:>5}  {sides[0]}  =  {sides[1]}  by {link.linked_by} "
            f"{_when(link.created_at)}" + (f": {link.note}" if link.note else "")
        )


# -- the index -----------------------------------------------------------------------------


@main.group()
def index() -> None:
    """The vector index (derived from the registry)."""


@index.command()
@click.pass_obj
def stats(c: Container) -> None:
    """Model, size and generation of the index."""
    with user_errors():
        s = c.maintenance.index_stats(admin_of(c))
    click.echo(
        f"model id        {s.model_id}\ndimension       {s.dimension}\n"
        f"index           {s.backend} {s.index_type}\n"
        f"templates       {s.templates}\nregistry count  {s.registry_templates}\n"
        f"generation      {s.generation}\nopened          {s.opened}\n"
        f"transform       {s.transform}\nsnapshot dir    {s.snapshot_dir}"
    )


@index.command()
@click.option(
    "--reembed",
    is_flag=True,
    help="first embed the stored photos again with the current model (after a model "
    "change), in REEMBED_PROCESSES processes",
)
@click.option(
    "--follow",
    "follow_id",
    metavar="JOB_ID",
    help="only follow a job started elsewhere (the API, the admin page) until it ends",
)
@click.pass_obj
def rebuild(c: Container, reembed: bool, follow_id: str | None) -> None:
    """Rebuild the index from the registry, check it and swap it in, with a progress bar.

    A job, run here (one index job at a time: refused while another runs); Ctrl-C cancels
    it and keeps the index as it was. Exits 1 if the job failed or was cancelled."""
    actor = admin_of(c)
    with user_errors():
        if follow_id is not None:
            job = c.jobs.get(actor, follow_id)
            click.echo(f"following job {job.id} ({job.kind}, {job.status})")
            try:
                job = follow_job(c, actor, job.id)
            except KeyboardInterrupt:
                raise click.ClickException("stopped following; the job goes on") from None
        else:
            job = c.jobs.start(actor, "index.reembed" if reembed else "index.rebuild", True)
            click.echo(f"job {job.id} ({job.kind})")
            job = _run_here(c, actor, job.id)
    if job.status != "done":
        raise click.ClickException(f"job {job.id} {job.status}: {job.error or 'no reason given'}")
    d = job.detail
    embedded = f"embedded {d['photos_embedded']} photo(s); " if "photos_embedded" in d else ""
    click.echo(
        f"{embedded}rebuilt: {d.get('templates')} templates, generation {d.get('generation')}; "
        f"checked: {d.get('found')} of {d.get('exact_neighbours')} exact top-10 templates of "
        f"{d.get('sample_queries')} sample searches found (top {d.get('depth')})"
    )


def _run_here(c: Container, actor: Actor, job_id: str) -> JobView:
    """Run a job claimed by this process in a thread, following it with the bar; Ctrl-C
    asks it to stop, and waits until it has."""
    runner = threading.Thread(target=c.jobs.run, args=(actor, job_id), daemon=True)
    runner.start()
    try:
        return follow_job(c, actor, job_id, runner)
    except KeyboardInterrupt:
        click.echo("cancelling; the live index is kept", err=True)
        c.jobs.cancel(actor, job_id)
        runner.join()
        return c.jobs.get(actor, job_id)


def follow_job(
    c: Container, actor: Actor, job_id: str, runner: threading.Thread | None = None
) -> JobView:
    """Poll the job in the registry and draw its progress until it ends."""
    bar: tqdm[Any] | None = None
    stage: str | None = None
    while True:
        job = c.jobs.get(actor, job_id)
        if job.stage != stage and job.total:
            if bar is not None:
                bar.close()
            stage = job.stage
            bar = tqdm(
                total=job.total,
                desc=stage,
                unit=JOB_UNITS.get(stage or "", "item"),
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} {postfix}",
            )
        if bar is not None and job.total:
            bar.total = max(job.total, job.done)
            bar.n = job.done
            bar.set_postfix_str(_pace(job), refresh=True)
        if job.finished or (runner is not None and not runner.is_alive()):
            if bar is not None:
                bar.close()
            return c.jobs.get(actor, job_id)
        time.sleep(JOB_POLL_SECONDS)


def _pace(job: JobView) -> str:
    if job.rate is None:
        return ""
    eta = "" if job.eta_seconds is None else f", {job.eta_seconds:.0f} s left"
    return f"{job.rate:,.0f}/s{eta}"


# -- keys, organisations, audit, retention -------------------------------------------------


@main.group()
def keys() -> None:
    """API keys (stored as HMACs; a key is shown only when created)."""


@keys.command("create")
@click.option("--name", required=True)
@click.option("--org", required=True, help="the organisation's id or exact name")
@click.option("--create-org", is_flag=True, help="create the organisation --org names first")
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
    c: Container,
    name: str,
    org: str,
    create_org: bool,
    roles: tuple[str, ...],
    expires: datetime | None,
) -> None:
    actor = admin_of(c, org, create=create_org)
    with user_errors():
        row, key = c.access.create_key(actor, name, actor.org_id or "", roles, expires)
    click.echo(
        f"created key {row.key_id} ({','.join(row.roles)} in {org}); "
        f"shown once, store it now:\n{key}"
    )


@keys.command("list")
@click.pass_obj
def keys_list(c: Container) -> None:
    actor = admin_of(c)
    with user_errors():
        orgs = {o.id: o.name for o in c.access.orgs(actor)}
        rows = c.access.keys(actor)
    click.echo(
        f"{'id':12}  {'roles':24}  {'created':16}  {'expires':16}  {'revoked':16}  org / name"
    )
    for row in rows:
        click.echo(
            f"{row.key_id:12}  {','.join(row.roles):24}  {_when(row.created_at):16}  "
            f"{_when(row.expires_at):16}  {_when(row.revoked_at):16}  "
            f"{orgs.get(row.org_id, '?')} / {row.name}"
        )


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M") if moment else "-"


@keys.command("revoke")
@click.argument("key_id")
@click.pass_obj
def keys_revoke(c: Container, key_id: str) -> None:
    with user_errors():
        row = c.access.revoke_key(admin_of(c), key_id)
    click.echo(f"revoked {row.key_id} ({row.name})")


@main.command()
@click.argument("destination", type=click.Path(file_okay=True, path_type=Path))
@click.pass_obj
def backup(c: Container, destination: Path) -> None:
    """Write one checksummed archive of the registry (SQLite), the sealed photos and the
    index snapshot while the service runs (DESTINATION: a file, or a folder to put it in).
    The secrets file is not in it: keep it apart."""
    with user_errors():
        report = c.backups.backup(admin_of(c), destination)
    click.echo(
        f"wrote {report.archive} ({report.size_bytes / 1e6:.1f} MB): registry "
        f"{report.registry}, {report.photos} photo(s)"
        + (f", {report.photos_gone} deleted while it ran" if report.photos_gone else "")
    )


@main.command()
@click.argument("archive", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_obj
def restore(c: Container, archive: Path) -> None:
    """Unpack a backup into the data dir, which must be empty; a damaged archive is
    refused before anything is written. Then start the service with the same secrets."""
    with user_errors():
        report = restore_archive(c.settings, archive)
        c.admin.note_restore(CLI_ACTOR, archive.name, report.created_at)
    click.echo(
        f"restored {report.files} file(s) from the backup of {report.created_at} "
        f"into {report.data_dir}"
    )


@main.group()
def orgs() -> None:
    """Organisations (they own cases and receive confirmed candidates)."""


@orgs.command("create")
@click.argument("name")
@click.pass_obj
def orgs_create(c: Container, name: str) -> None:
    with user_errors():
        org = c.access.create_org(admin_of(c), name)
    click.echo(f"created organisation {org.id} ({org.name})")


@orgs.command("list")
@click.pass_obj
def orgs_list(c: Container) -> None:
    with user_errors():
        for org in c.access.orgs(admin_of(c)):
            click.echo(f"{org.id}  {org.name}  webhook: {org.webhook_url or '-'}")


@main.group()
def audit() -> None:
    """The hash-chained audit log."""


@audit.command("verify")
@click.pass_obj
def audit_verify(c: Container) -> None:
    """Check every record's hash and the chain; exit 1 if anything was edited or removed."""
    with user_errors():
        result = c.admin.audit_verify(admin_of(c))
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
@click.pass_obj
def retention_run(c: Container) -> None:
    """Purge closed cases and unconfirmed sightings past their periods; print the counts."""
    with user_errors():
        report = c.maintenance.run_retention(admin_of(c))
    click.echo(
        f"purged {report.cases_purged} closed case(s) and {report.sightings_purged} sighting(s)"
    )


from service.evaluation.command import evaluate  # noqa: E402

main.add_command(evaluate)

if __name__ == "__main__":
    sys.exit(main())
