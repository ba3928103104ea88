"""The demo page in a real browser: Playwright driving Debian's Chromium against the real gateway and Triton.

Screenshots are written to test-artifacts/browser/ (or $EMOTORCH_TEST_ARTIFACTS/browser/).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from matplotlib import cbook
from PIL import Image
from playwright.sync_api import Browser, Page, Playwright, Response, Route, expect, sync_playwright
from skimage import data as skdata

from gateway.app import build_detector
from gateway.settings import Settings
from pipelines.labels import LABELS
from tests.integration.conftest import RunningGateway

pytestmark = [pytest.mark.integration, pytest.mark.browser]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("EMOTORCH_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))
SCREENSHOTS = ARTIFACTS / "browser"
DOMAINS = ["products", "places", "food", "songs", "movies"]
FRAME_W, FRAME_H = 320, 240
YELLOW, WHITE, CYAN = (255, 212, 0), (255, 255, 255), (0, 229, 255)  # chosen box, other boxes, landmarks


def webcam_frame() -> np.ndarray:
    """A 320x240 grayscale webcam frame: the astronaut's head tilted by 15 degrees, face in the middle.

    A real face, tilted as webcam faces often are; the gateway's configured detector must find it here.
    """
    gray = cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2GRAY)
    head = gray[0:240, 104:344]  # 240x240, the face's centre (224, 117) lands near the frame's centre
    turned = cv2.warpAffine(head, cv2.getRotationMatrix2D((120, 117), 15, 1.0), (240, 240),
                            borderMode=cv2.BORDER_REPLICATE)  # fmt: skip
    frame = np.full((FRAME_H, FRAME_W), int(np.median(turned[:, :8])), dtype=np.uint8)
    frame[:, (FRAME_W - 240) // 2 : (FRAME_W + 240) // 2] = turned
    assert build_detector(Settings()).detect(frame), "the configured detector misses the webcam face"
    return frame


def write_y4m(path: Path, gray: np.ndarray, frames: int = 10) -> None:
    """A YUV4MPEG2 4:2:0 file showing the grayscale frame (chroma neutral): Chromium's fake camera input."""
    h, w = gray.shape
    chroma = np.full((h // 2, w // 2), 128, dtype=np.uint8).tobytes()
    with path.open("wb") as out:
        out.write(f"YUV4MPEG2 W{w} H{h} F25:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            out.write(b"FRAME\n" + gray.tobytes() + chroma + chroma)


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is missing: run `make test` as root or `sudo apt-get install -y chromium`")
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    camera = tmp_path_factory.mktemp("camera") / "face.y4m"
    write_y4m(camera, webcam_frame())
    browser = playwright.chromium.launch(
        executable_path=CHROMIUM,
        args=["--no-sandbox", "--disable-gpu", "--use-fake-ui-for-media-stream",
              "--use-fake-device-for-media-stream", f"--use-file-for-fake-video-capture={camera}"],
    )  # fmt: skip
    try:
        yield browser
    finally:
        browser.close()


@pytest.fixture
def page(browser: Browser, gateway: RunningGateway) -> Iterator[Page]:
    context = browser.new_context(base_url=gateway.url, viewport={"width": 1000, "height": 1400})
    page = context.new_page()
    external: list[str] = []
    page.on("request", lambda r: None if r.url.startswith((gateway.url, "blob:", "data:")) else external.append(r.url))
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        yield page
    finally:
        context.close()
    assert external == [], f"the page fetched from elsewhere than the gateway: {external}"
    assert errors == [], f"JavaScript errors: {errors}"


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("photos") / "astronaut.jpg"
    Image.fromarray(skdata.astronaut()).save(path, format="JPEG", quality=90)
    return path


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A photo without a face (skimage's coffee), two real faces side by side (the astronaut, 84 px, and Grace
    Hopper, 139 px, once resized to 400 px high), a close-up of the astronaut's face, and a file that is no image."""
    folder = tmp_path_factory.mktemp("pictures")
    astronaut = Image.fromarray(skdata.astronaut())
    hopper = Image.open(cbook.get_sample_data("grace_hopper.jpg")).convert("RGB")
    hopper = hopper.resize((round(hopper.width * 400 / hopper.height), 400))
    both = Image.new("RGB", (400 + hopper.width, 400))
    both.paste(astronaut.resize((400, 400)), (0, 0))
    both.paste(hopper, (400, 0))
    images = {"coffee": Image.fromarray(skdata.coffee()), "two-faces": both,
              "closeup": astronaut.crop((166, 58, 290, 182))}  # fmt: skip
    paths = {name: folder / f"{name}.jpg" for name in images}
    for name, image in images.items():
        image.save(paths[name], format="JPEG", quality=90)
    paths["not-an-image"] = folder / "notes.jpg"
    paths["not-an-image"].write_bytes(b"my shopping list, not a photo")
    return paths


def screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True)


def upload(page: Page, photo: Path) -> dict[str, Any]:
    """Tick consent, upload the photo, wait for the page to show the answer; return the gateway's JSON."""
    page.goto("/")
    page.get_by_label("I consent").check()
    with page.expect_response("**/v1/recommendations") as answer:
        page.locator("#photo").set_input_files(photo)
    assert answer.value.status == 200, answer.value.text()
    expect(page.locator("#recs-section")).to_be_visible()
    return dict(answer.value.json())


def send(page: Page, picture: Path, closeup: bool = False) -> Response:
    """Upload a picture on the page as it is (consent already given); the gateway's answer, whatever it is."""
    page.locator("#closeup").set_checked(closeup)
    with page.expect_response("**/v1/recommendations") as answer:
        page.locator("#photo").set_input_files(picture)
    expect(page.locator("#status")).not_to_have_text("Analysing…")
    return answer.value


def assert_no_answer_shown(page: Page) -> None:
    """Nothing of an earlier answer is left: no bars, no recommendations, no Like or Dismiss to press."""
    expect(page.locator("#emotion-section")).to_be_hidden()
    expect(page.locator("#recs-section")).to_be_hidden()
    expect(page.locator("#bars li")).to_have_count(0)
    expect(page.locator("li.item button")).to_have_count(0)
    expect(page.locator("#faces-note")).to_be_hidden()


def assert_sentences_for_a_person(text: str) -> None:
    """No parameter names, API words or ids, and no sentences run together ("... use mode=face If ...")."""
    assert text.endswith(".") and len(text) > 40, text
    for jargon in ("mode", "=", "HTTP", "detail", "422", "404", "problem", "field", "_"):
        assert jargon not in text, (jargon, text)
    assert not re.search(r"[0-9a-f]{8}-[0-9a-f]{4}-", text), text  # no raw UUID
    assert not re.search(r"[a-z,] (If|Try|Choose|Wait|Check|Tick) ", text), f"sentences run together: {text}"


def canvas_pixel(page: Page, x: float, y: float) -> tuple[int, int, int]:
    rgba = page.evaluate(
        "([x, y]) => Array.from(document.getElementById('picture').getContext('2d').getImageData(x, y, 1, 1).data)",
        [x, y],
    )
    return int(rgba[0]), int(rgba[1]), int(rgba[2])


def assert_answer_shown(page: Page, body: dict[str, Any]) -> None:
    bars = page.locator("#bars li")
    expect(bars).to_have_count(len(LABELS))
    assert [bars.nth(i).get_attribute("data-emotion") for i in range(len(LABELS))] == list(LABELS)
    probabilities = body["emotion"]["probabilities"]
    label = max(probabilities, key=probabilities.get)  # shown even when the face is 'uncertain'
    expect(page.locator("#emotion-summary")).to_contain_text(label)
    if body["emotion"]["uncertain"]:
        expect(page.locator("#emotion-summary")).to_contain_text("no clear emotion")
    meter = page.locator(f'#bars li[data-emotion="{label}"] [role="meter"]')
    assert int(meter.get_attribute("aria-valuenow") or -1) == round(probabilities[label] * 100)
    for domain in DOMAINS:
        items = page.locator(f'section.domain[data-domain="{domain}"] li.item')
        expect(items).to_have_count(len(body["domains"][domain]))
        assert items.count() >= 1


def test_a_real_photo_shows_the_face_box_emotion_bars_and_recommendations(page: Page, photo: Path) -> None:
    body = upload(page, photo)
    assert_answer_shown(page, body)
    x, y, w, h = body["face"]["box"]
    scale = min(1.0, 640 / 512)
    assert canvas_pixel(page, (x + w / 2) * scale, y * scale) == (255, 212, 0)  # the box's yellow edge
    assert canvas_pixel(page, (x + w / 2) * scale, (y + h / 2) * scale) != (255, 212, 0)  # not filled
    screenshot(page, "upload-result")


def test_feedback_buttons_record_the_event(page: Page, photo: Path, gateway: RunningGateway) -> None:
    body = upload(page, photo)
    first = page.locator('section.domain[data-domain="songs"] li.item').first
    item_id = first.get_attribute("data-item-id")
    with page.expect_response("**/v1/feedback") as answer:
        first.get_by_role("button", name="Like").click()
    assert answer.value.status == 201
    expect(page.locator("#feedback-status")).to_contain_text("Feedback recorded")
    expect(first.locator("button.like")).to_have_text("Liked ✓")
    screenshot(page, "feedback-recorded")
    with sqlite3.connect(gateway.workdir / "feedback.db") as db:
        rows = db.execute(
            "SELECT event FROM events WHERE recommendation_id = ? AND item_id = ?", (body["recommendation_id"], item_id)
        ).fetchall()
    assert rows == [("like",)]


def test_delete_my_feedback_erases_the_tabs_session(page: Page, photo: Path, gateway: RunningGateway) -> None:
    body = upload(page, photo)
    session = body["session_id"]  # issued by the gateway; the page keeps it in this tab only, never shows it
    assert page.evaluate("sessionStorage.getItem('emotorch-session')") == session
    assert session not in page.content()
    with page.expect_response("**/v1/feedback") as answer:
        page.locator("li.item button.like").first.click()
    assert answer.value.status == 201
    with page.expect_response("**/v1/sessions/**") as answer:
        page.get_by_role("button", name="Delete my feedback").click()
    assert answer.value.status == 204
    expect(page.locator("#delete-status")).to_contain_text("Deleted")
    assert_no_answer_shown(page)  # the erased session's recommendations cannot be liked any more
    expect(page.locator("#status")).to_have_text("")
    x, y, w, _ = body["face"]["box"]
    assert canvas_pixel(page, (x + w / 2) * 640 / 512, y * 640 / 512) != YELLOW  # nor is its reading drawn
    screenshot(page, "session-deleted")
    # Feedback on the erased recommendation (as a click still on its way would send) is worded for a person.
    with page.expect_response("**/v1/feedback") as refused:
        page.evaluate(
            """([id, item, session]) => { state.sessionId = session;
                return sendFeedback(id, {item_id: item, title: 'x'}, 'like', document.createElement('span'))
                    .finally(() => { state.sessionId = null; }); }""",
            [body["recommendation_id"], body["domains"]["songs"][0]["item_id"], session],
        )
    assert refused.value.status == 404
    expect(page.locator("#feedback-status")).to_contain_text("no longer stored")
    assert_sentences_for_a_person(page.locator("#feedback-status").text_content() or "")
    assert body["recommendation_id"] not in (page.locator("#feedback-status").text_content() or "")
    digest = hashlib.sha256(session.encode()).hexdigest()
    with sqlite3.connect(gateway.workdir / "feedback.db") as db:
        assert db.execute("SELECT count(*) FROM recommendations WHERE session_id = ?", (digest,)).fetchone() == (0,)
    assert page.evaluate("sessionStorage.getItem('emotorch-session')") is None
    assert upload(page, photo)["session_id"] != session  # the next recommendation starts a new session


def test_a_failed_upload_clears_the_previous_answer_and_says_what_to_do(
    page: Page, photo: Path, pictures: dict[str, Path]
) -> None:
    upload(page, photo)
    answer = send(page, pictures["coffee"])  # no face: the astronaut's answer must not stay on screen
    assert answer.status == 404
    assert_no_answer_shown(page)
    status = page.locator("#status")
    expect(status).to_contain_text("No face was found in this picture.")
    expect(status).to_contain_text("tick “Close-up”")
    assert_sentences_for_a_person(status.text_content() or "")
    screenshot(page, "no-face")
    assert send(page, pictures["not-an-image"]).status in (400, 415)
    expect(status).to_contain_text(re.compile(r"(could not|cannot) be read"))
    assert_sentences_for_a_person(status.text_content() or "")
    expect(page.locator("#picture")).to_be_hidden()  # not the coffee cup any more either


def test_two_faces_are_announced_and_a_click_chooses_the_face_read(page: Page, pictures: dict[str, Path]) -> None:
    page.goto("/")
    page.get_by_label("I consent").check()
    answer = send(page, pictures["two-faces"])
    assert answer.status == 200, answer.text()
    body = answer.json()
    largest, other = body["faces"]  # largest first: Grace Hopper (right), then the astronaut (left)
    assert body["face"] == largest and largest["box"][0] > other["box"][0]
    expect(page.locator("#faces-text")).to_have_text("2 faces found — showing the largest; click a face to read it.")
    assert_bars(page, largest["probabilities"])
    scale = 640 / Image.open(pictures["two-faces"]).width
    for face, colour in ((largest, YELLOW), (other, WHITE)):
        x, y, w, h = face["box"]
        assert canvas_pixel(page, (x + w / 2) * scale, y * scale) == colour  # the top edge of each box
        assert len(face["landmarks"]) == 5
        for lx, ly in face["landmarks"]:
            assert canvas_pixel(page, lx * scale, ly * scale) == CYAN  # each landmark drawn
    screenshot(page, "two-faces")
    x, y, w, h = other["box"]
    shown = page.locator("#picture").bounding_box()
    assert shown is not None
    ratio = shown["width"] / page.evaluate("document.getElementById('picture').width")
    with page.expect_response("**/v1/recommendations") as chosen:
        page.locator("#picture").click(position={"x": (x + w / 2) * scale * ratio, "y": (y + h / 2) * scale * ratio})
    assert chosen.value.status == 200 and chosen.value.json()["emotion"]["source"] == "probabilities"
    expect(page.locator("#faces-text")).to_contain_text("showing face 2")
    assert_bars(page, other["probabilities"])
    assert canvas_pixel(page, (x + w / 2) * scale, y * scale) == YELLOW  # the chosen box is now the yellow one
    expect(page.locator('#face-choices button[aria-pressed="true"]')).to_have_text("Face 2")
    expect(page.locator("li.item")).to_have_count(5 * 3)
    screenshot(page, "two-faces-second-chosen")


def assert_bars(page: Page, probabilities: dict[str, float]) -> None:
    """The bars show exactly this face's reading."""
    for label, p in probabilities.items():
        expect(page.locator(f'#bars li[data-emotion="{label}"] [role="meter"]')).to_have_attribute(
            "aria-valuenow", str(round(p * 100))
        )


def test_a_close_up_without_a_face_is_not_read(page: Page, pictures: dict[str, Path]) -> None:
    page.goto("/")
    page.get_by_label("I consent").check()
    closeup = send(page, pictures["closeup"], closeup=True)  # a real face filling the frame is read
    assert closeup.status == 200, closeup.text()
    expect(page.locator("#recs-section")).to_be_visible()
    answer = send(page, pictures["coffee"], closeup=True)
    assert answer.status == 422 and answer.json()["title"] == "No face in the close-up"
    assert_no_answer_shown(page)
    status = page.locator("#status")
    expect(status).to_contain_text("No face was found in this close-up.")
    assert_sentences_for_a_person(status.text_content() or "")
    screenshot(page, "closeup-without-face")


def test_without_consent_nothing_can_be_sent(page: Page, photo: Path) -> None:
    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.url) if "/v1/recommendations" in r.url else None)
    page.goto("/")
    expect(page.get_by_role("button", name="Start camera")).to_be_disabled()
    expect(page.locator("#photo")).to_be_disabled()
    # Consent given then withdrawn locks the controls again, and the page's own guard refuses to send.
    page.get_by_label("I consent").check()
    expect(page.locator("#photo")).to_be_enabled()
    page.get_by_label("I consent").uncheck()
    expect(page.locator("#photo")).to_be_disabled()
    page.evaluate("analyse(new Blob([new Uint8Array([255, 216, 255])], {type: 'image/jpeg'}))")
    expect(page.locator("#status")).to_contain_text("Tick the consent box")
    screenshot(page, "no-consent")
    assert sent == []


