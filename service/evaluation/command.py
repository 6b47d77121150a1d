"""``homeward evaluate``: identification and verification figures of a labelled dataset."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import click

from service.errors import HomewardError
from service.evaluation.folds import run_folds, with_landmarks
from service.evaluation.protocols import PROTOCOLS, Sample, read_labels
from service.evaluation.report import figures, table, write_json, write_plot
from service.evaluation.runner import run_plan
from service.settings import Settings

logger = logging.getLogger(__name__)


def _png(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    if value is not None and value.suffix.lower() != ".png":
        raise click.BadParameter("the plot is written as PNG: give a FILE.png")
    return value


def growth_model_use(samples: list[Sample], folds: int | None) -> str:
    """Which growth model ages the gallery (``run_folds`` refits it when it can)."""
    if folds and with_landmarks(samples):
        return f"refitted per fold ({folds} folds) on the other folds' landmarks"
    return "the shipped one (fitted on FG-NET: not leave-subjects-out on FG-NET)"


@click.command()
@click.option(
    "--dataset",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="folder with labels.csv (path,identity,age[,role]; paths relative to it)",
)
@click.option("--protocol", required=True, type=click.Choice(sorted(PROTOCOLS)))
@click.option(
    "--json", "json_file", type=click.Path(dir_okay=False, path_type=Path), help="all figures"
)
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    callback=_png,
    help="PNG: CMC curve and genuine/impostor score histograms",
)
@click.option("--top-k", default=50, show_default=True, type=click.IntRange(1, 50))
@click.option(
    "--aged-templates/--no-aged-templates",
    default=None,
    help="enroll aged templates (default: the service setting, HOMEWARD_AGED_TEMPLATES)",
)
@click.option(
    "--folds",
    type=click.IntRange(2, 50),
    help="fit the template transform leave-subjects-out: per fold of people, on the others",
)
@click.pass_context
def evaluate(
    ctx: click.Context,
    dataset: Path,
    protocol: str,
    json_file: Path | None,
    plot: Path | None,
    top_k: int,
    aged_templates: bool | None,
    folds: int | None,
) -> None:
    """Run a labelled dataset through enrollment and matching on a throwaway data dir and
    report rank-k identification and verification figures.

    Protocols: fgnet-looi (every image against all the others), fgnet-child (each
    identity's earliest photo at age <= 10 against its photos 5+ years later),
    fgnet-child-multi (all of an identity's photos at age <= 10 in one case, against its
    photos 5+ years after the latest), roles (role=gallery rows enrolled, role=probe rows
    matched). Each case-template fusion's rank-k is reported beside the service's.
    """
    settings: Settings = ctx.obj.settings  # the Container; evaluation builds its own
    if aged_templates is not None:
        settings = settings.model_copy(update={"aged_templates": aged_templates})
    started = time.perf_counter()
    samples = read_labels(dataset)
    plan = PROTOCOLS[protocol](samples)
    if not plan.gallery or not plan.probes:
        raise click.UsageError(f"{protocol} finds no gallery or no probes in {dataset}")
    click.echo(
        f"{protocol}: {len(plan.gallery)} case(s), "
        f"{sum(len(c.photos) for c in plan.gallery)} gallery photo(s), "
        f"{len(plan.probes)} probe(s); backend {settings.model_backend}",
        err=True,
    )
    if any(c.expected_age is not None for c in plan.gallery):
        click.echo(
            "each case's expected age today is the median age of its person's probes "
            "(as if known from a birth date); aged templates "
            + ("on" if settings.aged_templates else "off"),
            err=True,
        )
    growth = growth_model_use(samples, folds)
    if folds:
        click.echo(
            f"template transform: fitted per fold ({folds} folds of people), each fold's "
            "probes scored by a transform fitted on the other folds' people",
            err=True,
        )
    if settings.aged_templates:
        click.echo(f"growth model of the aged templates: {growth}", err=True)
    else:
        click.echo(
            f"template transform setting: {settings.template_transform} (a transform "
            "fitted on this dataset makes these figures not leave-subjects-out)",
            err=True,
        )
    try:
        outcome = (
            run_folds(settings, plan, samples, top_k, folds)
            if folds
            else run_plan(settings, plan, top_k)
        )
    except HomewardError as err:
        raise click.ClickException(str(err)) from err
    fig = {"protocol": protocol, "dataset": str(dataset.resolve()), **figures(outcome, top_k)}
    fig["quality_flags"] = {  # flagged on enrolled faces, not refused
        "min_face_px": settings.min_face_px,
        "min_sharpness": settings.min_sharpness,
        "max_yaw_degrees": settings.max_yaw_degrees,
    }
    fig["score_floor"] = settings.score_floor
    fig["aged_templates"] = settings.aged_templates
    fig["template_transform"] = f"{folds} folds" if folds else settings.template_transform
    fig["growth_model"] = growth if settings.aged_templates else None
    fig["seconds"]["total"] = time.perf_counter() - started
    click.echo(
        f"protocol {protocol}, model {outcome.model_id}, score floor {settings.score_floor}, "
        f"aged templates {'on' if settings.aged_templates else 'off'}\n"
        f"dataset  {dataset}\n"
    )
    click.echo(table(fig))
    try:
        if json_file:
            write_json(json_file, fig)
            click.echo(f"\nwrote {json_file}")
        if plot:
            title = f"{protocol}  {outcome.model_id}  ({len(plan.probes)} probes)"
            write_plot(plot, fig["cmc"], outcome.genuine, outcome.impostor, title)
            click.echo(f"wrote {plot}")
    except OSError as err:
        raise click.ClickException(str(err)) from err
    took = fig["seconds"]
    click.echo(
        f"elapsed {took['total']:.1f} s (enrolling {took['enroll']:.1f} s, "
        f"matching {took['match']:.1f} s)"
    )
