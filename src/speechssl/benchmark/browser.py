"""Check an HTML report in a real headless Chromium, over plain W3C WebDriver.

No selenium or playwright: :func:`check_html_in_browser` starts ``chromedriver`` on a free
localhost port, talks to it with :mod:`urllib` (proxies bypassed), opens the report's
``file://`` URL in a fresh headless profile, waits for the page and its images, and returns
what the page looks like from inside the browser: how many images there are, which are
broken (not complete, or zero natural width), the title, the length of the body text, any
http(s) resources the page fetched (a self-contained report fetches none), and a
screenshot. The session is deleted and chromedriver killed in every case.

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
        return payload.get("value")


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
    chromium_bin, driver_bin = _resolve(chromium), _resolve(chromedriver)
    missing = [name for name, found in ((chromium, chromium_bin), (chromedriver, driver_bin)) if found is None]
    if missing:
        raise BrowserUnavailable(
            f"cannot check the report in a browser: {', '.join(missing)} not found "
            "(Debian: apt-get install chromium chromium-driver)"
        )
    port = _free_port()
    profile = tempfile.mkdtemp(prefix="speechssl-chromium-")
    log_file = tempfile.NamedTemporaryFile(prefix="chromedriver-", suffix=".log", delete=False)
    proc: subprocess.Popen | None = None
    driver = _WebDriver(f"http://127.0.0.1:{port}", timeout)
    session: str | None = None
    try:
        proc = subprocess.Popen([driver_bin, f"--port={port}"], stdout=log_file, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        _wait_ready(driver, proc, timeout, log_file.name)
        args = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1280,2000"]
        caps = {"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "goog:chromeOptions": {"binary": chromium_bin, "args": args},
        }}}
        created = driver.call("POST", "/session", caps, timeout=timeout)
        session = created["sessionId"]
        ms = int(timeout * 1000)
        driver.call("POST", f"/session/{session}/timeouts", {"script": ms, "pageLoad": ms})
        driver.call("POST", f"/session/{session}/url", {"url": html_path.as_uri()})
        info = driver.call("POST", f"/session/{session}/execute/async", {"script": _WAIT_AND_COLLECT, "args": []})
        if not isinstance(info, dict):
            raise BrowserError(f"the page check returned {info!r}")
        info["screenshot"] = None
        if screenshot_path is not None:
            png = _screenshot(driver, session, full_page)
            screenshot_path = Path(screenshot_path)
            screenshot_path.parent.mkdir(parents=True, exist_ok=True)
            screenshot_path.write_bytes(png)
            info["screenshot"] = str(screenshot_path)
        return info
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise BrowserError(f"browser check of {html_path} failed: {exc}") from exc
    finally:
        if session is not None:
            try:
                driver.call("DELETE", f"/session/{session}", timeout=10)
            except Exception:  # noqa: BLE001 - cleanup must not hide the real error
                pass
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log_file.close()
        os.unlink(log_file.name)
        shutil.rmtree(profile, ignore_errors=True)


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
