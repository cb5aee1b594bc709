# Two commands: `make demo` serves the facade on its embedded demo data; `make test` runs the suite.
# Both work on a fresh machine: they create .venv, install what is missing (apt packages included
# for the tests) and then run.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q

.PHONY: demo test lint typecheck bench system-deps clean

$(VENV)/.runtime: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -r requirements.txt 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -c "import flask, pydicom, gunicorn, orjson, yaml, jsonschema"
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(PIP) install -r requirements-dev.txt 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -c "import pytest, fhir.resources"
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

system-deps:
	bash scripts/install-system-deps.sh

demo: $(VENV)/.runtime
	$(PY) -m app demo

test: $(VENV)/.dev node_modules/.installed system-deps
	$(PY) -m pytest

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check app tests bench scripts wsgi.py

typecheck: $(VENV)/.dev
	$(VENV)/bin/mypy

bench: $(VENV)/.dev node_modules/.installed system-deps
	$(PY) -m bench.mapping_cpu      # P3
	$(PY) -m bench.auth_overhead    # P6
	$(PY) -m bench.federation       # P1, P2, P7, R1, R2 (eight real Orthanc archives; ~4 min)
	$(PY) -m bench.gateway          # image gateway throughput and memory (one Orthanc, a 300 MB study)
	$(PY) -m bench.load             # P5: 25 searches/s for 60 s, locust (eight real Orthanc archives; ~2 min)

clean:
	rm -rf $(VENV) node_modules demo-data .pytest_cache
