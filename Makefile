# Two commands for a newcomer: `make run` (demo service) and `make test` (the test suite).
# Both create .venv and install the pinned requirements themselves.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean help

help:
	@echo "make run    - start the demo service on an embedded PostgreSQL (prints a curl)"
	@echo "make test   - run the tests (embedded PostgreSQL, or FLEXSVC_TEST_DSN)"
	@echo "make lint   - ruff"
	@echo "make bench  - performance benchmark"

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

run: $(STAMP)
ifdef FLEXSVC_CONFIG
	$(VENV)/bin/gunicorn -c gunicorn.conf.py wsgi:app
else
	$(PY) -m flexsvc.demo
endif

test: $(STAMP)
	$(VENV)/bin/ruff check flexsvc tests wsgi.py gunicorn.conf.py
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check flexsvc tests wsgi.py gunicorn.conf.py

bench: $(STAMP)
	$(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .flexsvc .pytest_cache
