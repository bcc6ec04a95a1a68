"""Augmentation, K-view caches, teacher fusion and logits files, on tiny models and data."""

import dataclasses

import numpy as np
import pytest
from conftest import separable_npz

from kdq_tf._keras import keras, tf
from kdq_tf.config import DataConfig
from kdq_tf.data.augment import Augment, augment_image, mix_draw, mixed_view
from kdq_tf.data.dataset import load_dataset
from kdq_tf.distill import guidance as G
from kdq_tf.errors import ConfigError, DataError, ModelError
from kdq_tf.teacher import fusion as TS
from kdq_tf.teacher import logits_file as LF


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    p = separable_npz(
        tmp_path_factory.mktemp("d") / "d.npz", n_train=120, n_test=40, size=12, classes=3
    )
    return load_dataset(DataConfig(dataset=f"npz:{p}", batch_size=16, val_split=0.25, erase=0.5))


def linear_teacher(shape, kernel, bias, name):
    """Flatten -> Dense with fixed weights: logits are x.flat @ kernel + bias."""
    inp = keras.Input(shape)
    out = keras.layers.Dense(kernel.shape[1], name="d")(keras.layers.Flatten()(inp))
    m = keras.Model(inp, out, name=name)
    m.get_layer("d").set_weights([kernel, bias])
    return m


# 1. Augmentation: every op checked against numpy.


def test_flip_only_gives_image_or_mirror():
    x = np.arange(2 * 5 * 1, dtype=np.float32).reshape(2, 5, 1)
    seen = set()
    for s in range(20):
        y = augment_image(
            tf.constant(x), tf.constant([s, 7]), Augment(flip=True, translate=0)
        ).numpy()
        if np.array_equal(y, x):
            seen.add("same")
        else:
            np.testing.assert_array_equal(y, x[:, ::-1])
            seen.add("mirror")
    assert seen == {"same", "mirror"}


def test_translate_is_a_shift_with_zero_fill():
    x = np.random.default_rng(0).random((6, 6, 1)).astype(np.float32) + 1  # no zeros inside
    for s in range(10):
        y = augment_image(
            tf.constant(x), tf.constant([s, 1]), Augment(flip=False, translate=2)
        ).numpy()
        padded = np.pad(x, ((2, 2), (2, 2), (0, 0)))
        # The crop is a 6x6 window of the padded image: find its offset and compare exactly.
        hits = [
            (i, j)
            for i in range(5)
            for j in range(5)
            if np.array_equal(padded[i : i + 6, j : j + 6], y)
        ]
        assert len(hits) == 1


def test_erase_zeroes_one_rectangle_of_bounded_area():
    x = np.ones((20, 20, 1), np.float32)
    erased = 0
    for s in range(30):
        y = augment_image(
            tf.constant(x), tf.constant([s, 3]), Augment(flip=False, translate=0, erase=1.0)
        ).numpy()
        zero = y[:, :, 0] == 0
        rows, cols = np.where(zero.any(1))[0], np.where(zero.any(0))[0]
        assert zero.sum() == len(rows) * len(cols)  # one solid rectangle
        assert rows.max() - rows.min() + 1 == len(rows) and cols.max() - cols.min() + 1 == len(cols)
        # Zhong et al.'s area range 2-40% of 400 pixels, plus rounding of each side.
        assert 0.02 * 400 * 0.5 <= zero.sum() <= 0.4 * 400 * 1.6
        erased += 1
    never = augment_image(
        tf.constant(x), tf.constant([1, 3]), Augment(flip=False, translate=0, erase=0.0)
    )
    np.testing.assert_array_equal(never.numpy(), x)
    assert erased == 30


