"""The page at ``/`` in a real browser: Debian's headless ``chromium`` driven by Playwright, against the API (with
API keys on) and a worker running the fixtures' tiny model on the real Redis.

One walk through the page as a person would do it (enter the key, drop a video, wait for it, ask, click, hover,
summarize, render the reel), checked against the API's own answers; every request the browser makes must stay on
127.0.0.1. A screenshot of the page is kept in ``reports/browser/page.png`` (and copied to ``R2_PAGE_SCREENSHOT``
when set: ``R2_PAGE_SCREENSHOT=docs/img/page.png`` refreshes the README's).
"""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path

import httpx
import pytest

from service_helpers import REPO_ROOT

pytestmark = [pytest.mark.browser, pytest.mark.redis, pytest.mark.slow]

REPORTS = REPO_ROOT / "reports" / "browser"
QUERIES = ["a white ball crosses the sky", "an orange sunset"]
WAIT_MS = 60_000  # the longest wait for one thing on the page


def scene_video(path: Path, seconds: int = 20, fps: int = 5, size: tuple[int, int] = (320, 180)) -> Path:
    """An H.264 mp4 that looks like something (the screenshot shows it): a sky whose colour changes every few
    seconds and a ball that crosses it."""
    import av
    import numpy as np

    width, height = size
    ys, xs = np.mgrid[0:height, 0:width]
    palette = [(40, 90, 200), (230, 120, 40), (30, 160, 110), (150, 60, 190), (220, 190, 30)]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(seconds * fps):
            t = i / fps
            top = np.array(palette[int(t // 4) % len(palette)], dtype=np.float32)
            shade = (0.45 + 0.55 * ys / height)[..., None]
            frame = (top * shade).astype(np.float32)
            cx, cy = (t / seconds) * width, height * (0.5 + 0.3 * np.sin(t * 1.7))
            ball = (xs - cx) ** 2 + (ys - cy) ** 2 < (height / 7) ** 2
            frame[ball] = (250, 245, 235)
            image = av.VideoFrame.from_ndarray(frame.clip(0, 255).astype(np.uint8), format="rgb24")
            for packet in stream.encode(image):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def drop_file(page, path: Path) -> None:
    """Drop a file on the drop zone as a drag and drop from the desktop does (a DataTransfer holding a File)."""
    page.evaluate("""([name, data]) => {
        const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], name, { type: "video/mp4" }));
        document.getElementById("drop").dispatchEvent(new DragEvent("drop", { dataTransfer: transfer, bubbles: true }));
    }""", [path.name, base64.b64encode(path.read_bytes()).decode()])


def open_page(page, service) -> None:
    """Open the page and give it the API key in the field it shows (it learns keys are on from a 401)."""
    page.goto(f"{service.url}/")
    page.wait_for_selector("#key-box:not([hidden])", timeout=WAIT_MS)
    page.fill("#api-key", service.key)
    page.press("#api-key", "Enter")
    page.wait_for_selector("#model option[value='tiny']", state="attached", timeout=WAIT_MS)
    assert page.is_hidden("#error")


def test_the_page_walkthrough(service, page, tmp_path) -> None:
    page, outside = page
    video = scene_video(tmp_path / "walk.mp4")
    # Keys are on: the page shows the API's 401 as the API words it, and a key field.
    page.goto(f"{service.url}/")
    page.wait_for_selector("#key-box:not([hidden])", timeout=WAIT_MS)
    refused = httpx.get(f"{service.url}/v1/models").json()["error"]
    assert page.inner_text("#error-code") == refused["code"] == "unauthorized"
    assert page.inner_text("#error-message") == refused["message"]
    open_page(page, service)

    # Drop a video: upload progress, then encoding progress, then ready.
    with page.expect_response(lambda r: r.url.endswith("/v1/videos") and r.request.method == "POST") as uploaded:
        drop_file(page, video)
    video_id = uploaded.value.json()["video_id"]
    page.wait_for_function("!document.getElementById('ask').disabled", timeout=WAIT_MS)
    assert "ready" in page.inner_text("#video-info")
    assert page.eval_on_selector("#upload-bar", "b => b.style.width") == "100%"
    # ... and it is in the list of videos, ready for this model.
    page.wait_for_selector(f"#videos .video-item.selected[data-id='{video_id}'] .badge.ready", timeout=WAIT_MS)

    # Ask two queries: as many moment items and plotted saliency points as the API answered.
    page.fill("#queries", "\n".join(QUERIES))
    with page.expect_response(lambda r: r.url.endswith(f"/v1/videos/{video_id}/moments")) as asked, \
            page.expect_response(lambda r: r.url.endswith(f"/v1/videos/{video_id}/highlights")) as lit:
        page.click("#ask")
    results = asked.value.json()["results"]
    assert [r["query"] for r in results] == QUERIES
    total = sum(len(r["moments"]) for r in results)
    assert total > 0
    page.wait_for_function(f"document.querySelectorAll('#moments .moment').length === {total}", timeout=WAIT_MS)
    for i, r in enumerate(results):
        points = page.locator(f"#plot .scatterlayer .trace:nth-child({i + 1}) .points path")
        assert points.count() == len(r["saliency"])
    highlights = len(lit.value.json()["highlights"])
    assert highlights > 0
    page.wait_for_function(f"[...document.querySelectorAll('#highlights .highlight img')].filter("
                           f"i => i.complete && i.naturalWidth > 0).length === {highlights}", timeout=WAIT_MS)
    page.wait_for_function("[...document.querySelectorAll('#moments .moment img')].every("
                           "i => i.complete && i.naturalWidth > 0)", timeout=WAIT_MS)

    # Click the first moment: the player seeks to its start and plays.
    page.wait_for_function("document.getElementById('player').readyState >= 1", timeout=WAIT_MS)
    page.evaluate("""() => { window.seekedAt = null; const v = document.getElementById('player');
        v.addEventListener('seeked', () => { window.seekedAt = v.currentTime; }, { once: true }); }""")
    page.click("#moments .moment >> nth=0")
    page.wait_for_function("window.seekedAt !== null", timeout=WAIT_MS)
    assert page.evaluate("window.seekedAt") == pytest.approx(results[0]["moments"][0]["start"], abs=0.1)
    page.wait_for_function("!document.getElementById('player').paused", timeout=WAIT_MS)
    # The cursor on the time axis follows the player.
    page.wait_for_function(f"document.getElementById('plot').layout.shapes[0].x0 > {results[0]['moments'][0]['start']}",
                           timeout=WAIT_MS)

    # Hovering a saliency point shows that clip's time, value and thumbnail.
    first = page.locator("#plot .scatterlayer .trace:nth-child(1) .points path").nth(1)
    first.hover(force=True)
    page.wait_for_function("(() => { const i = document.querySelector('#hover-card:not([hidden]) img'); "
                           "return i && i.complete && i.naturalWidth > 0; })()", timeout=WAIT_MS)
    assert "clip 1" in page.inner_text("#hover-card")

    # Summarize, then render the reel: it plays, as long as the summary's segments together.
    page.fill("#budget", "0.3")
    with page.expect_response(lambda r: r.url.endswith("/summary")) as summarized:
        page.click("#summarize")
    segments = summarized.value.json()["segments"]
    assert segments and page.locator("#segments .segment").count() == len(segments)
    page.click("#render")
    page.wait_for_function("(() => { const r = document.getElementById('reel'); "
                           "return !r.hidden && r.readyState >= 2 && r.currentTime > 0; })()", timeout=WAIT_MS)
    reel_seconds = page.evaluate("document.getElementById('reel').duration")
    assert reel_seconds == pytest.approx(sum(s["end"] - s["start"] for s in segments), abs=0.2)

    assert page.is_hidden("#error"), page.inner_text("#error")
    assert outside == []
    REPORTS.mkdir(parents=True, exist_ok=True)
    shot = REPORTS / "page.png"
    # The screenshot: the player paused inside the first moment, the cursor there, a clip hovered.
    still = results[0]["moments"][0]["start"] + 1
    page.evaluate(f"(() => {{ const v = document.getElementById('player'); v.pause(); v.currentTime = {still}; }})()")
    page.wait_for_function(f"Math.abs(document.getElementById('plot').layout.shapes[0].x0 - {still}) < 0.05",
                           timeout=WAIT_MS)
    page.locator("#plot .scatterlayer .trace:nth-child(1) .points path").nth(6).hover(force=True)
    page.wait_for_function("(() => { const i = document.querySelector('#hover-card:not([hidden]) img'); "
                           "return i && i.complete && i.naturalWidth > 0 && /clip 6/.test(i.nextSibling.textContent); "
                           "})()", timeout=WAIT_MS)
    page.screenshot(path=str(shot), full_page=True)
    if os.environ.get("R2_PAGE_SCREENSHOT"):
        shutil.copyfile(shot, REPO_ROOT / os.environ["R2_PAGE_SCREENSHOT"])


def test_a_video_picked_from_the_list_and_api_errors_shown_as_the_api_says_them(service, page, tmp_path) -> None:
    page, outside = page
    video = scene_video(tmp_path / "walk.mp4")  # the walkthrough's bytes: already encoded when it ran first
    with open(video, "rb") as f:
        video_id = httpx.post(f"{service.url}/v1/videos", files={"file": (video.name, f, "video/mp4")},
                              headers=service.headers(), timeout=60).json()["video_id"]
    open_page(page, service)
    page.click(f"#videos .video-item[data-id='{video_id}']", timeout=WAIT_MS)
    page.wait_for_function("!document.getElementById('ask').disabled", timeout=WAIT_MS)
    page.fill("#queries", "x" * 600)  # longer than R2_MAX_QUERY_CHARS (512)
    with page.expect_response(lambda r: r.url.endswith("/moments")) as asked:
        page.click("#ask")
    assert asked.value.status == 422
    error = asked.value.json()["error"]
    page.wait_for_selector("#error:not([hidden])", timeout=WAIT_MS)
    assert page.inner_text("#error-code") == error["code"]
    assert page.inner_text("#error-message") == error["message"]
    assert outside == []


def test_the_docs_page_loads_with_no_request_leaving_localhost(service, page) -> None:
    page, outside = page
    page.goto(f"{service.url}/docs")
    page.wait_for_selector(".swagger-ui .info .title", timeout=WAIT_MS)
    page.wait_for_selector(".opblock-tag", timeout=WAIT_MS)  # the operations, read from /openapi.json
    assert outside == []
