"""Check an HTML report in a real headless Chromium, over plain W3C WebDriver.

No selenium or playwright: :func:`check_html_in_browser` starts ``chromedriver`` on a free
localhost port, talks to it with :mod:`urllib` (proxies bypassed), opens the report's
``file://`` URL in a fresh headless profile, waits for the page and its images, and returns
what the page looks like from inside the browser: how many images there are, which are
broken (not complete, or zero natural width), the title, the length of the body text, any
http(s) resources the page fetched (a self-contained report fetches none), and a
screenshot. The session is deleted and chromedriver killed in every case.

:class:`BrowserSession` is the same browser kept open for several steps (open a page, run
a script, find an element, click it, type into it), which the interactive-report tests use.

Command line (exit 0: fine; 1: a broken or missing image, or an external fetch; 2: no
browser)::

    python -m speechssl.benchmark.browser runs/report/report.html --screenshot shot.png
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from speechssl.errors import SpeechSSLError

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

_WAIT_AND_COLLECT = r"""
const done = arguments[arguments.length - 1];
function collect() {
  const images = Array.from(document.images);
  const broken = images
    .filter((img) => !img.complete || img.naturalWidth === 0)
    .map((img) => (img.getAttribute("src") || "").slice(0, 64));
  const external = performance.getEntriesByType("resource")
    .map((entry) => entry.name)
    .filter((name) => /^https?:/i.test(name));
  done({
    images: images.length,
    broken: broken,
    title: document.title,
    text_length: document.body ? document.body.innerText.length : 0,
    external: external,
    page_height: document.documentElement.scrollHeight,
  });
}
function waitForImages() {
  const pending = Array.from(document.images).filter((img) => !img.complete);
  if (pending.length === 0) { collect(); return; }
  Promise.all(pending.map((img) => new Promise((resolve) => {
    img.addEventListener("load", resolve, {once: true});
    img.addEventListener("error", resolve, {once: true});
  }))).then(collect);
}
if (document.readyState === "complete") { waitForImages(); }
else { window.addEventListener("load", waitForImages, {once: true}); }
"""


class BrowserError(SpeechSSLError, RuntimeError):
    """The browser check could not run (chromedriver failed, the page did not load...)."""


class BrowserUnavailable(BrowserError):
    """Chromium or chromedriver is not installed where we were told to look."""

    exit_code = 2


def _resolve(path: str) -> str | None:
    """An executable path as given, or found on PATH by name; None when absent."""
    if os.sep in path:
        return path if os.path.isfile(path) and os.access(path, os.X_OK) else None
    return shutil.which(path)


def available(chromium: str = CHROMIUM, chromedriver: str = CHROMEDRIVER) -> bool:
    """Whether both Chromium and chromedriver are installed (nothing is started)."""
    return _resolve(chromium) is not None and _resolve(chromedriver) is not None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _WebDriver:
    """The few W3C WebDriver endpoints we need, over urllib without proxies."""

    def __init__(self, base: str, timeout: float) -> None:
        self.base = base
        self.timeout = timeout
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def call(self, method: str, path: str, body: dict[str, Any] | None = None,
             timeout: float | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method,
                                         headers={"Content-Type": "application/json; charset=utf-8"})
        try:
            with self._opener.open(request, timeout=timeout or self.timeout) as response:
                payload = json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:  # WebDriver errors come as 4xx/5xx with a JSON body
            try:
                value = json.loads(exc.read()).get("value", {})
                detail = f"{value.get('error')}: {value.get('message', '').splitlines()[0]}"
            except Exception:  # noqa: BLE001 - any unreadable body: report the status alone
                detail = f"HTTP {exc.code}"
            raise BrowserError(f"WebDriver {method} {path} failed: {detail}") from None
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            raise BrowserError(f"WebDriver {method} {path} failed: {exc}") from exc
        return payload.get("value")


_ELEMENT_KEY = "element-6066-11e4-a52e-4f735466cecf"  # the W3C web element reference


@dataclass(frozen=True)
class Element:
    """A DOM element of the open page, as WebDriver refers to it (pass it to the session's
    methods, or as an argument of :meth:`BrowserSession.execute`)."""

    id: str


def _to_wire(value: Any) -> Any:
    if isinstance(value, Element):
        return {_ELEMENT_KEY: value.id}
    if isinstance(value, (list, tuple)):
        return [_to_wire(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_wire(v) for k, v in value.items()}
    return value


def _from_wire(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {_ELEMENT_KEY}:
            return Element(value[_ELEMENT_KEY])
        return {k: _from_wire(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_wire(v) for v in value]
    return value


class BrowserSession:
    """One headless Chromium kept open across several steps, over W3C WebDriver::

        with BrowserSession(timeout=30) as browser:
            browser.open("runs/report/report.html")
            header = browser.find("#tab-cost th")
            browser.click(header)
            order = browser.execute("return [...document.querySelectorAll('#tab-cost td:first-child')]"
                                    ".map((td) => td.textContent)")

    Starts ``chromedriver`` on a free localhost port and a session in a fresh temporary
    profile with networking side channels off; :meth:`close` (or leaving the ``with``)
    deletes the session, stops chromedriver and removes the profile, also after an error.
    Raises :class:`BrowserUnavailable` when either executable is absent and
    :class:`BrowserError` when chromedriver or a command fails.
    """

    def __init__(self, *, chromium: str = CHROMIUM, chromedriver: str = CHROMEDRIVER, timeout: float = 60,
                 window: tuple[int, int] = (1280, 2000)) -> None:
        self.chromium, self.chromedriver = _resolve(chromium), _resolve(chromedriver)
        missing = [name for name, found in ((chromium, self.chromium), (chromedriver, self.chromedriver))
                   if found is None]
        if missing:
            raise BrowserUnavailable(
                f"cannot check the report in a browser: {', '.join(missing)} not found "
                "(Debian: apt-get install chromium chromium-driver)"
            )
        self.timeout = timeout
        self.window = window
        self._proc: subprocess.Popen | None = None
        self._profile: str | None = None
        self._log: Any = None
        self._driver: _WebDriver | None = None
        self.session: str | None = None

    def __enter__(self) -> "BrowserSession":
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def start(self) -> "BrowserSession":
        """Start chromedriver and a browser session (done by ``with``)."""
        if self.session is not None:
            return self
        port = _free_port()
        self._profile = tempfile.mkdtemp(prefix="speechssl-chromium-")
        self._log = tempfile.NamedTemporaryFile(prefix="chromedriver-", suffix=".log", delete=False)
        self._driver = _WebDriver(f"http://127.0.0.1:{port}", self.timeout)
        try:
            self._proc = subprocess.Popen([self.chromedriver, f"--port={port}"], stdout=self._log,
                                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            _wait_ready(self._driver, self._proc, self.timeout, self._log.name)
            width, height = self.window
            args = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", f"--user-data-dir={self._profile}", f"--window-size={width},{height}"]
            caps = {"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "pageLoadStrategy": "normal",
                "goog:chromeOptions": {"binary": self.chromium, "args": args},
            }}}
            created = self._driver.call("POST", "/session", caps, timeout=self.timeout)
            self.session = created["sessionId"]
            ms = int(self.timeout * 1000)
            self._call("POST", "/timeouts", {"script": ms, "pageLoad": ms})
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Delete the session, stop chromedriver, remove the profile (safe to call twice)."""
        if self.session is not None and self._driver is not None:
            try:
                self._driver.call("DELETE", f"/session/{self.session}", timeout=10)
            except Exception:  # noqa: BLE001 - cleanup must not hide the real error
                pass
        self.session = None
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        if self._log is not None:
            self._log.close()
            try:
                os.unlink(self._log.name)
            except OSError:
                pass
            self._log = None
        if self._profile is not None:
            shutil.rmtree(self._profile, ignore_errors=True)
            self._profile = None

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        if self.session is None or self._driver is None:
            raise BrowserError("the browser session is not started (use it in a with block)")
        return self._driver.call(method, f"/session/{self.session}{path}", body)

    def open(self, target: str | Path) -> None:
        """Navigate to a URL, or to a local file (a path), and wait for the page to load."""
        url = str(target)
        if not re.match(r"^[a-z][a-z0-9+.-]*:", url, flags=re.IGNORECASE):
            path = Path(target).resolve()
            if not path.is_file():
                raise BrowserError(f"{path}: no such file")
            url = path.as_uri()
        self._call("POST", "/url", {"url": url})

    def execute(self, script: str, *args: Any) -> Any:
        """Run ``script`` as a function body in the page (``arguments`` holds ``args``; an
        :class:`Element` passes as the DOM node); returns what it returns, DOM nodes as
        :class:`Element`."""
        return _from_wire(self._call("POST", "/execute/sync", {"script": script, "args": _to_wire(list(args))}))

    def execute_async(self, script: str, *args: Any) -> Any:
        """Like :meth:`execute`, but the script ends by calling its last argument with the result."""
        return _from_wire(self._call("POST", "/execute/async", {"script": script, "args": _to_wire(list(args))}))

    def find(self, css: str) -> Element:
        """The first element matching the CSS selector (:class:`BrowserError` when none does)."""
        return _from_wire(self._call("POST", "/element", {"using": "css selector", "value": css}))

    def find_all(self, css: str) -> list[Element]:
        """Every element matching the CSS selector, in document order (maybe none)."""
        return _from_wire(self._call("POST", "/elements", {"using": "css selector", "value": css}))

    def click(self, element: Element) -> None:
        """Click the element as a user would (scrolled into view; an ``<option>`` gets selected)."""
        self._call("POST", f"/element/{element.id}/click", {})

    def send_keys(self, element: Element, text: str) -> None:
        """Type ``text`` into the element (focused first), firing the usual key and input events."""
        self._call("POST", f"/element/{element.id}/value", {"text": text})

    def clear(self, element: Element) -> None:
        """Empty a text field."""
        self._call("POST", f"/element/{element.id}/clear", {})

    def external_requests(self) -> list[str]:
        """The http(s) URLs the current page has fetched so far (a self-contained page: none)."""
        return self.execute("return performance.getEntriesByType('resource').map((e) => e.name)"
                            ".filter((name) => /^https?:/i.test(name));")

    def screenshot(self, full_page: bool = True) -> bytes:
        """A PNG of the page: its whole height when ``full_page`` (Chrome's DevTools endpoint),
        else the window."""
        if self.session is None or self._driver is None:
            raise BrowserError("the browser session is not started (use it in a with block)")
        return _screenshot(self._driver, self.session, full_page)


