# tfgpt: every target installs what it needs into .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
DEMO_DIR ?= demo-out

.PHONY: install demo test reliability lint bench clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,serve,parity]"
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m tfgpt demo --out $(DEMO_DIR)

# The suite on TEST_WORKERS processes (pytest-xdist, one test file per worker at a time), then the reliability
# suite (kills, soak, fuzz: timing-sensitive) on its own, which also prints its figures.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(PY) -m ruff check tfgpt tests benchmarks
	$(PY) -m pytest -q --durations=15 -n $(TEST_WORKERS) --dist loadfile -m "not reliability"
	$(PY) -m pytest -q --durations=10 -m reliability

# The reliability suite alone (also part of `make test`), writing its figures into docs/reliability.md.
reliability: $(STAMP)
	TFGPT_RELIABILITY_DOC=docs/reliability.md TFGPT_SOAK_S=60 $(PY) -m pytest -q -m reliability

lint: $(STAMP)
	$(PY) -m ruff check tfgpt tests benchmarks

clean:
	rm -rf $(DEMO_DIR) .pytest_cache
