# The two set-up commands of the README:
#   make course   installs everything, executes every lecture (fast profile) and builds the book
#   make test     installs everything and runs the tests (unit tests + every lecture under nbval)
# Both create a virtual environment in .venv (override with VENV=...) with the Python in $(PYTHON).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# pytest workers (notebooks are spread by file)
JOBS   ?= 2

.PHONY: course test full-toy install notebooks lab clean

course: $(STAMP) notebooks
	ADVLIB_PROFILE=$${ADVLIB_PROFILE:-fast} $(BIN)/python book/build.py --execute force

# One thread per pytest worker (override with OMP_NUM_THREADS=...): $(JOBS) workers on as many cores,
# each a kernel that would otherwise start one thread per core; oversubscribed, the many small
# forward passes of the black-box attacks stall.
test: $(STAMP) notebooks
	ADVLIB_PROFILE=fast OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(BIN)/python -m pytest -n $(JOBS) --dist loadfile

# Every lecture in the full profile (MNIST 28x28, the mnist-* zoo) at toy size, on toy files in
# the real MNIST format that the test writes; part of `make test` too.
full-toy: $(STAMP) notebooks
	$(BIN)/python -m pytest tests/test_full_profile.py

install: $(STAMP)

# Everything the course and the tests need, from the package registries only.
# torchattacks (a cross-check oracle) goes in with --no-deps: it pins requests~=2.25.1, which would
# drag jupyterlab back to 3.x; it needs nothing beyond torch, numpy and scipy.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install -e '.[dev]'
	$(BIN)/python -m pip install --no-deps 'torchattacks==3.5.1'
	touch $(STAMP)

# The lectures are MyST Markdown; their .ipynb pairs are generated (and kept in sync) by jupytext.
notebooks: $(STAMP)
	$(BIN)/jupytext --sync lectures/[0-9][0-9]_*.md

# Open the lectures in JupyterLab with the project's settings (jupyter/, found through
# JUPYTER_CONFIG_PATH; nothing to set up in your home): a lecture's .md opens as a notebook, its
# generated .ipynb pair is not listed, no first-run pop-ups; the repository is the lab's root, and
# it starts in lectures/. Add options with LAB_ARGS, e.g. LAB_ARGS=--allow-root in a container
# that runs as root, or LAB_ARGS='--no-browser --port=8890'.
LAB_ARGS ?=
lab: $(STAMP) notebooks
	JUPYTER_CONFIG_PATH="$(CURDIR)/jupyter$${JUPYTER_CONFIG_PATH:+:$$JUPYTER_CONFIG_PATH}" $(BIN)/jupyter lab $(LAB_ARGS)

clean:
	rm -rf book/_build book/_vendor .pytest_cache .jupyter_cache
