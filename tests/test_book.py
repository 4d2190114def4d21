"""The course book: TOC complete, builds with -W, and its HTML loads nothing from the network.

The build test runs `book/build.py --execute force` at toy size (every lecture executed with small
budgets, a few minutes): it checks the configuration, the TOC, the vendoring of MathJax /
require.js / widgets and the offline property of the HTML; then headless Chromium, with the network
cut (a network namespace of its own where `unshare` allows, and every request it makes logged),
opens every page of the book and checks that math was typeset, every image loaded, the explorers'
still figures are there and nothing was fetched from elsewhere; it takes screenshots of a few
pages. The nbval tests run the lectures at their standard size.
"""
from __future__ import annotations

import html as html_lib
import importlib.util
import inspect
import json
import os
import pkgutil
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from browser import CHROMIUM_FLAGS, SKIP, chromium  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"


def _load_build():
    spec = importlib.util.spec_from_file_location("book_build", BOOK / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _load_api():
    spec = importlib.util.spec_from_file_location("api_reference", BOOK / "_ext" / "api_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def public_modules() -> list[str]:
    """``advlib``, every subpackage of it, the single-file modules that ``advlib.__all__`` names
    (``threat``, ``models``, ``train``; ``profiles`` and ``runtime`` are the top level's own files,
    whose exports ``advlib`` re-exports), and the lectures' own modules in ``advlib.course``
    (``from advlib.course import whitebox``: each has an ``__all__``)."""
    import advlib
    import advlib.course

    out = ["advlib"] + [f"advlib.{m.name}" for m in pkgutil.iter_modules(advlib.__path__)
                        if not m.name.startswith("_") and (m.ispkg or m.name in advlib.__all__)]
    for m in pkgutil.iter_modules(advlib.course.__path__):
        module = importlib.import_module(f"advlib.course.{m.name}") if not m.name.startswith("_") else None
        if module is not None and not set(getattr(module, "__all__", [])) <= set(advlib.course.__all__):
            out.append(module.__name__)
    return out


def _toc_files() -> list[str]:
    """Every `file:` of book/_toc.yml (root included), without extension."""
    toc = yaml.safe_load((BOOK / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                files.append(entry["file"])
            for key in ("chapters", "sections", "parts"):
                walk(entry.get(key))

    walk(toc.get("parts") or toc.get("chapters"))
    return files


def test_every_lecture_is_in_the_toc():
    lectures = sorted(p.stem for p in (ROOT / "lectures").glob("*.md"))
    assert lectures, "no lectures/*.md yet"
    listed = {f.removeprefix("lectures/") for f in _toc_files() if f.startswith("lectures/")}
    missing = [name for name in lectures if name not in listed]
    assert not missing, f"add these lectures to book/_toc.yml: {missing}"
    assert all((BOOK / f"{f}.md").exists() for f in _toc_files()), "the TOC names a missing file"


def test_every_public_module_has_an_api_page():
    pages = _load_api().documented_modules()
    missing = [m for m in public_modules() if m not in pages]
    assert not missing, f"no API page (book/api/*.md with `.. automodule::`) for {missing}"
    assert {"advlib", "advlib.threat", "advlib.attacks", "advlib.verify", "advlib.course"} <= set(pages)
    assert "advlib.profiles" not in public_modules() and "advlib.attacks" in public_modules()
    toc = set(_toc_files())
    assert all(f"api/{stem}" in toc for stem in pages.values()), "an API page is not in book/_toc.yml"


def test_api_preflight_names_the_page_that_cannot_import(tmp_path, capsys):
    build = _load_build()
    env = dict(__import__("os").environ)
    assert build.api_preflight(env)  # the book's own pages
    (tmp_path / "gone.md").write_text("```{eval-rst}\n.. automodule:: advlib.attacks\n\n"
                                      ".. autofunction:: advlib.attacks.no_such_attack\n```\n")
    assert not build.api_preflight(env, tmp_path)
    err = capsys.readouterr().err
    assert "book/api/gone.md" in err and "advlib.attacks.no_such_attack" in err and "Traceback" not in err


def test_lectures_symlink_is_relative():
    link = BOOK / "lectures"
    assert link.is_symlink() and Path(link.readlink()) == Path("../lectures")


def test_offline_checker_flags_external_loads_only():
    check = _load_build().find_external
    page = """<html><head>
      <script src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"></script>
      <link rel="stylesheet" href="//fonts.googleapis.com/css?family=Roboto">
      <style>@import url('https://example.org/a.css'); /* url(https://in.a.comment) */</style>
      </head><body>
      <script src="_static/mathjax/tex-mml-chtml.js"></script>
      <link rel="stylesheet" href="../_static/styles/theme.css">
      <img src="_images/fig.png"> <a href="https://arxiv.org/abs/1706.06083">a link is fine</a>
      <iframe src="https://www.youtube.com/embed/x"></iframe>
      <div style="background: url(http://example.org/bg.png)"></div>
    </body></html>"""
    found = " | ".join(what for _, what in check(page))
    for url in ["cdn.jsdelivr.net", "//fonts.googleapis.com", "example.org/a.css", "youtube.com",
                "example.org/bg.png"]:
        assert url in found
    assert "_static" not in found and "arxiv" not in found and "in.a.comment" not in found
    assert len(check(page)) == 5
    assert check('<script src="_static/require.js"></script><img src="a.png">') == []


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Build the book once into a temporary folder, every lecture executed at toy size (the same
    code, data and models as the standard run, small budgets): what a reader sees, figures included."""
    out = tmp_path_factory.mktemp("book")
    env = dict(os.environ, ADVLIB_PROFILE="fast", ADVLIB_SIZE="toy")
    proc = subprocess.run([sys.executable, str(BOOK / "build.py"), "--execute", "force",
                           "--builddir", str(out)], capture_output=True, text=True, timeout=3600, env=env)
    return proc, out / "_build" / "html"


def test_book_builds_offline(built):
    proc, html = built
    log = proc.stdout[-4000:] + proc.stderr[-4000:]
    assert proc.returncode == 0, log
    assert "offline check: no external resources" in proc.stdout, log
    for doc in _toc_files():
        assert (html / f"{doc}.html").exists(), f"no page for {doc}"
    assert (html / "index.html").exists()
    assert _load_build().check_offline(html) == [], "external resources in the built HTML"


def test_api_pages_document_every_export(built):
    """Each API page is built and holds an entry (its HTML anchor) for every name of the ``__all__``
    of each module it documents, and for each function or class it documents explicitly."""
    proc, html = built
    assert proc.returncode == 0, proc.stderr[-4000:]
    api = _load_api()
    directives = api._directives()
    assert directives
    for kind, name, stem in directives:
        page = (html / "api" / f"{stem}.html").read_text()
        if kind == "module":
            module = api.lookup(name)
            wanted = [f"{name}.{m}" for m in module.__all__
                      if not m.startswith("__") and not inspect.ismodule(getattr(module, m))]
            wanted.append(f"module-{name}")
        else:
            wanted = [name]
        missing = [w for w in wanted if f'id="{w}"' not in page]
        assert not missing, f"api/{stem}.html does not document {missing}"
    index = (html / "api" / "index.html").read_text()
    assert all(f"{stem}.html" in index for _, _, stem in directives)  # linked from the part's page
    # the docstrings' `:func:` references became links, and the [source] pages exist
    assert re.search(r'href="[^"]*#advlib\.device"', (html / "api" / "zoo.html").read_text())
    assert (html / "_modules" / "advlib" / "attacks" / "pgd.html").exists()


def test_assets_are_vendored(built):
    if shutil.which("npm") is None and not (BOOK / "_vendor" / "manifest.json").exists():
        pytest.skip("npm is not installed: the book falls back to sphinx-mathjax-offline")
    proc, html = built
    assert proc.returncode == 0
    assert (BOOK / "_vendor" / "manifest.json").exists()
    for asset in ["mathjax/tex-mml-chtml.js", "requirejs/require.js", "jupyter-widgets/embed-amd.js"]:
        assert (html / "_static" / asset).exists(), asset
    page = (html / "intro.html").read_text()
    assert "_static/mathjax/tex-mml-chtml.js" in page  # intro.md has math


def test_full_profile_offline_fails_at_once_with_what_to_do(tmp_path):
    env = {**__import__("os").environ, "ADVLIB_PROFILE": "full", "ADVLIB_OFFLINE": "1",
           "ADVLIB_DATA": str(tmp_path / "data")}
    proc = subprocess.run([sys.executable, str(BOOK / "build.py"), "--builddir", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2
    message = proc.stderr.strip().splitlines()[-1]
    assert "profile 'full' cannot run here" in message and "'mnist'" in message
    assert "python -m advlib.data fetch mnist" in message and str(tmp_path / "data") in message
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "_build").exists()  # nothing was built or executed


# --- the built book in a browser, with no network --------------------------------------------------------

# the harness page reads its iframes (file:// pages) with these two
BOOK_FLAGS = [*CHROMIUM_FLAGS, "--allow-file-access-from-files", "--disable-web-security"]
EXPLORERS = ("EpsilonExplorer", "ZOExplorer", "CertifiedBallExplorer", "BigCheckGame")
# What each page shows once its scripts ran: every MathJax element typeset, every <img> decoded, and
# for each cell that displays an explorer, whether its output is the still figure.
HARNESS = """<!DOCTYPE html><html><body><pre id="out">pending</pre><script>
const pages = %s, found = {};
function inspect(name, doc) {
  const imgs = [...doc.querySelectorAll("img")];
  const explorers = [...doc.querySelectorAll("div.cell")].filter(c => /%s/.test(
    (c.querySelector(".cell_input") || {}).textContent || ""));
  found[name] = {title: doc.title, math: doc.querySelectorAll(".math").length,
    typeset: [...doc.querySelectorAll(".math")].filter(m => m.querySelector("mjx-container")).length,
    images: imgs.length, broken: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src.slice(0, 80)),
    figures: doc.querySelectorAll(".cell_output img, .cell_output svg").length,
    explorers: explorers.length,
    stills: explorers.filter(c => c.querySelector(".cell_output img")).length};
}
let left = pages.length;
for (const name of pages) {
  const f = document.createElement("iframe");
  f.style.width = "1000px"; f.style.height = "800px"; f.src = name + ".html";
  f.onload = () => setTimeout(() => {
    try { inspect(name, f.contentDocument); } catch (e) { found[name] = {error: String(e)}; }
    if (--left === 0) document.getElementById("out").textContent = "RESULT" + JSON.stringify(found);
  }, 15000);
  document.body.appendChild(f);
}
</script></body></html>"""


def _offline(cmd: list[str]) -> list[str]:
    """``cmd`` in a network namespace of its own (only loopback) where this machine allows it."""
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True) if shutil.which("unshare") else None
    return ["unshare", "-n", *cmd] if probe is not None and probe.returncode == 0 else cmd


def _requests(netlog: Path) -> tuple[list[str], list[str]]:
    """(every URL the browser requested, those whose request failed) from a ``--log-net-log`` file."""
    text = netlog.read_text(errors="replace").rstrip().rstrip(",")
    log = json.loads(text if text.endswith("}") else text + "]}")
    urls, failed = {}, set()
    for e in log.get("events", []):
        p, src = e.get("params", {}), e.get("source", {}).get("id")
        if "url" in p and src not in urls:
            urls[src] = p["url"]
        if p.get("net_error", 0) < 0 and p["net_error"] != -3:  # -3: aborted (e.g. a page left)
            failed.add(src)
    return sorted(set(urls.values())), sorted({urls[s] for s in failed if s in urls})


def browse(browser: str, html: Path, tmp: Path):
    """Open every page of the built book ``html`` in headless ``browser`` (through one harness page
    of iframes), offline; screenshots of a few pages into ``tmp``. Returns (what each page shows,
    (URLs requested, URLs that failed), screenshots)."""
    pages = _toc_files()
    harness = html / "_browser_check.html"
    harness.write_text(HARNESS % (json.dumps(pages), "|".join(EXPLORERS)))
    netlog = tmp / "net.json"
    cmd = _offline([browser, *BOOK_FLAGS, f"--user-data-dir={tmp / 'profile'}", f"--log-net-log={netlog}",
                    "--virtual-time-budget=120000", "--dump-dom", harness.as_uri()])
    run = subprocess.run(cmd, capture_output=True, timeout=900)
    harness.unlink()
    dom = run.stdout.decode(errors="replace")
    out = re.search(r'<pre id="out">RESULT(.*?)</pre>', dom, re.S)
    assert out, f"the pages did not finish loading: {dom[-500:]} {run.stderr[-800:]!r}"
    found = json.loads(html_lib.unescape(out[1]))
    shots = {}
    for page in ("intro", "lectures/01_white_box_attacks", "lectures/60_holistic_report"):
        shot = tmp / (page.replace("/", "_") + ".png")
        subprocess.run(_offline([browser, *BOOK_FLAGS, f"--user-data-dir={tmp / 'profile'}",
                                 "--window-size=1200,1800", "--virtual-time-budget=20000", f"--screenshot={shot}",
                                 (html / f"{page}.html").as_uri()]), capture_output=True, timeout=300)
        shots[page] = shot
    return found, _requests(netlog), shots


@pytest.fixture(scope="module")
def browsed(built, tmp_path_factory):
    browser = chromium()
    if browser is None:
        pytest.skip(SKIP)
    proc, html = built
    assert proc.returncode == 0, proc.stderr[-4000:]
    return (*browse(browser, html, tmp_path_factory.mktemp("browser")), html)


def test_every_page_shows_its_math_and_figures_offline(browsed):
    found, _, _, _ = browsed
    assert set(found) == set(_toc_files())
    for page, f in found.items():
        assert "error" not in f, (page, f)
        assert f["typeset"] == f["math"], f"{page}: {f['math'] - f['typeset']} formulas left as raw TeX"
        assert not f["broken"], f"{page}: images that did not load: {f['broken']}"
        if page.startswith("lectures/"):
            assert f["figures"] > 0, f"{page} shows no figure: {f}"
            if "$" in (BOOK / f"{page}.md").read_text():
                assert f["math"] > 0, f"{page} shows no math: {f}"
    assert found["intro"]["math"] > 0


def test_the_explorers_show_their_still_figure(browsed):
    found, _, _, _ = browsed
    with_explorers = {p: f for p, f in found.items() if f.get("explorers")}
    assert len(with_explorers) >= len(EXPLORERS), with_explorers
    for page, f in with_explorers.items():
        assert f["stills"] == f["explorers"], f"{page}: an explorer's cell shows no still figure: {f}"


class _Loads(HTMLParser):
    """The local files a page loads by itself: scripts, stylesheets, images, iframes."""

    def __init__(self):
        super().__init__()
        self.paths = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        url = {"script": a.get("src"), "img": a.get("src"), "iframe": a.get("src"),
               "link": a.get("href") if "stylesheet" in (a.get("rel") or "") else None}.get(tag)
        if url and not re.match(r"^([a-z]+:|//|#)", url):
            self.paths.append(url.split("#")[0].split("?")[0])


def test_the_pages_fetch_nothing_from_elsewhere_and_miss_no_file(browsed):
    _, (urls, failed), _, html = browsed
    # Chromium itself pings its own services (time, updates, models) even with the flags above; a
    # page's own request would name another host
    own = ("google.com", "googleapis.com", "gstatic.com", "chrome://", "chrome-extension://", "about:", "data:",
           "file://")
    elsewhere = [u for u in urls if not any(u.startswith(o) or f"{o}/" in u.split("?")[0] for o in own)]
    assert not elsewhere, f"requests to other hosts: {elsewhere[:10]}"
    for page in _toc_files():
        parser = _Loads()
        parser.feed((html / f"{page}.html").read_text())
        missing = [p for p in parser.paths if not ((html / page).parent / p).resolve().is_file()]
        assert not missing, f"{page}.html loads files that are not in the book: {missing[:10]}"
        assert parser.paths, page


def test_screenshots_show_rendered_pages(browsed):
    import matplotlib.image

    _, _, shots, _ = browsed
    for page, shot in shots.items():
        assert shot.is_file() and shot.stat().st_size > 20_000, f"no screenshot of {page}"
        img = matplotlib.image.imread(shot)
        assert img.std() > 0.05, f"the screenshot of {page} is blank"
