"""The built site in a real browser: headless Chromium loads the API page, a tutorial and the
equations page from disk (file://, the vendored KaTeX, no network), runs their scripts, and the DOM
it dumps must hold the rendered maths: one KaTeX rendering (``class="katex"``) inside every ``arithmatex`` span that
pymdownx put there, no KaTeX error, and no raw ``$...$`` / ``\\(...\\)`` / ``\\[...\\]`` left in the
text a reader sees.

Set ``KERNELCALC_DOCS_SHOTS=FOLDER`` to also save a 1280x2000 screenshot of each page there.
"""

import importlib.util
import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
PAGES = {"api": 100, "tutorials/activation-limit": 20, "conventions": 100}   # page -> at least this many maths spans

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install chromium)"),
    pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("mkdocstrings") is None,
                       reason="mkdocs / mkdocstrings not installed: pip install -e '.[docs]' (part of '.[dev]')"),
]

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
HIDDEN = {"script", "style", "annotation", "code", "pre", "noscript", "template"}


class MathScan(HTMLParser):
    """Counts the maths of a page and collects the text a reader sees (outside code and scripts)."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack = []            # (tag, is_arithmatex, hidden)
        self.arithmatex = 0        # arithmatex spans/divs
        self.rendered = 0          # ... of which contain a KaTeX rendering
        self.katex = 0             # class="katex" elements
        self.errors = 0            # class="katex-error" elements
        self.text = []
        self._seen_katex = []      # one flag per open arithmatex element

    def handle_starttag(self, tag, attrs):
        classes = (dict(attrs).get("class") or "").split()
        if "katex" in classes:
            self.katex += 1
            if self._seen_katex:
                self._seen_katex[-1] = True
        self.errors += "katex-error" in classes
        is_arith = "arithmatex" in classes
        if is_arith:
            self.arithmatex += 1
            self._seen_katex.append(False)
        if tag in VOID:
            return
        hidden = tag in HIDDEN or bool(self.stack and self.stack[-1][2])
        self.stack.append((tag, is_arith, hidden))

    def handle_startendtag(self, tag, attrs):
        classes = (dict(attrs).get("class") or "").split()
        self.katex += "katex" in classes
        self.errors += "katex-error" in classes

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        while self.stack:                       # tolerate a missing end tag
            open_tag, is_arith, _ = self.stack.pop()
            if is_arith:
                self.rendered += self._seen_katex.pop()
            if open_tag == tag:
                break

    def handle_data(self, data):
        if not (self.stack and self.stack[-1][2]):
            self.text.append(data)


def scan(html: str) -> MathScan:
    p = MathScan()
    p.feed(html)
    p.close()
    return p


RAW_MATHS = ("$", "\\(", "\\)", "\\[", "\\]")


def raw_maths(p: MathScan) -> list[str]:
    """Snippets of visible text that still hold maths delimiters."""
    text = "".join(p.text)
    out = []
    for d in RAW_MATHS:
        i = text.find(d)
        if i >= 0:
            out.append(" ".join(text[max(0, i - 60):i + 60].split()))
    return out


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    res = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(out)],
                         cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return out


def chromium(url: str, profile: Path, *extra: str) -> subprocess.CompletedProcess:
    # --no-sandbox: the sandbox cannot start as root or inside most containers; the pages are our own
    # files.  A private profile folder, so that parallel runs do not share chromium's profile lock.
    args = [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
            f"--user-data-dir={profile}", "--virtual-time-budget=10000", *extra, url]
    return subprocess.run(args, capture_output=True, text=True, timeout=180)


def test_the_scanner_sees_unrendered_maths(site):
    """Without the browser (the HTML as built, before KaTeX runs) the checks below fail: the maths is
    still raw TeX in arithmatex spans, with no KaTeX element."""
    p = scan((site / "api" / "index.html").read_text())
    assert p.arithmatex > PAGES["api"] and p.katex == 0 and p.rendered == 0
    assert any(s for s in raw_maths(p))


@pytest.mark.parametrize("page", list(PAGES))
def test_maths_renders_in_chromium(site, page, tmp_path):
    url = (site / page / "index.html").as_uri()
    static = scan((site / page / "index.html").read_text())
    assert static.arithmatex >= PAGES[page], f"{page}: only {static.arithmatex} maths spans in the built page"

    res = chromium(url, tmp_path / "profile", "--dump-dom")
    assert res.returncode == 0 and "</html>" in res.stdout, res.stderr[-3000:]
    dom = scan(res.stdout)
    assert dom.arithmatex == static.arithmatex, "the browser's DOM lost maths spans"
    assert dom.rendered == dom.arithmatex, \
        f"{page}: {dom.arithmatex - dom.rendered} of {dom.arithmatex} maths spans were not rendered by KaTeX"
    assert dom.katex >= dom.arithmatex
    assert dom.errors == 0, f"{page}: {dom.errors} KaTeX errors (class katex-error)"
    raw = raw_maths(dom)
    assert not raw, f"{page}: raw maths in the rendered text: {raw}"

    shots = os.environ.get("KERNELCALC_DOCS_SHOTS")
    if shots:
        Path(shots).mkdir(parents=True, exist_ok=True)
        png = Path(shots).resolve() / (page.replace("/", "_") + ".png")
        res = chromium(url, tmp_path / "profile", "--hide-scrollbars", "--window-size=1280,2000",
                       f"--screenshot={png}")
        assert res.returncode == 0 and png.exists(), res.stderr[-3000:]
