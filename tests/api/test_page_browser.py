"""The web page in a real browser: Debian's Chromium, driven by Selenium through Debian's chromedriver.

Uploads a re-encoded seed image through the page's file input and expects its original first, as a verified
match, with thumbnails loaded through the API (the embedded folder's file:// URLs cannot be opened from an http
page); uploads a photo of nothing indexed and expects "no confident match" instead of a list of strangers.
Leaves screenshots in test-artifacts/ (page.png, page-no-match.png).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from helpers import reencoded_copy
from servers import unavailable

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
SET_SLIDER = ("const s = document.getElementById('minConfidence'); s.value = arguments[0];"
              "s.dispatchEvent(new Event('input'));")
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--window-size=1280,900"]


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file() or not Path(CHROMEDRIVER).is_file():
        unavailable(f"browser test needs {CHROMIUM} and chromedriver "
                    "(apt-get install chromium chromium-driver)")
    try:
        from selenium import webdriver
    except ImportError:
        unavailable("selenium is not installed (requirements-dev.txt)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def test_upload_through_the_page_finds_the_original(api, browser, seed_paths, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    original = seed_paths[0]
    query = tmp_path / "query.jpg"
    query.write_bytes(reencoded_copy(original))
    browser.get(api + "/")
    WebDriverWait(browser, 30).until(lambda d: "indexed" in d.find_element(By.ID, "stats").text)
    browser.find_element(By.ID, "file").send_keys(str(query))

    wait = WebDriverWait(browser, 120)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#results .result .name"))
    names = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#results .result .name")]
    assert names[0] == original.name, names
    # At the default minimum confidence only the original remains, shown as a verified match, in words.
    assert names == [original.name]
    assert browser.find_element(By.ID, "minConfidence").get_attribute("value") == "0.5"
    first_verified = browser.find_element(By.CSS_SELECTOR, "#verifiedHits .result")
    assert first_verified.find_element(By.CSS_SELECTOR, ".name").text == original.name
    assert first_verified.find_element(By.CSS_SELECTOR, ".confidence").text == "Almost certain"
    assert not browser.find_element(By.ID, "similarGroup").is_displayed()
    thumbnails_loaded = ("return [...document.querySelectorAll('#results img')]"
                         ".every(img => img.complete && img.naturalWidth > 0)")
    wait.until(lambda d: d.execute_script(thumbnails_loaded))
    first = browser.find_element(By.CSS_SELECTOR, "#results .result")
    assert "image/content?" in first.get_attribute("href")  # clicking opens the full image through the API
    assert browser.find_element(By.ID, "message").text == ""  # no error shown

    # The slider at 0 shows every seed image, still with the original first; the others merely look similar.
    browser.execute_script(SET_SLIDER, "0")
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results .result")) == len(seed_paths))
    assert browser.find_element(By.CSS_SELECTOR, "#results .result .name").text == original.name
    others = browser.find_elements(By.CSS_SELECTOR, "#similarHits .result .confidence")
    assert len(others) == len(seed_paths) - 1 and {e.text for e in others} <= {"Unlikely", "Possible"}
    wait.until(lambda d: d.execute_script(thumbnails_loaded))
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "page.png"))

    # The slider at its top: nothing is that sure, and the page says so.
    browser.execute_script(SET_SLIDER, "1")
    wait.until(lambda d: "No confident match" in d.find_element(By.ID, "message").text)
    assert browser.find_elements(By.CSS_SELECTOR, "#results .result") == []


def test_a_photo_of_nothing_indexed_gets_no_confident_match(api, browser, tmp_path):
    """A photo of something not in the index (a smooth synthetic scene, nothing like the seed photos): the
    page says so instead of listing strangers, and still offers them one slider move away."""
    from PIL import Image, ImageDraw
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    scene = Image.new("RGB", (640, 480), (40, 90, 160))
    draw = ImageDraw.Draw(scene)
    for i in range(12):
        draw.ellipse([40 * i, 30 * i, 40 * i + 120, 30 * i + 90], fill=(200 - 12 * i, 60 + 10 * i, 30))
    query = tmp_path / "elsewhere.jpg"
    scene.save(query, quality=90)
    browser.get(api + "/")
    WebDriverWait(browser, 30).until(lambda d: "indexed" in d.find_element(By.ID, "stats").text)
    browser.find_element(By.ID, "file").send_keys(str(query))
    wait = WebDriverWait(browser, 120)
    wait.until(lambda d: "No confident match" in d.find_element(By.ID, "message").text)
    assert browser.find_elements(By.CSS_SELECTOR, "#results .result") == []
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "page-no-match.png"))
    browser.execute_script(SET_SLIDER, "0")
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#similarHits .result"))
    assert browser.find_elements(By.CSS_SELECTOR, "#verifiedHits .result") == []


def test_page_shows_the_api_error_message(api, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    not_an_image = tmp_path / "notes.jpg"
    not_an_image.write_bytes(b"these are notes, not pixels")
    browser.get(api + "/")
    browser.find_element(By.ID, "file").send_keys(str(not_an_image))
    WebDriverWait(browser, 60).until(lambda d: "not an image" in d.find_element(By.ID, "message").text)
    assert "error" in browser.find_element(By.ID, "message").get_attribute("class")


def test_page_asks_for_the_api_key_and_uses_it(api, browser, variant, seed_paths, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    variant(api_key="page-key")
    query = tmp_path / "query.jpg"
    query.write_bytes(reencoded_copy(seed_paths[1]))
    browser.get(api + "/")
    browser.execute_script("localStorage.clear()")
    browser.refresh()
    wait = WebDriverWait(browser, 120)
    wait.until(lambda d: d.find_element(By.ID, "keyBox").is_displayed())
    assert "API key" in browser.find_element(By.ID, "message").text
    browser.find_element(By.ID, "apiKey").send_keys("page-key")
    browser.find_element(By.CSS_SELECTOR, "#keyBox button").click()
    wait.until(lambda d: "indexed" in d.find_element(By.ID, "stats").text)
    browser.find_element(By.ID, "file").send_keys(str(query))
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#results .result .name"))
    assert browser.find_element(By.CSS_SELECTOR, "#results .result .name").text == seed_paths[1].name
    # Thumbnails come from blob: URLs fetched with the key (an <img> cannot send headers).
    wait.until(lambda d: d.execute_script(
        "return [...document.querySelectorAll('#results img')].every(i => i.src.startsWith('blob:')"
        " && i.complete && i.naturalWidth > 0)"))
    browser.execute_script("localStorage.clear()")
