"""The whole journey in a real Chromium, as the people who use Homeward make it: registry
staff enroll a missing child; a volunteer on a 360 px phone reports a sighting of the child;
two reviewers see the case at rank 1 and confirm it; the registry sees the confirmed sighting
on the case page; an admin rebuilds the index. Every page passes axe-core's WCAG 2 A/AA
checks and is screenshotted (a few are kept under docs/)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import cv2
import pytest
from playwright.sync_api import Page, expect

from service.matching.access import ADMIN_ORG
from tests.browser import WebServer, assert_accessible, screenshot, sign_in
from tests.conftest import years_ago
from tests.faces_of_t1 import altered_probe, face_crop

pytestmark = pytest.mark.browser

PHONE_360 = {"width": 360, "height": 780}
ZOOMED_200 = {"width": 640, "height": 400}  # a 1280 x 800 screen at 200% zoom
FAMILY = "Family association"
CHILD = 0  # the face of t1.jpg enrolled as the missing child; the others are other cases


@dataclass(frozen=True)
class People:
    volunteer: str
    reviewer_1: str
    reviewer_2: str
    registry: str
    admin: str


@pytest.fixture(scope="module")
def people(web_server: WebServer) -> People:
    return People(
        volunteer=web_server.make_key("Street volunteers", ["volunteer"], "Ana (volunteer)"),
        reviewer_1=web_server.make_key(FAMILY, ["reviewer"], "Bo (reviewer)"),
        reviewer_2=web_server.make_key(FAMILY, ["reviewer"], "Cy (reviewer)"),
        registry=web_server.make_key(FAMILY, ["registry"], "Di (registry)"),
        admin=web_server.make_key(ADMIN_ORG, ["admin"], "Ed (admin)"),
    )


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("photos")
    files = {"case": folder / "case.jpg", "sighting": folder / "sighting.jpg"}
    cv2.imwrite(str(files["case"]), face_crop(CHILD))
    files["sighting"].write_bytes(altered_probe(CHILD))  # the same child, another photo
    return files


def test_from_sighting_to_confirmation(
    web_server: WebServer, people: People, photos: dict[str, Path], new_page
) -> None:
    _other_cases(web_server, people)
    case_url = _registry_enrolls_the_child(new_page(), web_server, people, photos["case"])
    _volunteer_reports_a_sighting(new_page(PHONE_360), web_server, people, photos["sighting"])
    for n, key in enumerate((people.reviewer_1, people.reviewer_2), start=1):
        _reviewer_confirms(new_page(), web_server, key, n)
    _registry_sees_the_confirmation(new_page(), web_server, people, case_url)
    _admin_rebuilds_the_index(new_page(), web_server, people)
    _pages_reflow_at_200_percent(new_page(ZOOMED_200), web_server, people)


def _other_cases(server: WebServer, people: People) -> None:
    """Other children of the same organisation, so that rank 1 means something."""
    headers = {"X-API-Key": people.registry}
    for i in (1, 2, 3):
        case = server.api.post("/v1/cases", json={"display_name": f"Other {i}"}, headers=headers)
        ok, jpeg = cv2.imencode(".jpg", face_crop(i))
        files = {"file": ("face.jpg", jpeg.tobytes(), "image/jpeg")}
        added = server.api.post(
            f"/v1/cases/{case.json()['id']}/photos", files=files, headers=headers
        )
        assert added.status_code == 201, added.text


def _registry_enrolls_the_child(page: Page, server: WebServer, people: People, photo: Path) -> str:
    sign_in(page, server.base_url, people.registry, next="/cases")
    expect(page.get_by_role("heading", name=f"Cases of {FAMILY}")).to_be_visible()
    page.get_by_role("link", name=re.compile("New case")).click()
    page.get_by_label("Name", exact=True).fill("Mia Example")
    page.get_by_label(re.compile("^Reference")).fill("FA-2026-001")
    page.get_by_label("Sex").select_option("female")
    page.get_by_label(re.compile("^Date of birth")).fill(years_ago(12).isoformat())
    page.get_by_label(re.compile("^Missing since")).fill(years_ago(4).isoformat())
    assert_accessible(page)
    page.get_by_role("button", name="Create the case").click()
    expect(page.get_by_role("heading", name=re.compile("Mia Example"))).to_be_visible()

    page.locator("#file").set_input_files(photo)
    page.get_by_label(re.compile("^Age in the photo")).fill("8")
    page.get_by_label(re.compile("^Taken on")).fill(years_ago(4).isoformat())
    page.get_by_role("button", name="Add the photo").click()
    expect(page.get_by_alt_text(re.compile("aged", re.IGNORECASE)).first).to_be_visible()
    assert_accessible(page)
    screenshot(page, "case")
    return page.url


def _volunteer_reports_a_sighting(
    page: Page, server: WebServer, people: People, photo: Path
) -> None:
    sign_in(page, server.base_url, people.volunteer)
    expect(page.get_by_role("heading", name="Report a sighting")).to_be_visible()
    assert_accessible(page)
    page.locator("#photo").set_input_files(photo)
    expect(page.get_by_role("heading", name="Faces in your photo")).to_be_visible()
    page.get_by_label("Where you saw the child").fill("Central station, platform 4")
    page.get_by_label(re.compile("^Age you would guess")).fill("12")
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE_360["width"]
    screenshot(page, "volunteer")
    page.get_by_role("button", name="Send the sighting").click()
    reference = page.locator("#sent-ref")
    expect(reference).to_have_text(re.compile(r"\w{8,}"), timeout=30_000)
    assert_accessible(page)
    screenshot(page, "volunteer-sent")
    assert "Mia" not in page.content()  # a volunteer never sees cases or candidates


def _reviewer_confirms(page: Page, server: WebServer, key: str, n: int) -> None:
    sign_in(page, server.base_url, key, next="/review")
    queue = page.get_by_test_id("review-queue")
    first = queue.locator("tbody tr").first
    expect(first).to_contain_text("FA-2026-001")
    assert_accessible(page)
    if n == 1:
        screenshot(page, "review-queue")
    first.get_by_role("link").first.click()
    expect(page.get_by_test_id("rank")).to_contain_text("1")
    expect(page.get_by_test_id("confirmations")).to_contain_text(f"{n - 1} of 2")
    expect(page.get_by_test_id("aged-image").first).to_be_visible()
    assert_accessible(page)
    if n == 1:
        screenshot(page, "review-candidate")
    page.get_by_role("radio", name=re.compile("^Confirm")).check()
    page.get_by_label(re.compile("^Note")).fill(f"reviewer {n}: same eyes, nose and ears")
    page.get_by_role("button", name=re.compile("Record my decision|Send")).click()
    expect(page.get_by_role("status").first).to_be_visible()


def _registry_sees_the_confirmation(
    page: Page, server: WebServer, people: People, case_url: str
) -> None:
    sign_in(page, server.base_url, people.registry, next=case_url.removeprefix(server.base_url))
    section = page.locator("section", has=page.get_by_role("heading", name="Confirmed sightings"))
    expect(section).to_contain_text("Central station, platform 4")
    expect(section).to_contain_text("Bo (reviewer)")
    expect(section).to_contain_text("Cy (reviewer)")
    assert_accessible(page)
    screenshot(page, "case-confirmed")


def _admin_rebuilds_the_index(page: Page, server: WebServer, people: People) -> None:
    sign_in(page, server.base_url, people.admin, next="/admin")
    templates = page.get_by_test_id("index-templates")
    expect(templates).to_contain_text("in the index")
    assert_accessible(page)
    page.get_by_role("button", name="Rebuild the index").click()  # a job the page follows
    expect(page.get_by_test_id("job-state")).to_be_visible()
    notice = page.get_by_role("status").filter(has_text="was rebuilt")
    expect(notice).to_be_visible(timeout=30_000)
    expect(page.get_by_test_id("job-state")).to_contain_text("Rebuild done")
    expect(page.locator("#index dl")).to_contain_text(f"Last rebuild{date.today().isoformat()}")
    expect(templates).to_contain_text("in the index")
    screenshot(page, "admin")


def _pages_reflow_at_200_percent(page: Page, server: WebServer, people: People) -> None:
    """No page scrolls sideways at 200% zoom (wide tables scroll in their own box)."""
    sign_in(page, server.base_url, people.admin)
    for path in ("/", "/review", "/cases", "/admin"):
        page.goto(server.url(path))
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= ZOOMED_200["width"], f"{path} is {width} px wide at 200% zoom"
