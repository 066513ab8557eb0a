# lorabench task runner. Both quick-start targets bootstrap .venv themselves.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_DIR ?= $(CURDIR)/.demo

.PHONY: venv demo test lint bench clean

venv: $(STAMP)

# torch==2.13.0 first, so pip keeps the CPU build instead of pulling a CUDA one.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: venv
	$(BIN)/python -m lorabench demo --dir $(DEMO_DIR)

test: venv
	$(BIN)/ruff check lorabench tests benchmarks
	$(BIN)/python -m pytest -m "not gpu"

lint: venv
	$(BIN)/ruff check lorabench tests benchmarks
	$(BIN)/ruff format --check lorabench tests benchmarks

bench: venv
	$(BIN)/python benchmarks/bench_files.py
	$(BIN)/python benchmarks/bench_import.py
	$(BIN)/python benchmarks/bench_search.py
	$(BIN)/python benchmarks/bench_concurrent.py
	$(BIN)/python benchmarks/bench_queue.py
	$(BIN)/python benchmarks/bench_gallery.py

clean:
	rm -rf $(VENV) $(DEMO_DIR) build dist .pytest_cache .ruff_cache
