"""Sphinx extension: the book's launch button (Binder) and repository link, for *this* repository.

The repository is ``ADVLIB_REPOSITORY`` if set (``https://github.com/ORG/REPO``), else the
``origin`` remote of the git checkout the book is built from (an ``git@github.com:ORG/REPO.git``
remote becomes its https URL), with the checkout's current branch (``ADVLIB_BRANCH`` overrides). A
GitHub repository gets a Binder button (mybinder.org builds the environment from ``binder/``) and a
link to the repository; anything else (no remote, another forge) gets none, and the build says why.
The buttons are plain links: a reader offline sees them, and nothing on a page loads from them.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GITHUB = re.compile(r"^(?:https://github\.com/|git@github\.com:)([^/]+)/([^/]+?)(?:\.git)?/?$")


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def repository() -> tuple[str, str] | None:
    """``(https URL, branch)`` of the GitHub repository the book comes from, or None."""
    url = os.environ.get("ADVLIB_REPOSITORY") or _git("remote", "get-url", "origin")
    m = GITHUB.match(url)
    if not m:
        return None
    branch = os.environ.get("ADVLIB_BRANCH") or _git("rev-parse", "--abbrev-ref", "HEAD") or "main"
    return f"https://github.com/{m[1]}/{m[2]}", branch


def _configure(app, config) -> None:
    found = repository()
    if found is None:
        print("NOTE [launch]: no GitHub remote (set ADVLIB_REPOSITORY=https://github.com/ORG/REPO): the book has "
              "no Binder button", file=sys.stderr)
        return
    url, branch = found
    opts = dict(config.html_theme_options or {})
    opts.update(repository_url=url, repository_branch=branch, path_to_docs="book", use_repository_button=True,
                launch_buttons={"binderhub_url": "https://mybinder.org", "notebook_interface": "jupyterlab"})
    config.html_theme_options = opts


def setup(app):
    app.connect("config-inited", _configure, priority=950)  # after Jupyter Book's own theme options
    return {"parallel_read_safe": True, "parallel_write_safe": True}
