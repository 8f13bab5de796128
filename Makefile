# One-command set-up: `make test` and `make study` create .venv and install everything on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch: the CPU build 2.13.0 where no torch is installed (a CUDA machine keeps the user's torch via
# TORCH_SPEC=skip). dynamic-network-architectures is installed without dependencies: its timm ->
# torchvision chain pins a different (CUDA) torch, and PlainConvUNet needs only torch.
TORCH_SPEC ?= torch==2.13.0
DNA_SPEC ?= dynamic-network-architectures==0.4.4
# Everything, torch included, is resolved and installed by uv (measured here: 29 s against pip's 66 s for the
# 154 packages besides torch; torch with them 39 s against pip's 25 s for torch alone). uv does not read pip's
# configuration: the wheel folders pip is told of (find-links, where this machine's CPU torch lies) are handed to it.
UV_SPEC ?= uv==0.13.9
FIND_LINKS ?= $(or $(PIP_FIND_LINKS),$(shell $(PY) -m pip config get global.find-links 2>/dev/null))
UV = $(BIN)/uv pip install -q --python $(BIN)/python $(foreach d,$(FIND_LINKS),--find-links $(d))
# Bytecode: Python compiles a module when it is first imported and caches it, so only what is used gets compiled.
# The install's import check compiles the import trees of a study's driver and trial workers (3,700 of the venv's
# 24,000 modules; torch's and the rest's in two processes at once, one per core here), so test processes, Ray
# workers and servers starting together do not each compile them. Measured here: compiling the whole venv took
# 27 s of a fresh clone's 50 s install; the install is now 16 s. An environment that sets
# PYTHONDONTWRITEBYTECODE would recompile in every process instead.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: install browser test test-fast lint study report ui bench bench-cluster gpu-check clean

$(STAMP): pyproject.toml Makefile
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q "$(UV_SPEC)"
	@if [ "$(TORCH_SPEC)" = "skip" ] || $(BIN)/python -c "import torch" 2>/dev/null; then \
		$(BIN)/python -c "import torch; print('torch==' + torch.__version__)" > $(VENV)/constraints.txt; \
	else echo "$(TORCH_SPEC)" > $(VENV)/constraints.txt; fi
	$(UV) -c $(VENV)/constraints.txt -e '.[dev]'
	$(UV) --no-deps "$(DNA_SPEC)"
	$(BIN)/python -c "import mlflow, ray.tune, optuna, altair, pyarrow.parquet" & \
	$(BIN)/python -c "import torch, diffseg.studies.cli, diffseg.studies.trainable, diffseg.report.cli; \
		print('torch', torch.__version__)" && wait $$!
	touch $(STAMP)

install: $(STAMP)

# Headless Chromium + ChromeDriver for the report's browser test (Debian packages; needs root or sudo).
browser:
	@if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check .

# Test processes (pytest-xdist): most end-to-end tests wait on servers, Ray and subprocess drivers, so more
# processes than cores overlap the waits; each process runs torch on one thread (tests/conftest.py). The longest
# tests start first and each process takes one test at a time (--dist load --maxschedchunk 1, tests/conftest.py);
# what that gained is measured in the README's Development section.
TEST_WORKERS ?= 3

test: $(STAMP) browser
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist load --maxschedchunk 1 --durations=15

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

study: $(STAMP)
	$(BIN)/python studies/run_study.py --study weighting_schedules --budget smoke

report: $(STAMP)
	$(BIN)/python reports/make_report.py --study weighting_schedules --runs runs

ui: $(STAMP)
	@echo "MLflow UI: http://127.0.0.1:5000/#/experiments?workflowType=machine_learning (model-training pages, not the GenAI overview)"
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow server --backend-store-uri sqlite:///$(CURDIR)/runs/mlflow.db \
		--default-artifact-root $(CURDIR)/runs/mlartifacts --host 127.0.0.1 --port 5000 --workers 1

bench: $(STAMP)
	$(BIN)/python -m diffseg.bench all

# a head and two worker nodes on this machine, a worker killed mid-trial, the driver killed and resumed
bench-cluster: $(STAMP)
	$(BIN)/python -m diffseg.bench cluster

# on a CUDA machine: two trials sharing one GPU with bf16, steps/s and MFU; elsewhere exits 0 without running
gpu-check: $(STAMP)
	$(BIN)/python -m diffseg.bench gpu

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
