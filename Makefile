# The README's commands. Each target sets itself up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
KDQ    := $(VENV)/bin/kdq_tf
DEMO_OUT ?= runs/demo

.PHONY: demo test data firmware-tools bench bench-quick bench-flash clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# Fashion-MNIST: use any copy kdq_tf finds; otherwise install Debian's package where apt
# is usable (root), else let Keras download it on first use.
data: $(VENV)/.installed
	@if $(KDQ) -q data info --dataset fashion_mnist >/dev/null 2>&1; then \
		echo "fashion_mnist: found"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "fashion_mnist: installing Debian's dataset-fashion-mnist"; \
		apt-get install -y -q dataset-fashion-mnist >/dev/null || \
		{ apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null; }; \
	else \
		echo "fashion_mnist: not found locally; Keras will try to download it"; \
	fi

# Teacher -> distillation -> QAT -> int8 export and host checks, sized to finish in
# about 10 minutes on 2 CPU cores (see README: what the demo trades away).
demo: data
	$(KDQ) distill --dataset fashion_mnist --out $(DEMO_OUT) --overwrite \
		--limit 12000 --teacher-epochs 3 --epochs 8 --qat --qat-epochs 2 --baseline
	$(KDQ) export --run $(DEMO_OUT) --int8 --c-array --firmware $(DEMO_OUT)/firmware

# The Arm toolchain and QEMU, for the firmware tests (Cortex-M4 under QEMU): installed the way
# the data set is, where apt is usable (root); otherwise those tests are skipped and say why.
FW_PACKAGES := gcc-arm-none-eabi libnewlib-arm-none-eabi libstdc++-arm-none-eabi-newlib qemu-system-arm
firmware-tools:
	@if command -v arm-none-eabi-g++ >/dev/null && command -v qemu-system-arm >/dev/null; then \
		echo "firmware tools: found"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "firmware tools: installing $(FW_PACKAGES)"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(FW_PACKAGES) >/dev/null || \
		{ apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(FW_PACKAGES) >/dev/null; } || \
		echo "firmware tools: could not install them; Cortex-M4 tests will be skipped"; \
	else \
		echo "firmware tools: not found (apt-get install $(FW_PACKAGES)); Cortex-M4 tests will be skipped"; \
	fi

test: data firmware-tools
	$(PY) -m pytest -q

# Benchmarks (matplotlib for the plots). Full: about 65 minutes on 2 cores, from the fused teacher's
# logits stored in benchmarks/teachers/ (TEACHER=retrain trains its ResNet50 and CNN again: hours);
# quick: minutes.
TEACHER ?= stored
$(VENV)/.bench: $(VENV)/.installed
	$(PY) -m pip install -q matplotlib
	touch $@

bench: data $(VENV)/.bench
	$(PY) benchmarks/bench.py $(if $(filter retrain,$(TEACHER)),--retrain-teacher)
	$(PY) benchmarks/readme_table.py full

bench-quick: data $(VENV)/.bench
	$(PY) benchmarks/bench.py --quick

# Flash below int8: pruned, soft-thresholded, clustered and LUT-compressed variants of the full
# benchmark's distilled students (3 seeds, about an hour on 2 cores; run `make bench` first).
bench-flash: data firmware-tools $(VENV)/.bench
	$(PY) benchmarks/flash.py --from runs/bench_full
	$(PY) benchmarks/readme_table.py flash

clean:
	rm -rf $(VENV) runs .pytest_cache
