# One command for each habit; each creates or reuses .venv by itself, so a fresh
# clone needs nothing but python3 (>= 3.11).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv browser run status status-watch failed test test-fast lint format bench clean

SETUP_LOG := $(VENV)/setup.log

# Quiet unless something fails: pip's output (its notices and warnings) goes to
# $(SETUP_LOG), shown only when a step fails.
$(STAMP): pyproject.toml
	@echo "setting up $(VENV) (pip's output: $(SETUP_LOG)) ..."
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@: > $(SETUP_LOG)
	@$(BIN)/python -m pip install -q --upgrade pip >>$(SETUP_LOG) 2>&1 \
		|| { cat $(SETUP_LOG); exit 1; }
	@$(BIN)/python -m pip install -q -e '.[dev]' >>$(SETUP_LOG) 2>&1 \
		|| { cat $(SETUP_LOG); exit 1; }
	@touch $(STAMP)

venv: $(STAMP)

run: venv
	@$(BIN)/reka-ingest run

# What `run` is doing, from another shell (the same INGEST_DATA_DIR, or none).
status: venv
	@$(BIN)/reka-ingest status

status-watch: venv
	@$(BIN)/reka-ingest status --watch

failed: venv
	@$(BIN)/reka-ingest files --state failed

# Two test processes (pytest-xdist): most of the suite waits on real processes,
# servers and files, so two share the two cores well; `worksteal` lets the one
# that finishes first take the other's remaining tests (a few take 20-45 s).
# TEST_WORKERS=0 runs in one.
TEST_WORKERS ?= 2
XDIST := -n $(TEST_WORKERS) --dist worksteal

# The browser test (tests/web/test_browser.py) drives Debian's chromium. As root (how
# CI runs) it is installed here, quietly; otherwise the test skips and says why.
browser:
	@if [ "$$(id -u)" = 0 ] && ! command -v chromium >/dev/null 2>&1 \
	    && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing chromium for the browser test (apt-get)"; \
	  { apt-get install -y -q chromium >/dev/null 2>&1 \
	    || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; }; } \
	  || echo "could not install chromium; the browser test will skip"; \
	fi

test: venv browser
	$(BIN)/python -m pytest $(XDIST) $(PYTEST_ARGS)

# Skips the scenarios marked slow; CI never uses this.
test-fast: venv browser
	$(BIN)/python -m pytest $(XDIST) -m "not slow" $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: venv
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
