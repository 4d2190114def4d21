"""Headless Chromium for the tests that look at pages as a reader would (tests/test_lab.py,
tests/test_book.py): where the browser is, and the flags every run uses (TOOLCHAIN: no GPU, no
first-run work, none of Chromium's own background traffic that the flags can turn off)."""
from __future__ import annotations

import shutil

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SKIP = "chromium is not installed (.ci/run installs it: apt-get install -y chromium)"


def chromium() -> str | None:
    """The Chromium binary on PATH, or None."""
    return next((shutil.which(b) for b in ("chromium", "chromium-browser") if shutil.which(b)), None)
