# Two commands on a fresh machine: `make demo` and `make test`. Both create the venv when missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU install pins the torch/torchvision pair that works on the CPU-only build machines.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
export HF_HUB_OFFLINE ?= 1
export WANDB_MODE ?= offline
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install demo demo-photo test test-slow bench gpu-check lint clean reproduce-toy reproduce-paper

# On x86_64 pip takes torch's CUDA build (about 6 GB in the venv): with less free disk, stop in one line before pip
# fills it (a CI machine once had too little).
NEED_GB ?= 7
$(BIN)/.installed: pyproject.toml
	@$(BIN)/python -c 'import torch' 2>/dev/null || { where=$(VENV); \
	  while [ ! -d "$$where" ]; do where=$$(dirname "$$where"); done; \
	  free_gb=$$(df -Pk "$$where" | awk 'NR==2 {print int($$4 / 1048576)}'); \
	  if [ "$$free_gb" -lt $(NEED_GB) ]; then \
	    echo "make install: the venv ($(VENV)) needs about $(NEED_GB) GB with torch and $$free_gb GB are free there: free some disk or set VENV=<a folder on a larger disk>" >&2; exit 1; fi; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_PINS)
	$(BIN)/python -m pip install -q -e '.[dev]' $(TORCH_PINS)
	touch $@

install: $(BIN)/.installed

# Break-A-Scene in the toy world on the CPU: the shipped star + ring scene -> two learned tokens -> new images;
# then the same with the remedies beyond the paper (variant=beyond), judged and drawn side by side.
TOY_PROMPTS = '["a photo of <asset0> on the left on a navy background","a photo of <asset1> on the right on a beige background","a photo of <asset1> in the middle on a beige background","a photo of <asset0> on the left and <asset1> on the right on a black background"]'
demo: install
	$(BIN)/bas-train experiment=toyworld hydra.run.dir=outputs/demo overwrite=true
	$(BIN)/bas-generate pipeline=outputs/demo/pipeline hydra.run.dir=outputs/demo/samples overwrite=true \
		generation.prompts=$(TOY_PROMPTS) generation.num_images_per_prompt=4 \
		generation.num_inference_steps=25 generation.guidance_scale=5
	$(BIN)/bas-train experiment=toyworld variant=beyond hydra.run.dir=outputs/demo_beyond overwrite=true
	$(BIN)/bas-generate pipeline=outputs/demo_beyond/pipeline hydra.run.dir=outputs/demo_beyond/samples overwrite=true \
		generation.prompts=$(TOY_PROMPTS) generation.num_images_per_prompt=4 \
		generation.num_inference_steps=25 generation.guidance_scale=5
	$(BIN)/python experiments/toyworld/judge_demo.py outputs/demo outputs/demo_beyond
	$(BIN)/python experiments/toyworld/demo_figure.py outputs/demo outputs/demo_beyond outputs/demo_side_by_side.png

# The code path of the photo example (coffee cup, saucer, spoon) with a random tiny model: it runs, it learns
# nothing. On a GPU with SD 2.1-base: bas-train experiment=official data.scene.folder=<your scene>.
demo-photo: install
	$(BIN)/bas-train experiment=tiny_photo overwrite=true
	$(BIN)/bas-generate pipeline=outputs/demo_photo/pipeline hydra.run.dir=outputs/demo_photo/samples overwrite=true \
		generation.num_inference_steps=25

test: install
	$(BIN)/python -m pytest -q

test-slow: install
	$(BIN)/python -m pytest -q -m slow

# CPU figures: step time and peak RSS (ours vs the released capture), operators and host syncs per step, and
# where a toy trial's step goes with the kernels it could use instead
bench: install
	$(BIN)/python experiments/bench_train_step.py
	$(BIN)/python experiments/bench_step_proxies.py
	$(BIN)/python experiments/bench_toy_kernels.py

# On a GPU machine: the README's speed and memory table (planned for 8 minutes on an H100; nothing downloaded)
gpu-check: install
	bash experiments/gpu_check.sh

# The paper's comparison in the toy world on the CPU: every method, ablation and baseline x 3 toy scenes.
reproduce-toy: install
	test -f outputs/benchmarks/toyworld/index.json || $(BIN)/bas-benchmark toyworld --count 3 --out outputs/benchmarks/toyworld
	$(BIN)/bas-evaluate -m -cd experiments +sweep=toyworld_cpu
	$(BIN)/bas-aggregate outputs/evaluation_toyworld

# The paper's comparison on a GPU: needs SD 2.1-base, CLIP ViT-L/14, DINO ViT-B/16 and MaskFormer in the HF
# cache and a COCO download (COCO=path holding annotations/instances_val2017.json and val2017/).
COCO ?= data/coco
reproduce-paper: install
	test -f data/coco_scenes/index.json || $(BIN)/bas-benchmark coco \
		--annotations $(COCO)/annotations/instances_val2017.json --images $(COCO)/val2017 --out data/coco_scenes
	$(BIN)/bas-evaluate -m -cd experiments +sweep=paper_gpu
	$(BIN)/bas-aggregate outputs/evaluation

clean:
	rm -rf $(VENV) outputs multirun

lint: install
	$(BIN)/ruff check src tests experiments
