import pytest

from kdq_tf.config import Config, config_from_dict, load_config
from kdq_tf.errors import ConfigError


def test_defaults_and_layering(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text(
        "[data]\nlimit = 100\nbatch_size = 16\n[distill]\ntemperature = 2\nlambda = 0.25\n"
    )
    cfg = load_config(
        toml,
        {"data.batch_size": 8, "run.out": None},
        ["distill.temperature=3.5", "qat.enabled=true"],
    )
    assert cfg.data.limit == 100  # from TOML
    assert cfg.data.batch_size == 8  # flag beats TOML
    assert cfg.distill.temperature == 3.5  # --set beats both, parsed as float
    assert cfg.distill.lam == 0.25  # TOML may spell the reserved word "lambda"
    assert cfg.qat.enabled is True
    assert cfg.run.out == Config().run.out  # None flags are ignored


def test_unknown_key_names_valid_keys():
    with pytest.raises(ConfigError, match="valid keys in \\[data\\]:.*batch_size"):
        load_config(sets=["data.batchsize=3"])
    with pytest.raises(ConfigError, match="sections are"):
        load_config(sets=["nope.x=1"])


@pytest.mark.parametrize(
    "item,msg",
    [
        ("distill.temperature=0", "temperature must be > 0"),
        ("distill.alpha=1.5", "alpha must be in"),
        ("data.limit=abc", "expects int"),
        ("qat.enabled=maybe", "expects bool"),
        ("data.normalize=zscore", "must be one of"),
        ("teacher.arch=vgg16", "teacher.arch must be one of"),
        ("teacher.width=0", "teacher.width must be >= 1"),
    ],
)
def test_bad_values(item, msg):
    with pytest.raises(ConfigError, match=msg):
        load_config(sets=[item])


def test_cnn_teacher_cannot_take_imagenet_weights():
    with pytest.raises(ConfigError, match="needs teacher.arch=resnet50"):
        load_config(sets=["teacher.arch=cnn", "teacher.weights=imagenet"])


def test_alpha_and_lambda_conflict():
    with pytest.raises(ConfigError, match="either lambda"):
        load_config(overrides={"distill.alpha": 0.3, "distill.lam": 0.5})


def test_json_round_trip():
    cfg = load_config(sets=["data.limit=7", "distill.alpha=0.1"])
    assert config_from_dict(cfg.to_dict()) == cfg


def test_public_api_resolves():
    import kdq_tf

    for name in kdq_tf.__all__:
        assert getattr(kdq_tf, name) is not None, name
