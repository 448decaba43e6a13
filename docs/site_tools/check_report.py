"""Checks a report written by `kerastl.evaluation.report.write_report` in headless Chromium.

    python docs/site_tools/check_report.py REPORT_DIR [--screenshot PNG]

1. The page stands alone: every link, image and style sheet is an `#anchor` of
   an element of the page or embedded `data:` (nothing outside the page), and
   `report.json` beside it holds the same title.
2. In headless Chromium, served over HTTP as the site is (`check_site.py`): the
   page renders its title, heading and every section's heading, every `<img>`
   decodes (`naturalWidth > 0`), and nothing is wider than the window.
3. `--screenshot PNG` saves the whole page, top to bottom, as a PNG file.

Exits 1 with one line per problem.
"""

import argparse
import base64
import html
import json
import pathlib
import re
import sys
import tempfile
import time

from check_site import _browser, _DevTools, _parse, _serve

WIDTH = 1280  # the window the page is drawn in, in CSS pixels
RENDERED = """(() => ({
  href: location.href,
  ready: document.readyState,
  title: document.title,
  h1: Array.from(document.querySelectorAll('h1')).map(h => h.textContent.trim()),
  sections: Array.from(document.querySelectorAll('section')).map(s => ({
    id: s.id, heading: (s.querySelector('h2') || {}).textContent || ''})),
  images: Array.from(document.images).map(i => ({
    alt: i.alt, complete: i.complete, width: i.naturalWidth})),
  scrollWidth: document.documentElement.scrollWidth,
  innerWidth: window.innerWidth,
  height: document.documentElement.scrollHeight,
}))()"""


def check_page(page):
    """Problems of the HTML file itself: what points outside it or to a missing anchor."""
    parsed = _parse(page)
    problems = []
    for link in parsed.links:
        if link.startswith("#"):
            if link[1:] not in parsed.ids:
                problems.append(f"{page.name}: link to a missing anchor: {link}")
        elif not link.startswith("data:"):
            problems.append(f"{page.name}: link outside the page: {link[:80]}")
    text = page.read_text(encoding="utf-8")
    for found in re.findall(r"url\(\s*['\"]?([^'\")]*)", text):
        if not found.startswith("data:"):
            problems.append(f"{page.name}: style loads from outside the page: url({found[:80]})")
    return problems


def check_json(directory, page):
    path = directory / "report.json"
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return [f"report.json: not readable JSON ({e})"]
    title = re.search(r"<title>(.*?)</title>", page.read_text(encoding="utf-8"), re.S)
    if title is None or "title" not in report:
        return ["report.json or report.html has no title"]
    if html.unescape(title.group(1)) != report["title"]:
        return [f"report.json's title {report['title']!r} is not the page's {title.group(1)!r}"]
    return []


def check_in_browser(directory, screenshot=None, timeout=30):
    browser = _browser()
    if browser is None:
        return ["no Chromium found: install it (Debian: apt install chromium)"]
    server = _serve(directory)
    url = f"http://127.0.0.1:{server.server_address[1]}/report.html"
    problems = []
    try:
        with tempfile.TemporaryDirectory() as profile, _DevTools(browser, profile) as chrome:
            session = chrome.open(url)
            chrome.send(
                "Emulation.setDeviceMetricsOverride",
                {"width": WIDTH, "height": 900, "deviceScaleFactor": 1, "mobile": False},
                session,
            )
            deadline = time.monotonic() + timeout
            state = chrome.evaluate(session, RENDERED)
            while time.monotonic() < deadline and not _loaded(state, url):
                time.sleep(0.25)
                state = chrome.evaluate(session, RENDERED)
            if not state or state["href"] != url or state["ready"] != "complete":
                state = None
            problems += _rendering_problems(state)
            if screenshot is not None and state:
                _full_page_shot(chrome, session, state["height"], screenshot)
    finally:
        server.shutdown()
    return problems


def _loaded(state, url):
    return (
        bool(state)
        and state["href"] == url
        and state["ready"] == "complete"
        and all(image["complete"] for image in state["images"])
    )


def _rendering_problems(state):
    if state is None:
        return ["report.html: did not finish loading in Chromium"]
    problems = []
    if not state["title"].strip():
        problems.append("report.html: no title")
    if not state["h1"] or not state["h1"][0]:
        problems.append("report.html: no heading (h1)")
    if not state["sections"]:
        problems.append("report.html: no sections")
    for section in state["sections"]:
        if not section["heading"].strip():
            problems.append(f"report.html: section #{section['id']} has no heading")
    if not state["images"]:
        problems.append("report.html: no figures")
    for image in state["images"]:
        if image["width"] <= 0:
            problems.append(f"report.html: image {image['alt']!r} did not load")
    if state["scrollWidth"] > state["innerWidth"]:
        problems.append(
            f"report.html: the page is {state['scrollWidth']} px wide, wider than the "
            f"{state['innerWidth']} px window"
        )
    return problems


def _full_page_shot(chrome, session, height, path):
    clip = {"x": 0, "y": 0, "width": WIDTH, "height": height, "scale": 1}
    shot = chrome.send(
        "Page.captureScreenshot",
        {"format": "png", "captureBeyondViewport": True, "clip": clip},
        session,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))
    print(f"screenshot: {path}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=pathlib.Path, help="the folder holding report.html")
    parser.add_argument("--screenshot", type=pathlib.Path, help="save the whole page as a PNG")
    args = parser.parse_args(argv)
    directory = args.report.resolve()
    page = directory / "report.html"
    if not page.is_file():
        parser.error(f"no report.html in {args.report}: write the report first")
    problems = check_page(page) + check_json(directory, page)
    problems += check_in_browser(directory, args.screenshot)
    if not problems:
        print(f"{page}: renders in Chromium, its figures load, it links nowhere else")
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
