# Two entry points for a newcomer: `make run` and `make test`. Needs only Python 3.11+.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

.PHONY: run test install install-dev test-tools migrate demo lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.installed: requirements.txt | $(PY)
	$(PIP) install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt | $(PY)
	$(PIP) install --quiet -r requirements-dev.txt
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

migrate: install
	$(PY) manage.py migrate --no-input

demo: migrate
	$(PY) manage.py seed_demo

## run: install, migrate, load demo data, start web + Celery worker + beat (Ctrl-C stops all)
run: demo
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/honcho start

## test: install what the tests need (incl. Debian's Chromium where possible) and run the suite
# Browser tests run in a process of their own: once Playwright's event loop runs in a process,
# Django hands later tests other connection objects, and transactional tests stop getting their
# migrated data (groups, content types) restored.
test: install-dev test-tools
	$(VENV)/bin/pytest -m "not browser"
	$(VENV)/bin/pytest -m browser tests/browser

test-tools:
	@bash scripts/install-test-tools.sh

lint: install-dev
	$(VENV)/bin/ruff check .

## bench: every benchmark on PostgreSQL, one after another (bench/all.sh; see docs/benchmarks.md)
# `make bench BENCH="status fanout"` runs only those (folders under bench/; "admin" is bench/run.sh).
BENCH ?=
bench: install-dev
	bash bench/all.sh $(BENCH)

clean:
	rm -rf $(VENV) var staticfiles db.sqlite3
