"""Open an HTML file in headless Chromium (Debian's, driven by playwright; nothing is downloaded) and measure
what a reader would see: each plot's decoded size and pixel spread, and the filled cells of a table."""
from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def chromium_path() -> str:
    """The system Chromium; a clear failure (not a skip) when it is missing: `make setup` installs it."""
    for p in (os.environ.get("RLAIF_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
              shutil.which("chromium-browser")):
        if p and Path(p).exists():
            return p
    raise AssertionError("no Chromium found for the report test: run `make setup` as root (it apt-get installs "
                         "chromium), or set RLAIF_CHROMIUM to a Chromium binary")


def inspect_page(html_file: Path, screenshot: Path | None = None) -> dict:
    from PIL import Image, ImageStat
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            requests = []
            page.on("request", lambda r: requests.append(r.url))
            page.goto(Path(html_file).resolve().as_uri())
            plots = []
            for img in page.query_selector_all("img.plot"):
                size = img.evaluate("e => [e.complete, e.naturalWidth, e.naturalHeight]")
                png = img.screenshot()
                gray = Image.open(io.BytesIO(png)).convert("L")
                rgb = Image.open(io.BytesIO(png)).convert("RGB")
                plots.append({"alt": img.get_attribute("alt"), "complete": size[0], "width": size[1],
                              "height": size[2], "pixel_std": ImageStat.Stat(gray).stddev[0],
                              "line_pixels": _line_pixels(rgb)})
            cells = page.eval_on_selector_all("table.samples tbody tr", "rows => rows.map(r => "
                                              "Array.from(r.cells).map(c => c.innerText.trim()))")
            if screenshot:
                page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    external = [u for u in requests if not u.startswith(("file:", "data:"))]
    return {"plots": plots, "sample_rows": cells, "external_requests": external}


def _line_pixels(rgb) -> int:
    """Pixels in matplotlib's first line colour (tab:blue, #1f77b4): a plot with axes but no data has none."""
    target = (31, 119, 180)
    return sum(n for n, c in rgb.getcolors(1 << 22) if sum(abs(a - b) for a, b in zip(c, target)) < 40)