def check_html_in_browser(
    html_path: str | Path,
    screenshot_path: str | Path | None,
    *,
    chromium: str = CHROMIUM,
    chromedriver: str = CHROMEDRIVER,
    timeout: float = 60,
    full_page: bool = True,
) -> dict[str, Any]:
    """Open ``html_path`` in headless Chromium; return what the page shows.

    Returns ``{"images", "broken", "title", "text_length", "external", "page_height",
    "screenshot"}``: ``broken`` lists the first 64 characters of each broken image's
    ``src``; ``external`` the http(s) URLs the page fetched; ``screenshot`` the PNG path
    written (None when ``screenshot_path`` is None). ``full_page`` captures the whole page
    height (through Chrome's DevTools endpoint) rather than the 1280×2000 window, falling
    back to the window when that endpoint is refused.

    Raises :class:`BrowserUnavailable` when either executable is absent and
    :class:`BrowserError` when chromedriver or the page fails.
    """
    html_path = Path(html_path).resolve()
    if not html_path.is_file():
        raise BrowserError(f"{html_path}: no such file")
    try:
        with BrowserSession(chromium=chromium, chromedriver=chromedriver, timeout=timeout) as browser:
            browser.open(html_path)
            info = browser.execute_async(_WAIT_AND_COLLECT)
            if not isinstance(info, dict):
                raise BrowserError(f"the page check returned {info!r}")
            info["screenshot"] = None
            if screenshot_path is not None:
                png = browser.screenshot(full_page)
                screenshot_path = Path(screenshot_path)
                screenshot_path.parent.mkdir(parents=True, exist_ok=True)
                screenshot_path.write_bytes(png)
                info["screenshot"] = str(screenshot_path)
            return info
    except BrowserError:
        raise
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise BrowserError(f"browser check of {html_path} failed: {exc}") from exc


