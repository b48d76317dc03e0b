"""The web page in a real browser: Debian's Chromium, driven by Selenium through Debian's chromedriver.

Uploads a re-encoded seed image through the page's file input and expects its original first, as a verified
match, with thumbnails loaded through the API (the embedded folder's file:// URLs cannot be opened from an http
page); uploads a photo of nothing indexed and expects "no confident match" instead of a list of strangers.
Draws where a verified hit matched over its thumbnail; narrows the hits by the filter box and shows their labels
as text; names a copy's original and shows one image per group of copies when asked. Leaves screenshots in
test-artifacts/ (page.png, page-no-match.png, page-match-outline.png, page-filters.png, page-copies.png). The
browser fixture is in tests/conftest.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import reencoded_copy

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
SET_SLIDER = ("const s = document.getElementById('minConfidence'); s.value = arguments[0];"
              "s.dispatchEvent(new Event('input'));")


def upload_through_page(browser, api: str, query) -> None:
    """Open the page, wait until it shows the index, and choose `query` in its file input."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(api + "/")
    WebDriverWait(browser, 30).until(lambda d: "indexed" in d.find_element(By.ID, "stats").text)
    browser.find_element(By.ID, "file").send_keys(str(query))


def test_upload_through_the_page_finds_the_original(api, browser, seed_paths, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    original = seed_paths[0]
    query = tmp_path / "query.jpg"
    query.write_bytes(reencoded_copy(original))
    upload_through_page(browser, api, query)

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


def test_a_verified_hit_shows_where_it_matched(api, browser, seed_paths, tmp_path):
    """The verified hit's thumbnail carries the match outline, fitted exactly as the thumbnail is (the overlay
    covers the <img>, and the outline of a re-encoded copy spans the picture shown); unverified hits have none."""
    from PIL import Image
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    original = seed_paths[4]  # its features reach close to every edge, so its outline nearly spans it
    query = tmp_path / "query.jpg"
    query.write_bytes(reencoded_copy(original))
    upload_through_page(browser, api, query)
    wait = WebDriverWait(browser, 120)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#verifiedHits .result .match-outline"))
    browser.execute_script(SET_SLIDER, "0")  # every hit, verified or not
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results .result")) == len(seed_paths))
    verified = browser.find_element(By.CSS_SELECTOR, "#verifiedHits .result")
    assert verified.find_element(By.CSS_SELECTOR, ".name").text == original.name
    outline = verified.find_element(By.CSS_SELECTOR, "svg.match-outline")
    assert len(outline.find_elements(By.CSS_SELECTOR, "polygon")) == 2  # the white halo and the line
    with Image.open(original) as image:
        width, height = image.size
    assert outline.get_dom_attribute("viewBox") == f"0 0 {width} {height}"
    # The overlay fits the picture into the square as object-fit: contain does (the thumbnails' CSS).
    assert outline.get_dom_attribute("preserveAspectRatio") == "xMidYMid meet"
    assert verified.find_element(By.CSS_SELECTOR, "img").value_of_css_property("object-fit") == "contain"
    overlay, thumbnail, line = browser.execute_script(
        "const card = arguments[0], box = (e) => { const r = e.getBoundingClientRect();"
        " return [r.left, r.top, r.width, r.height]; };"
        "return [box(card.querySelector('.match-outline')), box(card.querySelector('img')),"
        " box(card.querySelector('.match-outline .line'))];", verified)
    assert overlay == pytest.approx(thumbnail, abs=0.5)
    scale = min(thumbnail[2] / width, thumbnail[3] / height)  # the picture as shown: fitted, centred
    shown = (thumbnail[0] + (thumbnail[2] - scale * width) / 2, thumbnail[1] + (thumbnail[3] - scale * height) / 2,
             scale * width, scale * height)
    for edge, extent in ((0, 2), (1, 3)):  # left/right, top/bottom: each within 15% of the picture's
        assert abs(line[edge] - shown[edge]) <= 0.15 * shown[extent], (line, shown)
        assert abs(line[edge] + line[extent] - shown[edge] - shown[extent]) <= 0.15 * shown[extent], (line, shown)
    unverified = browser.find_elements(By.CSS_SELECTOR, "#similarHits .result")
    assert len(unverified) == len(seed_paths) - 1
    assert all(card.find_elements(By.CSS_SELECTOR, ".match-outline") == [] for card in unverified)
    assert len(browser.find_elements(By.CSS_SELECTOR, "#results .match-outline")) == 1
    wait.until(lambda d: d.execute_script("return [...document.querySelectorAll('#results img')]"
                                          ".every(img => img.complete && img.naturalWidth > 0)"))
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "page-match-outline.png"))


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
    upload_through_page(browser, api, query)
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


