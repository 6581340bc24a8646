# Identity reconciliation service. `make run` serves, `make test` tests; `make help` lists all.
.DEFAULT_GOAL := help
SHELL := /bin/sh

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

# Without DATABASE_URL, commands run against the embedded PostgreSQL kept in PGDATA_DIR.
PGDATA_DIR ?= .pgdata
# A second command beside `make run` uses the server that make run started in PGDATA_DIR.
WITH_DB := $(if $(DATABASE_URL),,$(PY) -m identity.dev.embedded --data $(PGDATA_DIR) --)
# The installed command; a bad setting stops it with one line naming the variable (exit 2).
IDENTITY := $(PY) -m identity.cli

.PHONY: help run serve db-init deliver import import-file renormalise bench-big test test-browser test-proxy test-package test-deploy lock smoke audit bench bench-scale bench-import profile soak clean clean-data lint

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

run: $(STAMP) ## serve on http://127.0.0.1:3000 (embedded PostgreSQL unless DATABASE_URL is set)
	@$(IDENTITY) check-config >/dev/null
	$(WITH_DB) $(MAKE) --no-print-directory db-init serve

serve: $(STAMP)
	$(PY) wsgi.py

db-init: $(STAMP) ## apply the pending migrations of sql/ (each once; safe to repeat)
	$(WITH_DB) $(IDENTITY) init-db

deliver: $(STAMP) ## POST the change feed to WEBHOOK_URL, signed, until stopped (docs/feed.md)
	$(WITH_DB) $(IDENTITY) deliver

test: $(STAMP) ## run the tests (throwaway embedded PostgreSQL unless TEST_DATABASE_URL is set)
	$(PY) -m pytest

lint: $(STAMP) ## ruff (pyproject.toml) and mypy (setup.cfg) over the code; both must be clean
	$(PY) -m ruff check identity tests tests_browser tests_ha tests_package wsgi.py
	$(PY) -m mypy

# SE_OFFLINE: Selenium must never fetch a browser or driver; it is given the installed ones.
test-browser: $(STAMP) ## drive the support console in headless Chromium; screenshots in .screenshots/
	SE_OFFLINE=true $(PY) -m pytest tests_browser

# nginx is in /usr/sbin, which is not on every user's PATH.
NGINX_BIN ?= $(shell command -v nginx || command -v /usr/sbin/nginx)

test-proxy: $(STAMP) ## the shipped nginx setup (deploy/nginx) in front of a server, tested through it
	@if [ -z "$(NGINX_BIN)" ]; then \
		echo "make test-proxy needs nginx: apt-get install nginx (as root), or NGINX_BIN=/path/to/nginx" >&2; \
		exit 1; \
	fi
	NGINX_BIN=$(NGINX_BIN) $(PY) -m pytest -s tests/proxy_checks.py

.PHONY: test-ha
test-ha: $(STAMP) ## PgBouncer (transaction mode) and a failover to a synchronous standby, on real PostgreSQL 15 (~2 min)
	tests_ha/install-packages.sh
	$(PY) -m pytest tests_ha

audit: $(STAMP) ## check the invariants (§6 of docs/behaviour.md) over the whole table; exit 1 listing offenders
	$(WITH_DB) $(IDENTITY) audit

import: $(STAMP) ## import historical orders: make import FILE=orders.csv[.gz] [REJECTS=path] (docs/import.md)
	@test -n "$(FILE)" || { echo "usage: make import FILE=orders.csv [REJECTS=path]" >&2; exit 2; }
	$(WITH_DB) $(MAKE) --no-print-directory db-init import-file

import-file:
	$(IDENTITY) import "$(FILE)" $(if $(REJECTS),--rejects "$(REJECTS)")

# Builds the wheel, installs it into a new virtual environment outside the checkout and,
# from another folder, migrates a fresh database, serves, identifies, imports and audits.
test-package: $(STAMP) ## the built wheel, installed elsewhere, does everything from there (tests_package/)
	$(PY) tests_package/check_wheel.py

test-deploy: $(STAMP) ## deploy/: units checked by systemd-analyze, alert rules by promtool, metrics by a live server
	@for tool in promtool systemd-analyze; do command -v $$tool >/dev/null || { \
		echo "make test-deploy needs $$tool: apt-get install prometheus systemd (as root)" >&2; exit 1; }; done
	$(PY) -m pytest -p no:cacheprovider tests/test_deploy.py

# The lock file: every dependency of setup.cfg (not dev), exact versions with hashes.
lock: ## regenerate requirements.lock from setup.cfg with pip-tools
	$(PYTHON) -m venv .lock-venv && .lock-venv/bin/pip install --quiet pip-tools==7.6.2
	.lock-venv/bin/pip-compile --quiet --generate-hashes --strip-extras --no-header --no-emit-index-url \
		--no-emit-find-links --output-file requirements.lock setup.cfg
	rm -rf .lock-venv

renormalise: $(STAMP) ## after changing PHONE_REGION: rewrite stored phones, merge customers (DRY_RUN=1: report only)
	$(WITH_DB) $(IDENTITY) renormalise $(if $(DRY_RUN),--dry-run)

smoke: ## curl checks against a running server: make smoke [BASE_URL=http://127.0.0.1:3000]
	tests/smoke.sh $(BASE_URL)

bench: $(STAMP) ## throughput, p50/p99 vs concurrency, PostgreSQL's ceiling and a floor; report and PNG in bench-results/ (~4 min; ARGS=--workers 1,2,4)
	$(PY) tests/bench.py $(ARGS)

bench-big: $(STAMP) ## one customer of 30,000 rows: checkouts, look-ups, console page (~1 min)
	$(PY) tests/bench_big_customer.py

profile: $(STAMP) ## CPU microseconds per request by part of the code, sampled with py-spy (~1 min)
	$(PY) tests/cpu_profile.py

bench-scale: $(STAMP) ## latency at 10 k and 1 M rows and for one customer of 5,000 rows (~3 min)
	$(PY) tests/bench.py --scale

bench-import: $(STAMP) ## import of 1 M generated orders: empty and 1 M-row database, vs the API (~10 min; ARGS=--orders N)
	$(PY) tests/bench_import.py $(ARGS)

soak: $(STAMP) ## 30 min of mixed load, feed and webhooks; memory, files, connections, dead rows, p99 over time; fails on growth (ARGS=--minutes 5)
	$(PY) tests/soak.py $(ARGS)

clean: ## remove the virtual environment; the embedded database's customers stay (make clean-data)
	rm -rf $(VENV) *.egg-info build
	@if [ -d "$(PGDATA_DIR)" ]; then \
		echo "kept $(PGDATA_DIR)/, the embedded database and its customers: make clean-data deletes it"; fi

clean-data: ## delete the embedded database in PGDATA_DIR and every customer in it
	@echo "deleting $(PGDATA_DIR)/: the embedded database and every customer in it"
	rm -rf "$(PGDATA_DIR)"
