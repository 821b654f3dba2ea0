"""The HTML report's sortable, filterable tables: the markup, the escaping, and a real
headless Chromium clicking headers and typing filters (one browser session for all of it).

No torch anywhere. The browser tests are skipped only when chromium/chromedriver are missing.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from html.parser import HTMLParser

import pytest

from speechssl.benchmark import browser
from speechssl.benchmark.report import _SCRIPT, build_report

NO_BROWSER = "chromium and chromedriver are not installed (Debian: apt-get install chromium chromium-driver)"
needs_browser = pytest.mark.skipif(not browser.available(), reason=NO_BROWSER)

# ASR CER in percent: string order ("11.50" < "35.50" < "8.500") differs from numeric order.
ASR = {"mfcc": 35.0, "hubert": 8.0, "wavlm": 12.25}
ACC = {"mfcc": 0.70, "hubert": 0.86, "wavlm": 0.88}
PARAMS = {"mfcc": None, "hubert": 316_000_000, "wavlm": 1_200_000_000}  # "–", "316M", "1.2G"
WALL = {"mfcc": 4.0, "hubert": 10.0, "wavlm": 20.0}  # per run; summed over 12 runs: "48 s", "2 min", "4 min"
LANGS = ("de", "en", "fr")

# Data-derived strings that would be markup if they reached the page unescaped.
EVIL_UPSTREAM = "<script>alert(1)</script>"
EVIL_PROBE = '"onmouseover=alert(2) x="'
EVIL_TASK = "t&amp;<b onclick=alert(3)>"
EVIL_RUN = "<img src=x onerror=alert(4)>"
EVIL_LANG = "<i>xx</i>"


def _store(asr=ASR, acc=ACC, params=PARAMS, *, probe_b="bilstm_ctc", task_b="lid", failed_run=None, lang=None):
    """ASR (lower is better) and LID/ER (higher is better, per-language scores) for each
    upstream, two probes, two seeds; costs per run; optionally a failed run."""
    rows, runs = [], []
    langs = LANGS + ((lang,) if lang else ())
    for up in asr:
        for task, metric, hib, probes, base in (("asr", "cer", False, ("linear_ctc", probe_b), asr[up]),
                                                (task_b, "accuracy", True, ("xvector", "linear"), acc[up]),
                                                ("er", "accuracy", True, ("xvector", "linear"), acc[up] - 0.1)):
            for p_index, probe in enumerate(probes):
                for seed in (0, 1):
                    value = base + (1 if task == "asr" else -0.01) * (3 * p_index + seed)
                    ident = dict(run_id=f"{up}-{task}-{probe}-{seed}", upstream=up, task=task, probe=probe,
                                 regime="frozen", seed=seed, dataset="synth")
                    score = dict(ident, split="test", metric=metric, higher_is_better=hib, status="finished",
                                 source="bench")
                    rows.append(dict(score, language="", value=value))
                    if task != "asr":
                        rows += [dict(score, language=lg, value=value - 0.02 * i) for i, lg in enumerate(langs)]
                    runs.append(dict(ident, status="finished", source="bench", primary_metric=metric,
                                     upstream_params=params[up], wall_seconds=WALL.get(up, 1.0), extra={}))
    if failed_run:
        runs.append(dict(run_id=failed_run, upstream=next(iter(asr)), task="asr", probe="linear_ctc",
                         regime="frozen", seed=9, dataset="synth", status="failed", source="sweep",
                         error=f"boom {failed_run}", extra={}))
    return rows, runs


def _evil_store():
    asr = {EVIL_UPSTREAM: 20.0, "mfcc": 30.0}
    acc = {EVIL_UPSTREAM: 0.9, "mfcc": 0.7}
    return _store(asr, acc, {EVIL_UPSTREAM: 1000, "mfcc": None}, probe_b=EVIL_PROBE, task_b=EVIL_TASK,
                  failed_run=EVIL_RUN, lang=EVIL_LANG)


class _Page(HTMLParser):
    """Every start tag with its attributes, the scripts' contents and the text outside them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[str] = []
        self.text: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag in ("script", "style"):
            self._in = tag
            if tag == "script":
                self.scripts.append("")

    def handle_startendtag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag):
        if tag == self._in:
            self._in = None

    def handle_data(self, data):
        if self._in == "script":
            self.scripts[-1] += data
        elif self._in is None:
            self.text.append(data)


