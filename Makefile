# One place for the everyday commands. Each target sets up .venv on first use.
VENV ?= .venv
PYTHON ?= python3
# The CPU build of torch lies on disk here; on a CUDA machine set TORCH_SPEC=torch.
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
MIN_VENV ?= .venv-min

.PHONY: install test test-all test-min lint bench pipeline clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[all,dev]"
	touch $@

install: $(BIN)/.installed

test: install
	$(BIN)/pytest

# Every direct dependency at its declared minimum (uv's lowest-direct resolution), then the
# default tests. torch is held at $(TORCH_SPEC), the CPU build on this machine's disk (its older
# releases are CUDA builds of several GB).
$(MIN_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(MIN_VENV)
	$(MIN_VENV)/bin/python -m pip install -q uv "$(TORCH_SPEC)"
	echo "$(TORCH_SPEC)" > $(MIN_VENV)/torch-override.txt
	$(MIN_VENV)/bin/uv pip install -q --python $(MIN_VENV)/bin/python \
		--resolution lowest-direct --override $(MIN_VENV)/torch-override.txt \
		$(if $(PIP_FIND_LINKS),--find-links $(PIP_FIND_LINKS)) -e ".[all,dev]"
	touch $@

# The fault and folder-rule tests exercise the project's own checks, not its dependencies' APIs:
# they run once, in make test.
OWN_LOGIC_TESTS := cli_faults pretraining_faults folder_rules_merge worker_pools sweep_rules \
	record_paths data_meaning model_load_checks footprint layering collector_faults \
	training_faults memory_faults progress
test-min: $(MIN_VENV)/.installed
	$(MIN_VENV)/bin/python -m pip list 2>/dev/null | grep -iE "^(torch|numpy|scipy|gymnasium|stable.baselines3|opencv-python|matplotlib|safetensors|tqdm|tensorboard|pyyaml|ale.py|minigrid|cma|sb3.contrib|envpool|ray|optuna|minari|zstandard|pytest) "
	$(MIN_VENV)/bin/pytest $(foreach t,$(OWN_LOGIC_TESTS),--ignore=tests/test_$(t).py)

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
	$(BIN)/python scripts/bench_preprocessing.py

pipeline: install
	$(BIN)/worldvae pipeline

clean:
	rm -rf $(VENV) $(MIN_VENV) .pytest_cache .ruff_cache .mypy_cache
