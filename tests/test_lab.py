"""`make lab` as a learner meets it: a lecture's .md opens as a notebook, each lecture is listed once,
and no first-run pop-up is in the way — checked through the lab's REST API and in headless Chromium.

The lab is started with the command `make lab` runs (read from `make -n lab`), on 127.0.0.1 with a
token, on a copy of lecture 00 and its generated pair in a temporary root (opening a notebook starts
a kernel and marks it modified: nothing may be saved into the real lectures), with the user's own
Jupyter folders replaced by empty ones, so only the project's settings (jupyter/) are in play.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import jupytext
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from browser import CHROMIUM_FLAGS, SKIP, chromium  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ROOT / "jupyter"
LECTURE = "00_introduction"

def _overrides() -> dict:
    return json.loads((SETTINGS / "labconfig" / "default_setting_overrides.json").read_text())


def _jupytext_factory() -> str:
    """The document-widget factory name the installed jupytext labextension registers."""
    from jupyter_core.paths import jupyter_path

    for base in jupyter_path("labextensions"):
        for js in sorted(Path(base, "jupyterlab-jupytext", "static").glob("*.js")):
            found = re.search(r'\.FACTORY="([^"]+)"', js.read_text(errors="replace"))
            if found:
                return found.group(1)
    pytest.fail("the jupytext labextension (jupyterlab-jupytext) is not installed")


def test_md_opens_with_the_factory_jupytext_registers():
    viewers = _overrides()["@jupyterlab/docmanager-extension:plugin"]["defaultViewers"]
    assert viewers["markdown"] == viewers["myst"] == _jupytext_factory()


def test_lab_command_hides_exactly_the_generated_pairs():
    out = subprocess.run([sys.executable, "-c", "from traitlets.config import PyFileConfigLoader as L; "
                          f"c = L('jupyter_server_config.py', {str(SETTINGS)!r}).load_config(); "
                          "import json; print(json.dumps(list(c.ContentsManager.hide_globs)))"],
                         capture_output=True, text=True, check=True)
    hidden = json.loads(out.stdout)
    pairs = {p.with_suffix(".ipynb").name for p in ROOT.glob("lectures/[0-9][0-9]_*.md")}
    assert pairs and pairs <= set(hidden)
    assert "__pycache__" in hidden  # the defaults stay
    assert not any(h.endswith("_homework.ipynb") or h == "*.ipynb" for h in hidden)


def _lab_command() -> str:
    """The shell line `make lab` runs (without its prerequisites; LAB_ARGS are the caller's)."""
    if not shutil.which("make"):
        pytest.skip("make is not installed: cannot read the command of `make lab`")
    # VENV: the environment running these tests (`make test VENV=...` may not use .venv)
    dry = subprocess.run(["make", "-s", "-n", "lab", "LAB_ARGS=", f"VENV={sys.prefix}"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    lines = [line for line in dry.splitlines() if re.search(r"\bjupyter lab\b", line)]
    assert len(lines) == 1, f"`make -n lab` should run `jupyter lab` once:\n{dry}"
    assert "JUPYTER_CONFIG_PATH" in lines[0] and str(SETTINGS) in lines[0], lines[0]
    return lines[0].strip()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, token: str):
    req = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


class Lab:
    def __init__(self, url: str, token: str, root: Path, log: Path):
        self.url, self.token, self.root, self.log = url, token, root, log

    def api(self, path: str):
        return _get(f"{self.url}/{path}", self.token)

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    base = tmp_path_factory.mktemp("lab")
    root, home = base / "root", base / "home"
    (root / "lectures").mkdir(parents=True)
    home.mkdir()
    shutil.copy(ROOT / "jupytext.toml", root)
    src = root / "lectures" / f"{LECTURE}.md"
    shutil.copy(ROOT / "lectures" / src.name, src)
    jupytext.write(jupytext.read(src), src.with_suffix(".ipynb"))  # the pair `make notebooks` generates
    env = {**os.environ, "HOME": str(home), "JUPYTER_CONFIG_DIR": str(home / ".jupyter"),
           "JUPYTER_DATA_DIR": str(home / "data"), "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
           "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"), "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces")}
    env.pop("JUPYTER_CONFIG_PATH", None)
    port, token = _free_port(), "advlib-test-" + os.urandom(8).hex()
    args = ["--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}"]
    if os.geteuid() == 0:
        args.append("--allow-root")
    log = base / "lab.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(f"{_lab_command()} {shlex.join(args)}", shell=True, cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    server = Lab(f"http://127.0.0.1:{port}", token, root, log)
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"`make lab` exited with {proc.returncode}:\n{server.log_tail()}")
            try:
                server.api("api/status")
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"the lab did not answer on port {port} within 120 s:\n{server.log_tail()}")
                time.sleep(0.5)
        yield server
    finally:
        try:  # kernels the browser started, then the server and anything left in its process group
            for k in server.api("api/kernels"):
                urllib.request.urlopen(urllib.request.Request(
                    f"{server.url}/api/kernels/{k['id']}", method="DELETE",
                    headers={"Authorization": f"token {token}"}), timeout=30)
        except OSError:
            pass
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
            try:
                os.killpg(proc.pid, sig)
                proc.wait(wait)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue


