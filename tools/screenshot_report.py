#!/usr/bin/env python3
"""Render a population impact report (impact.html) to PNG in headless chromium, for docs/population-impact.md.

Uses Debian's chromium and chromedriver through selenium, as the console's browser tests do (apt-get install
chromium chromium-driver). The page is opened from the file system: it is self-contained, so nothing is fetched.

Run: python tools/screenshot_report.py OUT/impact.html docs/population-impact.png [--width 1280] [--max-height 6000]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path


def find_browser() -> tuple[str, str] | None:
    """Debian's chromium and its chromedriver, or None when either is missing."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    return (chromium, driver_path) if chromium and driver_path else None


@contextmanager
def browser(width: int = 1280):
    """A headless chromium (selenium WebDriver), quit on exit."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    found = find_browser()
    if found is None:
        raise SystemExit("screenshot_report: needs chromium and chromedriver (apt-get install chromium chromium-driver)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = found[0]
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={width},1000", "--force-device-scale-factor=1", "--disable-extensions",
                "--no-first-run", "--disable-background-networking"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(options=opts, service=Service(executable_path=found[1]))
    try:
        yield driver
    finally:
        driver.quit()


def screenshot(html: Path, png: Path, width: int = 1280, max_height: int = 6000) -> None:
    with browser(width) as driver:
        driver.get(html.resolve().as_uri())
        height = int(driver.execute_script("return document.documentElement.scrollHeight"))
        driver.set_window_size(width, min(max(height, 600), max_height))
        png.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(png))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("html", type=Path)
    parser.add_argument("png", type=Path)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--max-height", type=int, default=6000)
    args = parser.parse_args(argv)
    if not args.html.is_file():
        print(f"screenshot_report: {args.html} is not a file", file=sys.stderr)
        return 2
    screenshot(args.html, args.png, args.width, args.max_height)
    print(f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
