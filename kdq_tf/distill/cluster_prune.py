"""Weight clustering and magnitude pruning of a student (TF-MOT), and the QAT that keeps them.

Both shrink flash below one byte per weight, each in its own way:
- clustering leaves N distinct values per tensor, which TFLite-Micro's LUT compression
  stores as log2(N)-bit indices (kdq_tf.deploy.compression);
- pruning zeroes a share of the weights, which gzip (TF-MOT's measure) and sparse formats
  exploit.

Plain QAT would undo either, because it trains every weight freely again. TF-MOT's
collaborative schemes keep the structure through QAT: cluster-preserving (CQAT),
prune-preserving (PQAT), and both (PCQAT). The training loops stay the caller's: the
Distiller fine-tunes the wrapped student with the teacher still guiding it.
"""

import logging

import numpy as np

from kdq_tf._keras import keras
from kdq_tf.errors import ModelError

log = logging.getLogger(__name__)

PRESERVE = ("none", "cluster", "prune", "prune+cluster")


def _tfmot():
    import tensorflow_model_optimization as tfmot  # heavy; only when asked for

    return tfmot


def check_clusters(clusters: int) -> None:
    """Raises ModelError unless 2 <= clusters <= 256 (one cluster is a constant; int8 holds 256
    values)."""
    if not isinstance(clusters, (int, np.integer)) or not 2 <= clusters <= 256:
        raise ModelError(f"--cluster needs 2..256 clusters per tensor, got {clusters!r}")


def check_sparsity(sparsity: float) -> None:
    """Raises ModelError unless 0 < sparsity < 1 (1 would zero every weight)."""
    if not 0.0 < float(sparsity) < 1.0:
        raise ModelError(f"--prune needs a sparsity strictly between 0 and 1, got {sparsity!r}")


def cluster(student: keras.Model, clusters: int, preserve_sparsity: bool = False) -> keras.Model:
    """Wraps every clusterable layer's kernel for `clusters` shared values (k-means++ centroids).

    With `preserve_sparsity` (a pruned student) the zeros stay zeros and one of the values is 0;
    without it, k-means moves them to the nearest centroid and the sparsity is lost (measured:
    50% zeros became 0%).

    Raises:
        ModelError: a bad cluster count, or a layer TF-MOT cannot cluster.
    """
    check_clusters(clusters)
    ck = _tfmot().clustering.keras
    try:
        return ck.cluster_weights(
            student,
            number_of_clusters=int(clusters),
            cluster_centroids_init=ck.CentroidInitialization.KMEANS_PLUS_PLUS,
            preserve_sparsity=bool(preserve_sparsity),
        )
    except (ValueError, RuntimeError) as e:
        raise ModelError(
            f"TF-MOT could not cluster the student: {str(e).splitlines()[0]}"
        ) from None


def prune(student: keras.Model, sparsity: float, end_step: int, begin_step: int = 0) -> keras.Model:
    """Wraps the student for magnitude pruning that ramps from 0 to `sparsity` (polynomial
    schedule, Zhu & Gupta 2017) between `begin_step` and `end_step`. Fit it with
    `pruning_callbacks()`.

    Raises:
        ModelError: a bad sparsity or step range, or a layer TF-MOT cannot prune.
    """
    check_sparsity(sparsity)
    if end_step <= begin_step:
        raise ModelError(f"pruning needs end_step > begin_step, got {begin_step}..{end_step}")
    sk = _tfmot().sparsity.keras
    schedule = sk.PolynomialDecay(
        initial_sparsity=0.0,
        final_sparsity=float(sparsity),
        begin_step=begin_step,
        end_step=end_step,
        frequency=max(1, (end_step - begin_step) // 20),
    )
    try:
        return sk.prune_low_magnitude(student, pruning_schedule=schedule)
    except (ValueError, RuntimeError) as e:
        raise ModelError(f"TF-MOT could not prune the student: {str(e).splitlines()[0]}") from None


def pruning_callbacks() -> list:
    """The step counter that prune_low_magnitude's masks need during fit."""
    return [_tfmot().sparsity.keras.UpdatePruningStep()]


def strip(model: keras.Model) -> keras.Model:
    """The plain Keras model under clustering and/or pruning wrappers (weights kept as trained)."""
    tfmot = _tfmot()
    return tfmot.sparsity.keras.strip_pruning(tfmot.clustering.keras.strip_clustering(model))


def scheme(preserve: str):
    """The TF-MOT QAT scheme that keeps `preserve` (see PRESERVE); None for the default 8-bit
    scheme."""
    if preserve not in PRESERVE:
        raise ModelError(f"preserve must be one of {', '.join(PRESERVE)}, got {preserve!r}")
    combine = _tfmot().experimental.combine
    if preserve == "cluster":
        return combine.Default8BitClusterPreserveQuantizeScheme()
    if preserve == "prune":
        return combine.Default8BitPrunePreserveQuantizeScheme()
    if preserve == "prune+cluster":
        return combine.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=True)
    return None


def kernel_stats(model: keras.Model) -> list[dict]:
    """Per conv/dense kernel of a float model: distinct values and the share of exact zeros."""
    rows = []
    for layer in model.layers:
        if isinstance(
            layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)
        ):
            k = np.asarray(layer.get_weights()[0])
            rows.append(
                {
                    "layer": layer.name,
                    "size": int(k.size),
                    "unique": int(len(np.unique(k))),
                    "zeros": float((k == 0).mean()),
                }
            )
    return rows
