"""Operating Homeward: request ids in headers, error bodies and log lines; logs that name no
child; Prometheus metrics; health that tells the truth."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from service.api.app import create_app
from service.container import Container
from service.faces.base import FaceBackend
from service.observability import JsonFormatter, configure_logging
from service.settings import Settings
from tests.conftest import ADMIN_KEY
from tests.faces_of_t1 import altered_probe
from tests.test_access import JPEG, enroll, make_world


def test_request_ids_are_kept_when_well_formed_and_made_otherwise(client: TestClient) -> None:
    mine = client.get("/v1/info", headers={"X-Request-ID": "trace-42.a"})
    assert mine.headers["x-request-id"] == "trace-42.a"
    for bad in ("", "x" * 65, "has space", "new\nline"):
        made = client.get("/v1/info", headers={"X-Request-ID": bad} if bad != "new\nline" else {})
        assert made.headers["x-request-id"] != bad and len(made.headers["x-request-id"]) == 32
    error = client.get("/v1/cases/nope", headers={"X-Request-ID": "trace-43"})
    assert error.json()["request_id"] == "trace-43" and error.headers["x-request-id"] == "trace-43"


def test_log_lines_carry_the_request_id_and_never_a_name_or_key(
    client: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = make_world(client, {"A": ["registry"]}).as_("A:registry")
    saved = logging.getLogger().handlers[:], logging.getLogger().level
    configure_logging("DEBUG", "json")  # what `homeward serve` sets up, to stderr
    try:
        created = registry.post(
            "/v1/cases",
            json={"display_name": "Zuzanna Kowalczyk", "external_ref": "PL-1"},
            headers={"X-Request-ID": "req-create"},
        )
        assert created.status_code == 201
        registry.get("/v1/cases", params={"q": "Zuzanna"}, headers={"X-Request-ID": "req-q"})
        registry.post(
            "/v1/match",
            files={"file": ("p.jpg", altered_probe(0), JPEG)},
            headers={"X-Request-ID": "req-match"},
        )
    finally:
        logging.getLogger().handlers[:], level = saved
        logging.getLogger().setLevel(level)
    lines = [json.loads(x) for x in capsys.readouterr().err.splitlines() if x.startswith("{")]
    ours = [x for x in lines if x["logger"].startswith(("service", "uvicorn"))]
    text = json.dumps(ours)
    assert "Zuzanna" not in text and "Kowalczyk" not in text
    assert registry.headers["X-API-Key"] not in text and ADMIN_KEY not in text
    requests = [x for x in ours if x["logger"] == "service.api.requests"]
    assert {x["request_id"] for x in requests} >= {"req-create", "req-q", "req-match"}
    assert any(x["message"].startswith("GET /v1/cases 200") for x in requests)


def test_json_log_lines_parse(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "json")
    try:
        logging.getLogger("service.test").info("hello %s", "world")
    finally:
        logging.getLogger().handlers.clear()
    (line,) = [json.loads(x) for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert line["message"] == "hello world" and line["request_id"] == "-"
    assert isinstance(JsonFormatter().format(logging.makeLogRecord({"msg": "m"})), str)


def scrape(client: TestClient) -> dict[str, list[tuple[dict[str, str], float]]]:
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def test_metrics_parse_and_count_what_happened(client: TestClient) -> None:
    enroll(client, 3)
    client.post("/v1/match", files={"file": ("p.jpg", altered_probe(3), JPEG)})
    client.get("/v1/cases/nope")
    m = scrape(client)
    requests = {
        (s["route"], s["method"], s["status"]): v for s, v in m["homeward_http_requests_total"]
    }
    assert requests[("/v1/match", "POST", "200")] >= 1
    assert requests[("/v1/cases/{case_id}", "GET", "404")] >= 1
    stages = {s["stage"]: v for s, v in m["homeward_match_stage_seconds_count"]}
    assert set(stages) == {"decode", "detect", "embed", "search"} and min(stages.values()) >= 1
    assert m["homeward_index_templates"][0][1] == 1
    assert m["homeward_index_generation"][0][1] >= 1
    assert m["homeward_model_info"][0][0]["model_id"].startswith("sface:")
    assert m["homeward_review_queue_candidates"][0][1] == 0
    assert {s["state"] for s, _ in m["homeward_webhook_deliveries"]} == {
        "pending",
        "delivered",
        "failed",
    }
    assert "homeward_http_request_duration_seconds_bucket" in m
    assert "homeward_rate_limit_refusals_total" in m


def test_metrics_access_settings(
    make_settings: Callable[..., Settings], start_app: Callable[[Settings], TestClient]
) -> None:
    with start_app(make_settings()) as local:
        remote = TestClient(local.app, client=("203.0.113.9", 1234))
        assert remote.get("/metrics").status_code == 403
    with start_app(make_settings(metrics_access="token", metrics_token="s3cret-token")) as c:
        assert c.get("/metrics").status_code == 401
        ok = c.get("/metrics", headers={"Authorization": "Bearer s3cret-token"})
        assert ok.status_code == 200 and "homeward_http_requests_total" in ok.text
    with start_app(make_settings(metrics_access="off")) as c:
        assert c.get("/metrics").status_code == 404
    with pytest.raises(ValueError, match="METRICS_TOKEN"):
        make_settings(metrics_access="token")


class SlowIndexContainer(Container):
    """A container whose index waits for the test to let it load."""

    release = threading.Event()

    def load_all(self) -> None:
        assert self.release.wait(60)
        super().load_all()


def test_readyz_fails_while_the_index_loads_and_healthz_answers(
    make_settings: Callable[..., Settings], sface_backend: FaceBackend
) -> None:
    SlowIndexContainer.release.clear()
    app = create_app(make_settings(), container=lambda s: SlowIndexContainer(s, sface_backend))
    with TestClient(app) as client:
        client.headers.update({"X-API-Key": ADMIN_KEY})
        assert client.get("/healthz").status_code == 200
        loading = client.get("/readyz")
        assert loading.status_code == 503 and "loading the index" in loading.json()["detail"]
        busy = client.get("/v1/cases")
        assert busy.status_code == 503 and busy.json()["reason"] == "not_ready"
        SlowIndexContainer.release.set()
        assert app.state.homeward.ready.wait(60)
        assert client.get("/readyz").json() == {"status": "ready"}
        assert client.get("/v1/cases").status_code == 200


def test_readyz_fails_when_the_photo_key_does_not_match(
    make_settings: Callable[..., Settings], start_app: Callable[[Settings], TestClient]
) -> None:
    import base64

    settings = make_settings()
    with start_app(settings):
        pass
    other = base64.b64encode(b"q" * 32).decode()
    with start_app(make_settings(photo_key=other)) as client:
        r = client.get("/readyz")
        assert r.status_code == 503 and "photo key" in r.json()["detail"]


def test_start_up_logs_one_line_with_model_and_index(
    make_settings: Callable[..., Settings],
    start_app: Callable[[Settings], TestClient],
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="service.api.app"), start_app(make_settings()):
        pass
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("ready in")]
    assert "model sface:" in line and "index faiss flat, 0 templates" in line
