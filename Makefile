# Two commands do all the set-up on a fresh machine: `make run` (the product) and `make test` (the tests).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8000
RUNS ?= 1
# Python >= 3.12: the pinned 3.13 from pyenv when present, else whatever python3.1x is on PATH.
PYTHON ?= $(shell for p in $$HOME/.pyenv/versions/3.13*/bin/python python3.13 python3.12 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null && { echo $$p; break; }; done)

.PHONY: run test venv migrate demo clean bench bench-quick

# Development values for `make run` and the tests only: the settings have no default secret and DEBUG is off
# unless set (docs/operations.md, "Security settings"). Production sets its own in the environment.
DEV_ENV := DJANGO_SECRET_KEY=$${DJANGO_SECRET_KEY:-dev-only-insecure-secret-key-not-for-production-0123456789abcdef}
RUN_ENV := $(DEV_ENV) DJANGO_DEBUG=$${DJANGO_DEBUG:-1}

$(VENV)/.installed: pyproject.toml
	@test -n "$(PYTHON)" || { echo "Python >= 3.12 is required"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

migrate: venv
	$(RUN_ENV) $(PY) manage.py migrate --noinput

demo: migrate
	$(RUN_ENV) $(PY) manage.py recon_demo
	$(RUN_ENV) DJANGO_SUPERUSER_PASSWORD=admin $(PY) manage.py createsuperuser --noinput --username admin --email admin@example.com 2>/dev/null || true
	@echo "Demo superuser: admin / admin  ->  http://127.0.0.1:$(PORT)/admin/"

# The web console and a qcluster together, in the foreground; Ctrl-C stops both (the cluster finishes its
# current slice first, ~15 s). Only the two main processes are signalled: django-q2 stops its own children.
run: demo
	@export $(RUN_ENV); $(PY) manage.py qcluster & QC=$$!; \
	export $(RUN_ENV); $(PY) manage.py runserver 0.0.0.0:$(PORT) & WEB=$$!; \
	trap 'kill -TERM $$WEB $$QC 2>/dev/null; wait $$QC' INT TERM; \
	wait

# Tests on a real PostgreSQL: the one in DATABASE_URL, or a throwaway server started for the run.
test: venv
	@export $(DEV_ENV); if [ -n "$$DATABASE_URL" ]; then $(PY) -m pytest $(PYTEST_ARGS); \
	else $(PY) -m tests.pgserver -- $(PY) -m pytest $(PYTEST_ARGS); fi

clean:
	rm -rf $(VENV) var

# Benchmarks (issue 5): a durable throwaway PostgreSQL, the real qcluster, figures and ratios in one table.
$(VENV)/.bench-installed: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	touch $@

bench: $(VENV)/.bench-installed
	export $(DEV_ENV); $(PY) -m tests.pgserver --durable -- $(PY) -m bench.run --scale 1 --runs $(RUNS)

bench-quick: $(VENV)/.bench-installed
	export $(DEV_ENV); $(PY) -m tests.pgserver --durable -- $(PY) -m bench.run --scale 0.1 --runs $(RUNS)
