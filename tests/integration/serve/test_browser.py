"""The explorer in a real browser: headless Chromium (Debian's ``chromium`` and
``chromium-driver``) driven by Selenium against ``qdrant-xai serve``'s app on a live port.

Search by text, switch the heatmap method, hover a query word, upload an image, open a hit:
each time the overlays the page shows are the ones the API returns for the same request,
and markup in captions and file names stays text. Skipped, with the reason, where no
Chromium is installed (``.ci/run`` installs it).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import HOSTILE_CAPTION, HOSTILE_NAME, QUERIES, ServeWorld

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium (the dev extra)")

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None or DRIVER is None,
        reason="no Chromium here: apt-get install -y chromium chromium-driver (.ci/run does)",
    ),
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(DRIVER))
    yield driver
    driver.quit()


def _wait(browser: Any, condition: Any, seconds: float = 60) -> Any:
    return WebDriverWait(browser, seconds).until(condition)


def _search(browser: Any, live_url: str, query: str) -> None:
    browser.get(live_url)
    _wait(browser, lambda b: b.find_element(By.ID, "model").text == "shapes")
    box = browser.find_element(By.ID, "q")
    box.clear()
    box.send_keys(query)
    browser.find_element(By.CSS_SELECTOR, "#search button").click()
    _wait(browser, lambda b: "hits in" in b.find_element(By.ID, "status").text)


def _api(live_url: str, query: str, method: str) -> list[dict[str, Any]]:
    params = {
        "q": query,
        "limit": 8,
        "explain": "true",
        "pictures": "true",
        "grounding": "true",
        "method": method,
        "word_method": "prefix",
        "rationales": "false",
    }
    response = httpx.get(f"{live_url}/api/search", params=params, timeout=60)
    response.raise_for_status()
    return list(response.json()["hits"])


def _shown(browser: Any, selector: str) -> list[str]:
    return [
        img.get_attribute("src")
        for img in browser.find_elements(By.CSS_SELECTOR, f"#hits .hit {selector}")
    ]


def test_text_search_shows_the_apis_overlays_and_switches_methods(
    browser: Any, live_url: str, tmp_path: Path
) -> None:
    _search(browser, live_url, QUERIES[0])
    expected = _api(live_url, QUERIES[0], "decomposition")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#hits .hit")) == len(expected)
    assert _shown(browser, ".layer.heatmap") == [h["picture"]["heatmap"] for h in expected]
    assert _shown(browser, ".photo") == [h["picture"]["image"] for h in expected]
    assert browser.find_element(By.ID, "collection").text == "shapes"
    browser.save_screenshot(str(tmp_path / "explorer.png"))
    assert (tmp_path / "explorer.png").stat().st_size > 10_000

    Select(browser.find_element(By.ID, "heatmap-method")).select_by_value("patch")
    _wait(
        browser,
        lambda b: all(
            "patch" in m.text for m in b.find_elements(By.CSS_SELECTOR, "#hits .hit .meta")
        ),
    )
    switched = _api(live_url, QUERIES[0], "patch")
    assert _shown(browser, ".layer.heatmap") == [h["picture"]["heatmap"] for h in switched]
    assert _shown(browser, ".layer.heatmap") != [h["picture"]["heatmap"] for h in expected]
    # nothing refused by the content-security policy, no failed request, no script error
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []


def test_hovering_a_query_word_shows_where_each_hit_has_it(browser: Any, live_url: str) -> None:
    _search(browser, live_url, QUERIES[0])
    expected = _api(live_url, QUERIES[0], "decomposition")
    word = browser.find_element(By.CSS_SELECTOR, "#query-words .w[data-word='circle']")
    webdriver.ActionChains(browser).move_to_element(word).perform()
    cards = browser.find_elements(By.CSS_SELECTOR, "#hits .hit")
    for card, hit in zip(cards, expected, strict=True):
        layers = {g["word"]: g for g in hit["picture"]["grounding"]}
        heat = card.find_element(By.CSS_SELECTOR, ".layer.heatmap")
        assert not heat.is_displayed()
        shown = [
            img.get_attribute("src")
            for img in card.find_elements(By.CSS_SELECTOR, ".layer.grounding")
            if img.is_displayed()
        ]
        if layers.get("circle", {}).get("layer"):
            assert shown == [layers["circle"]["layer"]]
        else:
            assert shown == [] and "not found" in card.text
    webdriver.ActionChains(browser).move_by_offset(0, 400).perform()  # leave the word
    _wait(browser, lambda b: b.find_element(By.CSS_SELECTOR, "#hits .layer.heatmap").is_displayed())


def test_image_upload_and_a_hits_detail(
    browser: Any, live_url: str, serve_world: ServeWorld
) -> None:
    browser.get(live_url)
    _wait(browser, lambda b: b.find_element(By.ID, "model").text == "shapes")
    upload = browser.find_element(By.ID, "file")
    upload.send_keys(str(serve_world.images / "scene_0000.png"))
    _wait(browser, lambda b: "hits in" in b.find_element(By.ID, "status").text)
    cards = browser.find_elements(By.CSS_SELECTOR, "#hits .hit")
    assert cards and all(c.find_elements(By.CSS_SELECTOR, ".words .w") for c in cards)
    assert browser.find_element(By.CSS_SELECTOR, "#query-image img").get_attribute("src")

    _search(browser, live_url, QUERIES[1])
    browser.find_element(By.CSS_SELECTOR, "#hits .hit").click()
    dialog = _wait(browser, expected_conditions.visibility_of_element_located((By.ID, "detail")))
    full = dialog.find_element(By.CSS_SELECTOR, "img.full")
    _wait(browser, lambda b: dialog.find_elements(By.CSS_SELECTOR, ".captions .w"))
    _wait(browser, lambda b: b.execute_script("return arguments[0].naturalWidth", full) > 0)
    assert "/overlay.png?" in full.get_attribute("src")


def test_markup_in_captions_and_file_names_stays_text(browser: Any, live_url: str) -> None:
    _search(browser, live_url, "a red circle bold")
    Select(browser.find_element(By.ID, "heatmap-method")).select_by_value("decomposition")
    page = browser.find_element(By.ID, "hits").text
    assert HOSTILE_NAME in page
    # the caption as the text of a text hit: search the captions with the hostile image
    assert browser.execute_script("return window.__pwned") is None
    assert not browser.find_elements(By.CSS_SELECTOR, "#hits script, #hits img[src='x'], #hits b")
    hostile = [
        c for c in browser.find_elements(By.CSS_SELECTOR, "#hits .hit") if HOSTILE_NAME in c.text
    ]
    hostile[0].click()
    dialog = _wait(browser, expected_conditions.visibility_of_element_located((By.ID, "detail")))
    _wait(browser, lambda b: HOSTILE_CAPTION in dialog.text)  # its caption, as text
    assert not dialog.find_elements(By.CSS_SELECTOR, "script, b:not(.why b), img[src='x']")
    assert browser.execute_script("return window.__pwned") is None
    browser.find_element(By.ID, "close").click()
    browser.execute_script("document.getElementById('q').value = arguments[0]", HOSTILE_CAPTION)
    browser.find_element(By.CSS_SELECTOR, "#search button").click()
    _wait(browser, lambda b: HOSTILE_CAPTION in b.find_element(By.ID, "query-words").text)
    assert browser.execute_script("return window.__pwned") is None
    assert not browser.find_elements(By.CSS_SELECTOR, "#query-words script, #query-words b")
