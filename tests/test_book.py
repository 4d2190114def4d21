"""The course book: TOC complete, builds with -W, and its HTML loads nothing from the network.

The build test runs `book/build.py --execute off` (stored outputs only, so it takes seconds): it
checks the configuration, the TOC, the vendoring of MathJax / require.js / widgets and the
offline property; executing the lectures is the job of the nbval tests and of `make course`.
"""
from __future__ import annotations

import importlib.util
import inspect
import pkgutil
import re
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
