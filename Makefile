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

.PHONY: course test install notebooks lab clean

course: $(STAMP) notebooks
	ADVLIB_PROFILE=$${ADVLIB_PROFILE:-fast} $(BIN)/python book/build.py --execute force

test: $(STAMP) notebooks
	ADVLIB_PROFILE=fast $(BIN)/python -m pytest -n $(JOBS) --dist loadfile

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

# Open the lectures in JupyterLab.
lab: $(STAMP) notebooks
	$(BIN)/jupyter lab lectures/

clean:
	rm -rf book/_build book/_vendor .pytest_cache .jupyter_cache
