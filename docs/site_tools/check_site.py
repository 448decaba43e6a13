"""Checks the built documentation site: links, then every page and the search in Chromium.

    python docs/site_tools/check_site.py site [--no-browser] [--screenshots DIR]

1. Every internal link of every page (`href` to a page, a file or an `#anchor`)
   resolves to a file of the site, and the anchor to an element id of its page.
2. In headless Chromium, served over HTTP as a reader would get it: every page
   loads and renders its content (the theme's article and the page's heading,
   after the scripts ran), and the search, given a query in the address
   (`?q=...`, the theme's shareable search), lists results that link to pages.
3. `--screenshots DIR` saves the home page and one guide as PNG files.

Exits 1 with one line per problem.
"""

import argparse
import functools
import html.parser
import http.server
import itertools
import json
import os
import pathlib
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")
SEARCHES = {"fine_tune": "api/training.html", "BatchNorm": "freezing.html"}
SHOTS = {"home.png": "index.html", "guide_fine_tuning.png": "fine_tuning.html"}


class _Page(html.parser.HTMLParser):
    """The links and element ids of one HTML page."""

    def __init__(self):
        super().__init__()
        self.links, self.ids = [], set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])
        if tag in ("link", "script", "img") and (attrs.get("href") or attrs.get("src")):
            self.links.append(attrs.get("href") or attrs.get("src"))


def _parse(path):
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def check_links(site):
    problems, parsed = [], {}
    pages = sorted(site.rglob("*.html"))
    for path in pages:
        parsed[path] = _parse(path)
    for path in pages:
        for href in parsed[path].links:
            url = urllib.parse.urlsplit(href)
            if url.scheme or href.startswith("//") or href.startswith("mailto:"):
                continue
            base = site if url.path.startswith("/") else path.parent
            link = urllib.parse.unquote(url.path).lstrip("/")
            target = (base / link).resolve() if url.path else path
            if target.is_dir():
                target = target / "index.html"
            name = path.relative_to(site)
            if not target.is_file():
                problems.append(f"{name}: link to a missing file: {href}")
                continue
            if url.fragment and target.suffix == ".html":
                ids = parsed[target].ids if target in parsed else _parse(target).ids
                if url.fragment not in ids:
                    problems.append(f"{name}: link to a missing anchor: {href}")
    return pages, problems


def _browser():
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    return None


def _dom(browser, url, profile, budget_ms=8000):
    command = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        f"--user-data-dir={profile}",
        f"--virtual-time-budget={budget_ms}",
        "--dump-dom",
        url,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    return done.stdout


class _DevTools:
    """Chromium driven through its DevTools protocol on a pipe (no extra package)."""

    def __init__(self, browser, profile):
        self.browser, self.profile, self.ids = browser, profile, itertools.count(1)

    def __enter__(self):
        to_chrome_r, self.to_chrome = os.pipe()
        self.from_chrome, from_chrome_w = os.pipe()

        def pipes():  # Chromium reads commands on fd 3 and answers on fd 4
            os.dup2(to_chrome_r, 3)
            os.dup2(from_chrome_w, 4)

        self.process = subprocess.Popen(
            [
                self.browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                f"--user-data-dir={self.profile}-devtools",
                "--remote-debugging-pipe",
                "about:blank",
            ],
            preexec_fn=pipes,
            close_fds=False,  # fds 3 and 4, made in `pipes`, must reach Chromium
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self.buffer = b""
        return self

    def __exit__(self, *exc):
        self.process.kill()
        self.process.wait()
        os.close(self.to_chrome)
        os.close(self.from_chrome)

    def send(self, method, params=None, session=None, timeout=30):
        message = {"id": next(self.ids), "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.to_chrome, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            while b"\0" in self.buffer:
                raw, self.buffer = self.buffer.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == message["id"]:
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    return reply.get("result", {})
            ready, _, _ = select.select([self.from_chrome], [], [], 1.0)
            if ready:
                self.buffer += os.read(self.from_chrome, 1 << 20)
        raise TimeoutError(f"Chromium did not answer {method} in {timeout} s")

    def open(self, url):
        target = self.send("Target.createTarget", {"url": url})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})
        return session["sessionId"]

    def evaluate(self, session, expression):
        result = self.send(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True}, session
        )
        return result.get("result", {}).get("value")


