"""Resume after an interruption: training continues from the saved epoch."""

import csv

import numpy as np
import pytest

from kdq_tf._keras import keras, tf
from kdq_tf.errors import KdqError
from kdq_tf.training import Phase, fit_phases, one_iterator


class Interrupt(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            raise KeyboardInterrupt  # like Ctrl-C after the second epoch's checkpoint


def _setup(seed=0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((4,))
    model = keras.Model(inp, keras.layers.Dense(2)(inp))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int64")
    from kdq_tf._keras import tf

    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)

    def prepare(m):
        m.compile(
            optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        )

    return model, ds, [Phase("train", 4, prepare)]


def _interrupted(tmp_path):
    """A run stopped by Interrupt, after its second epoch's row and checkpoint."""
    model, ds, phases = _setup()
    with pytest.raises(KeyboardInterrupt):
        fit_phases(
            model,
            phases,
            ds,
            None,
            run_dir=tmp_path,
            stage="s",
            resume=False,
            callbacks=[Interrupt()],
        )


def _epochs(path):
    with open(path) as f:
        return [int(r["epoch"]) for r in csv.DictReader(f)]


def test_resume_continues_from_last_finished_epoch(tmp_path):
    _interrupted(tmp_path)
    model2, ds, phases = _setup(seed=1)  # a fresh process builds a differently initialised model
    out = fit_phases(model2, phases, ds, None, run_dir=tmp_path, stage="s", resume=True)
    assert out["epochs"] == {"train": 2}  # epochs 3 and 4 only
    assert _epochs(tmp_path / "s_history.csv") == [0, 1, 2, 3]
    assert (tmp_path / "ckpt" / "s_train.weights.h5").is_file()
    # A finished phase is skipped on a further resume, and its weights are loaded.
    model3, ds, phases = _setup(seed=2)
    assert fit_phases(model3, phases, ds, None, run_dir=tmp_path, stage="s", resume=True)[
        "epochs"
    ] == {"train": 0}
    for a, b in zip(model3.get_weights(), model2.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_a_row_written_before_a_lost_checkpoint_is_not_kept_twice(tmp_path):
    # The history row is written before the epoch's checkpoint; a kill between the two leaves a
    # row for an epoch the checkpoint lacks. Resume trains that epoch again and logs it once.
    _interrupted(tmp_path)
    log = tmp_path / "s_history.csv"
    assert _epochs(log) == [0, 1]  # the row came before the interruption
    rows = log.read_text().splitlines()
    log.write_text("\n".join([*rows, rows[-1].replace("1,", "2,", 1)]) + "\n")  # epoch 3's row
    model2, ds, phases = _setup(seed=1)
    out = fit_phases(model2, phases, ds, None, run_dir=tmp_path, stage="s", resume=True)
    assert out["epochs"] == {"train": 2}
    assert _epochs(log) == [0, 1, 2, 3]


def test_history_rows_follow_each_phase(tmp_path):
    model, ds, (phase,) = _setup()
    phases = [phase, Phase("tune", 2, phase.prepare)]
    fit_phases(model, phases, ds, None, run_dir=tmp_path, stage="s", resume=False)
    assert _epochs(tmp_path / "s_history.csv") == [0, 1, 2, 3, 0, 1]


class PoisonAtEpoch2(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:
            self.model.set_weights([np.full_like(w, np.nan) for w in self.model.get_weights()])


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    model, ds, phases = _setup()
    with pytest.raises(
        KdqError, match="s/train: loss became NaN/Inf in epoch 2, batch 1.*--resume"
    ):
        fit_phases(
            model,
            phases,
            ds,
            None,
            run_dir=tmp_path,
            stage="s",
            resume=False,
            callbacks=[PoisonAtEpoch2()],
        )
    # The checkpoint holds epoch 1, not the NaN weights: a resumed run finishes with finite weights.
    model2, ds, phases = _setup(seed=1)
    out = fit_phases(model2, phases, ds, None, run_dir=tmp_path, stage="s", resume=True)
    assert out["epochs"] == {"train": 3}
    assert all(np.isfinite(w).all() for w in model2.get_weights())


def _shuffled_and_augmented():
    """Reshuffled every pass, with a fresh random draw per sample and pass (as an augmentation
    seed is drawn), and a last partial batch: 10 samples in batches of 4."""
    x = np.arange(10, dtype="float32")
    noise = tf.data.Dataset.random(seed=5, rerandomize_each_iteration=True)
    ds = tf.data.Dataset.from_tensor_slices(x).shuffle(10, seed=3, reshuffle_each_iteration=True)
    ds = tf.data.Dataset.zip((ds, noise)).map(
        lambda v, r: v + tf.cast(r % 1000, tf.float32) / 1000, num_parallel_calls=2
    )
    return ds.batch(4).prefetch(2)


def test_one_iterator_yields_the_batches_of_a_new_iterator_every_pass():
    ds = _shuffled_and_augmented()  # Keras made a new iterator of it every epoch
    fresh = [[b.numpy().tolist() for b in ds] for _ in range(3)]
    assert [len(p) for p in fresh] == [3, 3, 3] and fresh[0] != fresh[1]  # reshuffled
    endless, steps = one_iterator(_shuffled_and_augmented())
    assert steps == 3  # 4 + 4 + 2
    it = iter(endless)
    assert [[next(it).numpy().tolist() for _ in range(steps)] for _ in range(3)] == fresh
    forever = _shuffled_and_augmented().repeat()
    assert one_iterator(forever) == (forever, None)  # endless already: the caller's steps


class BatchesPerEpoch(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.counts = getattr(self, "counts", []) + [0]

    def on_train_batch_end(self, batch, logs=None):
        self.counts[-1] += 1


def test_a_finite_dataset_trains_one_pass_an_epoch(tmp_path):
    model, ds, phases = _setup()  # 64 samples in batches of 16
    seen = BatchesPerEpoch()
    out = fit_phases(
        model, phases, ds, None, run_dir=tmp_path, stage="s", resume=False, callbacks=[seen]
    )
    assert seen.counts == [4, 4, 4, 4] and out["epochs"] == {"train": 4}
