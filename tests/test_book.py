"""The course book: TOC complete, builds with -W, and its HTML loads nothing from the network.

The build test runs `book/build.py --execute off` (stored outputs only, so it takes seconds): it
checks the configuration, the TOC, the vendoring of MathJax / require.js / widgets and the
offline property; executing the lectures is the job of the nbval tests and of `make course`.
"""
from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"


def _load_build():
    spec = importlib.util.spec_from_file_location("book_build", BOOK / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
    """Build the book once, without executing, into a temporary folder."""
    out = tmp_path_factory.mktemp("book")
    proc = subprocess.run([sys.executable, str(BOOK / "build.py"), "--execute", "off",
                           "--builddir", str(out)], capture_output=True, text=True, timeout=900)
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