def _parse(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    page.close()
    return page


ALLOWED_TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "p", "nav", "ul", "li", "a", "section",
                "h2", "table", "caption", "thead", "tbody", "tr", "th", "td", "figure", "img", "figcaption", "code",
                "script"}


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    out = tmp_path_factory.mktemp("interactive")
    report = build_report(*_store(), title="interactive", timestamp=False)
    evil = build_report(*_evil_store(), title="evil " + EVIL_UPSTREAM, timestamp=False)
    paths = {"main": report.write(out / "main", formats=("md", "html", "tex")),
             "evil": evil.write(out / "evil", formats=("md", "html", "tex"))}
    return {"main": report, "evil": evil}, paths


# ---------------------------------------------------------------------------- markup


def test_tables_carry_data_attributes_and_one_script(pages):
    reports, paths = pages
    report, html = reports["main"], paths["main"]["html"].read_text()
    page = _parse(html)
    tables = {attrs["id"]: attrs for tag, attrs in page.tags if tag == "table"}
    assert len(tables) == len(report.tables)
    for table in report.tables:
        attrs = tables[table.label.replace(":", "-")]
        assert ("data-sortable" in attrs) == (len(table.rows) >= 2)
        assert ("data-filterable" in attrs) == (len(table.rows) >= 4)  # no filter bar over 2 or 3 rows
    assert tables["tab-leaderboard-asr-synth"]["data-filter-columns"] == "0"  # probe
    multi = tables["tab-multilingual-accuracy"]  # task probe upstream languages macro std worst-n worst-languages
    assert multi["data-filter-columns"] == "0 1 7" and multi["data-filter-lists"] == "7"
    assert "data-filter-columns" not in tables["tab-cost"]
    # one script, ours, allowed by hash in a policy that allows nothing else to load or run
    assert page.scripts == [_SCRIPT] and html.count("<script") == 1
    csp = next(attrs["content"] for tag, attrs in page.tags
               if tag == "meta" and attrs.get("http-equiv") == "Content-Security-Policy")
    digest = base64.b64encode(hashlib.sha256(_SCRIPT.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in csp and "default-src 'none'" in csp
    # progressive enhancement: no controls in the source (the script adds them), cells in build order
    assert not any(tag in ("input", "select", "button", "form") for tag, _ in page.tags)
    board = next(t for t in report.tables if t.label == "tab:leaderboard-asr-synth")
    first_column = re.findall(r"<tr><td>([^<]*)</td>", html.split('id="tab-leaderboard-asr-synth"')[1])
    assert first_column[:len(board.rows)] == [row[0] for row in board.rows]
    # the script is data-free: no upstream, task, probe or number from the store in it
    for name in ("mfcc", "hubert", "wavlm", "linear_ctc", "xvector", "asr", "lid"):
        assert name not in _SCRIPT
    # Markdown and LaTeX know nothing of it
    for key in ("md", "tex"):
        text = paths["main"][key].read_text()
        assert "data-sortable" not in text and "<script" not in text and "filter" not in text.lower()


def test_no_script_when_no_table_has_two_rows():
    html = build_report([], [], timestamp=False).to_html()
    assert "<script" not in html and "script-src 'none'" in html and "data-sortable" not in html


def test_data_derived_strings_are_escaped(pages):
    reports, paths = pages
    html = paths["evil"]["html"].read_text()
    page = _parse(html)
    assert page.scripts == [_SCRIPT]  # no injected <script> element
    assert {tag for tag, _ in page.tags} <= ALLOWED_TAGS  # no injected <b>, <i>, <img src=x>
    for tag, attrs in page.tags:
        assert not [name for name in attrs if name.startswith("on")], (tag, attrs)
        if tag == "img":
            assert attrs["src"].startswith("data:image/png;base64,")
    for raw in (EVIL_UPSTREAM, EVIL_RUN, "<b onclick", "<i>xx"):
        assert raw not in html
    text = "".join(page.text)
    for literal in (EVIL_UPSTREAM, EVIL_PROBE, EVIL_TASK, EVIL_RUN, EVIL_LANG):
        assert literal in text, literal  # shown as text, after the parser unescapes it
    assert "&amp;amp;" in html  # "&amp;" in a name is escaped, not passed through as an entity
    # the table attributes hold column indices only
    for tag, attrs in page.tags:
        if tag == "table":
            for name in ("data-filter-columns", "data-filter-lists"):
                assert re.fullmatch(r"[0-9 ]*", attrs.get(name, ""))


# ---------------------------------------------------------------------------- in Chromium

_ROWS = """
const table = document.getElementById(arguments[0]);
return Array.from(table.tBodies[0].rows).filter((row) => !row.hidden)
  .map((row) => Array.from(row.cells, (cell) => cell.textContent));
"""
_STATE = """
const table = document.getElementById(arguments[0]);
const bar = document.querySelector('.table-filter[aria-controls="' + arguments[0] + '"]');
return {
  sort: Array.from(table.tHead.rows[0].cells, (th) => th.getAttribute("aria-sort")),
  count: bar ? bar.querySelector(".table-count").textContent : null,
  selects: bar ? Array.from(bar.querySelectorAll("select"),
                            (s) => [s.dataset.column, Array.from(s.options, (o) => o.value)]) : [],
};
"""


@pytest.fixture(scope="module")
def chromium():
    if not browser.available():
        pytest.skip(NO_BROWSER)
    with browser.BrowserSession(timeout=30, window=(1280, 1600)) as session:
        yield session


def _header(session: browser.BrowserSession, table_id: str, name: str) -> browser.Element:
    headers = session.find_all(f"#{table_id} thead th")
    names = [session.execute("return arguments[0].textContent.trim()", th) for th in headers]
    return headers[names.index(name)]


@needs_browser
def test_sort_and_filter_in_chromium(pages, chromium, tmp_path):
    started = time.monotonic()
    reports, paths = pages
    chromium.open(paths["main"]["html"])
    n_filterable = chromium.execute("return document.querySelectorAll('table[data-filterable]').length")
    assert chromium.execute("return document.querySelectorAll('.table-filter').length") == n_filterable >= 4

    # a numeric column: "9.500 ± 0.7071" style cells sort as numbers, then reverse
    board = "tab-leaderboard-asr-synth"
    built = chromium.execute(_ROWS, board)
    cer = _header(chromium, board, "cer ↓")
    chromium.click(cer)
    ascending = chromium.execute(_ROWS, board)
    values = [float(row[4].split()[0]) for row in ascending]
    assert values == sorted(values) and len(values) == 6
    assert [row[4] for row in ascending] != sorted(row[4] for row in built)  # not string order
    assert ascending[0][2] == "hubert" and ascending[-1][2] == "mfcc"
    assert chromium.execute(_STATE, board)["sort"] == [None, None, None, None, "ascending"]
    chromium.click(cer)
    descending = chromium.execute(_ROWS, board)
    assert [float(row[4].split()[0]) for row in descending] == sorted(values, reverse=True)
    assert chromium.execute(_STATE, board)["sort"][4] == "descending"
    # a text column
    chromium.click(_header(chromium, board, "upstream"))
    assert [row[2] for row in chromium.execute(_ROWS, board)] == ["hubert"] * 2 + ["mfcc"] * 2 + ["wavlm"] * 2
    assert chromium.execute(_STATE, board)["sort"] == [None, None, "ascending", None, None]

    # SI suffixes are numbers, a dash sorts last both ways
    params = _header(chromium, "tab-cost", "params")
    chromium.click(params)
    assert [row[0] for row in chromium.execute(_ROWS, "tab-cost")] == ["hubert", "wavlm", "mfcc"]
    chromium.click(params)
    assert [row[0] for row in chromium.execute(_ROWS, "tab-cost")] == ["wavlm", "hubert", "mfcc"]
    chromium.click(_header(chromium, "tab-cost", "wall time"))  # seconds, minutes, hours
    assert [row[4] for row in chromium.execute(_ROWS, "tab-cost")] == ["48 s", "2 min", "4 min"]

    # filters: a select per task/probe column (and the worst-languages list), a text box, a counter
    multi = "tab-multilingual-accuracy"
    state = chromium.execute(_STATE, multi)
    assert state["count"] == "12 of 12 rows"
    assert state["selects"] == [["0", ["", "er", "lid"]], ["1", ["", "linear", "xvector"]],
                                ["7", ["", "de", "en", "fr"]]]
    bar = f'.table-filter[aria-controls="{multi}"]'
    chromium.click(chromium.find(f'{bar} select[data-column="0"] option[value="lid"]'))
    rows = chromium.execute(_ROWS, multi)
    assert {row[0] for row in rows} == {"lid"} and len(rows) == 6
    assert chromium.execute(_STATE, multi)["count"] == "6 of 12 rows"
    search = chromium.find(f"{bar} input[type=search]")
    chromium.send_keys(search, "XVEC")
    rows = chromium.execute(_ROWS, multi)
    assert sorted((row[0], row[1], row[2]) for row in rows) == [("lid", "xvector", up) for up in
                                                                ("hubert", "mfcc", "wavlm")]
    assert chromium.execute(_STATE, multi)["count"] == "3 of 12 rows"
    chromium.send_keys(search, " wav")  # every word must match
    assert [row[2] for row in chromium.execute(_ROWS, multi)] == ["wavlm"]
    chromium.click(chromium.find(f'{bar} select[data-column="0"] option[value=""]'))
    assert sorted(row[0] for row in chromium.execute(_ROWS, multi)) == ["er", "lid"]
    chromium.clear(search)
    chromium.send_keys(search, " ")  # fires input with an empty filter again
    assert chromium.execute(_STATE, multi)["count"] == "12 of 12 rows"
    # sorting keeps the filter: hidden rows stay hidden
    chromium.click(chromium.find(f'{bar} select[data-column="1"] option[value="linear"]'))
    chromium.click(_header(chromium, multi, "macro accuracy ↑"))
    rows = chromium.execute(_ROWS, multi)
    assert {row[1] for row in rows} == {"linear"} and len(rows) == 6
    assert [float(row[4]) for row in rows] == sorted(float(row[4]) for row in rows)

    shot = chromium.screenshot(full_page=False)
    (tmp_path / "interactive.png").write_bytes(shot)
    assert chromium.external_requests() == []
    assert time.monotonic() - started < 20


@needs_browser
def test_escaped_names_render_as_text_in_chromium(pages, chromium):
    reports, paths = pages
    chromium.open(paths["evil"]["html"])  # an alert would make every following command fail
    info = chromium.execute("""
      const all = Array.from(document.querySelectorAll("*"));
      return {
        scripts: document.scripts.length,
        handlers: all.filter((el) => Array.from(el.attributes).some((a) => /^on/i.test(a.name))).length,
        tags: Array.from(new Set(all.map((el) => el.localName))).sort(),
        title: document.title,
        cells: Array.from(document.querySelectorAll("td"), (td) => td.textContent),
        options: Array.from(document.querySelectorAll(".table-filter option"), (o) => o.value),
      };
    """)
    assert info["scripts"] == 1 and info["handlers"] == 0
    assert set(info["tags"]) <= ALLOWED_TAGS | {"div", "label", "select", "option", "input", "span"}
    assert info["title"] == "evil " + EVIL_UPSTREAM
    for literal in (EVIL_UPSTREAM, EVIL_PROBE, EVIL_TASK):
        assert literal in info["cells"], literal
    assert f"boom {EVIL_RUN}" in info["cells"]  # the failed run's error (its id is cut to 12 characters)
    assert EVIL_PROBE in info["options"] and EVIL_TASK in info["options"] and EVIL_LANG in info["options"]
    # filtering on such a value works on the literal text
    board = "tab-leaderboard-asr-synth"
    option = chromium.find(f'.table-filter[aria-controls="{board}"] select[data-column="0"] option:nth-child(2)')
    chromium.click(option)
    chosen = chromium.execute("return arguments[0].value", option)
    assert {row[0] for row in chromium.execute(_ROWS, board)} == {chosen}
    assert chromium.external_requests() == []


def test_browser_session_needs_the_executables():
    with pytest.raises(browser.BrowserUnavailable, match="not found"):
        browser.BrowserSession(chromedriver="/nonexistent/chromedriver")