def test_mixup_draws_follow_beta_and_pick_any_partner():
    """lam ~ Beta(a, a): mean 1/2, variance 1/(4(2a+1)) (1/12 for a = 1); a small a puts
    most of the mass near 0 and 1. Partners are spread over [0, n)."""
    for a, var in ((1.0, 1 / 12), (0.2, 1 / (4 * 1.4))):
        draws = [mix_draw(tf.constant([s, 9]), 50, a) for s in range(1500)]
        lam = np.array([float(d[1]) for d in draws])
        j = np.array([int(d[0]) for d in draws])
        assert lam.min() >= 0 and lam.max() <= 1
        assert abs(lam.mean() - 0.5) < 0.03 and abs(lam.var() - var) < 0.015, (a, lam.var())
        assert j.min() >= 0 and j.max() < 50 and len(set(j)) == 50
    small = np.array([float(mix_draw(tf.constant([s, 1]), 5, 0.2)[1]) for s in range(500)])
    assert np.mean((small < 0.1) | (small > 0.9)) > 0.5
    # the same seed, the same draws
    assert [float(v) for v in mix_draw(tf.constant([3, 4]), 50, 0.4)[:2]] == [
        float(v) for v in mix_draw(tf.constant([3, 4]), 50, 0.4)[:2]
    ]


def test_a_mixed_view_is_the_weighted_sum_of_two_augmented_views():
    """The image's own view is exactly its view without mixup; the partner is another image
    of the set, augmented with its own seed."""
    imgs = np.random.default_rng(0).integers(0, 256, (7, 6, 6, 1)).astype(np.uint8)
    norm = lambda x: tf.cast(x, tf.float32) / 255.0  # noqa: E731 - a test's normaliser
    aug = Augment(flip=True, translate=2, erase=0.5, mixup=0.4)
    plain = dataclasses.replace(aug, mixup=0.0)
    for s in range(12):
        seed = tf.constant([s, 2], tf.int64)
        view, j, lam = mixed_view(tf.constant(imgs[3]), seed, aug, tf.constant(imgs), norm)
        j2, lam2, partner_seed = mix_draw(seed, 7, 0.4)
        assert int(j) == int(j2) and float(lam) == float(lam2)
        own = augment_image(norm(imgs[3]), seed, plain).numpy()
        other = augment_image(norm(imgs[int(j)]), partner_seed, plain).numpy()
        np.testing.assert_allclose(
            view.numpy(), float(lam) * own + (1 - float(lam)) * other, atol=1e-6
        )
        alone, j0, lam0 = mixed_view(tf.constant(imgs[3]), seed, plain, None, norm)
        np.testing.assert_array_equal(alone.numpy(), own)
        assert int(j0) == -1 and float(lam0) == 1.0


def test_the_twins_mixup_labels_mix_like_its_images(data):
    """Without crop or flip a mixed image is lam * x_i + (1 - lam) * x_j exactly; its one-hot
    target must carry the same lam and the same partner's label."""
    x, y = data.split("train")
    xs = x.astype(np.float32) / 255.0
    aug = Augment(flip=False, translate=0, mixup=1.0)
    batches = list(data.pipeline("train", augment=aug, soft_labels=True, seed=3))
    imgs = np.concatenate([b[0].numpy() for b in batches])
    targets = np.concatenate([b[1].numpy() for b in batches])
    np.testing.assert_allclose(targets.sum(1), 1, atol=1e-6)
    mixed = 0
    for i, (img, t) in enumerate(zip(imgs, targets)):
        # the partner j and weight lam that explain the image (least squares over every j)
        best = None
        for j in range(len(xs)):
            d = xs[i] - xs[j]
            lam = float((d * (img - xs[j])).sum() / max((d * d).sum(), 1e-12)) if j != i else 1.0
            err = np.abs(lam * xs[i] + (1 - lam) * xs[j] - img).max()
            if best is None or err < best[0]:
                best = (err, j, lam)
        err, j, lam = best
        assert err < 1e-5
        want = lam * np.eye(3)[y[i]] + (1 - lam) * np.eye(3)[y[j]]
        np.testing.assert_allclose(t, want, atol=1e-4)
        mixed += y[i] != y[j] and 0.05 < lam < 0.95
    assert mixed > len(xs) // 4  # the check saw real mixes of two classes
    # no augmentation: one-hot labels, as the validation split gets them
    _, t = next(iter(data.pipeline("val", soft_labels=True)))
    np.testing.assert_array_equal(t.numpy(), np.eye(3)[data.y_val[:16]])
    with pytest.raises(ValueError, match="training images"):
        data.pipeline("val", augment=aug)


