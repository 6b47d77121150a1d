"""Scores a reviewer can read: each candidate's estimated false-match rate against the
gallery, whether a face's candidates stand out from chance, and the queue ordered by it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from service.matching.chance import SHIPPED, ImpostorCurve, fit_curve, load_curve
from service.registry.models import Candidate
from service.web.session import chance
from tests.conftest import ADMIN_KEY, container_of
from tests.faces_of_t1 import altered_probe
from tests.test_access import JPEG, enroll
from tests.test_web_admin import sign_in


def normal_curve(n: int = 200_000) -> tuple[ImpostorCurve, np.ndarray]:
    impostor = np.random.default_rng(7).normal(0.0, 0.08, n)
    return fit_curve(impostor, "model", "none"), impostor


def test_the_curve_gives_the_measured_rates_and_falls_beyond() -> None:
    curve, impostor = normal_curve()
    for score, rate in zip(curve.knot_scores, curve.knot_rates, strict=True):
        assert np.mean(impostor >= score) == pytest.approx(rate, rel=0.02)
    scores = np.linspace(-0.5, 0.9, 300)
    rates = [curve.rate(float(s)) for s in scores]
    assert all(a >= b for a, b in zip(rates, rates[1:], strict=False))
    assert curve.rate(-1.0) == 1.0 and 0 < curve.rate(0.9) < 1e-9
    # the exponential tail errs towards caution: at or above a normal tail's true rate
    for score in (0.25, 0.3, 0.35):
        assert curve.rate(score) >= 0.5 * math.erfc(score / 0.08 / math.sqrt(2))


def test_the_rate_grows_with_the_gallery_without_underflow() -> None:
    curve, _ = normal_curve()
    score = 0.3
    assert curve.in_gallery(score, 1) == pytest.approx(curve.rate(score))
    sizes = [1, 100, 10_000, 1_000_000, 100_000_000]
    rates = [curve.in_gallery(score, n) for n in sizes]
    assert rates == sorted(rates) and rates[-1] <= 1.0
    tiny = curve.rate(0.8)
    assert curve.in_gallery(0.8, 1000) == pytest.approx(1000 * tiny, rel=1e-3)  # no 1 - (1 - p)
    assert curve.in_gallery(score, 0) == curve.in_gallery(score, 1)


def test_a_curve_that_is_not_monotonic_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="increasing"):
        ImpostorCurve.from_entry(
            "m", {"transform": "t", "knots": [[0.2, 0.1], [0.1, 0.01]], "tail_scale": 0.02}
        )
    with pytest.raises(ValueError, match="decreasing"):
        ImpostorCurve.from_entry(
            "m", {"transform": "t", "knots": [[0.1, 0.01], [0.2, 0.1]], "tail_scale": 0.02}
        )
    with pytest.raises(ValueError, match="too few"):
        fit_curve(np.zeros(50), "m", "t")
    stored = tmp_path / "chance.json"
    stored.write_text(
        json.dumps(
            {
                "curves": {
                    "m": {"transform": "t", "knots": [[0.1, 0.5], [0.2, 0.01]], "tail_scale": 0.02}
                }
            }
        )
    )
    assert load_curve("m", "t", stored) is not None
    assert load_curve("m", "another transform", stored) is None
    assert load_curve("another model", "t", stored) is None


def test_the_default_model_has_a_shipped_curve_checked_leave_subjects_out(
    client: TestClient,
) -> None:
    keeper = container_of(client).index
    curve = load_curve(keeper.model_id, keeper.transform.version)
    assert curve is not None, f"no curve in {SHIPPED} for {keeper.model_id}"
    entry = json.loads(SHIPPED.read_text())["curves"][keeper.model_id]
    for half in entry["leave_subjects_out"]:
        for row in half["checks"]:  # within a factor of 3 of what the other half measured
            assert 1 / 3 <= row["predicted"] / row["measured"] <= 3, row


def test_candidates_carry_their_false_match_rate_and_a_mate_stands_out(client: TestClient) -> None:
    cases = [enroll(client, face) for face in range(6)]
    r = client.post("/v1/match", files={"file": ("p.jpg", altered_probe(2), JPEG)})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["gallery_templates"] == container_of(client).index.size
    (face,) = body["faces"]
    first, *others = face["candidates"]
    assert first["case_id"] == cases[2]
    assert face["stands_out"] is True and first["false_match_rate"] <= 0.01
    rates = [c["false_match_rate"] for c in face["candidates"]]
    assert rates == sorted(rates)
    assert len(others) >= 3 and all(c["false_match_rate"] > 0.01 for c in others)  # not hidden


def test_a_stranger_does_not_stand_out(client: TestClient) -> None:
    for face in (0, 1, 3, 4, 5):
        enroll(client, face)
    r = client.post("/v1/match", files={"file": ("p.jpg", altered_probe(2), JPEG)})
    (face,) = r.json()["faces"]
    assert face["stands_out"] is False
    assert face["candidates"]  # the floor is the only cut


def test_the_queue_puts_the_least_likely_by_chance_first(client: TestClient) -> None:
    for face in range(6):
        enroll(client, face)
    for face in (1, 4):
        r = client.post("/v1/sightings", files={"file": ("s.jpg", altered_probe(face), JPEG)})
        assert r.status_code == 201, r.text
    db = container_of(client).db
    with db.unit() as tx:
        ids = list(tx.session.scalars(select(Candidate.id).order_by(Candidate.score)))
        # weakest score gets the lowest rate (as if found in a far smaller gallery), one none
        for n, candidate_id in enumerate(ids):
            rate = None if n == len(ids) - 1 else 1e-6 * 10**n
            values = {"false_match_rate": rate}
            tx.session.execute(update(Candidate).where(Candidate.id == candidate_id).values(values))
    queue = client.get("/v1/review/queue").json()
    shown = [item["candidate_id"] for item in queue]
    assert shown == ids[:-1] + ids[-1:]  # by rate, then the unrated one, though it scores best
    assert queue[0]["false_match_rate"] == 1e-6 and queue[-1]["false_match_rate"] is None
    detail = client.get(f"/v1/review/{ids[0]}").json()
    assert detail["false_match_rate"] == 1e-6

    sign_in(client, ADMIN_KEY)
    page = client.get("/review").text
    assert "1 in 1,000,000" in page and "stands out" in page and "not estimated" in page


@pytest.mark.parametrize(
    ("rate", "said"),
    [
        (None, "not estimated for this model"),
        (0.5, "50%"),
        (0.01, "1%"),
        (0.00043, "1 in 2,326"),
        (1e-12, "under 1 in a billion"),
    ],
)
def test_rates_are_said_as_people_say_them(rate: float | None, said: str) -> None:
    assert chance(rate) == said