def test_rest_api_reads_the_md_as_a_notebook(lab):
    model = lab.api(f"api/contents/lectures/{LECTURE}.md?type=notebook&content=1")
    assert model["type"] == "notebook"
    cells = model["content"]["cells"]
    assert {"code", "markdown"} <= {c["cell_type"] for c in cells}
    assert len(cells) == len(jupytext.read(ROOT / "lectures" / f"{LECTURE}.md").cells)


def test_each_lecture_is_listed_once(lab):
    assert (lab.root / "lectures" / f"{LECTURE}.ipynb").exists()
    names = [e["name"] for e in lab.api("api/contents/lectures?content=1")["content"]]
    assert names == [f"{LECTURE}.md"]


class _Page(HTMLParser):
    """The classes of the page's elements, the file browser's entries and the visible text."""

    def __init__(self):
        super().__init__()
        self.classes, self.listed, self.text = Counter(), [], []
        self._skip = self._in_item = 0

    def handle_starttag(self, tag, attrs):
        classes = (dict(attrs).get("class") or "").split()
        self.classes.update(classes)
        if tag in ("script", "style"):
            self._skip += 1
        if "jp-DirListing-itemText" in classes:
            self._in_item, self.listed = 1, [*self.listed, ""]
        elif self._in_item:
            self._in_item += 1

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self._skip = max(0, self._skip - 1)
        if self._in_item:
            self._in_item -= 1

    def handle_data(self, data):
        if not self._skip:
            self.text.append(data)
            if self._in_item:
                self.listed[-1] += data.strip()


def test_browser_shows_the_md_as_notebook_cells_without_popups(lab, tmp_path):
    browser = chromium()
    if browser is None:
        pytest.skip(SKIP)
    url = f"{lab.url}/lab/tree/lectures/{LECTURE}.md?token={lab.token}"
    cmd = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,900",
           "--virtual-time-budget=25000", "--dump-dom", url]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        dom, _ = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("headless chromium did not finish within 240 s")
    assert proc.returncode == 0, f"chromium exited with {proc.returncode}"
    page = _Page()
    page.feed(dom.decode(errors="replace"))
    text = " ".join(" ".join(page.text).split())
    c = page.classes
    assert c["jp-NotebookPanel"] == 1 and c["jp-Notebook"] == 1, f"no notebook opened; lab log:\n{lab.log_tail()}"
    assert c["jp-CodeCell"] > 0 and c["jp-MarkdownCell"] > 0, "the notebook shows no cells"
    assert c["jp-FileEditor"] == 0, "the .md is (also) open in the text editor"
    assert "format_name: myst" not in text, "raw MyST (the jupytext header) is on the page"
    title = re.search(r"^# (.+)$", (lab.root / "lectures" / f"{LECTURE}.md").read_text(), re.M).group(1)
    assert title.strip() in text  # the lecture's title, rendered from its first Markdown cell
    assert c["Toastify__toast"] == 0 and c["jp-Dialog"] == 0, f"a pop-up is shown: {text[-300:]}"
    assert "Jupyter news" not in text
    assert page.listed == [f"{LECTURE}.md"], f"the file browser lists {page.listed}"