def test_mixup_needs_function_matching_and_stays_out_of_logits_files(data):
    from kdq_tf.config import load_config

    with pytest.raises(ConfigError, match="pass --lambda 0"):
        load_config(overrides={"data.mixup": 0.4, "data.augment": True})
    load_config(overrides={"data.mixup": 0.4, "data.augment": True, "distill.lam": 0.0})
    load_config(overrides={"data.mixup": 0.4})  # nothing mixes: no augmentation, no views
    teacher = linear_teacher(
        data.info.input_shape, np.ones((144, 3), np.float32), np.zeros(3, np.float32), "t"
    )
    with pytest.raises(ConfigError, match="cache mixed views in the run"):
        G.save_logits(teacher, data, views=2, aug=Augment(mixup=0.4))


# 2. K-view cache.


@pytest.mark.parametrize("mixup", [0.0, 0.4])
def test_view_cache_rebuilds_the_same_bytes(data, tmp_path, mixup):
    teacher = linear_teacher(
        data.info.input_shape,
        np.random.default_rng(1).normal(size=(144, 3)).astype(np.float32),
        np.zeros(3, np.float32),
        "t",
    )
    aug = dataclasses.replace(data.augmentation(), mixup=mixup)
    assert aug.erase == 0.5
    views = [
        np.concatenate([b[0].numpy() for b in data.view_pipeline(aug, v, 5)]) for v in range(3)
    ]
    again = [
        np.concatenate([b[0].numpy() for b in data.view_pipeline(aug, v, 5)]) for v in range(3)
    ]
    for a, b in zip(views, again):
        assert a.tobytes() == b.tobytes()
    assert not np.array_equal(views[0], views[1])  # the views differ from each other
    g = G.build_guidance("cached", teacher, data, tmp_path, views=3, aug=aug, view_seed=5)
    reloaded = G.build_guidance("cached", teacher, data, tmp_path, views=3, aug=aug, view_seed=5)
    assert reloaded.reused and reloaded.views == 3 and reloaded.view_aug == aug
    # The cached logits are the teacher's on exactly those bytes (int8: within half a step).
    for v in range(3):
        ref = teacher(views[v]).numpy()
        step = np.abs(ref).max(-1, keepdims=True) / 127
        assert np.all(np.abs(reloaded.view_logits[v] - ref) <= step / 2 + 1e-5)
    np.testing.assert_array_equal(g.view_logits, reloaded.view_logits)
    # The training pipeline walks view 0, then view 1, ... one per epoch of batches.
    steps = int(np.ceil(data.info.n_train / 16))
    it = iter(data.views_training_pipeline(aug, reloaded.view_logits, 5, seed=0))
    for v in range(3):
        xs, ts = [], []
        for _ in range(steps):
            x, (_, t) = next(it)
            xs.append(x.numpy())
            ts.append(t.numpy())
        xs, ts = np.concatenate(xs), np.concatenate(ts)
        order = [int(np.flatnonzero((views[v] == img).all(axis=(1, 2, 3)))[0]) for img in xs]
        assert sorted(order) == list(range(data.info.n_train))  # each image once, as view v
        np.testing.assert_array_equal(ts, reloaded.view_logits[v][order])


# 3. Fusion.


