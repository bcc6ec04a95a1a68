"""Clustering and pruning of a tiny student, through QAT and int8 conversion: the structure
survives."""

import numpy as np
import pytest

from kdq_tf._keras import keras
from kdq_tf.distill import cluster_prune as CP
from kdq_tf.errors import ModelError


def _data(n=96, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.normal(size=(n, 12, 12, 1)).astype(np.float32) + y[:, None, None, None]
    return x, y


def _student():
    from kdq_tf.models.students import build_student

    keras.utils.set_random_seed(0)
    return build_student("tiny_cnn", (12, 12, 1), 3)


def _fit(model, x, y, epochs=1, callbacks=()):
    model.compile(
        keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    model.fit(x, y, batch_size=32, epochs=epochs, verbose=0, callbacks=list(callbacks))
    return model


def test_clusters_survive_cqat_and_int8_per_channel():
    from kdq_tf.deploy.compression import weight_tensors
    from kdq_tf.deploy.convert import to_tflite
    from kdq_tf.distill.qat import quantize_student

    x, y = _data()
    clustered = CP.strip(_fit(CP.cluster(_student(), 8), x, y))
    assert all(r["unique"] <= 8 for r in CP.kernel_stats(clustered))
    qat = _fit(quantize_student(clustered, preserve="cluster"), x, y)
    blob = to_tflite(qat, "int8")
    tensors = weight_tensors(blob)
    assert len(tensors) == 6  # five convs and the 1x1 head
    for t in tensors:
        # Each output channel has its own scale: the 8 shared floats stay <= 8 int8 values per
        # channel, while the whole tensor may hold more.
        assert t.axis == 0 and t.unique_per_channel <= 8, t


def test_pruning_reaches_the_sparsity_and_prune_preserving_qat_keeps_zeros():
    from kdq_tf.deploy.compression import weight_tensors
    from kdq_tf.deploy.convert import to_tflite
    from kdq_tf.distill.qat import quantize_student

    x, y = _data()
    steps = 2 * int(np.ceil(len(x) / 32))
    pruned = CP.strip(
        _fit(
            CP.prune(_student(), 0.5, end_step=steps),
            x,
            y,
            epochs=2,
            callbacks=CP.pruning_callbacks(),
        )
    )
    stats = CP.kernel_stats(pruned)
    assert all(r["zeros"] >= 0.45 for r in stats if r["size"] >= 100), stats  # the head is tiny
    qat = _fit(quantize_student(pruned, preserve="prune"), x, y)
    int8 = {t.shape: t.zeros for t in weight_tensors(to_tflite(qat, "int8"))}
    big = [z for shape, z in int8.items() if np.prod(shape) >= 100]
    assert big and min(big) >= 0.45, int8


@pytest.mark.parametrize(
    "call,msg",
    [
        (lambda: CP.check_clusters(1), "2..256 clusters"),
        (lambda: CP.check_clusters(300), "2..256 clusters"),
        (lambda: CP.check_sparsity(1.0), "strictly between 0 and 1"),
        (lambda: CP.check_sparsity(-0.1), "strictly between 0 and 1"),
        (lambda: CP.scheme("sparse"), "preserve must be one of"),
    ],
)
def test_bad_structure_settings(call, msg):
    with pytest.raises(ModelError, match=msg):
        call()


def test_clustering_a_pruned_student_keeps_its_zeros_only_with_preserve_sparsity():
    x, y = _data()
    steps = 2 * int(np.ceil(len(x) / 32))
    pruned = CP.strip(
        _fit(
            CP.prune(_student(), 0.5, end_step=steps),
            x,
            y,
            epochs=2,
            callbacks=CP.pruning_callbacks(),
        )
    )
    big = [r["size"] >= 100 for r in CP.kernel_stats(pruned)]
    copy = keras.models.clone_model(pruned)  # TF-MOT's wrappers take over the layers they wrap
    copy.set_weights(pruned.get_weights())
    kept = CP.strip(_fit(CP.cluster(pruned, 8, preserve_sparsity=True), x, y))
    lost = CP.strip(_fit(CP.cluster(copy, 8), x, y))
    kept_zeros = [r["zeros"] for r, b in zip(CP.kernel_stats(kept), big) if b]
    lost_zeros = [r["zeros"] for r, b in zip(CP.kernel_stats(lost), big) if b]
    assert min(kept_zeros) >= 0.45, kept_zeros
    assert all(r["unique"] <= 8 for r in CP.kernel_stats(kept))
    assert max(lost_zeros) < 0.1, (
        lost_zeros
    )  # plain k-means moves the zeros to the nearest centroid


def test_shrink_delta_zeroes_the_asked_share_of_kernel_weights():
    from kdq_tf.distill.qat import shrink_delta_for, shrink_kernels

    model = _student()
    kernels = np.concatenate([w.numpy().ravel() for w in model.weights if "kernel" in w.name])
    delta = shrink_delta_for(model, 0.75)
    assert delta == pytest.approx(np.quantile(np.abs(kernels), 0.75))
    stats = shrink_kernels(model, delta)
    assert stats["kernel_params"] == kernels.size
    assert (
        abs(stats["sparsity_after"] - 0.75) <= 1 / kernels.size
    )  # |w| <= delta: the quantile itself too
    with pytest.raises(ModelError, match="strictly between 0 and 1"):
        shrink_delta_for(model, 1.0)


def test_params_count_what_the_model_carries():
    """Clustering and QAT wrappers add centroids, indices and min/max variables: training state.
    The count stays the float student's (Keras' own count_params), wrapped or not."""
    from kdq_tf.distill.qat import quantize_student
    from kdq_tf.runs import count_params

    truth = _student().count_params()
    clustered = CP.cluster(_student(), 8)
    cqat = quantize_student(CP.strip(CP.cluster(_student(), 8)), preserve="cluster")
    assert clustered.count_params() > truth and cqat.count_params() > 2 * truth  # what was reported
    for model in (_student(), clustered, quantize_student(_student()), cqat):
        assert count_params(model) == truth