def test_webcam_capture_through_the_fake_camera(page: Page) -> None:
    page.goto("/")
    page.get_by_label("I consent").check()
    page.get_by_role("button", name="Start camera").click()
    expect(page.get_by_role("button", name="Take picture")).to_be_visible()
    expect(page.locator("#camera")).to_have_js_property("videoWidth", FRAME_W)  # frames arrive from the file
    screenshot(page, "webcam-preview")
    with page.expect_response("**/v1/recommendations") as answer:
        page.get_by_role("button", name="Take picture").click()
    assert answer.value.status == 200, answer.value.text()
    body = answer.value.json()
    assert body["face"] is not None and body["emotion"]["source"] == "image"
    x, y, w, h = body["face"]["box"]
    assert x < FRAME_W / 2 < x + w and y < FRAME_H / 2 < y + h  # the face in the middle of the frame
    assert_answer_shown(page, body)
    screenshot(page, "webcam-result")


def test_keyboard_only_and_a_phone_sized_screen(browser: Browser, gateway: RunningGateway, photo: Path) -> None:
    context = browser.new_context(base_url=gateway.url, viewport={"width": 375, "height": 667}, is_mobile=True)
    page = context.new_page()
    try:
        page.goto("/")
        for _ in range(10):  # tab to the consent box and tick it with the space bar
            page.keyboard.press("Tab")
            if page.evaluate("document.activeElement.id") == "consent":
                break
        page.keyboard.press("Space")
        expect(page.locator("#consent")).to_be_checked()
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.id") == "camera-start"
        with page.expect_response("**/v1/recommendations"):
            page.locator("#photo").set_input_files(photo)
        expect(page.locator("#recs-section")).to_be_visible()
        first_like = page.locator("li.item button.like").first
        first_like.focus()
        with page.expect_response("**/v1/feedback") as answer:
            page.keyboard.press("Enter")
        assert answer.value.status == 201
        # Nothing wider than the screen, and every control has a name a screen reader can read.
        assert page.evaluate("document.documentElement.scrollWidth") <= 375
        unnamed = page.evaluate(
            """() => [...document.querySelectorAll('button, input')].filter((e) => {
                   const name = e.getAttribute('aria-label') || e.textContent.trim() ||
                                [...(e.labels || [])].map((l) => l.textContent.trim()).join('');
                   return !name;
               }).map((e) => e.outerHTML)"""
        )
        assert unnamed == []
        screenshot(page, "phone")
    finally:
        context.close()


