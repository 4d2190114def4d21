"""Build the course book, and check that its HTML needs no network.

    python book/build.py [--execute force|off|cache] [--builddir DIR]

1. vendors MathJax / require.js / the widget manager into book/_vendor (book/vendor.py; skipped
   when present; without npm the build falls back, see book/_ext/offline_assets.py);
2. checks that the profile's data sets can be had (else fails at once with what to fetch), and
   that every object the API reference (book/api/) documents can be imported;
3. runs ``jupyter-book build book/ -W -n --keep-going --all``: a raising cell, a warning or a
   broken reference fails the build. ``--execute`` overrides ``execute_notebooks`` of
   _config.yml (force: run every lecture; off: stored outputs only; cache: re-run changed ones).
   The kernels get ``ADVLIB_PROFILE=fast`` unless it is set. The API reference is autodoc's
   reading of the installed advlib's docstrings (book/_ext/api_reference.py): it runs nothing
   but the import;
4. scans every built .html (and .css) for resources loaded from http(s):// or // URLs.

Exits non-zero on any failure. The HTML lands in DIR/_build/html (DIR defaults to book/).
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

BOOK = Path(__file__).resolve().parent
sys.path.insert(0, str(BOOK))
from vendor import vendor  # noqa: E402

EXTERNAL = re.compile(r"^\s*(https?:)?//", re.I)
# url(...) and @import in <style>, style="..." and .css files
CSS_URL = re.compile(r"""(?:url\(\s*|@import\s+)['"]?\s*((?:https?:)?//[^'")\s;]+)""", re.I)
CSS_COMMENT = re.compile(r"/\*.*?\*/", re.S)
# (tag, attribute) pairs whose URL the browser fetches by itself when the page loads
LOADING = {("script", "src"), ("link", "href"), ("img", "src"), ("img", "srcset"),
           ("iframe", "src"), ("frame", "src"), ("embed", "src"), ("object", "data"),
           ("source", "src"), ("source", "srcset"), ("video", "src"), ("video", "poster"),
           ("audio", "src"), ("track", "src"), ("input", "src"), ("image", "href"),
           ("image", "xlink:href"), ("use", "href"), ("use", "xlink:href"),
           ("script", "data-jupyter-widgets-cdn")}  # where embed-amd.js would fetch widget code


class _Scanner(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[int, str]] = []  # (line, description)
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        line = self.getpos()[0]
        for name, value in attrs:
            value = value or ""
            urls = value.split(",") if name.endswith("srcset") else [value]
            if (tag, name) in LOADING and any(EXTERNAL.match(u) for u in urls):
                self.found.append((line, f"<{tag} {name}={value.strip()!r}>"))
            elif name == "style":
                self.found += [(line, f"<{tag} style> {u}") for u in _css_urls(value)]
        self._in_style = tag == "style"

    def handle_endtag(self, tag):
        self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            self.found += [(self.getpos()[0], f"<style> {u}") for u in _css_urls(data)]


def _css_urls(css: str) -> list[str]:
    return CSS_URL.findall(CSS_COMMENT.sub("", css))


def find_external(html: str) -> list[tuple[int, str]]:
    """(line, description) of every resource an HTML page would fetch from another host."""
    scanner = _Scanner()
    scanner.feed(html)
    scanner.close()
    return scanner.found


def check_offline(root: Path, allow: set[str] = frozenset()) -> list[str]:
    """Scan every .html and .css under root; return 'file:line: what' for each external load."""
    problems = []
    for path in sorted(root.rglob("*")):
        if path.suffix == ".html":
            hits = find_external(path.read_text(errors="replace"))
        elif path.suffix == ".css":
            hits = [(0, f"css {u}") for u in _css_urls(path.read_text(errors="replace"))]
        else:
            continue
        problems += [f"{path.relative_to(root)}:{line}: {what}" for line, what in hits
                     if not any(a in what for a in allow)]
    return problems


def _cdn_widget_urls() -> set[str]:
    """The CDN scripts myst-nb uses for widgets when nothing is vendored (tolerated then)."""
    from myst_nb.core.config import ipywidgets_js_factory

    urls = set(ipywidgets_js_factory())
    return urls | {a["data-jupyter-widgets-cdn"] for a in ipywidgets_js_factory().values()
                   if "data-jupyter-widgets-cdn" in a}


PREFLIGHT = """
import advlib
p = advlib.profile()
try:
    for name in (p.dataset, p.series):
        advlib.data.load(name, "test")
except advlib.data.DatasetUnavailable as e:
    raise SystemExit(f"profile {p.name!r} cannot run here: {e}")
"""


def preflight(env: dict) -> bool:
    """Before executing anything: can the profile's data sets be had (bundled, cached or
    downloadable)? If not, fail at once with the data set's own message (what is missing, where,
    and the command that fetches it) instead of a traceback deep inside the build."""
    proc = subprocess.run([sys.executable, "-c", PREFLIGHT], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"FAILED before building: {(proc.stderr.strip().splitlines() or ['?'])[-1]}", file=sys.stderr)
    return proc.returncode == 0


API_PREFLIGHT = """
import sys
sys.path.insert(0, sys.argv[1])
import api_reference
from pathlib import Path
for kind, name, page in api_reference._directives(Path(sys.argv[2])):
    try:
        api_reference.lookup(name)
    except Exception as e:  # an ImportError deep inside advlib, or a name that is gone
        raise SystemExit(f"the API reference (book/api/{page}.md) cannot import {name}: "
                         f"{type(e).__name__}: {e}")
"""


def api_preflight(env: dict, api_dir: Path = BOOK / "api") -> bool:
    """Before building: can autodoc import what book/api/ documents? If not, say which page and
    why at once, instead of a warning among hundreds of lines of build log."""
    proc = subprocess.run([sys.executable, "-c", API_PREFLIGHT, str(BOOK / "_ext"), str(api_dir)], env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"FAILED before building: {(proc.stderr.strip().splitlines() or ['?'])[-1]}", file=sys.stderr)
    return proc.returncode == 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--execute", choices=["force", "off", "cache"],
                        help="notebook execution mode (default: _config.yml's, i.e. force)")
    parser.add_argument("--builddir", type=Path, default=BOOK,
                        help="where _build/ goes (default: book/)")
    args = parser.parse_args(argv)
    t0 = time.monotonic()

    vendored = vendor()
    if not vendored:
        print("WARNING: building without vendored assets: math uses sphinx-mathjax-offline, "
              "widgets will need a network to display.", file=sys.stderr)

    env = dict(os.environ)
    env.setdefault("ADVLIB_PROFILE", "fast")
    if args.execute:
        env["ADVLIB_BOOK_EXECUTE"] = args.execute  # read by _ext/offline_assets.py
    if (args.execute or "force") != "off" and not preflight(env):
        return 2
    if not api_preflight(env):
        return 2
    jb = shutil.which("jupyter-book", path=str(Path(sys.executable).parent)) or "jupyter-book"
    cmd = [jb, "build", str(BOOK), "--path-output", str(args.builddir.resolve()),
           "-W", "-n", "--keep-going", "--all"]
    print("$ " + " ".join(cmd), f"(ADVLIB_PROFILE={env['ADVLIB_PROFILE']}, "
          f"execute={args.execute or 'from _config.yml'})", flush=True)
    rc = subprocess.run(cmd, env=env).returncode
    html = args.builddir.resolve() / "_build" / "html"
    if rc != 0:
        print(f"FAILED: jupyter-book build exited with {rc} (see the warnings above)", file=sys.stderr)
        return rc

    allow = set() if vendored else _cdn_widget_urls()
    problems = check_offline(html, allow)
    if problems:
        print(f"FAILED: {len(problems)} resource(s) loaded from the network:", file=sys.stderr)
        print("\n".join("  " + p for p in problems), file=sys.stderr)
        return 1
    print(f"offline check: no external resources in {html}"
          + ("" if vendored else " (except the widget CDN scripts: no npm)"))
    print(f"built in {time.monotonic() - t0:.0f} s: open {html / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
