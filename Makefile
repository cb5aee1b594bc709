# Two commands: `make demo` serves the facade on its embedded demo data; `make test` runs the checks
# (`make check`: ruff, mypy, import-linter; any finding fails) and then the suite. Both work on a
# fresh machine: they create .venv, install what is missing (apt packages included for the tests)
# and then run. `make coverage` runs the suite under coverage and prints the report for app/.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q

.PHONY: demo test check lint format-check typecheck importlint coverage bench system-deps clean

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

# `make demo PORT=9090`: another port (the default is python -m app demo's).
demo: $(VENV)/.runtime
	$(PY) -m app demo $(if $(PORT),--port $(PORT))

test: check node_modules/.installed system-deps
	$(PY) -m pytest

# The suite under coverage ([tool.coverage] in pyproject.toml), then the report for app/, printed
# whether or not a test failed; the exit status is pytest's.
coverage: $(VENV)/.dev node_modules/.installed system-deps
	rm -f .coverage .coverage.*
	status=0; $(PY) -m coverage run -m pytest || status=$$?; \
	$(PY) -m coverage combine -q && $(PY) -m coverage report; exit $$status

# Every check, in order; the first one with a finding stops the run (`make -k check` runs them all).
check: lint format-check typecheck importlint

PY_SOURCES := app tests bench tools scripts wsgi.py

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check $(PY_SOURCES)

format-check: $(VENV)/.dev
	$(VENV)/bin/ruff format --check $(PY_SOURCES)

# The app: `mypy` alone, strict ([tool.mypy] in pyproject.toml). Tests, bench, tools, scripts and
# wsgi.py: the same settings less the ones that demand annotations (untyped and partly typed defs,
# untyped calls and decorators, bare generics, Any returned or subclassed), with a cache of their own
# (other flags, other cache entries).
MYPY := $(VENV)/bin/mypy
MYPY_TESTS := $(MYPY) --cache-dir .mypy_cache/tests \
	--allow-untyped-defs --allow-incomplete-defs --allow-untyped-calls --allow-untyped-decorators \
	--allow-any-generics --allow-subclassing-any --no-warn-return-any
# mypy must name each module as the tests import it, and pytest's "prepend" import mode decides that:
# - tests/ is the import root of tests/*.py (top-level modules: `smart_tokens`, `conftest`) and of the
#   packages tests/PKG/ (with __init__.py), which the tests import as `tests.PKG.module`;
# - a folder under tests/ without __init__.py is an import root of its own: its conftest.py and test
#   files are top-level modules (tests/auth/conftest.py is `conftest`, like tests/conftest.py), so it
#   gets a run of its own, with those files as sources; its other modules are checked under the names
#   they are imported by (`smart_support` from tests/auth, `tests.archives.support`).
TEST_PACKAGES := $(patsubst tests/%/__init__.py,%,$(wildcard tests/*/__init__.py))
TEST_ROOTS := $(filter-out $(addprefix tests/,$(TEST_PACKAGES)),$(patsubst %/,%,$(sort $(dir $(wildcard tests/*/*.py)))))

# Every run goes ahead whatever the ones before it found; the target fails if any run did.
typecheck: $(VENV)/.dev
	@status=0; \
	echo "$(MYPY)"; $(MYPY) || status=1; \
	run() { echo "MYPYPATH=$$1 $(MYPY_TESTS) $$2"; MYPYPATH=$$1 $(MYPY_TESTS) $$2 || status=1; }; \
	run tests "$(patsubst tests/%.py,-m %,$(wildcard tests/*.py)) $(addprefix -p tests.,$(TEST_PACKAGES)) -p bench -p tools -p scripts -m wsgi"; \
	for root in $(TEST_ROOTS); do \
		files=$$(ls $$root/conftest.py $$root/test_*.py $$root/*_test.py 2>/dev/null | tr "\n" " "); \
		if [ -n "$$files" ]; then run $$root:tests "$$files"; fi; \
	done; \
	exit $$status

importlint: $(VENV)/.dev
	$(VENV)/bin/lint-imports --no-cache

bench: $(VENV)/.dev node_modules/.installed system-deps
	$(PY) -m bench.mapping_cpu      # P3
	$(PY) -m bench.facade_cpu       # C1, C2, P1, P2, P5, P3 against 8 canned archives (the facade alone; ~3 min)
	$(PY) -m bench.auth_overhead    # P6
	$(PY) -m bench.federation       # P1, P2, P7, R1, R2 (eight real Orthanc archives; ~4 min)
	$(PY) -m bench.gateway          # image gateway throughput and memory (one Orthanc, a 300 MB study)
	$(PY) -m bench.gateway --nginx  # P4 behind nginx: direct, plain nginx proxy, X-Accel-Redirect, Python relay
	$(PY) -m bench.load             # P5: 25 searches/s for 60 s, locust (eight real Orthanc archives; ~2 min)

clean:
	rm -rf $(VENV) node_modules demo-data .pytest_cache .mypy_cache .ruff_cache .coverage .coverage.*
