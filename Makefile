# One place for the everyday commands. Each target sets up .venv on first use.
VENV ?= .venv
PYTHON ?= python3
# The CPU build of torch lies on disk here; on a CUDA machine set TORCH_SPEC=torch.
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: install test test-all lint bench pipeline clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[all,dev]"
	touch $@

install: $(BIN)/.installed

test: install
	$(BIN)/pytest

test-all: install
	$(BIN)/pytest -m "not gpu"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: install
	$(BIN)/python scripts/bench_collector.py
	$(BIN)/python scripts/bench_vae.py
	$(BIN)/python scripts/bench_latent.py
	$(BIN)/python scripts/bench_envs.py

pipeline: install
	$(BIN)/worldvae pipeline

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
