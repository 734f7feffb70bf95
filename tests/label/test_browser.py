"""A real browser on the page: headless Chromium (Debian's ``chromium`` + ``chromium-driver``,
installed by ``make assets``) driven with Selenium; labels land in the moto S3 server.

Selenium Manager never runs: the driver and browser paths are given explicitly and
``SE_OFFLINE`` is set, so nothing is downloaded.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid

import pytest

from abs_ray.io import decode_image, read_text
from abs_ray.ops.label_csv import parse_patch_label_csv

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
GRID = 8  # as the conftest's tiny_config
SCREENSHOT_DIR_ENV = "ABS_LABEL_SCREENSHOT_DIR"  # also keep the screenshot there when set


@pytest.fixture
def browser(tmp_path, monkeypatch):
    """A headless Chromium session (1280 x 900); fails with a clear message when missing."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        pytest.fail(
            f"the browser test needs Debian's chromium and chromium-driver ({', '.join(missing)} "
            "missing): run `make assets` as root, or `apt-get install -y "
            "--no-install-recommends chromium chromium-driver`"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must never download anything
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root in a container
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,900",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    # It is Debian's browser that runs (nothing was fetched): the versions agree.
    debian = subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True).stdout
    assert driver.capabilities["browserVersion"] in debian, (driver.capabilities, debian)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver, condition, timeout: float = 30.0):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition)


def _body(driver, key: str) -> str | None:
    return driver.execute_script(f"return document.body.dataset.{key} || null;")


def _on_cells(driver) -> set[int]:
    cells = driver.find_elements("css selector", "#grid .cell")
    assert len(cells) == GRID * GRID
    return {int(c.get_attribute("data-k")) for c in cells if "on" in c.get_attribute("class")}


def _offset(grid_el, row: int, col: int) -> tuple[int, int]:
    """Offset of a cell's centre from the grid element's centre (Selenium 4 semantics)."""
    w, h = grid_el.size["width"], grid_el.size["height"]
    return round((col + 0.5) * w / GRID - w / 2), round((row + 0.5) * h / GRID - h / 2)


