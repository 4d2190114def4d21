"""The project's JupyterLab settings, read by `make lab` through ``JUPYTER_CONFIG_PATH=jupyter``.

- ``labconfig/default_setting_overrides.json``: a lecture's ``.md`` (the one source of truth) opens
  with Jupytext's notebook viewer, and no first-run pop-ups (Jupyter news, update checks).
  These are defaults: a learner can still change them in Settings (saved in their own settings).
- this file: the lab starts in ``lectures/`` with the repository as its root (so jupytext finds
  ``jupytext.toml`` and keeps each ``.md`` paired with its ``.ipynb``), and the generated ``.ipynb``
  pairs are hidden from the file browser, so each lecture is listed once. Only the pairs are
  hidden (by name), not every notebook: a homework copy or a learner's own notebook stays visible.
"""
from pathlib import Path

from jupyter_server.services.contents.manager import ContentsManager

c = get_config()  # noqa: F821 (defined by traitlets when it loads this file)

REPO = Path(__file__).resolve().parents[1]
LECTURES = REPO / "lectures"
PAIRS = sorted(md.with_suffix(".ipynb").name for md in LECTURES.glob("[0-9][0-9]_*.md"))

c.ContentsManager.hide_globs = [*ContentsManager.hide_globs.default(), *PAIRS]
c.ServerApp.root_dir = str(REPO)
c.LabApp.default_url = "/lab/tree/lectures"