def test_fused_logits_of_two_teachers_by_hand():
    shape = (2, 1, 1)  # two pixels
    a = linear_teacher(
        shape, np.array([[1, 0], [0, 1]], np.float32), np.array([0, 0], np.float32), "a"
    )
    b = linear_teacher(
        shape, np.array([[2, 0], [0, 0]], np.float32), np.array([0, 1], np.float32), "b"
    )
    x = np.array([[[[1.0]], [[2.0]]]], np.float32)  # pixels (1, 2)
    # a: (1, 2); b: (2, 1). Weights 0.75 / 0.25.
    fused = TS.fused_model([TS.Member("a", a), TS.Member("b", b)], [0.75, 0.25], "logits")
    np.testing.assert_allclose(
        fused(x).numpy(), [[0.75 * 1 + 0.25 * 2, 0.75 * 2 + 0.25 * 1]], rtol=1e-6
    )
    # probs: log(0.75 softmax(1, 2) + 0.25 softmax(2, 1)); softmax(1, 2) = (1, e) / (1 + e).
    e = np.e
    p = 0.75 * np.array([1, e]) / (1 + e) + 0.25 * np.array([e, 1]) / (1 + e)
    fp = TS.fused_model([TS.Member("a", a), TS.Member("b", b)], [0.75, 0.25], "probs")
    np.testing.assert_allclose(fp(x).numpy(), [np.log(p)], rtol=1e-6)
    np.testing.assert_allclose(
        TS.fuse_numpy([[[1, 2]], [[2, 1]]], [0.75, 0.25], "probs"), [np.log(p)]
    )
    # Different fusion weights, different teacher fingerprint (caches are rebuilt).
    other = TS.fused_model([TS.Member("a", a), TS.Member("b", b)], [0.5, 0.5], "logits")
    assert G.teacher_fingerprint(other) != G.teacher_fingerprint(fused)


def test_member_weights():
    assert TS.parse_weights("3,1", 2) == [0.75, 0.25]
    assert TS.parse_weights(None, 2) is None
    np.testing.assert_allclose(TS.weights_from_accuracy([0.9, 0.6]), [0.6, 0.4])
    for bad in ("1", "1,x", "-1,2", "0,0"):
        with pytest.raises(ModelError, match="teacher weights"):
            TS.parse_weights(bad, 2)


# 4. Logits files.


def test_logits_file_round_trip_and_split(data):
    rng = np.random.default_rng(0)
    n = data.info.n_train + data.info.n_val
    rows = rng.normal(size=(n, 3)).astype(np.float32) * 4
    t = LF.TeacherLogits(
        rows,
        None,
        rng.normal(size=(data.info.n_test, 3)).astype(np.float32),
        data_fp=data.raw_fingerprint,
    )
    blob, err = LF.to_bytes(t, int8=True)
    back = LF.from_bytes(blob, "f.npz")
    assert err <= np.abs(rows).max() / 254 + 1e-6
    np.testing.assert_allclose(back.train, rows, atol=err + 1e-6)
    cut = LF.for_split(LF.from_bytes(LF.to_bytes(t, int8=False)[0], "f.npz"), data, "f.npz")
    np.testing.assert_array_equal(cut.train, rows[data.train_index])
    np.testing.assert_array_equal(cut.val, rows[data.val_index])
    wrong = dataclasses.replace(t, data_fp="0" * 16)
    with pytest.raises(DataError, match="other training data"):
        LF.for_split(wrong, data, "f.npz")
    with pytest.raises(DataError, match="not a readable"):
        LF.from_bytes(b"not a zip", "f.npz")


def test_warm_start_copies_the_weights_and_refuses_another_shape(tmp_path):
    from kdq_tf.teacher.fusion import warm_start

    def net(width):
        return keras.Sequential(
            [
                keras.layers.Input((12, 12, 1)),
                keras.layers.Conv2D(width, 3),
                keras.layers.GlobalAveragePooling2D(),
                keras.layers.Dense(3),
            ]
        )

    keras.utils.set_random_seed(1)
    trained = net(4)
    trained.save(tmp_path / "t.keras")
    fresh = net(4)
    assert not np.array_equal(fresh.get_weights()[0], trained.get_weights()[0])
    warm_start(fresh, str(tmp_path / "t.keras"), (12, 12, 1), 3)
    for a, b in zip(fresh.get_weights(), trained.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ModelError, match="do not fit"):
        warm_start(net(8), str(tmp_path / "t.keras"), (12, 12, 1), 3)


