# The README's commands. Each target sets itself up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
KDQ    := $(VENV)/bin/kdq_tf
DEMO_OUT ?= runs/demo

.PHONY: demo demo-teacher test lint data firmware-tools search-tools bench bench-quick bench-flash clean

# The project's own TFLite-Micro test tree (../shared/tflm, see its README). kdq_tf itself never
# defaults to it: a user names a tree with --tflm, TFLM_DIR or ~/.config/kdq_tf/config.toml
# (docs/firmware.md). Here it is passed on through TFLM_DIR, unless TFLM_DIR is set already.
TEST_TFLM := $(wildcard $(abspath ../shared/tflm))
export TFLM_DIR ?= $(TEST_TFLM)
FUSED := benchmarks/teachers/fashion_mnist_fused

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

# Distillation from the committed fused teacher's logits (CNN-48 + ResNet50, 94.52% test) on the
# full training set -> QAT -> int8 export -> host firmware, against the scratch twin: about 10
# minutes on 2 CPU cores. The table it prints ends with the KD gain of the int8 student.
demo: data
	$(KDQ) distill --dataset fashion_mnist --out $(DEMO_OUT) --overwrite \
		--teacher-logits $(FUSED)/logits.npz --student small_cnn --batch-size 128 --lr 0.002 \
		--epochs 5 --qat --qat-epochs 1 --baseline
	$(KDQ) export --run $(DEMO_OUT) --int8 --c-array --firmware $(DEMO_OUT)/firmware
	@if [ -n "$(TFLM_DIR)" ]; then \
		$(KDQ) firmware run $(DEMO_OUT)/firmware --build --target host; \
	else \
		echo "host firmware not built: no TFLite-Micro tree (set TFLM_DIR; see docs/firmware.md)"; \
	fi
	@echo; cat $(DEMO_OUT)/report.md

# The whole flow with a teacher trained here: ResNet50 from scratch for 3 epochs on 12,000 images
# (about 10 minutes). Such a teacher reaches about 78%, below its student: it shows the
# mechanics, not the gain (docs/teachers.md says what a real teacher takes).
demo-teacher: data
	$(KDQ) distill --dataset fashion_mnist --out runs/demo_teacher --overwrite \
		--limit 12000 --teacher-epochs 3 --epochs 8 --qat --qat-epochs 2 --baseline
	$(KDQ) export --run runs/demo_teacher --int8 --c-array --firmware runs/demo_teacher/firmware

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

# A PostgreSQL server, for the test of a search shared through a database (tests/e2e/
# test_search.py starts it on loopback): installed the same way; without it that test skips.
search-tools:
	@if ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then \
		echo "postgresql: found"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "postgresql: installing"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null || \
		{ apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null; } || \
		echo "postgresql: could not install it; the shared-study test will be skipped"; \
	else \
		echo "postgresql: not found (apt-get install postgresql); the shared-study test will be skipped"; \
	fi

# Two pytest workers, each file on one of them (module fixtures are built once): much of the
# suite waits on subprocesses, TensorFlow imports, compilers and QEMU rather than computing.
test: data firmware-tools search-tools lint
	$(PY) -m pytest -q -rs -n 2 --dist loadfile

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

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
