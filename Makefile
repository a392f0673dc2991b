# Two commands for a newcomer: `make run` (demo service) and `make test` (the test suite).
# Both create .venv and install the pinned requirements themselves.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint bench docs-check clean help

help:
	@echo "make run    - start the demo service on an embedded PostgreSQL (prints a curl)"
	@echo "make test   - run the tests (embedded PostgreSQL, or FLEXSVC_TEST_DSN)"
	@echo "make lint   - ruff"
	@echo "make bench  - performance benchmark (installs Debian's wrk; BENCH_ARGS=--help)"
	@echo "make docs-check - render /docs in headless Chromium (installs Debian's chromium)"
	@echo "make clean  - remove .venv and the demo's data (stops its PostgreSQL)"

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

run: $(STAMP)
ifdef FLEXSVC_CONFIG
	$(VENV)/bin/gunicorn -c gunicorn.conf.py wsgi:app
else
	$(PY) -m flexsvc.ops.demo
endif

test: $(STAMP)
	$(VENV)/bin/ruff check flexsvc tests wsgi.py gunicorn.conf.py bench
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check flexsvc tests wsgi.py gunicorn.conf.py bench

# The small-batch load comes from wrk (Debian's package), installed here when missing; without
# it (no apt-get, no root) the bench falls back to its Python client and says so.
bench: $(STAMP)
	command -v wrk >/dev/null 2>&1 || (apt-get update && apt-get install -y wrk) || \
		echo "wrk could not be installed: the bench uses its Python client"
	$(PY) -m bench $(BENCH_ARGS)

# Renders /docs offline in headless Chromium and checks every operation is on the page.
docs-check: $(STAMP)
	command -v chromium >/dev/null 2>&1 || (apt-get update && apt-get install -y chromium)
	$(PY) tools/docs_check.py

# As root the demo's PostgreSQL data lives outside the project (see README "Running as root"):
# the demo itself knows where, so ask it to remove the data before the virtualenv goes.
clean:
	if [ -x $(PY) ]; then $(PY) -m flexsvc.ops.demo --remove-data; fi
	rm -rf $(VENV) .flexsvc .pytest_cache
