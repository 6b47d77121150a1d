"""End to end through the real app, the real SFace model, SQLite and FAISS."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.faces.base import FaceBackend
from service.faces.pipeline import FacePipeline
from service.faces.quality import QualityThresholds
from service.matching.actors import SYSTEM
from service.search.transform import IDENTITY, TemplateTransform, resolve_transform
from service.settings import Settings
from tests.conftest import container_of
from tests.faces_of_t1 import altered_probe, blank_photo, face_boxes, face_crop
from tests.images import encode, t1_bgr

JPEG = "image/jpeg"


def enroll_six(client: TestClient) -> list[str]:
    """Each face of t1.jpg as its own case, enrolled from the full photo by face_box."""
    photo = encode(t1_bgr())
    case_ids = []
    for i, box in enumerate(face_boxes()):
        r = client.post("/v1/cases", json={"display_name": f"Child {i}", "external_ref": f"R-{i}"})
        assert r.status_code == 201, r.text
        case_id = r.json()["id"]
        r = client.post(
            f"/v1/cases/{case_id}/photos",
            files={"file": ("t1.jpg", photo, JPEG)},
            data={"face_box": str(list(box)), "age_at_photo": "9"},
        )
        assert r.status_code == 201, r.text
        assert r.json()["face"]["box"][0] == pytest.approx(box[0], abs=3)
        case_ids.append(case_id)
    return case_ids


def match(client: TestClient, photo: bytes, **form: str) -> dict:
    r = client.post("/v1/match", files={"file": ("probe.jpg", photo, JPEG)}, data=form)
    assert r.status_code == 200, r.text
    return r.json()


def top_case(client: TestClient, photo: bytes) -> str:
    (face,) = match(client, photo)["faces"]
    return face["candidates"][0]["case_id"]


def test_each_altered_face_matches_its_own_case_first(client: TestClient) -> None:
    case_ids = enroll_six(client)
    for i, case_id in enumerate(case_ids):
        body = match(client, altered_probe(i))
        assert body["review_required"] is True
        (face,) = body["faces"]
        assert face["review_required"] is True
        first = face["candidates"][0]
        assert first["case_id"] == case_id, f"face {i}"
        assert first["rank"] == 1 and first["external_ref"] == f"R-{i}"
        assert first["template_kind"] == "original"
        assert first["score"] > face["candidates"][1]["score"] + 0.1
        assert body["model_id"].startswith("sface:")


def test_match_answers_for_every_face_with_quality(client: TestClient) -> None:
    enroll_six(client)
    body = match(client, encode(t1_bgr()), top_k="3")
    assert len(body["faces"]) == 6
    for face in body["faces"]:
        assert len(face["candidates"]) == 3
        assert len(face["landmarks"]) == 5
        assert face["quality"]["size_px"] > 80
        scores = [c["score"] for c in face["candidates"]]
        assert scores == sorted(scores, reverse=True)
        assert len({c["case_id"] for c in face["candidates"]}) == 3  # one entry per case


def test_several_photos_of_one_case_give_one_candidate(client: TestClient) -> None:
    case_id = client.post("/v1/cases", json={"display_name": "A"}).json()["id"]
    for photo in (encode(face_crop(0)), encode(face_crop(0, margin=0.3))):
        r = client.post(f"/v1/cases/{case_id}/photos", files={"file": ("a.jpg", photo, JPEG)})
        assert r.status_code == 201, r.text
    (face,) = match(client, altered_probe(0))["faces"]
    assert [c["case_id"] for c in face["candidates"]] == [case_id]


def test_same_photo_twice_for_a_case_is_a_conflict(client: TestClient) -> None:
    case_id = client.post("/v1/cases", json={"display_name": "A"}).json()["id"]
    photo = encode(face_crop(1))
    assert (
        client.post(
            f"/v1/cases/{case_id}/photos", files={"file": ("a.jpg", photo, JPEG)}
        ).status_code
        == 201
    )
    r = client.post(f"/v1/cases/{case_id}/photos", files={"file": ("a.jpg", photo, JPEG)})
    assert r.status_code == 409


def test_photo_without_a_face_is_422(client: TestClient) -> None:
    case_id = client.post("/v1/cases", json={"display_name": "A"}).json()["id"]
    r = client.post(f"/v1/cases/{case_id}/photos", files={"file": ("x.jpg", blank_photo(), JPEG)})
    assert r.status_code == 422 and r.json()["reason"] == "no_face"
    r = client.post("/v1/match", files={"file": ("x.jpg", blank_photo(), JPEG)})
    assert r.status_code == 422 and r.json()["reason"] == "no_face"


def test_match_flags_poor_faces(client: TestClient) -> None:
    """(Enrollment records them instead of refusing: tests/test_only_photo.py.)"""
    import cv2

    blurred = encode(cv2.GaussianBlur(face_crop(2), (0, 0), 5))
    enroll_six(client)
    (face,) = match(client, blurred)["faces"]
    assert not face["quality"]["acceptable"] and face["candidates"]


def test_face_choice_by_index_and_bad_choices(client: TestClient) -> None:
    case_id = client.post("/v1/cases", json={"display_name": "A"}).json()["id"]
    photo = encode(t1_bgr())
    for form, status in [
        ({"face_index": "6"}, 422),
        ({"face_box": "[0, 0, 20, 20]"}, 422),
        ({"face_box": "[1, 2, three]"}, 422),
        ({"face_box": "[1,2,-5,5]"}, 422),
        ({"face_index": "-1"}, 422),
        ({"face_index": "5"}, 201),
    ]:
        r = client.post(
            f"/v1/cases/{case_id}/photos", files={"file": ("a.jpg", photo, JPEG)}, data=form
        )
        assert r.status_code == status, (form, r.text)


def test_deleted_case_never_returns(
    client: TestClient,
    make_settings: Callable[..., Settings],
    start_app: Callable[[Settings], TestClient],
) -> None:
    case_ids = enroll_six(client)
    photos_dir = make_settings().photo_dir
    assert len(list(photos_dir.glob("*/*.jpg"))) == 6
    assert client.delete(f"/v1/cases/{case_ids[3]}").status_code == 204
    assert client.get(f"/v1/cases/{case_ids[3]}").status_code == 404
    assert client.delete(f"/v1/cases/{case_ids[3]}").status_code == 404
    assert len(list(photos_dir.glob("*/*.jpg"))) == 5
    body = match(client, altered_probe(3), top_k="50")
    assert case_ids[3] not in {c["case_id"] for c in body["faces"][0]["candidates"]}
    assert client.get("/v1/info").json()["index_size"] == 5


def test_deleting_a_photo_removes_its_template(client: TestClient) -> None:
    case_ids = enroll_six(client)
    photo_id = client.get(f"/v1/cases/{case_ids[0]}").json()["photos"][0]["id"]
    assert client.delete(f"/v1/cases/{case_ids[1]}/photos/{photo_id}").status_code == 404
    assert client.delete(f"/v1/cases/{case_ids[0]}/photos/{photo_id}").status_code == 204
    assert client.get(f"/v1/cases/{case_ids[0]}").json()["photos"] == []
    (face,) = match(client, altered_probe(0))["faces"]
    assert case_ids[0] not in {c["case_id"] for c in face["candidates"]}


def test_restart_loads_the_index_and_answers_the_same(
    make_settings: Callable[..., Settings], start_app: Callable[[Settings], TestClient]
) -> None:
    settings = make_settings()
    with start_app(settings) as first:
        enroll_six(first)
        before = [match(first, altered_probe(i)) for i in range(6)]
    with start_app(settings) as second:
        info = second.get("/v1/info").json()
        assert info["index_opened"] == "loaded" and info["index_size"] == 6
        after = [match(second, altered_probe(i)) for i in range(6)]
    assert after == before


def test_corrupted_index_file_is_detected_and_rebuilt(
    make_settings: Callable[..., Settings], start_app: Callable[[Settings], TestClient]
) -> None:
    settings = make_settings()
    with start_app(settings) as first:
        enroll_six(first)
        before = match(first, altered_probe(2))
    (index_file,) = settings.index_dir.glob("*.snapshot.npz")
    data = bytearray(index_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    index_file.write_bytes(bytes(data))
    with start_app(settings) as second:
        info = second.get("/v1/info").json()
        assert info["index_opened"] == "rebuilt" and info["index_size"] == 6
        assert match(second, altered_probe(2)) == before


def test_snapshot_behind_the_registry_is_replayed(
    make_settings: Callable[..., Settings],
    start_app: Callable[[Settings], TestClient],
    tmp_path: Path,
) -> None:
    settings = make_settings()
    with start_app(settings) as first:
        case_ids = enroll_six(first)
        container_of(first).index.save()
        snapshot = {p.name: p.read_bytes() for p in settings.index_dir.iterdir()}
        first.delete(f"/v1/cases/{case_ids[0]}")
    for name, data in snapshot.items():  # the old snapshot, as if the last save was lost
        (settings.index_dir / name).write_bytes(data)
    with start_app(settings) as second:
        info = second.get("/v1/info").json()
        assert info["index_opened"] == "replayed" and info["index_size"] == 5


def test_changing_the_template_transform_rebuilds_the_index(
    make_settings: Callable[..., Settings],
    start_app: Callable[[Settings], TestClient],
    tmp_path: Path,
) -> None:
    """The registry keeps raw templates; the index is rebuilt when the transform changes,
    scores change with it, and deleting still removes a case."""
    rng = np.random.default_rng(0)
    matrix = np.eye(128, dtype=np.float32) + 0.3 * rng.standard_normal((128, 128)).astype(
        np.float32
    )
    with start_app(make_settings(template_transform="none")) as plain:
        case_ids = enroll_six(plain)
        before = match(plain, altered_probe(2))
        model_id = plain.get("/v1/info").json()["model_id"]
    path = tmp_path / "t.npz"
    TemplateTransform("test-v1", model_id, matrix).save(path)
    with start_app(make_settings(template_transform=str(path))) as fitted:
        info = fitted.get("/v1/info").json()
        assert info["index_opened"] == "rebuilt" and info["template_transform"] == "test-v1"
        after = match(fitted, altered_probe(2))
        assert after["faces"][0]["candidates"][0]["case_id"] == case_ids[2]
        assert after["faces"][0]["candidates"] != before["faces"][0]["candidates"]
        assert fitted.delete(f"/v1/cases/{case_ids[2]}").status_code == 204
        (face,) = match(fitted, altered_probe(2))["faces"]
        assert case_ids[2] not in {c["case_id"] for c in face["candidates"]}
    with start_app(make_settings(template_transform=str(path))) as again:
        assert again.get("/v1/info").json()["index_opened"] == "loaded"
    with start_app(make_settings(template_transform="none")) as plain:
        info = plain.get("/v1/info").json()
        assert info["index_opened"] == "rebuilt" and info["index_size"] == 5


def test_a_transform_for_another_model_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.npz"
    TemplateTransform("x", "other:model", np.eye(128, dtype=np.float32)).save(path)
    with pytest.raises(ValueError, match="fitted for other:model"):
        resolve_transform(str(path), "sface:m:1", 128)
    assert resolve_transform("none", "sface:m:1", 128) is IDENTITY
    assert resolve_transform("default", "no-such-model", 128) is IDENTITY


def test_flip_averaged_templates_have_their_own_model_id(sface_backend: FaceBackend) -> None:
    plain, flip = (
        FacePipeline(sface_backend, QualityThresholds(40, 10, 65), 10, flip=f)
        for f in (False, True)
    )
    assert flip.model_id == plain.model_id + "+flip"
    image = t1_bgr()
    a, b = (p.analyse_all(image)[0].template for p in (plain, flip))
    assert np.linalg.norm(b) == pytest.approx(1.0, abs=1e-5)
    assert 0.8 < float(a @ b) < 0.9999


def test_reembed_after_a_model_change(
    make_settings: Callable[..., Settings], start_app: Callable[[Settings], TestClient]
) -> None:
    with start_app(make_settings(tta_flip=False)) as plain:
        case_ids = enroll_six(plain)
    with start_app(make_settings(tta_flip=True)) as flipped:
        info = flipped.get("/v1/info").json()
        assert info["model_id"].endswith("+flip") and info["index_size"] == 0
        enrollment = container_of(flipped).enrollment
        assert enrollment.reembed(SYSTEM) == 6 and enrollment.reembed(SYSTEM) == 0
        assert flipped.get("/v1/info").json()["index_size"] == 6
        assert top_case(flipped, altered_probe(1)) == case_ids[1]
