"""The ``homeward`` command on a real data directory."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from click.testing import CliRunner

from service.cli import main
from tests.conftest import ADMIN_KEY, PHOTO_KEY, REPO, SECRET_KEY
from tests.faces_of_t1 import altered_probe, blank_photo, face_crop
from tests.images import encode


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("HOMEWARD_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("HOMEWARD_MODEL_DIR", str(REPO / "models"))
    monkeypatch.setenv("HOMEWARD_ADMIN_KEY", ADMIN_KEY)
    monkeypatch.setenv("HOMEWARD_SECRET_KEY", SECRET_KEY)
    monkeypatch.setenv("HOMEWARD_PHOTO_KEY", PHOTO_KEY)
    monkeypatch.setenv("HOMEWARD_LOG_LEVEL", "WARNING")
    return CliRunner()


def write_enrollment_csv(folder: Path) -> Path:
    rows = []
    for i in range(6):
        (folder / f"face{i}.jpg").write_bytes(encode(face_crop(i)))
        rows.append(
            {
                "external_ref": f"R-{i}",
                "display_name": f"Child {i}",
                "sex": "unknown",
                "photo": f"face{i}.jpg",
                "age_at_photo": "7",
            }
        )
    (folder / "blank.jpg").write_bytes(blank_photo())
    rows.append({"external_ref": "R-9", "display_name": "No face", "photo": "blank.jpg"})
    rows.append({"external_ref": "R-8", "display_name": "Missing file", "photo": "gone.jpg"})
    rows.append(
        {"external_ref": "R-7", "display_name": "Bad sex", "sex": "x", "photo": "face0.jpg"}
    )
    path = folder / "cases.csv"
    with path.open("w", newline="") as handle:
        fields = ["external_ref", "display_name", "sex", "photo", "age_at_photo"]
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_enroll_then_match(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(main, ["enroll", str(write_enrollment_csv(tmp_path))])
    assert result.exit_code == 0, result.output
    assert "enrolled 6 photo(s) (0 with quality issues); rejected 3" in result.output
    assert "no face was found in the photo" in result.output
    assert "photo file not found" in result.output
    assert "invalid case fields" in result.output

    probe = tmp_path / "probe.jpg"
    probe.write_bytes(altered_probe(3))
    result = runner.invoke(main, ["match", str(probe), "--top-k", "3"])
    assert result.exit_code == 0, result.output
    first_row = next(line for line in result.output.splitlines() if line.strip().startswith("1 "))
    assert "R-3" in first_row
    assert "not matches" in result.output

    stats = runner.invoke(main, ["index", "stats"])
    assert "templates       6" in stats.output and "registry count  6" in stats.output
    rebuilt = runner.invoke(main, ["index", "rebuild"])
    assert rebuilt.exit_code == 0 and "rebuilt: 6 templates" in rebuilt.output
    assert "36 of 36 exact top-10 templates of 6 sample searches found" in rebuilt.output


def test_match_without_a_face_fails_clearly(runner: CliRunner, tmp_path: Path) -> None:
    photo = tmp_path / "blank.jpg"
    photo.write_bytes(blank_photo())
    result = runner.invoke(main, ["match", str(photo)])
    assert result.exit_code == 1 and "no face was found" in result.output


def test_enroll_needs_the_columns(runner: CliRunner, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("name,file\nA,a.jpg\n")
    result = runner.invoke(main, ["enroll", str(bad)])
    assert result.exit_code == 2 and "needs the columns" in result.output


def test_keys_create_list_revoke(runner: CliRunner) -> None:
    command = ["keys", "create", "--name", "registry app", "--org", "Reg A"]
    command += ["--role", "registry", "--role", "reviewer"]
    unknown = runner.invoke(main, command)
    assert unknown.exit_code == 1 and "no organisation with id or name 'Reg A'" in unknown.output
    created = runner.invoke(main, [*command, "--create-org"])
    assert created.exit_code == 0, created.output
    key_id = created.output.split()[2]
    key = created.output.strip().splitlines()[-1]
    assert key.startswith("hw_")
    listed = runner.invoke(main, ["keys", "list"]).output
    assert key_id in listed and "registry app" in listed and key not in listed
    assert runner.invoke(main, ["keys", "revoke", key_id]).exit_code == 0
    rows = runner.invoke(main, ["keys", "list"]).output.splitlines()
    revoked_row = next(r for r in rows if key_id in r)
    # id, roles, created (date time), expires ("-"), revoked (date time), org / name
    assert revoked_row.split()[4] == "-" and revoked_row.split()[5] != "-"
    assert runner.invoke(main, ["keys", "revoke", "nope"]).exit_code == 1
    bad_role = ["keys", "create", "--name", "x", "--org", "Reg A", "--role", "god"]
    assert runner.invoke(main, bad_role).exit_code == 2


def test_bad_setting_is_a_usage_error(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOMEWARD_MODEL_BACKEND", "facenet")
    result = runner.invoke(main, ["index", "stats"])
    assert result.exit_code == 2 and "HOMEWARD_" in result.output


def test_orgs_and_retention_commands(runner: CliRunner, tmp_path: Path) -> None:
    created = runner.invoke(main, ["orgs", "create", "Registry North"])
    assert created.exit_code == 0 and "Registry North" in created.output
    assert runner.invoke(main, ["orgs", "create", "Registry North"]).exit_code == 1
    assert "Registry North" in runner.invoke(main, ["orgs", "list"]).output
    assert (
        runner.invoke(
            main, ["enroll", str(write_enrollment_csv(tmp_path)), "--org", "Registry North"]
        ).exit_code
        == 0
    )
    result = runner.invoke(main, ["retention", "run"])
    assert result.exit_code == 0, result.output
    assert "purged 0 closed case(s) and 0 sighting(s)" in result.output
    assert "audit log intact" in runner.invoke(main, ["audit", "verify"]).output


def test_keys_create_takes_an_organisation_id_and_never_makes_one(runner: CliRunner) -> None:
    made = runner.invoke(main, ["orgs", "create", "Registry East"]).output
    org_id = made.split()[2]
    by_id = ["keys", "create", "--name", "east", "--org", org_id, "--role", "registry"]
    assert runner.invoke(main, by_id).exit_code == 0
    orgs = runner.invoke(main, ["orgs", "list"]).output.splitlines()
    assert len([o for o in orgs if "Registry East" in o]) == 1
    assert not any(o.split()[1] == org_id for o in orgs)  # no organisation named by the id


def test_cli_actions_are_audited_like_the_api(runner: CliRunner) -> None:
    from service.container import Container
    from service.matching.actors import SYSTEM
    from service.settings import Settings

    assert runner.invoke(main, ["index", "rebuild"]).exit_code == 0
    assert runner.invoke(main, ["orgs", "create", "Audited"]).exit_code == 0
    built = Container(Settings())
    try:
        actions = {(e.action, e.key_id) for e in built.admin.audit_recent(SYSTEM, 20)}
    finally:
        built.close()
    assert {("index.rebuild", "cli"), ("org.create", "cli")} <= actions


def test_commands_are_quiet_unless_verbose(runner: CliRunner) -> None:
    quiet = runner.invoke(main, ["orgs", "list"])
    assert quiet.exit_code == 0 and " INFO " not in quiet.output
    assert runner.invoke(main, ["worker", "--help"]).exit_code == 0


def test_default_locations_do_not_depend_on_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.settings import Settings

    monkeypatch.delenv("HOMEWARD_DATA_DIR", raising=False)
    monkeypatch.delenv("HOMEWARD_MODEL_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    settings = Settings()
    assert settings.model_dir == REPO / "models" and settings.data_dir == REPO / "index"