def test_label_in_the_browser(s3_data, serve, s3_server, tiny_config, browser, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains

    bucket, data, manifest = s3_data
    labels = f"{bucket}/labels/{uuid.uuid4().hex[:8]}/browser.csv"
    server = serve(tiny_config(data, labels))
    browser.get(server.url + "/")
    _wait(browser, lambda d: _body(d, "ready") == "1")
    first = _body(browser, "current")
    assert first in set(manifest["id"])
    assert _on_cells(browser) == set()  # no detector, prior off: an empty grid
    assert browser.find_element("id", "counter").text == "0 / 10 labelled"

    # Real clicks toggle single patches; a drag paints a run of them; a second click undoes.
    grid_el = browser.find_element("id", "grid")
    assert grid_el.size["width"] >= 240  # the 64-px image is scaled up for labelling
    for row, col in [(0, 0), (2, 5), (7, 7), (6, 1)]:
        ActionChains(browser).move_to_element_with_offset(
            grid_el, *_offset(grid_el, row, col)
        ).click().perform()
    ActionChains(browser).move_to_element_with_offset(
        grid_el, *_offset(grid_el, 6, 1)
    ).click().perform()
    chain = ActionChains(browser).move_to_element_with_offset(grid_el, *_offset(grid_el, 4, 1))
    chain.click_and_hold()
    for col in (2, 3, 4):
        chain.move_to_element_with_offset(grid_el, *_offset(grid_el, 4, col))
    chain.release().perform()
    expected = {0 * GRID + 0, 2 * GRID + 5, 7 * GRID + 7, *(4 * GRID + c for c in range(1, 5))}
    assert _on_cells(browser) == expected

    shot = tmp_path / "label_page.png"
    assert browser.save_screenshot(str(shot))
    image = decode_image(shot.read_bytes())
    viewport = browser.execute_script("return [window.innerHeight, window.innerWidth];")
    assert list(image.shape[:2]) == viewport and viewport[1] == 1280
    keep = os.environ.get(SCREENSHOT_DIR_ENV)
    if keep:
        shutil.copyfile(shot, os.path.join(keep, "label_page.png"))

    # "n" saves and moves on; the CSV in S3 holds exactly the painted patches.
    browser.find_element("tag name", "body").send_keys("n")
    _wait(browser, lambda d: _body(d, "current") not in (None, first))
    records = {
        r.info: r.mask_string
        for r in parse_patch_label_csv(read_text(labels, s3_server), grid=GRID)
    }
    assert set(records) == {first}
    assert {k for k, c in enumerate(records[first]) if c == "1"} == expected
    assert browser.find_element("id", "counter").text == "1 / 10 labelled"

    # Invert and clear shortcuts on the second image, then a reload resumes on it.
    second = _body(browser, "current")
    body = browser.find_element("tag name", "body")
    body.send_keys("i")
    assert len(_on_cells(browser)) == GRID * GRID
    body.send_keys("c")
    assert _on_cells(browser) == set()
    ActionChains(browser).move_to_element_with_offset(
        grid_el, *_offset(grid_el, 3, 3)
    ).click().perform()  # the same grid element: only its cells change
    browser.refresh()
    _wait(browser, lambda d: _body(d, "ready") == "1")
    assert _body(browser, "current") == second
    assert _on_cells(browser) == {3 * GRID + 3}  # the unsaved edit survived the reload

    # "p" goes back to the first image (saving the second) and shows its saved label.
    browser.find_element("tag name", "body").send_keys("p")
    _wait(browser, lambda d: _body(d, "current") == first)
    assert _on_cells(browser) == expected
    records = {
        r.info: r.mask_string
        for r in parse_patch_label_csv(read_text(labels, s3_server), grid=GRID)
    }
    assert records[second] == "".join("1" if k == 3 * GRID + 3 else "0" for k in range(GRID**2))

    # The retrain button answers in the page; with 2 labels the server refuses (409).
    browser.find_element("id", "train").click()
    _wait(browser, lambda d: "need at least 5 labelled images" in d.find_element("id", "msg").text)
    assert "bad" in browser.find_element("id", "msg").get_attribute("class")


def _records(labels, s3_server) -> dict[str, str]:
    try:
        text = read_text(labels, s3_server)
    except FileNotFoundError:
        return {}
    return {r.info: r.mask_string for r in parse_patch_label_csv(text, grid=GRID)}


def _show_solid_image(driver, rgb: tuple[int, int, int]) -> None:
    """Replace the shown image by a solid colour (as a bird of that colour would fill it)."""
    driver.execute_async_script(
        """
        const [r, g, b, done] = arguments;
        const img = document.getElementById("img");
        const c = document.createElement("canvas");
        c.width = img.naturalWidth; c.height = img.naturalHeight;
        const ctx = c.getContext("2d");
        ctx.fillStyle = `rgb(${r}, ${g}, ${b})`;
        ctx.fillRect(0, 0, c.width, c.height);
        img.onload = () => done();
        img.src = c.toDataURL();
        """,
        *rgb,
    )


def _changed_share(driver, grid_el, k: int, rgb: tuple[int, int, int]) -> float:
    """Share of the cell's inner pixels (4 px in from its edge) that the overlay moves more
    than 60 (RGB distance) away from the image colour under it."""
    import numpy as np

    shot = decode_image(grid_el.screenshot_as_png)[..., :3].astype(np.float64)
    h, w = shot.shape[:2]
    row, col = divmod(k, GRID)
    y0, y1 = round(row * h / GRID) + 4, round((row + 1) * h / GRID) - 4
    x0, x1 = round(col * w / GRID) + 4, round((col + 1) * w / GRID) - 4
    cell = shot[y0:y1, x0:x1]
    distance = np.sqrt(((cell - np.array(rgb, dtype=np.float64)) ** 2).sum(axis=-1))
    return float((distance > 60).mean())


def test_overlay_is_visible_on_any_object_colour(s3_data, serve, tiny_config, browser, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains

    bucket, data, _ = s3_data
    server = serve(tiny_config(data, f"{bucket}/labels/{uuid.uuid4().hex[:8]}/overlay.csv"))
    browser.get(server.url + "/")
    _wait(browser, lambda d: _body(d, "ready") == "1")
    grid_el = browser.find_element("id", "grid")
    on, off = 2 * GRID + 2, 5 * GRID + 5
    ActionChains(browser).move_to_element_with_offset(
        grid_el, *_offset(grid_el, 2, 2)
    ).click().perform()
    assert _on_cells(browser) == {on}
    keep = os.environ.get(SCREENSHOT_DIR_ENV)
    # A yellow bird (the old yellow tint vanished on it), black, white and grey ones.
    for rgb in [(255, 220, 0), (0, 0, 0), (255, 255, 255), (128, 128, 128)]:
        _show_solid_image(browser, rgb)
        assert _changed_share(browser, grid_el, on, rgb) >= 0.3, rgb
        assert _changed_share(browser, grid_el, off, rgb) < 0.05, rgb  # background stays clear
        if keep:
            name = "overlay_{}_{}_{}.png".format(*rgb)
            with open(os.path.join(keep, name), "wb") as f:
                f.write(grid_el.screenshot_as_png)


def test_untouched_prefill_is_not_saved_by_n_alone_and_edits_undo(
    s3_data, serve, s3_server, tiny_config, browser, tmp_path
):
    import json
    import urllib.request

    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    bucket, data, _ = s3_data
    labels = f"{bucket}/labels/{uuid.uuid4().hex[:8]}/prefill.csv"
    server = serve(tiny_config(data, labels, prior="saliency"))
    browser.get(server.url + "/")
    _wait(browser, lambda d: _body(d, "ready") == "1")
    first = _body(browser, "current")
    with urllib.request.urlopen(f"{server.url}/api/items/{first}") as r:
        item = json.load(r)
    assert item["source"] != "label" and "1" in item["mask"]  # a real pre-fill
    assert _on_cells(browser) == {k for k, c in enumerate(item["mask"]) if c == "1"}

    # Paging through with "n" does not turn an untouched pre-fill into a label: it asks.
    body = browser.find_element("tag name", "body")
    body.send_keys("n")
    _wait(browser, lambda d: _body(d, "asked") == first)
    assert _body(browser, "current") == first
    assert "press n again" in browser.find_element("id", "msg").text
    assert _records(labels, s3_server) == {}
    keep = os.environ.get(SCREENSHOT_DIR_ENV)
    if keep:
        browser.save_screenshot(os.path.join(keep, "label_page_asks.png"))
    body.send_keys("n")  # the second "n" accepts the pre-fill as it is
    _wait(browser, lambda d: _body(d, "current") not in (None, first))
    assert _records(labels, s3_server) == {first: item["mask"]}

    # Undo: one step per click, per drag, per clear; "u" and Ctrl+Z alike.
    second = _body(browser, "current")
    grid_el = browser.find_element("id", "grid")
    base = _on_cells(browser)
    ActionChains(browser).move_to_element_with_offset(
        grid_el, *_offset(grid_el, 0, 0)
    ).click().perform()
    after_click = base ^ {0}
    assert _on_cells(browser) == after_click
    chain = ActionChains(browser).move_to_element_with_offset(grid_el, *_offset(grid_el, 4, 1))
    chain.click_and_hold()
    for col in (2, 3, 4):
        chain.move_to_element_with_offset(grid_el, *_offset(grid_el, 4, col))
    chain.release().perform()
    drag = {4 * GRID + c for c in range(1, 5)}
    after_drag = after_click | drag if 4 * GRID + 1 not in after_click else after_click - drag
    assert _on_cells(browser) == after_drag
    body.send_keys("c")
    assert _on_cells(browser) == set()
    body.send_keys("u")
    assert _on_cells(browser) == after_drag
    body.send_keys("u")
    assert _on_cells(browser) == after_click
    ActionChains(browser).key_down(Keys.CONTROL).send_keys("z").key_up(Keys.CONTROL).perform()
    assert _on_cells(browser) == base
    body.send_keys("u")
    assert "nothing to undo" in browser.find_element("id", "msg").text
    # Undone back to the pre-fill, the image is untouched again: "n" asks, saves nothing.
    body.send_keys("n")
    _wait(browser, lambda d: _body(d, "asked") == second)
    assert set(_records(labels, s3_server)) == {first}
    # An edit then saves at once with "n".
    ActionChains(browser).move_to_element_with_offset(
        grid_el, *_offset(grid_el, 7, 0)
    ).click().perform()
    body.send_keys("n")
    _wait(browser, lambda d: _body(d, "current") not in (None, second))
    saved = _records(labels, s3_server)[second]
    assert {k for k, c in enumerate(saved) if c == "1"} == base ^ {7 * GRID}
