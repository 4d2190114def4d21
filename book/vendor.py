"""Fetch the book's third-party JavaScript from the npm registry into book/_vendor/ (git-ignored).

    python book/vendor.py [--force]

``npm pack`` downloads MathJax 3, require.js and @jupyter-widgets/html-manager (the major version
myst-nb's default ``nb_ipywidgets_js`` uses) as tarballs; only the files the HTML needs are kept:

    _vendor/mathjax/          tex-mml-chtml.js + the components it loads on demand (fonts, TeX
                              extensions, menu, accessibility)
    _vendor/requirejs/        require.js
    _vendor/jupyter-widgets/  embed-amd.js + its icon fonts
    _vendor/manifest.json     paths (relative to _static/) and versions; written last

book/_ext/offline_assets.py points the Sphinx configuration at them. Exit status 0 when the assets
are present afterwards, 1 when they could not be fetched (no npm, no registry).
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

VENDOR = Path(__file__).resolve().parent / "_vendor"
MANIFEST = VENDOR / "manifest.json"

# MathJax es5/ entries kept: the combined TeX+MathML->CHTML file and what it lazy-loads. Left out:
# the SVG outputs, other combined files, node-main.js, and latest.js (which loads from a CDN).
MATHJAX_KEEP = ["tex-mml-chtml.js", "input", "output/chtml.js", "output/chtml", "ui", "a11y", "sre"]


def _majors() -> tuple[str, str]:
    """The require.js and html-manager major versions myst-nb's default config points at."""
    try:
        from myst_nb.core.config import ipywidgets_js_factory

        urls = " ".join(ipywidgets_js_factory())
        return re.search(r"require\.js/(\d+)", urls)[1], re.search(r"html-manager@(\d+)", urls)[1]
    except Exception:  # noqa: BLE001 - a different myst-nb layout: use the known-good majors
        return "2", "1"


def _npm_pack(specs: list[str], dest: Path) -> dict[str, tuple[str, Path]]:
    """npm pack each spec into dest; returns {package name: (version, extracted package dir)}."""
    # --prefer-offline: a warm npm cache is used without asking the registry (so vendoring works
    # offline once fetched); short retries so that no network fails in seconds, not minutes.
    cmd = ["npm", "pack", "--json", "--loglevel=error", "--prefer-offline", "--fetch-retries=1",
           "--fetch-timeout=30000", *specs]
    out = subprocess.run(cmd, cwd=dest, check=True, capture_output=True, text=True,
                         timeout=600).stdout
    result = {}
    for info in json.loads(out):
        target = dest / info["name"].replace("/", "__")
        with tarfile.open(dest / info["filename"]) as tar:
            kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(target, **kwargs)
        result[info["name"]] = (info["version"], target / "package")
    return result


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    (shutil.copytree if src.is_dir() else shutil.copy2)(src, dst)


def vendor(force: bool = False) -> bool:
    if MANIFEST.exists() and not force:
        print(f"vendor: assets already in {VENDOR} (use --force to refetch)")
        return True
    if shutil.which("npm") is None:
        print("vendor: npm not found, cannot vendor MathJax / require.js / widgets", file=sys.stderr)
        return False
    req_major, hm_major = _majors()
    specs = ["mathjax@3", f"requirejs@{req_major}", f"@jupyter-widgets/html-manager@{hm_major}"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        try:
            pkgs = _npm_pack(specs, tmp)
        except (subprocess.SubprocessError, OSError, ValueError, KeyError) as exc:
            detail = (getattr(exc, "stderr", None) or str(exc)).strip().splitlines()[:4]
            print(f"vendor: `npm pack {' '.join(specs)}` failed:", *detail, sep="\n  ", file=sys.stderr)
            return False
        stage = tmp / "_vendor"  # assembled aside, then moved in one step
        mj_version, mj = pkgs["mathjax"]
        for entry in MATHJAX_KEEP:
            _copy(mj / "es5" / entry, stage / "mathjax" / entry)
        _copy(mj / "LICENSE", stage / "mathjax" / "LICENSE")
        rq_version, rq = pkgs["requirejs"]
        _copy(rq / "require.js", stage / "requirejs" / "require.js")
        hm_version, hm = pkgs["@jupyter-widgets/html-manager"]
        for f in (hm / "dist").iterdir():  # embed-amd.js finds its fonts next to itself
            if f.name == "embed-amd.js" or f.suffix in {".woff", ".woff2", ".ttf", ".eot", ".svg"}:
                _copy(f, stage / "jupyter-widgets" / f.name)
        manifest = {
            "mathjax": "mathjax/tex-mml-chtml.js",
            "requirejs": "requirejs/require.js",
            "html_manager": "jupyter-widgets/embed-amd.js",
            "versions": {"mathjax": mj_version, "requirejs": rq_version,
                         "@jupyter-widgets/html-manager": hm_version},
        }
        shutil.rmtree(VENDOR, ignore_errors=True)
        shutil.move(stage, VENDOR)
        MANIFEST.write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"vendor: {', '.join(f'{k}@{v}' for k, v in manifest['versions'].items())} -> {VENDOR}")
    return True


if __name__ == "__main__":
    sys.exit(0 if vendor(force="--force" in sys.argv[1:]) else 1)
