# The README's commands. `make install` is idempotent: it reinstalls only when the
# package metadata changed. It installs the model package with its `training` extra (what
# `make demo` runs); `make test` adds the `test` and `deploy` extras.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
TORCH_STAMP := $(VENV)/.installed-torch
export TF_CPP_MIN_LOG_LEVEL ?= 2
export KERAS_BACKEND ?= tensorflow

.PHONY: install install-test install-torch test test-large lint format demo fmnist fmnist-data bench-peers gpu-check clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[training]'
	touch $(STAMP)

install-test: $(TEST_STAMP)

$(TEST_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[training,test,deploy]'
	touch $(TEST_STAMP)

# PyTorch (a 5.5 GB CUDA build from PyPI): only for the large tests and benchmarks/peers.py.
install-torch: $(TORCH_STAMP)

$(TORCH_STAMP): $(TEST_STAMP)
	$(BIN)/python -m pip install --quiet -e '.[training,test,deploy,torch]'
	touch $(TORCH_STAMP)

# Two workers, one file each at a time (module fixtures run once): the suite is mostly
# graph tracing and fresh processes, which overlap well on 2 cores.
PYTEST_WORKERS ?= 2

test: install-test
	$(BIN)/python -m pytest -m "not large" -n $(PYTEST_WORKERS) --dist loadfile --durations=15

test-large: install-torch
	$(BIN)/python -m pytest -m large

lint: install-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install-test
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The main job, offline: GoogLeNet (the small stem and a 3x3/2 pool, 1/8 width, min depth 16,
# no auxiliary heads, no augmentation: 2 epochs in about 5 minutes on 2 cores, ~90% test
# top-1) on Fashion-MNIST from Debian's dataset-fashion-mnist, installed here when it is
# missing and apt is available. README "Quick start" says what each choice costs.
FMNIST_DIR := /usr/share/datasets/fashion-mnist
DEMO_WORKDIR ?= runs/demo
DEMO_FLAGS ?= --model googlenet --dataset fashion_mnist --stem small_pool --width-multiplier 0.125 --min-depth 16 --dropout 0 --no-aux --no-augment --epochs 2 --batch-size 256 --warmup-epochs 0.2

fmnist-data:
	@test -f $(FMNIST_DIR)/train-images-idx3-ubyte.gz || { \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -q && apt-get install -y -q dataset-fashion-mnist; \
	  else \
	    echo "Fashion-MNIST is missing: run 'sudo apt-get install dataset-fashion-mnist', or pass a folder with the four idx files: make demo DEMO_FLAGS='... --data-dir DIR' (FMNIST_FLAGS for make fmnist)"; \
	  fi; }

demo: install fmnist-data
	$(BIN)/python -m training train $(DEMO_FLAGS) --workdir $(DEMO_WORKDIR)

# The full Fashion-MNIST recipe (issue 14; README "Accuracy on Fashion-MNIST"): the demo's
# small_pool GoogLeNet at width 1/4, 24 epochs (as many as fit in 55 minutes on this CPU)
# with pad-crop and flip augmentation, on the 54,000 training images (6,000 held out for
# validation), then the 10,000 test images; then the test images again with their mirror
# images (test-time augmentation, reported apart).
# Another seed: make fmnist FMNIST_SEED=1 FMNIST_WORKDIR=runs/fmnist-seed1
# Exactly 16 epochs, no budget: make fmnist FMNIST_EPOCHS=16 FMNIST_BUDGET= FMNIST_WORKDIR=runs/fmnist-e16
FMNIST_WORKDIR ?= runs/fmnist
FMNIST_SEED ?= 0
FMNIST_EPOCHS ?= 24
# Minutes for the training run: as many of FMNIST_EPOCHS as this CPU fits (empty: no budget).
FMNIST_BUDGET ?= 55
# More train flags, e.g. FMNIST_EXTRA=--mixed-precision: bfloat16, 1.3x faster on CPUs with
# AVX512-BF16 or AMX (35 instead of 46 minutes on the Zen 4 EPYC, README).
FMNIST_EXTRA ?=
FMNIST_FLAGS ?= --model googlenet --dataset fashion_mnist --stem small_pool --width-multiplier 0.25 --min-depth 16 --dropout 0 --no-aux --epochs $(FMNIST_EPOCHS) $(if $(FMNIST_BUDGET),--time-budget-minutes $(FMNIST_BUDGET)) --batch-size 256 $(FMNIST_EXTRA)

fmnist: install fmnist-data
	$(BIN)/python -m training train $(FMNIST_FLAGS) --seed $(FMNIST_SEED) --workdir $(FMNIST_WORKDIR)
	$(BIN)/python -m training evaluate $(FMNIST_WORKDIR) --crops flip

# Our GoogLeNets against their PyTorch twins (benchmarks/peers.py); installs the torch extra.
bench-peers: install-torch
	$(BIN)/python -m benchmarks.peers

# On a GPU machine: the GPUs, then GoogLeNet 224 and InceptionV3 299 training images/s under
# mixed_float16 with and without XLA, MirroredStrategy over every GPU, and the JPEG
# pipeline's images/s (benchmarks/gpu_check.py, under 8 minutes). Says "no GPU" elsewhere.
gpu-check: install
	$(BIN)/python -m benchmarks.gpu_check

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
