"""The fgnet-child-multi protocol and the case-template fusions measured offline."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from service.evaluation.fusion import (
    FUSIONS,
    CaseLayout,
    Context,
    GalleryTemplates,
    fusion_ranks,
    ranks,
)
from service.evaluation.protocols import PROTOCOLS, Sample, child_multi
from service.evaluation.runner import case_dates
from tests.faces_of_t1 import altered_probe, face_crop
from tests.images import encode
from tests.test_evaluation import evaluate, runner, write_dataset

__all__ = ["runner"]  # the CLI fixture, shared with test_evaluation

NAN = float("nan")


def s(name: str, identity: str, age: float | None) -> Sample:
    return Sample(name, Path(name), identity, age)


def test_child_multi_protocol_holds_every_young_photo() -> None:
    samples = [
        s("a07", "a", 7), s("a02", "a", 2), s("a11", "a", 11), s("a14", "a", 14),
        s("a12", "a", 12), s("a30", "a", 30), s("a-", "a", None),
        s("b11", "b", 11), s("b30", "b", 30),  # no photo at 10 or younger: no case
        s("c10", "c", 10), s("c03", "c", 3), s("c14", "c", 14),  # no probe: a distractor
        s("d05", "d", 5), s("d10", "d", 10),
    ]  # fmt: skip
    plan = PROTOCOLS["fgnet-child-multi"](samples)
    assert plan.protocol == "fgnet-child-multi"
    assert [(c.key, [p.name for p in c.photos], c.expected_age) for c in plan.gallery] == [
        ("a", ["a02", "a07"], 14.0),  # probes 5+ years after the latest (7): 12, 14, 30
        ("c", ["c03", "c10"], None),
        ("d", ["d05", "d10"], None),
    ]
    assert [p.sample.name for p in plan.probes] == ["a12", "a14", "a30"]
    assert all(p.own_case is None for p in plan.probes)


def test_a_multi_photo_case_went_missing_at_its_latest_photo() -> None:
    plan = child_multi([s("a02", "a", 2), s("a08", "a", 8), s("a20", "a", 20)])
    today = date(2026, 1, 1)
    dates = case_dates(plan.gallery[0], today)
    assert dates["age_at_disappearance"] == 8
    assert (today - dates["missing_since"]).days == round(12 * 365.25)  # 20 today


def context(
    scores: list[list[list[float]]],
    photos: list[list[str]],
    ages: list[list[float | None]],
    kinds: list[list[str]] | None = None,
    case_age: list[float] | None = None,
) -> Context:
    """Scores of probes (outer) against cases' templates (one list per case)."""
    case_of = np.array([c for c, row in enumerate(photos) for _ in row], dtype=np.int64)
    flat_kinds = [k for row in kinds for k in row] if kinds else ["original"] * len(case_of)
    layout = CaseLayout.of(
        case_of, len(photos), [p for row in photos for p in row], flat_kinds,
        [a for row in ages for a in row],
    )  # fmt: skip
    grid = np.full((len(scores), *layout.valid.shape), -np.inf, dtype=np.float32)
    for p, row in enumerate(scores):
        for c, case in enumerate(row):
            grid[p, c, : len(case)] = case
    cases = len(photos)
    return Context(
        grid,
        layout,
        np.array(case_age if case_age is not None else [NAN] * cases),
        np.full(len(scores), NAN),
    )


def fused(name: str, ctx: Context) -> np.ndarray:
    return np.asarray(FUSIONS[name][0](ctx))


def test_mean_of_the_top_two_ranks_differently_from_the_best() -> None:
    # case 0: one lucky template; case 1 (the probe's): two good ones
    ctx = context([[[0.9, 0.1], [0.8, 0.75]]], [["p0", "p1"], ["q0", "q1"]], [[2, 8], [3, 9]])
    identity, probe, own = np.array([0, 1]), np.array([1]), np.array([-1])
    assert ranks(fused("best", ctx), identity, probe, own, 50) == [2]
    assert ranks(fused("mean-top2", ctx), identity, probe, own, 50) == [1]
    assert fused("mean-top2", ctx)[0].tolist() == pytest.approx([0.5, 0.775])
    # one template: its own score
    one = context([[[0.6], [0.7, 0.5]]], [["p0"], ["q0", "q1"]], [[2], [3, 9]])
    assert fused("mean-top2", one)[0].tolist() == pytest.approx([0.6, 0.6])


def test_mean_top_two_photos_counts_each_photo_once() -> None:
    # case 0: photo p0 with an aged template scoring as well; photo p1 poor
    ctx = context(
        [[[0.8, 0.78, 0.2], [0.7, 0.6]]],
        [["p0", "p0", "p1"], ["q0", "q1"]],
        [[2, 13, 6], [3, 9]],
        kinds=[["original", "aged", "original"], ["original", "original"]],
    )
    assert fused("mean-top2", ctx)[0].tolist() == pytest.approx([0.79, 0.65])
    assert fused("mean-top2-photos", ctx)[0].tolist() == pytest.approx([0.5, 0.65])
    assert fused("mean-top2-original", ctx)[0].tolist() == pytest.approx([0.5, 0.65])


