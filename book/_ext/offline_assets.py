"""Sphinx extension: serve the book's JavaScript from book/_vendor so the HTML works offline.

Jupyter Book 1.x loads MathJax 3, require.js and @jupyter-widgets/html-manager from CDNs by
default. ``book/vendor.py`` fetches them with ``npm pack`` into ``book/_vendor/``; this extension
then (at ``config-inited``, i.e. after Jupyter Book has assembled its configuration) serves that
folder through ``html_static_path`` and points ``mathjax_path`` and myst-nb's ``nb_ipywidgets_js``
at the local copies. The folder's subfolders land as ``_static/mathjax/``, ``_static/requirejs/``
and ``_static/jupyter-widgets/``. It is added here rather than in ``_config.yml`` because Jupyter
Book injects every .js/.css found under a static path into every page when ``book/_static``
exists.

Without ``_vendor`` (no npm on this machine), math falls back to the PyPI package
``sphinx-mathjax-offline`` and the widget scripts stay on their CDN, with a warning.

``ADVLIB_BOOK_EXECUTE`` (set by ``book/build.py --execute``) overrides the execution mode.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

VENDOR = Path(__file__).resolve().parent.parent / "_vendor"
MANIFEST = VENDOR / "manifest.json"  # written by vendor.py last: its presence means "complete"


def _vendored() -> dict | None:
    try:
        return json.loads(MANIFEST.read_text())
    except (OSError, ValueError):
        return None


def _configure(app, config) -> None:
    mode = os.environ.get("ADVLIB_BOOK_EXECUTE")
    if mode:
        config.nb_execution_mode = mode
    manifest = _vendored()
    if manifest is None:
        config.mathjax_path = "mathjax/tex-chtml.js"  # copied there by sphinx-mathjax-offline
        return
    config.html_static_path = [*config.html_static_path, str(VENDOR)]
    config.mathjax_path = manifest["mathjax"]  # relative to _static/
    # Relative URLs are prefixed with _static/ by Sphinx. No data-jupyter-widgets-cdn attribute:
    # the standard widgets are bundled in embed-amd.js; only third-party widget libraries would
    # be fetched from a CDN (none are used in the course).
    config.nb_ipywidgets_js = {manifest["requirejs"]: {}, manifest["html_manager"]: {}}


def setup(app):
    if _vendored() is None:
        # printed, not a Sphinx warning: the fallback must not fail a `-W` build
        print(
            "WARNING [offline_assets]: book/_vendor is missing (run `python book/vendor.py`; it "
            "needs npm): math falls back to sphinx-mathjax-offline, but interactive widgets will "
            "load their JavaScript from a CDN and need a network.",
            file=sys.stderr,
        )
        app.setup_extension("sphinx-mathjax-offline")  # sets mathjax_path, copies MathJax at the end
    app.connect("config-inited", _configure, priority=900)  # after Jupyter Book's / myst-nb's own
    return {"parallel_read_safe": True, "parallel_write_safe": True}
