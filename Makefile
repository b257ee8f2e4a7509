# Two commands on a fresh machine: `make demo` (train the quickstart recipe) and `make test`.
# Both set up .venv first, from requirements.lock only (exact versions with hashes); it is rebuilt when the lock changes.
# `make lock` is the one command that refreshes the lock after pyproject.toml changes (keeps the other pins;
# `make lock UPGRADE=1` moves every package to its newest allowed version). Then `make test` on the new venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
UV     := $(BIN)/uv
STAMP  := $(VENV)/.lock-stamp
LOCK   := requirements.lock
PYTEST_ARGS ?=
# Test processes (pytest-xdist; whole files per process, so a module's fixtures are built once and the DDP tests
# never overlap). 2 suits 2 cores: most tests wait on subprocesses and imports. TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2
XDIST := $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)
# The one place the lock's options live: `make lock` writes them, tests/test_lock.py reads them from the header.
LOCK_ARGS := pyproject.toml --group dev --universal --python-version 3.10 --generate-hashes

.PHONY: install lock demo test test-fast bench lint clean

# The example plugin is installed as a copy (like a user's), so any of its files changing reinstalls it.
PLUGIN_FILES := $(shell find tests/thirdparty/afx_example_plugin -type f -not -path '*/build/*' -not -path '*.egg-info*' -not -name '*.pyc')

$(STAMP): $(LOCK) pyproject.toml $(PLUGIN_FILES)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@# uv itself comes from the lock (its pinned line and hashes), installed by the venv's own pip.
	@awk '/^uv==/{p=1} p{print; if ($$0 !~ /\\$$/) exit}' $(LOCK) > $(VENV)/uv-requirement.txt
	$(BIN)/python -m pip install --quiet --no-deps --require-hashes -r $(VENV)/uv-requirement.txt
	$(UV) pip sync --quiet --python $(BIN)/python --require-hashes $(LOCK)
	@# The project and the third-party example plugin: no dependencies of their own beyond the lock, no build isolation.
	$(UV) pip install --quiet --python $(BIN)/python --no-deps --no-build-isolation -e . ./tests/thirdparty/afx_example_plugin
	@touch $(STAMP)

install: $(STAMP)

lock:
	@test -x $(UV) || { $(PYTHON) -m venv $(VENV) && $(BIN)/python -m pip install --quiet "uv==$$(sed -n 's/^uv==\([^ ]*\).*/\1/p' $(LOCK))"; }
	$(UV) pip compile $(LOCK_ARGS) $(if $(UPGRADE),--upgrade) -o $(LOCK)
	@echo "lock refreshed: run 'make test' (the stamp makes it rebuild .venv from the new lock)"

demo: install
	$(BIN)/afx fit --config recipes/quickstart.yaml

test: install
	$(BIN)/python -m pytest $(XDIST) $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest $(XDIST) -m "not slow" $(PYTEST_ARGS)

# Lint and format check only (settings in pyproject.toml [tool.ruff]); `ruff check --fix .` / `ruff format .` fix.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: install
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) wandb lightning_logs runs .pytest_cache
