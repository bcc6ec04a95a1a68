"""Distill ResNet50 into tiny_cnn on Fashion-MNIST, then train it quantization-aware.

The library calls behind `kdq_tf distill --qat`, step by step.
"""

import logging

from kdq_tf import load_config, run_distill
from kdq_tf.report import results_table

logging.basicConfig(level=logging.INFO, format="%(message)s")

# 1. Configure: the same keys as the TOML file and `--set section.key=value`.
cfg = load_config(sets=["run.out=runs/example", "run.overwrite=true", "data.limit=5000", "teacher.epochs=1",
                        "distill.epochs=3", "qat.enabled=true", "qat.epochs=1", "distill.baseline=true"])

# 2. Run teacher -> cached guidance -> Distiller(student) -> QAT; everything lands in the run dir.
run, metrics = run_distill(cfg)

# 3. The same table the CLI prints.
print(results_table(metrics))