def test_the_page_is_served_with_a_strict_content_security_policy(gateway: RunningGateway) -> None:
    import httpx

    response = httpx.get(f"{gateway.url}/", timeout=10)
    assert response.status_code == 200 and "text/html" in response.headers["content-type"]
    assert "default-src 'self'" in response.headers["content-security-policy"]
    for asset in ("/static/demo.js", "/static/demo.css"):
        assert httpx.get(f"{gateway.url}{asset}", timeout=10).status_code == 200
    assert "http" not in response.text.replace("http-equiv", "")  # no absolute URL: nothing from a CDN


@pytest.mark.parametrize(("path", "rendered"), [("/docs", "#swagger-ui .opblock"), ("/redoc", "[data-section-id]")])
def test_api_docs_render_offline(browser: Browser, gateway: RunningGateway, path: str, rendered: str) -> None:
    """Swagger UI and ReDoc draw every operation with the network cut off beyond the gateway, and nothing is
    received from another host (ReDoc's bundle asks for Redocly's logo: the page's CSP refuses it)."""
    context = browser.new_context(base_url=gateway.url)
    outside: list[str] = []

    def only_the_gateway(route: Route) -> None:
        if route.request.url.startswith((gateway.url, "blob:", "data:")):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()  # offline: nothing beyond the gateway answers

    context.route("**/*", only_the_gateway)
    page = context.new_page()
    received = []
    page.on("response", lambda r: None if r.url.startswith(gateway.url) else received.append(r.url))
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        response = page.goto(path)
        assert response is not None and response.ok
        expect(page.locator(rendered).first).to_be_visible(timeout=30_000)
        assert page.locator(rendered).count() >= 5
        screenshot(page, f"api-docs{path.replace('/', '-')}")
        if path == "/redoc":
            assert "img-src 'self' data:" in response.headers["content-security-policy"]
    finally:
        context.close()
    assert received == [] and errors == [], (received, errors)
    assert outside == [], f"the page asked another host (its CSP should have refused it first): {outside}"
