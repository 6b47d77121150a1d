"""``homeward evaluate`` on tiny datasets made of the six faces of insightface's t1.jpg."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from datetime import date
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner, Result

from service.ageing.fgnet import read_fgnet_points
from service.ageing.fitting import fit_growth_model
from service.ageing.growth import load_growth_model
from service.cli import main
from service.evaluation.folds import fold_growth_models, fold_of
from service.evaluation.protocols import Sample, child
from service.evaluation.runner import case_dates
from service.matching.ages import expected_age
from tests.conftest import REPO
from tests.faces_of_t1 import altered_probe, blank_photo, face_crop
from tests.images import encode
from tests.test_growth_model import synthetic_faces


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("HOMEWARD_DATA_DIR", str(tmp_path / "configured-data"))
    monkeypatch.setenv("HOMEWARD_MODEL_DIR", str(REPO / "models"))
    monkeypatch.setenv("HOMEWARD_LOG_LEVEL", "WARNING")
    return CliRunner()


def write_dataset(folder: Path, rows: list[dict[str, str]], files: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    with (folder / "labels.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return folder


def roles_dataset(folder: Path) -> Path:
    """Gallery: the six crops. Probes: their altered copies and a photo with no face."""
    files, rows = {}, []
    for i in range(6):
        files[f"g{i}.jpg"], files[f"p{i}.jpg"] = encode(face_crop(i)), altered_probe(i)
        rows.append({"path": f"g{i}.jpg", "identity": f"id{i}", "age": "7", "role": "gallery"})
        rows.append({"path": f"p{i}.jpg", "identity": f"id{i}", "age": "", "role": "probe"})
    files["blank.jpg"] = blank_photo()
    rows.append({"path": "blank.jpg", "identity": "id0", "age": "12", "role": "probe"})
    return write_dataset(folder, rows, files)


def evaluate(runner: CliRunner, dataset: Path, protocol: str, *extra: str) -> Result:
    args = ["evaluate", "--dataset", str(dataset), "--protocol", protocol, *extra]
    return runner.invoke(main, args)


def test_roles_protocol_writes_figures_json_and_plot(runner: CliRunner, tmp_path: Path) -> None:
    out_json, out_png = tmp_path / "out" / "roles.json", tmp_path / "out" / "roles.png"
    result = evaluate(
        runner, roles_dataset(tmp_path / "ds"), "roles", "--json", str(out_json),
        "--plot", str(out_png),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "rank-1" in result.stdout and "elapsed" in result.stdout

    fig = json.loads(out_json.read_text())
    assert fig["protocol"] == "roles" and fig["model_id"].startswith("sface")
    assert fig["probes"] == 7 and fig["no_face"] == 1
    assert fig["no_face_share"] == pytest.approx(1 / 7)
    assert fig["rank_1"] == pytest.approx(6 / 7) and fig["rank_20"] == pytest.approx(6 / 7)
    assert len(fig["cmc"]) == 50 and fig["cmc"][-1] == pytest.approx(6 / 7)
    assert fig["gallery"] == {
        "cases": 6, "photos": 6, "enrollment_failures": 0, "failure_reasons": {},
        "failed_photos": [], "enrolled_with_quality_issues": 0, "quality_issues": {},
        "several_faces_largest_enrolled": 0,
    }  # fmt: skip
    ver = fig["verification"]
    assert (ver["genuine_pairs"], ver["impostor_pairs"]) == (6, 30)  # probes with a face x 6
    assert ver["genuine_median"] > ver["impostor_median"]
    assert ver["far_0.01"]["tar"] == 1.0

    image = cv2.imread(str(out_png))
    assert image is not None and image.shape == (500, 1200, 3)
    assert not (tmp_path / "configured-data").exists()  # a throwaway data dir was used


def test_looi_leaves_the_probe_out(runner: CliRunner, tmp_path: Path) -> None:
    files, rows = {}, []
    for i in range(6):
        files[f"a{i}.jpg"], files[f"b{i}.jpg"] = encode(face_crop(i)), altered_probe(i)
        rows += [{"path": f"{n}{i}.jpg", "identity": f"id{i}", "age": ""} for n in "ab"]
    dataset = write_dataset(tmp_path / "ds", rows, files)
    out_json = tmp_path / "looi.json"
    result = evaluate(runner, dataset, "fgnet-looi", "--top-k", "5", "--json", str(out_json))
    assert result.exit_code == 0, result.output
    fig = json.loads(out_json.read_text())
    assert fig["probes"] == 12 and fig["gallery"]["cases"] == 12
    assert fig["rank_1"] == 1.0 and fig["rank_10"] is None  # beyond --top-k 5
    assert len(fig["cmc"]) == 5
    ver = fig["verification"]
    assert (ver["genuine_pairs"], ver["impostor_pairs"]) == (12, 12 * 10)  # own image left out


def test_child_protocol_picks_gallery_and_probes() -> None:
    def s(name: str, identity: str, age: float | None) -> Sample:
        return Sample(name, Path(name), identity, age)

    samples = [
        s("a03", "a", 3), s("a02", "a", 2), s("a07", "a", 7), s("a15", "a", 15),
        s("b11", "b", 11), s("b30", "b", 30),  # no photo at 10 or younger: not in the gallery
        s("c10", "c", 10), s("c14", "c", 14), s("c15", "c", 15), s("c-", "c", None),
    ]  # fmt: skip
    plan = child(samples)
    assert [(c.key, [p.name for p in c.photos]) for c in plan.gallery] == [
        ("a", ["a02"]),
        ("c", ["c10"]),
    ]
    assert [p.sample.name for p in plan.probes] == ["a07", "a15", "c15"]


def test_bad_labels_fail_cleanly(runner: CliRunner, tmp_path: Path) -> None:
    no_age = write_dataset(tmp_path / "a", [{"path": "x.jpg", "identity": "x"}], {"x.jpg": b""})
    result = evaluate(runner, no_age, "fgnet-looi")
    assert result.exit_code == 2 and "needs the columns" in result.output

    rows = [{"path": "gone.jpg", "identity": "x", "age": "3", "role": "gallery"}]
    missing = write_dataset(tmp_path / "b", rows, {})
    result = evaluate(runner, missing, "roles")
    assert result.exit_code == 1 and "not found: gone.jpg" in result.output

    rows = [{"path": "x.jpg", "identity": "x", "age": "3"}]
    no_role = write_dataset(tmp_path / "c", rows, {"x.jpg": b""})
    result = evaluate(runner, no_role, "roles")
    assert result.exit_code == 2 and "'role' column" in result.output

    rows = [{"path": "x.jpg", "identity": "x", "age": "three"}]
    bad_age = write_dataset(tmp_path / "d", rows, {"x.jpg": b""})
    result = evaluate(runner, bad_age, "fgnet-looi")
    assert result.exit_code == 2 and "not a number" in result.output
    assert "Traceback" not in result.output


def test_child_cases_expect_their_probes_median_age() -> None:
    samples = [
        Sample(n, Path(n), i, a)
        for n, i, a in (("a02", "a", 2), ("a07", "a", 7), ("a15", "a", 15), ("c10", "c", 10))
    ]
    plan = child(samples)
    assert [(c.key, c.expected_age) for c in plan.gallery] == [("a", 11.0), ("c", None)]
    today = date(2026, 1, 1)
    dates = case_dates(plan.gallery[0], today)
    assert dates["age_at_disappearance"] == 2
    assert expected_age(None, 2, dates["missing_since"], today) == pytest.approx(11, abs=0.01)
    assert case_dates(plan.gallery[1], today) == {}


def test_folds_fit_the_transform_without_the_probes_people(
    runner: CliRunner, tmp_path: Path
) -> None:
    files, rows = {}, []
    for i in range(6):
        files[f"a{i}.jpg"], files[f"b{i}.jpg"] = encode(face_crop(i)), altered_probe(i)
        rows += [
            {"path": f"a{i}.jpg", "identity": f"id{i}", "age": "4"},
            {"path": f"b{i}.jpg", "identity": f"id{i}", "age": "9"},
        ]
    dataset = write_dataset(tmp_path / "ds", rows, files)
    out_json = tmp_path / "folds.json"
    result = evaluate(
        runner, dataset, "fgnet-looi", "--folds", "2", "--no-aged-templates", "--top-k", "5",
        "--json", str(out_json),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    fig = json.loads(out_json.read_text())
    assert fig["probes"] == 12 and fig["template_transform"] == "2 folds"
    assert fig["growth_model"] is None  # no aged templates
    assert fig["rank_1"] >= 10 / 12 and "2 folds" in fig["model_id"]


def write_pts(path: Path, points: np.ndarray) -> None:
    body = "\n".join(f"{x:.3f} {y:.3f}" for x, y in points)
    path.write_text(f"version: 1\nn_points: {len(points)}\n{{\n{body}\n}}\n")


def test_folds_refit_the_growth_model_without_the_probes_people(tmp_path: Path) -> None:
    faces, ages, people = synthetic_faces(load_growth_model(), people=6, photos=6)
    samples = []
    for n, (face, age, person) in enumerate(zip(faces, ages, people, strict=True)):
        write_pts(tmp_path / f"{n}.pts", face)
        samples.append(
            Sample(f"{n}.jpg", tmp_path / f"{n}.jpg", person, age, "", tmp_path / f"{n}.pts")
        )
    folds = fold_of(samples, 2)
    models = fold_growth_models(samples, folds, 2)
    assert sorted(models) == [0, 1] and models[1].version == "growth_v2 fold 2/2"
    kept = [n for n, s in enumerate(samples) if folds[s.identity] != 1]
    alone = fit_growth_model(
        np.stack([read_fgnet_points(samples[n].landmarks) for n in kept]),  # type: ignore[arg-type]
        ages[kept], [people[n] for n in kept], source="", landmarks="",
    )  # fmt: skip
    np.testing.assert_allclose(models[1].shapes, alone.shapes)
    assert fold_growth_models([replace(s, landmarks=None) for s in samples], folds, 2) == {}
    (tmp_path / "0.pts").write_text("version: 1\n{\n1 2\n}\n")
    with pytest.raises(ValueError, match="0.pts holds 1 points"):
        fold_growth_models(samples, folds, 2)


def test_labels_must_point_at_landmark_files_that_exist(runner: CliRunner, tmp_path: Path) -> None:
    rows = [{"path": "x.jpg", "identity": "x", "age": "3", "landmarks": "x.pts"}]
    dataset = write_dataset(tmp_path / "a", rows, {"x.jpg": encode(face_crop(0))})
    result = evaluate(runner, dataset, "fgnet-looi")
    assert result.exit_code == 1 and "x.pts" in result.output


def test_a_bad_landmark_file_fails_the_fold_refit_cleanly(
    runner: CliRunner, tmp_path: Path
) -> None:
    rows = [{"path": f"{n}.jpg", "identity": n, "age": "3", "landmarks": "bad.pts"} for n in "xy"]
    files = {"x.jpg": encode(face_crop(0)), "y.jpg": encode(face_crop(1)), "bad.pts": b"{ 1 2 }"}
    result = evaluate(
        runner, write_dataset(tmp_path / "a", rows, files), "fgnet-looi", "--folds", "2"
    )
    assert result.exit_code == 1, result.output
    assert "cannot refit the growth model per fold" in result.output and "bad.pts" in result.output
    assert "Traceback" not in result.output
