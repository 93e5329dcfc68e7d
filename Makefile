# Two commands on a fresh machine with Python 3.11 (or 3.12) and make:
#   make run    start worker, beat and Flower on embedded defaults (Ctrl-C stops everything)
#   make test   run the test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3)
UV_VERSION := 0.13.8
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
PY := $(VENV)/bin/python
export UV_PYTHON_DOWNLOADS := never

.PHONY: install run test test-unit test-fast lint bench clean clickhouse-server

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet uv==$(UV_VERSION)

$(VENV)/.synced: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --python $(PYTHON)
	touch $@

install: $(VENV)/.synced

run: install
	$(PY) -m app run

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

# The fast levels alone: no services (seconds), then with Redis and ClickHouse in this process (no e2e).
test-unit: install
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -m "not e2e" $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check app tasks bench tests examples
	$(VENV)/bin/ruff format --check app tasks bench tests examples
	$(VENV)/bin/mypy

# A real ClickHouse server on loopback (fetched once with npm into .tools/); prints the CLICKHOUSE_URL to use.
clickhouse-server: install
	$(PY) -m app clickhouse-server start

bench: install
	$(PY) -m app bench ingest $(BENCH_ARGS)
	$(PY) -m app bench read $(BENCH_ARGS)
	$(PY) -m app bench jobs $(BENCH_ARGS)
	$(PY) -m app bench legacy $(BENCH_ARGS)
	$(PY) -m app bench insights $(BENCH_ARGS)
	$(PY) -m app bench capacity $(BENCH_ARGS)
	$(PY) -m app bench cluster $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(TOOLS) .data .mypy_cache .ruff_cache .pytest_cache
