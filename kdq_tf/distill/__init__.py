"""Distillation: losses, the Distiller, teacher guidance, QAT, clustering and pruning, and the
stages that train the student. `python -m kdq_tf.distill` is `kdq_tf distill`."""