def test_nearest_age_picks_the_template_nearest_the_expected_age() -> None:
    ctx = context(
        [[[0.9, 0.3, 0.6], [0.5]]],
        [["p0", "p0", "p1"], ["q0"]],
        [[5, 12.5, 14], [4]],
        case_age=[12.0, NAN],  # case 1's expected age unknown: its best template
    )
    assert fused("nearest-age", ctx)[0].tolist() == pytest.approx([0.3, 0.5])
    assert fused("best+nearest-age", ctx)[0].tolist() == pytest.approx([0.6, 0.5])
    weighted = fused("age-weighted", ctx)[0]
    w = np.exp(-np.array([7, 0.5, 2]) / 3)
    assert weighted.tolist() == pytest.approx([float(w @ [0.9, 0.3, 0.6] / w.sum()), 0.5])
    # equally near: the better of them; no template age known: the best
    tie = context([[[0.2, 0.4, 0.9]]], [["p0", "p1", "p2"]], [[10, 14, None]], case_age=[12.0])
    assert fused("nearest-age", tie)[0].tolist() == pytest.approx([0.4])
    unknown = context([[[0.2, 0.4]]], [["p0", "p1"]], [[None, None]], case_age=[12.0])
    assert fused("nearest-age", unknown)[0].tolist() == pytest.approx([0.4])


def test_best_reproduces_the_ranks_of_a_per_case_search() -> None:
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(60, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    probes = rng.normal(size=(25, 16)).astype(np.float32)
    probes /= np.linalg.norm(probes, axis=1, keepdims=True)
    case_ids = [f"case{n % 12}" for n in rng.permutation(60)]
    templates = GalleryTemplates(
        vectors, case_ids, [f"{c}-{n % 3}" for n, c in enumerate(case_ids)],
        ["original"] * 60, [float(n % 15) for n in range(60)],
    )  # fmt: skip
    index = {f"case{n}": n for n in range(12)}
    case_identity = np.arange(12) % 6  # two cases per identity
    probe_identity = rng.integers(0, 6, size=25)
    own = np.where(np.arange(25) % 2 == 0, probe_identity, -1)  # some leave a case out
    floor, top_k = 0.05, 5
    found = fusion_ranks(
        probes, templates, index, case_identity, probe_identity, own,
        np.full(12, NAN), np.full(25, NAN), floor, top_k,
    )  # fmt: skip
    assert set(found) == set(FUSIONS)

    # the service's way: template hits above the floor, best first, first hit per case
    expected: list[int | None] = []
    for p, vector in enumerate(probes):
        scores = vectors @ vector
        listed: list[int] = []
        for t in np.argsort(-scores):
            case = index[case_ids[t]]
            if scores[t] >= floor and case not in listed and case != own[p]:
                listed.append(case)
        identities = [int(case_identity[c]) for c in listed[:top_k]]
        mate = int(probe_identity[p])
        expected.append(identities.index(mate) + 1 if mate in identities else None)
    assert found["best"] == expected
    assert any(r is None for r in expected) and any(r == 1 for r in expected)


def test_the_floor_drops_templates_before_fusing() -> None:
    templates = GalleryTemplates(
        np.eye(3, dtype=np.float32), ["a", "a", "b"], ["a0", "a1", "b0"],
        ["original"] * 3, [3.0, 9.0, 4.0],
    )  # fmt: skip
    probe = np.array([[0.6, -0.2, 0.5]], dtype=np.float32)  # a: 0.6, -0.2; b: 0.5
    args = (np.array([0, 1]), np.array([0]), np.array([-1]), np.full(2, NAN), np.full(1, NAN))
    with_floor = fusion_ranks(probe, templates, {"a": 0, "b": 1}, *args, 0.0, 5)
    without = fusion_ranks(probe, templates, {"a": 0, "b": 1}, *args, -1.0, 5)
    assert with_floor["mean-top2"] == [1]  # a's -0.2 is not a hit: a scores 0.6
    assert without["mean-top2"] == [2]  # (0.6 - 0.2) / 2 < 0.5


def test_child_multi_run_reports_every_fusion(runner: CliRunner, tmp_path: Path) -> None:
    files, rows = {}, []
    for i in range(4):
        files[f"a{i}.jpg"], files[f"b{i}.jpg"] = encode(face_crop(i)), altered_probe(i)
        files[f"c{i}.jpg"] = altered_probe(i)
        rows += [
            {"path": f"a{i}.jpg", "identity": f"id{i}", "age": "3"},
            {"path": f"b{i}.jpg", "identity": f"id{i}", "age": "8"},
            {"path": f"c{i}.jpg", "identity": f"id{i}", "age": "15"},
        ]
    dataset = write_dataset(tmp_path / "ds", rows, files)
    out_json = tmp_path / "multi.json"
    result = evaluate(
        runner, dataset, "fgnet-child-multi", "--no-aged-templates", "--top-k", "5",
        "--json", str(out_json),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "4 case(s), 8 gallery photo(s), 4 probe(s)" in result.output
    assert "case fusion" in result.stdout and "mean-top2-photos" in result.stdout
    fig = json.loads(out_json.read_text())
    assert fig["probes"] == 4 and fig["gallery"]["photos"] == 8
    fusion = fig["case_fusion"]
    assert fusion["best_agrees_with_service"] == {"probes": 4, "of": 4}
    assert set(fusion) == {"best_agrees_with_service", *FUSIONS}
    assert fusion["best"]["rank_1"] == fig["rank_1"] and fusion["best"]["rank_10"] is None