def test_filters_narrow_the_results_and_labels_show_as_text(api, browser, variant, labelled_index, seed_paths,
                                                            tmp_path):
    """The filter box's terms go with every search (the slider's re-query too); each card shows its folder and
    tags as text, a hostile tag value included; a bad filter gets the API's message."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    from imgsearch.labels import Labels

    hostile = "<img src=x onerror=alert(1)>"
    keys = [path.name for path in seed_paths]
    variant(index=labelled_index({keys[0]: Labels("covers/", {"color": "red", "note": hostile}),
                                  keys[1]: Labels("", {"color": "red", "shelf": "top left"}),
                                  keys[2]: Labels("", {"color": "blue"})}))
    query = tmp_path / "query.jpg"
    query.write_bytes(reencoded_copy(seed_paths[0]))
    browser.get(api + "/")
    wait = WebDriverWait(browser, 120)
    wait.until(lambda d: "indexed" in d.find_element(By.ID, "stats").text)
    box = browser.find_element(By.ID, "filters")
    box.send_keys("tag.color=red")  # before the photo: the upload's own search is filtered
    browser.find_element(By.ID, "file").send_keys(str(query))
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#results .result .name"))
    browser.execute_script(SET_SLIDER, "0")

    def names():  # read in one script call: the page may redraw the cards between two WebDriver calls
        return browser.execute_script(
            "return [...document.querySelectorAll('#results .result .name')].map((e) => e.textContent)")

    wait.until(lambda d: len(names()) == 2)  # of every seed image, the two tagged red
    assert names() == keys[:2]
    labels = browser.execute_script("const list = document.querySelector('#results .result .labels');"
                                    "return list && [...list.children].map((e) => e.textContent)")
    assert labels == ["covers/", "color=red", f"note={hostile}"]
    assert browser.find_elements(By.CSS_SELECTOR, "#results .labels img") == []  # text, not markup
    browser.execute_script("document.getElementById('filters').scrollIntoView()")  # the box and the cards
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "page-filters.png"))

    def refilter(text):
        box.clear()
        box.send_keys(text, Keys.ENTER)

    refilter('tag.shelf="top left", tag.color=red')  # quotes keep a value's space; every name must match
    wait.until(lambda d: names() == [keys[1]])
    refilter("folder=covers/")
    wait.until(lambda d: names() == [keys[0]])
    refilter("color=red")
    message = browser.find_element(By.ID, "message")
    wait.until(lambda d: "tag.<name>" in message.text)
    assert message.get_attribute("class") == "error" and names() == []


def test_copies_name_their_original_and_collapse_to_one(api, browser, variant, labelled_index, seed_paths, tmp_path):
    """A card whose image was flagged a copy at ingest names its original, as text (a key with markup included);
    "One image per group of copies" sends collapse=true and leaves the group's best-ranked card."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    hostile = "<img src=x onerror=alert(1)>.jpg"
    keys = [path.name for path in seed_paths]
    variant(index=labelled_index({}, copies={keys[1]: keys[0], keys[2]: keys[0], keys[3]: hostile}))
    query = tmp_path / "query.jpg"
    query.write_bytes(reencoded_copy(seed_paths[0]))
    upload_through_page(browser, api, query)
    wait = WebDriverWait(browser, 120)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#results .result .name"))
    browser.execute_script(SET_SLIDER, "0")  # every seed image

    def shown():  # each card's key and "copy of" note, read at once: a re-render cannot leave them stale
        return browser.execute_script(
            "return [...document.querySelectorAll('#results .result')].map((card) => [card.querySelector('.name')"
            ".textContent, (card.querySelector('.copy') || {}).textContent || null])")

    wait.until(lambda d: len(shown()) == len(keys))
    assert dict(shown()) == {keys[0]: None, keys[1]: f"copy of {keys[0]}", keys[2]: f"copy of {keys[0]}",
                             keys[3]: f"copy of {hostile}", keys[4]: None}
    assert browser.find_elements(By.CSS_SELECTOR, "#results .copy img") == []  # text, not markup
    browser.execute_script("document.getElementById('collapse').scrollIntoView()")  # the box and the cards
    wait.until(lambda d: d.execute_script("return [...document.querySelectorAll('#results img')]"
                                          ".every(img => img.complete && img.naturalWidth > 0)"))
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "page-copies.png"))

    browser.find_element(By.ID, "collapse").click()  # the same search again, one image per group
    wait.until(lambda d: len(shown()) == len(keys) - 2)
    names = [name for name, _ in shown()]
    assert names[0] == keys[0] and sorted(names[1:]) == sorted(keys[3:])  # the original ranks first in its group


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


def test_adding_to_a_folder_bucket_says_uploads_need_s3(api, browser, seed_paths):
    """"Add to the bucket" where the bucket is a local folder: the API's 409, shown like every error. The whole
    path into a real S3 bucket is tests/e2e/test_page_upload.py."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(api + "/")
    WebDriverWait(browser, 30).until(lambda d: "indexed" in d.find_element(By.ID, "stats").text)
    browser.find_element(By.ID, "addFile").send_keys(str(seed_paths[0]))
    message = browser.find_element(By.ID, "message")
    WebDriverWait(browser, 60).until(lambda d: "uploads need an S3 bucket" in message.text)
    assert "local folder" in message.text and message.get_attribute("class") == "error"
    assert browser.find_elements(By.CSS_SELECTOR, "#results .result") == []
