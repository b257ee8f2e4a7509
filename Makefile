# Two commands on a fresh machine: `make demo` (train the quickstart recipe) and `make test`.
# Both set up .venv first; it is rebuilt only when the dependency files change.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.deps-stamp
DEPS   := pyproject.toml tests/thirdparty/afx_example_plugin/pyproject.toml
PYTEST_ARGS ?=

.PHONY: install demo test test-fast bench clean

$(STAMP): $(DEPS)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	$(BIN)/python -m pip install --quiet ./tests/thirdparty/afx_example_plugin
	@touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/afx fit --config recipes/quickstart.yaml

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

bench: install
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) wandb lightning_logs .pytest_cache