def test_artifact_follows_warm_started_stages(tmp_path):
    import sys

    from conftest import ROOT

    from kdq_tf import files

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import teacher_artifact as TA

    def stage(name, epochs, init=None, seconds=3600.0):
        run = tmp_path / name
        files.write_json(
            run / "config.json", {"teacher": {"epochs": epochs, "lr": 0.001, "init": init}}
        )
        files.write_json(
            run / "metrics.json", {"teacher": {"train_time_s": seconds, "accuracy": 0.9}}
        )
        return run

    stage("s1", 15)
    s2 = stage("s2", 16, init=str(tmp_path / "s1" / "teacher.keras"), seconds=1800.0)
    chain = TA.stages(s2)
    assert [c["run"].name for c in chain] == ["s1", "s2"]
    assert [c["epochs_before"] for c in chain] == [0, 15]
    assert "teacher.init=" in TA._command(chain[1]) and "teacher.init" not in TA._command(chain[0])
    # A stage stopped after epoch 6 and continued from its epoch-4 snapshot: 4 epochs, hours from
    # its log.
    (tmp_path / "s2" / "metrics.json").unlink()
    s3 = stage(
        "s3", 12, init=str(tmp_path / "s2" / "teacher_snapshots" / "train_epoch_004.weights.h5")
    )
    with pytest.raises(SystemExit, match="console log"):
        TA.stages(s3)
    log2 = tmp_path / "s2.log"
    log2.write_text(
        "".join(
            f"Epoch {i}/16\n422/422 - {s}s - loss: 0.3\n"
            for i, s in enumerate([10, 20, 30, 40, 50, 60])
        )
    )
    chain = TA.stages(s3, [tmp_path / "none.log", log2])
    assert [c["epochs"] for c in chain] == [15, 4, 12] and [c["epochs_before"] for c in chain] == [
        0,
        15,
        19,
    ]
    assert chain[1]["metrics"]["train_time_s"] == 100  # 10 + 20 + 30 + 40: the epochs it passed on
    assert chain[0]["metrics"]["train_time_s"] == 3600.0


def test_fusion_study_selects_on_val_and_keeps_the_final_teacher_as_a_candidate():
    import sys

    from conftest import ROOT

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import teacher_fusion as TF

    y = np.array([0, 1, 2, 0])
    hot = np.eye(3)[y] * 4.0  # right on every row
    wrong = np.roll(hot, 1, axis=1)  # wrong on every row
    ms = [
        {"name": "final", "val": hot, "test": hot},
        {"name": "epoch 3", "val": wrong, "test": hot},
    ]
    res = TF.study(ms, y, y)
    assert [r["val"] for r in res["single"]] == [1.0, 0.0]
    assert len(res["fused"]) == 2  # one pair, two modes
    assert res["best_on_val"]["members"] == ["final"] and res["best_on_val"]["mode"] is None
    assert "No fusion beats" in TF.markdown({**res, "teacher_dir": "x"})


def test_flip_fusion_averages_each_member_over_both_views():
    keras.utils.set_random_seed(0)
    members = []
    for i in range(2):
        inp = keras.Input((4, 6, 1))
        members.append(
            TS.Member(f"m{i}", keras.Model(inp, keras.layers.Dense(3)(keras.layers.Flatten()(inp))))
        )
    x = np.random.default_rng(0).random((5, 4, 6, 1)).astype(np.float32)
    z = [m.model.predict(x, verbose=0) for m in members]
    z_flip = [m.model.predict(x[:, :, ::-1], verbose=0) for m in members]
    fused = TS.fused_model(members, [0.25, 0.75], "logits", flip=True).predict(x, verbose=0)
    want = 0.25 * (z[0] + z_flip[0]) / 2 + 0.75 * (z[1] + z_flip[1]) / 2
    np.testing.assert_allclose(fused, want, rtol=1e-5, atol=1e-6)