def _wait_ready(driver: _WebDriver, proc: subprocess.Popen, timeout: float, log_path: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log = Path(log_path).read_text(errors="replace").strip()
            raise BrowserError(f"chromedriver exited with code {proc.returncode}: {log[-500:]}")
        try:
            status = driver.call("GET", "/status", timeout=2)
            if isinstance(status, dict) and status.get("ready"):
                return
        except (BrowserError, urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise BrowserError(f"chromedriver did not become ready within {timeout:g} s")


def _screenshot(driver: _WebDriver, session: str, full_page: bool) -> bytes:
    if full_page:
        try:
            metrics = driver.call("POST", f"/session/{session}/goog/cdp/execute",
                                  {"cmd": "Page.getLayoutMetrics", "params": {}})
            size = metrics.get("cssContentSize") or metrics["contentSize"]
            shot = driver.call("POST", f"/session/{session}/goog/cdp/execute", {
                "cmd": "Page.captureScreenshot",
                "params": {"format": "png", "captureBeyondViewport": True,
                           "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}},
            })
            return base64.b64decode(shot["data"])
        except (BrowserError, KeyError, TypeError):
            pass  # not a Chrome-flavoured driver: the window is what we can get
    return base64.b64decode(driver.call("GET", f"/session/{session}/screenshot"))


def count_img_tags(html: str) -> int:
    """How many ``<img`` tags the HTML source holds (what the browser should find)."""
    return len(re.findall(r"<img\b", html, flags=re.IGNORECASE))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m speechssl.benchmark.browser",
                                     description="Render an HTML report in headless Chromium and check its images.")
    parser.add_argument("html", type=Path, help="the report.html to check")
    parser.add_argument("--screenshot", type=Path, default=None, help="write a full-page PNG screenshot here")
    parser.add_argument("--chromium", default=CHROMIUM)
    parser.add_argument("--chromedriver", default=CHROMEDRIVER)
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    try:
        info = check_html_in_browser(args.html, args.screenshot, chromium=args.chromium,
                                     chromedriver=args.chromedriver, timeout=args.timeout)
    except SpeechSSLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    expected = count_img_tags(args.html.read_text(errors="replace"))
    info["expected_images"] = expected
    print(json.dumps(info, indent=2, sort_keys=True))
    problems = []
    if info["broken"]:
        problems.append(f"{len(info['broken'])} broken image(s)")
    if info["images"] < expected:
        problems.append(f"{info['images']} image(s) rendered, {expected} in the source")
    if info["external"]:
        problems.append(f"{len(info['external'])} external fetch(es)")
    if problems:
        print("FAILED: " + "; ".join(problems), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