SEARCH = """(() => {
  const input = document.querySelector('[data-md-component="search-query"]');
  if (!input) return null;
  input.value = %s;
  input.dispatchEvent(new Event('focus'));
  input.dispatchEvent(new Event('input', {bubbles: true}));
  input.dispatchEvent(new KeyboardEvent('keyup', {bubbles: true, key: 'e'}));
  return true;
})()"""
RESULTS = """Array.from(document.querySelectorAll('.md-search-result__item a'))
  .map(a => a.getAttribute('href'))"""


def _search(chrome, base, query, expected, timeout=20):
    """Types `query` into the search box of the home page; a result must link to `expected`."""
    session = chrome.open(base + "index.html")
    deadline = time.monotonic() + timeout
    links = []
    while time.monotonic() < deadline:
        loaded = "document.readyState == 'complete' && location.href.startsWith(%s)"
        if chrome.evaluate(session, loaded % json.dumps(base)):
            typed = chrome.evaluate(session, SEARCH % json.dumps(query))
            if typed is None:
                return [f"search for {query!r}: no search box on the home page"]
            time.sleep(0.5)
            links = chrome.evaluate(session, RESULTS) or []
            if links:
                break
        time.sleep(0.5)
    if not links:
        return [f"search for {query!r}: no results in Chromium within {timeout} s"]
    pages = {urllib.parse.urlsplit(urllib.parse.urljoin(base, link)).path for link in links}
    if "/" + expected not in pages:
        return [f"search for {query!r}: no result links to {expected} (got {links[:5]})"]
    print(f"search {query!r}: {len(links)} results, {expected} among them")
    return []


def _screenshot(browser, url, out, profile):
    command = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        "--window-size=1280,960",
        "--virtual-time-budget=5000",
        f"--screenshot={out}",
        url,
    ]
    subprocess.run(command, capture_output=True, timeout=120, check=True)


def _serve(site):
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def check_in_browser(site, pages, screenshots=None):
    browser = _browser()
    if browser is None:
        return [
            f"no Chromium found (looked for {', '.join(BROWSERS)}): install it or pass --no-browser"
        ]
    problems = []
    server = _serve(site)
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    with tempfile.TemporaryDirectory() as profile:
        for path in pages:
            name = path.relative_to(site).as_posix()
            if name == "404.html":
                continue
            dom = _dom(browser, base + name, profile, budget_ms=3000)
            if 'class="md-content"' not in dom or "<h1" not in dom:
                problems.append(f"{name}: did not render in Chromium (no article or heading)")
        with _DevTools(browser, profile) as chrome:
            for query, expected in SEARCHES.items():
                problems += _search(chrome, base, query, expected)
        if screenshots is not None:
            screenshots.mkdir(parents=True, exist_ok=True)
            for out, page in SHOTS.items():
                _screenshot(browser, base + page, screenshots / out, profile)
                print(f"screenshot: {screenshots / out}")
    server.shutdown()
    return problems


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("site", type=pathlib.Path, help="the built site's folder")
    parser.add_argument("--no-browser", action="store_true", help="check the links only")
    parser.add_argument("--screenshots", type=pathlib.Path, help="folder for PNG screenshots")
    args = parser.parse_args(argv)
    site = args.site.resolve()
    if not (site / "index.html").is_file():
        parser.error(f"no index.html in {args.site}: build the site first (mkdocs build)")
    pages, problems = check_links(site)
    print(f"{len(pages)} pages, links checked")
    if not args.no_browser:
        problems += check_in_browser(site, pages, args.screenshots)
        if not problems:
            print(f"{len(pages)} pages rendered in Chromium")
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
