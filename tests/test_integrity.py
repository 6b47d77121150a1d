"""Integrity of what the service reads back: a damaged or forged index snapshot is rebuilt
from the registry (never loaded), a tampered model is refused (the server does not start),
and a damaged, swapped or missing photo file is refused with a clear 503 (never served).

Already covered elsewhere and not repeated here: a flipped byte in the snapshot's data file
(test_matching_api), a snapshot for another model, transform or format and one ahead of
the registry (test_vector_index), a tampered model file at load (test_models,
test_insightface_backend).
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.errors import ModelUnavailable
from service.settings import Settings
from tests.conftest import HEADERS, REPO
from tests.faces_of_t1 import altered_probe, distinct_photo
from tests.server_process import ServerProcess

JPEG = "image/jpeg"


def enroll(client: TestClient, k: int) -> str:
    case = client.post("/v1/cases", json={"display_name": f"c{k}"}).json()["id"]
    r = client.post(f"/v1/cases/{case}/photos", files={"file": ("p.jpg", distinct_photo(k), JPEG)})
    assert r.status_code == 201, r.text
    return str(case)


def matches(client: TestClient) -> list[list[tuple[str, float]]]:
    out = []
    for i in range(4):
        r = client.post("/v1/match", files={"file": ("p.jpg", altered_probe(i), JPEG)})
        assert r.status_code == 200, r.text
        out.append([(c["case_id"], c["score"]) for c in r.json()["faces"][0]["candidates"]])
    return out


def snapshot_files(settings: Settings) -> tuple[Path, Path]:
    (data,) = settings.index_dir.glob("*.snapshot.npz")
    return data, data.with_name(data.name.replace(".snapshot.npz", ".json"))


def forge(data: Path, meta: Path, edit: Callable[[dict[str, np.ndarray]], None]) -> None:
    """Rewrite the snapshot's arrays with ``edit`` and record the new checksum, as someone
    who knows the format would."""
    import faiss

    with np.load(data, allow_pickle=False) as arrays:
        content = {k: arrays[k] for k in arrays.files}
    edit(content)
    buffer = io.BytesIO()
    np.savez(buffer, **content)
    data.write_bytes(buffer.getvalue())
    record = json.loads(meta.read_text())
    record["index_sha256"] = hashlib.sha256(buffer.getvalue()).hexdigest()
    index = faiss.deserialize_index(content["index"])
    record["count"] = int(index.ntotal)
    meta.write_text(json.dumps(record))


def drop_first_template(content: dict[str, np.ndarray]) -> None:
    import faiss

    index = faiss.deserialize_index(content["index"])
    first = faiss.vector_to_array(index.id_map)[:1]
    index.remove_ids(faiss.IDSelectorBatch(first))
    content["index"] = faiss.serialize_index(index)


def add_a_stranger(content: dict[str, np.ndarray]) -> None:
    """A template the registry never had, with the attributes of an existing one."""
    import faiss

    index = faiss.deserialize_index(content["index"])
    vector = np.random.default_rng(0).normal(size=(1, index.d)).astype(np.float32)
    vector /= np.linalg.norm(vector)
    index.add_with_ids(vector, np.array([10**6], dtype=np.int64))
    content["index"] = faiss.serialize_index(index)
    for name, values in list(content.items()):
        if name != "index" and len(values) == index.ntotal - 1:
            content[name] = np.concatenate([values, values[:1]])


TAMPERINGS: dict[str, Callable[[Path, Path], None]] = {
    "data truncated": lambda data, meta: data.write_bytes(data.read_bytes()[:-100]),
    "data missing": lambda data, meta: data.unlink(),
    "data emptied": lambda data, meta: data.write_bytes(b""),
    "metadata not json": lambda data, meta: meta.write_text("{not json"),
    "metadata missing": lambda data, meta: meta.unlink(),
    "checksum edited": lambda data, meta: meta.write_text(
        meta.read_text().replace('"index_sha256": "', '"index_sha256": "0')
    ),
    "watermark ahead of the registry": lambda data, meta: meta.write_text(
        json.dumps({**json.loads(meta.read_text()), "watermark": 10**9})
    ),
    "a template dropped, checksum recomputed": lambda data, meta: forge(
        data, meta, drop_first_template
    ),
    "a stranger added, checksum recomputed": lambda data, meta: forge(data, meta, add_a_stranger),
}


@pytest.mark.parametrize("tampering", sorted(TAMPERINGS))
def test_a_tampered_snapshot_is_rebuilt_not_loaded(
    tampering: str,
    make_settings: Callable[..., Settings],
    start_app: Callable[[Settings], TestClient],
) -> None:
    settings = make_settings(with_worker=False)
    with start_app(settings) as first:
        for k in range(4):
            enroll(first, k)
        before = matches(first)
    TAMPERINGS[tampering](*snapshot_files(settings))
    with start_app(settings) as second:
        stats = second.get("/v1/admin/index").json()
        assert stats["opened"] == "rebuilt", stats
        assert stats["templates"] == stats["registry_templates"] == 4
        assert matches(second) == before
    with start_app(settings) as third:  # the rebuilt index was snapshotted at shutdown
        assert third.get("/v1/admin/index").json()["opened"] == "loaded"


# -- models -----------------------------------------------------------------------------------


def tampered_models(target: Path, how: str) -> Path:
    shutil.copytree(REPO / "models" / "opencv-zoo", target / "opencv-zoo")
    folder = target / "opencv-zoo"
    recogniser = next(folder.glob("face_recognition_sface_*.onnx"))
    detector = next(folder.glob("face_detection_yunet_*.onnx"))
    if how == "recogniser byte flipped":
        blob = bytearray(recogniser.read_bytes())
        blob[len(blob) // 2] ^= 0x01
        recogniser.write_bytes(bytes(blob))
    elif how == "detector truncated":
        detector.write_bytes(detector.read_bytes()[:-1])
    elif how == "recogniser replaced by the detector":
        shutil.copyfile(detector, recogniser)
    return target


@pytest.mark.parametrize(
    "how",
    ["recogniser byte flipped", "detector truncated", "recogniser replaced by the detector"],
)
def test_a_tampered_model_stops_the_app_from_starting(
    how: str, tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(model_dir=tampered_models(tmp_path / "models", how))
    app = create_app(settings)  # its own container: the model is loaded from model_dir
    with pytest.raises(ModelUnavailable, match="failed its checksum.*refusing to load"):
        with TestClient(app, headers=HEADERS):
            pass


@pytest.mark.slow
def test_a_server_with_a_tampered_model_refuses_to_start(tmp_path: Path) -> None:
    models = tampered_models(tmp_path / "models", "recogniser byte flipped")
    server = ServerProcess(
        tmp_path / "data", tmp_path / "server.log", {"HOMEWARD_MODEL_DIR": str(models)}
    )
    with pytest.raises(AssertionError, match="server exited, code [1-9]"):
        server.start()
    log = server.log.read_text()
    assert "failed its checksum" in log and "refusing to load" in log, log[-2000:]


# -- stored photos --------------------------------------------------------------------------------


def test_damaged_swapped_or_missing_photos_are_refused_not_served(
    make_settings: Callable[..., Settings], start_app: Callable[[Settings], TestClient]
) -> None:
    settings = make_settings(with_worker=False)
    with start_app(settings) as client:
        cases = [enroll(client, k) for k in range(4)]
        photos = [client.get(f"/v1/cases/{c}").json()["photos"][0]["id"] for c in cases]
        files = [next(settings.photo_dir.glob(f"*/{p}.jpg")) for p in photos]

        def view(i: int) -> tuple[int, str]:
            r = client.get(f"/v1/cases/{cases[i]}/photos/{photos[i]}/image")
            return r.status_code, r.json()["reason"] if r.status_code != 200 else "ok"

        assert view(0) == (200, "ok")
        blob = bytearray(files[0].read_bytes())
        blob[-1] ^= 0x01  # one bit of the sealed photo
        files[0].write_bytes(bytes(blob))
        assert view(0) == (503, "photo_key_mismatch")
        shutil.copyfile(files[2], files[1])  # another photo's (intact) file under this name
        assert view(1) == (503, "photo_key_mismatch")
        files[3].unlink()
        assert view(3) == (503, "storage_unavailable")
        assert view(2) == (200, "ok")
        # the templates are the registry's: matching is not affected
        r = client.post("/v1/match", files={"file": ("p.jpg", distinct_photo(3), JPEG)})
        assert r.json()["faces"][0]["candidates"][0]["case_id"] == cases[3]
