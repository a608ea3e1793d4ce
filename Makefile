# Two commands on a fresh machine (Python 3.10-3.12 and make):
#   make site   set up, execute every lesson and serve the site at http://127.0.0.1:8000
#   make test   set up and run every test (what CI runs)
#   make audit  build the site strictly on a second dataset shape (CI's audit job)
# While working on the code, `make test-fast` runs the quick subset (under a minute).
# Both create .venv and install the pinned, tested set on first use.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export NO_MKDOCS_2_WARNING := 1
export TF_CPP_MIN_LOG_LEVEL := 2

VENDOR := docs/assets/vendor

.PHONY: venv test test-fast lint site site-build audit browser-test bench sync clean vendor

# The pinned set is installed with uv, in a third of pip's time (fresh clone, empty caches,
# 2 cores: 37 s against 98 s, bytecode compiled as pip does), and with pip wherever uv cannot
# be installed or fails. uv does not read pip's configuration: behind a package mirror, set
# UV_INDEX_URL as well as pip's index-url, or uv fails over to pip.
UV_INSTALL  = $(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -c requirements/constraints.txt
PIP_INSTALL = $(BIN)/python -m pip install --quiet -c requirements/constraints.txt
comma := ,
# $(call install,EXTRAS): the course, editable, with the comma-separated EXTRAS ($(comma) in a call)
install = { $(UV_INSTALL) -e '.[$(1)]' || { echo "uv could not install the course: installing with pip instead"; \
              $(BIN)/python -m pip install --quiet --upgrade pip && $(PIP_INSTALL) -e '.[$(1)]'; }; }

$(STAMP): pyproject.toml requirements/constraints.txt
	@$(PYTHON) -c 'import sys; v = sys.version_info[:2]; sys.exit(0 if (3, 10) <= v <= (3, 12) else "Python 3.10-3.12 is needed, found %d.%d: run make PYTHON=python3.11" % v)'
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) uv || echo "uv could not be installed: pip will install the course (slower)"
	$(call install,ann)
	@touch $(STAMP)

venv: $(STAMP)

# Mermaid and MathJax, served with the site so diagrams and maths render offline. Fetched
# from the npm registry when npm exists; without npm, pages load them from a CDN instead.
$(VENDOR)/.installed:
	@if command -v npm >/dev/null 2>&1; then \
	  npm install --silent --no-audit --no-fund --prefix .cache/npm mermaid@11.17.2 mathjax@3.2.2 && \
	  mkdir -p $(VENDOR) && \
	  cp .cache/npm/node_modules/mermaid/dist/mermaid.min.js $(VENDOR)/ && \
	  cp .cache/npm/node_modules/mathjax/es5/tex-svg.js $(VENDOR)/ && \
	  touch $@; \
	else echo "npm not found: the site will load Mermaid and MathJax from a CDN"; fi

vendor: $(VENDOR)/.installed

# Tests run offline on the synthetic dataset and grade the reference solutions; the
# discrimination tests also grade the generated stubs and the decoys. COURSE_WORKER=off:
# the learner commands under test start no warm worker that would outlive the run.
TEST_ENV := COURSE_DATA=synthetic COURSE_TREE=solutions COURSE_WORKER=off
# One test process more than there are cores: a quarter of the suite's time is spent waiting
# for subprocesses, sandboxes and sockets (2 cores: 328 s with 2 processes, 287 s with 3 or 4).
TEST_JOBS ?= $(shell $(PYTHON) -c 'import os; print((os.cpu_count() or 1) + 1)')
test: $(STAMP)
	$(TEST_ENV) $(BIN)/python -m pytest -n $(TEST_JOBS) --dist loadgroup

# The inner loop: developer tests that need neither TensorFlow training nor a grading
# subprocess, plus smoke checks of the learner commands (marker `fast`, tests/dev/conftest.py).
test-fast: $(STAMP)
	$(TEST_ENV) $(BIN)/python -m pytest -n $(TEST_JOBS) -m fast tests/dev

# ruff, configured in pyproject.toml; CI runs it before the tests.
DEV_STAMP := $(VENV)/.dev-installed
$(DEV_STAMP): $(STAMP)
	$(call install,ann$(comma)dev)
	@touch $@

lint: $(DEV_STAMP)
	$(BIN)/ruff check .

# Executes the lessons with $COURSE_DATA (default: TFDS, falling back to synthetic data),
# reusing cached runs of unchanged lessons, then serves the site.
site: $(STAMP) vendor
	@echo "Executing the lessons (progress below; unchanged lessons reuse their cached run)."
	@echo "The site will be served at http://127.0.0.1:8000 when the build is done."
	$(BIN)/mkdocs serve --dev-addr 127.0.0.1:8000

# Lessons run two at a time with one thread each on a 2-core machine ($COURSE_SITE_JOBS=1:
# one at a time with every core); notebooks and links follow $COURSE_REPO_URL (docs/authoring.md).
site-build: $(STAMP) vendor
	$(BIN)/mkdocs build --strict

# The same strict build on another dataset shape, into site-audit/: every lesson executed on
# synthetic data the size of MovieLens 100K, so a sentence (a claim, a generated comparison)
# that holds on one dataset only fails here. CI runs it as its own job (.github/workflows/
# audit.yml); the static prose checks run with `make test` (tests/dev/test_prose.py).
AUDIT_DATA ?= synthetic:100k
audit: $(STAMP) vendor
	COURSE_DATA=$(AUDIT_DATA) $(BIN)/mkdocs build --strict --site-dir site-audit

BROWSER_STAMP := $(VENV)/.browser-installed
$(BROWSER_STAMP): $(STAMP)
	$(call install,ann$(comma)browser)
	@touch $@

# Drives Debian's chromium (or the browser $CHROMIUM names) over the built site. Reuses
# site/ when it is current; otherwise builds it with the last build's data, or with
# $COURSE_DATA when set (saying so, since that executes every lesson with the new data).
# Two browsers at a time; COURSE_SCREENSHOTS=1 also saves full-page screenshots.
browser-test: $(BROWSER_STAMP) vendor
	@command -v $${CHROMIUM:-chromium} >/dev/null 2>&1 || { echo "chromium is missing: apt-get install chromium, or set CHROMIUM"; exit 1; }
	@$(BIN)/python -m recsys_course.tooling.site.stamp site || { \
	  data="$${COURSE_DATA:-$$($(BIN)/python -m recsys_course.tooling.site.stamp site --data)}"; \
	  echo "building the site with COURSE_DATA=$${data:-auto}"; \
	  COURSE_DATA="$$data" $(BIN)/mkdocs build --strict; }
	$(BIN)/python -m pytest -n 2 tests/browser

bench: $(STAMP)
	$(BIN)/course bench --data $${COURSE_DATA:-synthetic}

sync: $(STAMP)
	$(BIN)/course sync

clean:
	rm -rf site site-audit .cache .pytest_cache
