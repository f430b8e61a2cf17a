# Two commands on a fresh machine: `make demo` and `make test`. Both create the venv when missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU install pins the torch/torchvision pair that works on the CPU-only build machines.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
export HF_HUB_OFFLINE ?= 1
export WANDB_MODE ?= offline
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install demo test test-slow bench lint clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_PINS)
	$(BIN)/python -m pip install -q -e '.[dev]' $(TORCH_PINS)
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/bas-train experiment=demo
	$(BIN)/bas-generate pipeline=outputs/demo/pipeline hydra.run.dir=outputs/demo/samples \
		generation.num_inference_steps=25

test: install
	$(BIN)/python -m pytest -q

test-slow: install
	$(BIN)/python -m pytest -q -m slow

bench: install
	$(BIN)/python experiments/bench_train_step.py

clean:
	rm -rf $(VENV) outputs multirun

lint: install
	$(BIN)/ruff check src tests experiments
