"""End to end in real headless Chromium: upload real songs on the web page, check the numbers.

Uses Debian's ``/usr/bin/chromium`` through Playwright (never a downloaded browser) against a
real uvicorn server on a loopback port. Every request the page makes must go to that server.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import pytest

from apexmusic.predict import Predictor
from apexmusic.serve import ServeConfig, background_server, create_app
from apexmusic.tasks import ALL_TASKS

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]
HIPHOP = "acestep_hiphop_rap_shirt_song.opus"
JAZZ = "acestep_saxphone_jazz.opus"


@pytest.fixture(scope="module")
def server(predict_model_dir: Path):
    app = create_app(predictor=Predictor.from_pretrained(predict_model_dir), config=ServeConfig())
    with background_server(app) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: install Debian's chromium (scripts/setup.sh does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture()
def page(browser, server):
    context = browser.new_context(viewport={"width": 1180, "height": 1400})
    page = context.new_page()
    foreign: list[str] = []

    def only_this_server(route):
        if route.request.url.startswith(server):
            route.continue_()
        else:
            foreign.append(route.request.url)
            route.abort()

    page.route("**/*", only_this_server)
    page.goto(server + "/")
    yield page
    context.close()
    assert foreign == [], f"the page tried to reach other hosts: {foreign}"


def _cells(page, song: str) -> dict[str, dict[str, tuple[str, float]]]:
    out: dict[str, dict[str, tuple[str, float]]] = {}
    for cell in page.query_selector_all(f"#score-table td[data-song={song}]"):
        task, kind = cell.get_attribute("data-task"), cell.get_attribute("data-kind")
        out.setdefault(kind, {})[task] = (cell.inner_text().strip(), float(cell.get_attribute("data-value")))
    return out


def _keep_screenshot(page, tmp_path: Path, name: str) -> Path:
    shot = tmp_path / name
    page.screenshot(path=str(shot), full_page=True)
    keep = os.environ.get("APEXMUSIC_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / name)
    return shot


def test_page_shows_the_api_numbers_for_a_real_song(page, server, shared_data, tmp_path):
    song = shared_data / "real-audio" / HIPHOP
    api = httpx.post(
        server + "/v1/predict", files={"file": (song.name, song.read_bytes())}, timeout=120
    ).json()
    page.wait_for_function("document.getElementById('model-info').textContent.includes('apex-')")
    assert api["model_id"] in page.inner_text("#model-info")

    page.set_input_files("#file-a", str(song))
    page.click("#submit")
    page.wait_for_selector("#results[data-ready]", timeout=120_000)
    page.wait_for_selector("#bar-chart rect.bar")

    cells = _cells(page, "a")
    assert set(cells["score"]) == set(ALL_TASKS)
    for task in ALL_TASKS:
        shown, value = cells["score"][task]
        assert value == pytest.approx(api["scores"][task], rel=1e-12)
        assert shown == f"{api['scores'][task]:.2f}"
        shown_sd, sd = cells["std"][task]
        assert sd == pytest.approx(api["uncertainty"][task], rel=1e-12) and shown_sd == f"{sd:.2f}"
        label = page.text_content(f"#bar-chart text.bar-label[data-song=a][data-task={task}]")
        assert label == f"{api['scores'][task]:.2f} ± {api['uncertainty'][task]:.2f}"
    # the timeline has one point per segment per task, at the API's values
    points = page.query_selector_all("#timeline circle.seg-point[data-task=coherence]")
    assert [float(p.get_attribute("data-value")) for p in points] == pytest.approx(
        [seg["scores"]["coherence"] for seg in api["timeline"]], rel=1e-12
    )
    assert len(page.query_selector_all("#timeline svg.timeline-plot")) == 2  # popularity, aesthetics
    assert "Done in" in page.inner_text("#status")
    shot = _keep_screenshot(page, tmp_path, "web-predict.png")
    assert shot.stat().st_size > 10_000


def test_page_compares_two_songs(page, server, shared_data, tmp_path):
    a, b = shared_data / "real-audio" / HIPHOP, shared_data / "real-audio" / JAZZ
    files = {"a": (a.name, a.read_bytes()), "b": (b.name, b.read_bytes())}
    api = httpx.post(server + "/v1/compare", files=files, timeout=120).json()

    page.set_input_files("#file-a", str(a))
    page.set_input_files("#file-b", str(b))
    page.click("#submit")
    page.wait_for_selector("#results[data-ready]", timeout=120_000)
    prob = page.get_attribute("#prob-a", "data-value")
    assert float(prob) == pytest.approx(api["prob_a"], rel=1e-12)
    assert f"{100 * api['prob_a']:.1f}%" in page.inner_text("#verdict")
    for key in ("a", "b"):
        cells = _cells(page, key)
        for task in ALL_TASKS:
            assert cells["score"][task][1] == pytest.approx(api[key]["scores"][task], rel=1e-12)
    assert len(page.query_selector_all("#bar-chart rect.bar")) == 2 * len(ALL_TASKS)
    _keep_screenshot(page, tmp_path, "web-compare.png")


def test_page_reports_a_server_error(page, tmp_path):
    bad = tmp_path / "notes.mp3"
    bad.write_text("not audio at all\n" * 100)
    page.set_input_files("#file-a", str(bad))
    page.click("#submit")
    page.wait_for_selector("#status.error", timeout=60_000)
    assert page.inner_text("#status").startswith("Error 415")
    assert page.is_hidden("#results")


def test_an_error_clears_the_previous_songs_results(page, shared_data, tmp_path):
    page.set_input_files("#file-a", str(shared_data / "real-audio" / HIPHOP))
    page.click("#submit")
    page.wait_for_selector("#results[data-ready]", timeout=120_000)
    assert page.query_selector_all("#score-table td[data-song=a]")

    bad = tmp_path / "notes.mp3"
    bad.write_text("not audio at all\n" * 100)
    page.set_input_files("#file-a", str(bad))
    page.click("#submit")
    page.wait_for_selector("#status.error", timeout=60_000)
    assert page.inner_text("#status").startswith("Error 415")
    assert page.is_hidden("#results") and page.get_attribute("#results", "data-ready") is None
    assert page.query_selector_all("#score-table td[data-song]") == []
    assert page.query_selector_all("#bar-chart, #timeline svg, #verdict *") == []


def test_api_docs_render_with_no_outside_request(browser, server, tmp_path):
    context = browser.new_context(viewport={"width": 1180, "height": 1400})
    page = context.new_page()
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.route(
        "**/*",
        lambda route: route.continue_() if route.request.url.startswith(server) else route.abort(),
    )
    try:
        page.goto(server + "/docs")
        page.wait_for_selector(".opblock-summary-path", timeout=60_000)
        operations = page.locator(".opblock-summary-path").all_inner_texts()
        assert sorted(operations) == ["/healthz", "/v1/compare", "/v1/model", "/v1/predict"]
        assert page.locator(".opblock-summary-path").first.is_visible()
        shot = _keep_screenshot(page, tmp_path, "api-docs.png")
        assert shot.stat().st_size > 10_000
    finally:
        context.close()
    outside = [url for url in requested if not url.startswith(server)]
    assert requested and outside == [], f"/docs requested other hosts: {outside}"
    assert any("/docs-assets/" in url for url in requested)


@pytest.fixture(scope="module")
def trusted_server(aesthetics_only_model: Path):
    app = create_app(predictor=Predictor.from_pretrained(aesthetics_only_model), config=ServeConfig())
    with background_server(app) as url:
        yield url


def test_page_shows_not_trained_intervals_provenance_and_the_domain_banner(
    browser, trusted_server, shared_data, tmp_path
):
    """A model trained without plays/likes: popularity reads "not trained", every served score
    shows its interval, and a song unlike the training songs gets a banner."""
    song = shared_data / "real-audio" / "acestep_female_pop.opus"  # not among the training songs
    api = httpx.post(
        trusted_server + "/v1/predict", files={"file": (song.name, song.read_bytes())}, timeout=120
    ).json()
    assert api["in_domain"] is False and api["scores"]["score_streams"] is None
    context = browser.new_context(viewport={"width": 1180, "height": 1400})
    page = context.new_page()
    page.goto(trusted_server + "/")
    page.wait_for_selector("#provenance:not([hidden])")
    provenance = page.inner_text("#provenance")
    assert "labels from labels.csv" in provenance and "not trained: Streams, Likes" in provenance
    assert page.get_attribute("#provenance", "data-simulated") == "false"

    page.set_input_files("#file-a", str(song))
    page.click("#submit")
    page.wait_for_selector("#results[data-ready]", timeout=120_000)
    banner = page.inner_text(".warn.domain-alarm[data-song=a]")
    assert (
        "unlike the songs this model was trained on" in banner and f"{api['domain_distance']:.2f}" in banner
    )
    for task in ("score_streams", "score_likes"):
        cell = page.query_selector(f"#score-table td[data-song=a][data-task={task}][data-kind=score]")
        assert cell.inner_text().strip() == "not trained"
        label = page.text_content(f"#bar-chart text.bar-label[data-song=a][data-task={task}]")
        assert label == "not trained"
        assert page.query_selector(f"#bar-chart rect.bar[data-task={task}]") is None
    assert "90% interval" in page.inner_text("#score-table thead")
    for task in ("coherence", "musicality", "memorability", "clarity", "naturalness"):
        cell = page.query_selector(f"#score-table td[data-song=a][data-task={task}][data-kind=interval]")
        lo, hi = api["intervals"][task]["lo"], api["intervals"][task]["hi"]
        assert float(cell.get_attribute("data-lo")) == pytest.approx(lo, rel=1e-12)
        assert cell.inner_text().strip() == f"{lo:.2f}–{hi:.2f}"
        assert page.query_selector(f"#bar-chart rect.interval[data-task={task}]") is not None
    assert len(page.query_selector_all("#timeline svg.timeline-plot")) == 1  # aesthetics only
    _keep_screenshot(page, tmp_path, "web-trust.png")
    context.close()
