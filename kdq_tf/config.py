"""Frozen dataclass configs, loaded from defaults < TOML < CLI flags < --set.

Every section validates itself in `__post_init__`, so a bad value fails at the
boundary with a message that names the key, the value and the accepted range.
"""

import dataclasses
import json
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdq_tf.errors import ConfigError


def _check(ok: bool, msg: str) -> None:
    if not ok:
        raise ConfigError(msg)


def _one_of(key: str, value: Any, allowed: tuple) -> None:
    _check(value in allowed, f"{key} must be one of {', '.join(map(str, allowed))}; got {value!r}")


@dataclass(frozen=True)
class RunConfig:
    out: str = "runs/latest"  # run directory: config, checkpoints, metrics, export/
    seed: int = 0  # seeds numpy, TF and the data shuffles
    resume: bool = False  # continue a killed run from its last finished epoch
    overwrite: bool = False  # replace an existing run directory's results
    strategy: str = (
        "default"  # default (one device) | mirrored (local GPUs/CPUs) | multiworker (TF_CONFIG)
    )
    cpu_devices: int | None = None  # mirrored on N logical CPU devices (testing without GPUs)

    def __post_init__(self):
        _one_of("run.strategy", self.strategy, ("default", "mirrored", "multiworker"))
        _check(
            self.cpu_devices is None or self.cpu_devices >= 1,
            f"run.cpu_devices must be >= 1, got {self.cpu_devices}",
        )


@dataclass(frozen=True)
class DataConfig:
    dataset: str = (
        "fashion_mnist"  # fashion_mnist | mnist | cifar10 | cifar100 | npz:PATH | dir:PATH
    )
    data_dir: str | None = None  # searched first for the named sets
    limit: int | None = None  # use at most N samples of each split (quick runs, tests)
    val_split: float = 0.1  # share of the training data held out for validation
    batch_size: int = 32  # small batches: more steps per epoch, which short CPU runs need
    normalize: str = "unit"  # unit: x/255 in [0,1]; standard: per-channel z-score; none: raw
    augment: bool = False  # random flip/translate in the tf.data pipeline
    flip: bool = True  # horizontal flip when augmenting
    translate: int = 2  # max shift in pixels when augmenting
    erase: float = 0.0  # random-erasing probability when augmenting (Zhong et al. 2017)
    # Beta(a, a) mixup with a second training image when augmenting and in --views (function
    # matching, Beyer et al. 2022); 0: off. Mixed images have no one label: needs --lambda 0.
    mixup: float = 0.0

    def __post_init__(self):
        _check(self.limit is None or self.limit > 0, f"data.limit must be > 0, got {self.limit}")
        _check(
            0.0 <= self.val_split < 0.9, f"data.val_split must be in [0, 0.9), got {self.val_split}"
        )
        _check(self.batch_size > 0, f"data.batch_size must be > 0, got {self.batch_size}")
        _one_of("data.normalize", self.normalize, ("unit", "standard", "none"))
        _check(self.translate >= 0, f"data.translate must be >= 0, got {self.translate}")
        _check(
            0.0 <= self.erase <= 1.0,
            f"data.erase must be a probability in [0, 1], got {self.erase}",
        )
        _check(self.mixup >= 0, f"data.mixup must be >= 0 (Beta's a; 0 is off), got {self.mixup}")


@dataclass(frozen=True)
class TeacherConfig:
    # resnet50: the ResNet50 behind an adapter; cnn: a VGG-style CNN at the data's own resolution,
    # cheaper per image on small inputs and a diverse second member for fusion.
    arch: str = "resnet50"
    width: int = 48  # cnn only: filters of its first stage (x2, x4 in the next two)
    weights: str = "none"  # none: from scratch; imagenet: fine-tune the ImageNet backbone
    path: str | None = (
        None  # a user's .keras teacher instead of ResNet50; several (comma-separated) are fused
    )
    # several teachers: weighted mean of logits | of probabilities (kdq_tf.teacher.fusion)
    fusion: str = "logits"
    fusion_weights: str | None = None  # "0.6,0.4"; None: proportional to each member's val accuracy
    logits: str | None = None  # a .npz of precomputed teacher logits instead of a teacher model
    input_size: int = 32  # adapter output side; ResNet50 needs >= 32
    adapter: str = "pad"  # pad (zero-pad small inputs) or resize (bilinear)
    epochs: int = 3  # epochs over the whole network
    head_epochs: int = 1  # imagenet only: epochs for the new head with the backbone frozen
    lr: float = 1e-3  # Adam learning rate; fine-tuning uses lr * finetune_lr_factor
    finetune_lr_factor: float = 0.1
    label_smoothing: float = 0.0
    unsafe_load: bool = False  # allow Lambda layers etc. in a user .keras (runs their code)
    # The recipe (kdq_tf.teacher.recipe): a teacher must clearly beat its student, and on
    # small images that takes augmentation (crop with padding, flip, erasing) and many epochs.
    augment: bool = True  # augment in the teacher stage, whatever data.augment says
    erase: float = 0.5  # random-erasing probability of the teacher's augmentation
    batch_size: int | None = None  # teacher batch; None: data.batch_size
    precision: str = "float32"  # float32 | mixed_bfloat16 | auto (bf16 where the CPU has it)
    jit: bool = False  # XLA-compile the train step
    weight_decay: float = 0.0  # > 0: AdamW with this decoupled decay
    snapshot_every: int = (
        0  # keep the weights every N epochs in teacher_snapshots/ (fusion, KD-gain study)
    )
    # Warm start: begin training from these weights (a teacher .keras, a run folder or a snapshot
    # .weights.h5) with a fresh schedule, to train a teacher further than one session allows.
    init: str | None = None

    def __post_init__(self):
        _one_of("teacher.arch", self.arch, ("resnet50", "cnn"))
        _check(self.width >= 1, f"teacher.width must be >= 1, got {self.width}")
        _one_of("teacher.weights", self.weights, ("none", "imagenet"))
        _check(
            not (self.arch == "cnn" and self.weights == "imagenet"),
            "teacher.weights=imagenet needs "
            "teacher.arch=resnet50; the cnn teacher trains from scratch",
        )
        _one_of("teacher.precision", self.precision, ("float32", "mixed_bfloat16", "auto"))
        _one_of("teacher.fusion", self.fusion, ("logits", "probs"))
        _check(
            not (self.path and self.logits),
            "give teacher models (--teacher) or precomputed logits (--teacher-logits), not both",
        )
        _check(
            not (self.init and (self.path or self.logits)),
            "teacher.init warm-starts the ResNet50 the "
            "teacher stage trains; it cannot be combined with --teacher or --teacher-logits",
        )
        _check(
            0.0 <= self.erase <= 1.0,
            f"teacher.erase must be a probability in [0, 1], got {self.erase}",
        )
        _check(
            self.batch_size is None or self.batch_size > 0,
            f"teacher.batch_size must be > 0, got {self.batch_size}",
        )
        _check(
            self.weight_decay >= 0, f"teacher.weight_decay must be >= 0, got {self.weight_decay}"
        )
        _check(
            self.snapshot_every >= 0,
            f"teacher.snapshot_every must be >= 0, got {self.snapshot_every}",
        )
        _one_of("teacher.adapter", self.adapter, ("pad", "resize"))
        _check(
            self.input_size >= 32,
            f"teacher.input_size must be >= 32 (ResNet50), got {self.input_size}",
        )
        _check(self.epochs >= 0, f"teacher.epochs must be >= 0, got {self.epochs}")
        _check(self.head_epochs >= 0, f"teacher.head_epochs must be >= 0, got {self.head_epochs}")
        _check(self.lr > 0, f"teacher.lr must be > 0, got {self.lr}")
        _check(
            0 < self.finetune_lr_factor <= 1,
            f"teacher.finetune_lr_factor must be in (0, 1], got {self.finetune_lr_factor}",
        )
        _check(
            0 <= self.label_smoothing < 1,
            f"teacher.label_smoothing must be in [0, 1), got {self.label_smoothing}",
        )


@dataclass(frozen=True)
class DistillConfig:
    student: str = "tiny_cnn"  # a name from `kdq_tf students`, or a path to a .keras model
    epochs: int = 10
    lr: float = 1e-3
    # T and lambda won the validation sweep in benchmarks/results/full.md (T in 1, 2, 4;
    # lambda 0.5, 0.1) with the fused teacher, about 2 pts above the student.
    temperature: float = 2.0  # >1 softens the teacher (Hinton et al. 2015)
    lam: float | None = None  # L = L_soft + lam * L_hard; 0.5 when neither lam nor alpha is set
    alpha: float | None = None  # keras-io form: L = alpha * L_hard + (1 - alpha) * L_soft
    soft_loss: str = "kl"  # kl | ce | dist | dkd, all scaled by T^2 (kdq_tf.distill.losses)
    dist_beta: float = 1.0  # DIST's inter-class (per example) weight
    dist_gamma: float = 1.0  # DIST's intra-class (per class, over the batch) weight
    dkd_alpha: float = 1.0  # DKD's target-class (TCKD) weight
    dkd_beta: float = 8.0  # DKD's non-target (NCKD) weight; 8 is the paper's CIFAR-100 setting
    hard_loss: str = "ce"  # ce | mse (MSE on one-hot labels)
    guidance: str = "auto"  # auto | online | cached | cached-int8 | teacher-int8
    # cached modes: teacher logits for K fixed augmented views; the student cycles through them
    views: int = 0
    baseline: bool = False  # also train the student on hard labels only, same epochs and seed
    shrink: float | None = (
        None  # soft-threshold delta applied to kernels before QAT (prune-preserving)
    )
    # Flash below int8 (kdq_tf.distill.cluster_prune): the distilled student is fine-tuned
    # clustered and/or pruned with the teacher still guiding, and QAT then keeps that structure
    # (CQAT, PQAT, PCQAT).
    cluster: int = 0  # N shared values per kernel (16: 4-bit LUT indices); 0: off
    prune: float = 0.0  # final sparsity of magnitude pruning; 0: off
    structure_epochs: int = 2

    def __post_init__(self):
        _check(self.temperature > 0, f"distill.temperature must be > 0, got {self.temperature}")
        _check(self.epochs >= 0, f"distill.epochs must be >= 0, got {self.epochs}")
        _check(self.lr > 0, f"distill.lr must be > 0, got {self.lr}")
        _check(
            self.lam is None or self.alpha is None,
            f"give either lambda ({self.lam}) or alpha ({self.alpha}), not both: they are two "
            "parametrisations of the same mix",
        )
        _check(
            self.alpha is None or 0.0 <= self.alpha <= 1.0,
            f"distill.alpha must be in [0, 1], got {self.alpha}",
        )
        _check(
            self.lam is None or self.lam >= 0.0,
            f"distill.lam (lambda) must be >= 0, got {self.lam}",
        )
        _one_of("distill.soft_loss", self.soft_loss, ("kl", "ce", "dist", "dkd"))
        for name in ("dist_beta", "dist_gamma", "dkd_alpha", "dkd_beta"):
            v = getattr(self, name)
            _check(v >= 0, f"distill.{name} must be >= 0, got {v}")
        _one_of("distill.hard_loss", self.hard_loss, ("ce", "mse"))
        _one_of(
            "distill.guidance",
            self.guidance,
            ("auto", "online", "cached", "cached-int8", "teacher-int8"),
        )
        _check(
            self.shrink is None or self.shrink >= 0,
            f"distill.shrink must be >= 0, got {self.shrink}",
        )
        _check(
            self.cluster == 0 or 2 <= self.cluster <= 256,
            f"distill.cluster must be 0 (off) or 2..256 clusters per tensor, got {self.cluster}",
        )
        _check(
            self.prune == 0 or 0 < self.prune < 1,
            "distill.prune must be 0 (off) or a sparsity strictly "
            f"between 0 and 1, got {self.prune}",
        )
        _check(
            self.structure_epochs >= 1,
            f"distill.structure_epochs must be >= 1, got {self.structure_epochs}",
        )
        # Each view is one more teacher pass over the training set and one more copy of its logits.
        _check(0 <= self.views <= 64, f"distill.views must be in 0..64, got {self.views}")

    def soft_params(self) -> dict:
        """The chosen soft loss's coefficients (kdq_tf.distill.losses.soft_loss's params)."""
        if self.soft_loss == "dist":
            return {"beta": self.dist_beta, "gamma": self.dist_gamma}
        if self.soft_loss == "dkd":
            return {"alpha": self.dkd_alpha, "beta": self.dkd_beta}
        return {}


@dataclass(frozen=True)
class QATConfig:
    enabled: bool = False  # fine-tune a TF-MOT quantized student under the teacher
    epochs: int = 2
    lr: float = 1e-4  # QAT starts from a trained student: small steps
    skip: str | None = None  # regex of layer names kept in float

    def __post_init__(self):
        _check(self.epochs >= 0, f"qat.epochs must be >= 0, got {self.epochs}")
        _check(self.lr > 0, f"qat.lr must be > 0, got {self.lr}")


@dataclass(frozen=True)
class ExportConfig:
    mode: str = "int8"  # int8 | int16x8 | float16 | float32
    calib_samples: int = 500  # representative samples for post-training quantization
    name: str = "model"  # C identifier stem: g_<name>_model_data
    c_array: bool = True
    verify_samples: int = 1000
    # Test images embedded in the firmware for the on-target check: 10 28x28 images take 8 KB
    # of flash, next to a model of tens of KB; any MCU board that holds the model holds them.
    firmware_samples: int = 10
    # lut: TFLite-Micro LUT compression of weight tensors with few distinct values (a clustered
    # student); the device model (C array, firmware) carries it (kdq_tf.deploy.compression).
    compress: str = "none"
    # With LUT: the C array and firmware carry each DECODE -> CONV_2D pair fused into the
    # firmware's own KDQ_LUT_CONV (about the dense model's RAM); False keeps TFLM's DECODE
    # operators (fewer instructions, the decoded kernels in the arena).
    fuse_lut: bool = True

    def __post_init__(self):
        _one_of("export.mode", self.mode, ("int8", "int16x8", "float16", "float32"))
        _one_of("export.compress", self.compress, ("none", "lut"))
        _check(
            0 < self.firmware_samples <= 1000,
            f"export.firmware_samples must be in 1..1000, got {self.firmware_samples}",
        )
        _check(
            self.calib_samples > 0, f"export.calib_samples must be > 0, got {self.calib_samples}"
        )
        _check(
            self.verify_samples > 0, f"export.verify_samples must be > 0, got {self.verify_samples}"
        )


@dataclass(frozen=True)
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    qat: QATConfig = field(default_factory=QATConfig)
    export: ExportConfig = field(default_factory=ExportConfig)

    def __post_init__(self):
        d = self.distill
        # The hard loss's weight, as kdq_tf.distill.losses.LossWeights.from_config maps it.
        hard = d.alpha if d.alpha is not None else (0.5 if d.lam is None else d.lam)
        mixing = self.data.mixup and (self.data.augment or d.views)
        _check(
            not mixing or hard == 0,
            f"--mixup {self.data.mixup} mixes two images, which then have no one label for the "
            f"hard loss (weight {hard}): pass --lambda 0, so that the student matches the "
            "teacher alone (function matching)",
        )
        _check(
            not mixing or d.soft_loss != "dkd",
            f"--mixup {self.data.mixup} with --soft-loss dkd: DKD splits the target class from "
            "the others by the image's label, which a mixed image does not have; use kl or dist",
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


_SECTIONS = {f.name: f.type for f in dataclasses.fields(Config)}
# TOML and --set may spell the reserved word; the dataclass cannot.
_ALIASES = {"distill.lambda": "distill.lam"}


def _parse_scalar(key: str, text: str, typ: Any) -> Any:
    """Converts a --set string to the field's type (int, float, bool, str, or optional)."""
    args = typing.get_args(typ)
    if typing.get_origin(typ) in (typing.Union, types.UnionType):
        if text.lower() in ("none", "null", ""):
            return None
        typ = next(a for a in args if a is not type(None))
    try:
        if typ is bool:
            low = text.lower()
            if low not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError
            return low in ("1", "true", "yes", "on")
        return typ(text)
    except ValueError:
        raise ConfigError(f"{key} expects {typ.__name__}, got {text!r}") from None


def _coerce(key: str, value: Any, typ: Any) -> Any:
    if isinstance(value, str):
        return _parse_scalar(key, value, typ)
    base = {a for a in typing.get_args(typ) if a is not type(None)} or {typ}
    if value is None and type(None) in typing.get_args(typ):
        return None
    if float in base and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not any(isinstance(value, b) for b in base) or (
        isinstance(value, bool) and bool not in base
    ):
        names = "/".join(b.__name__ for b in base)
        raise ConfigError(f"{key} expects {names}, got {value!r}")
    return value


def _apply(raw: dict[str, dict[str, Any]], key: str, value: Any) -> None:
    key = _ALIASES.get(key, key)
    section, _, name = key.partition(".")
    if section not in _SECTIONS or not name:
        raise ConfigError(f"unknown config key {key!r}; sections are: {', '.join(_SECTIONS)}")
    fields = {f.name: f for f in dataclasses.fields(_SECTIONS[section])}
    if name not in fields:
        raise ConfigError(
            f"unknown config key {key!r}; valid keys in [{section}]: {', '.join(fields)}"
        )
    hints = typing.get_type_hints(_SECTIONS[section])
    raw.setdefault(section, {})[name] = _coerce(key, value, hints[name])


def load_config(
    path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    sets: list[str] | tuple[str, ...] = (),
) -> Config:
    """Builds a `Config` from defaults, a TOML/JSON file, flag overrides and `--set`.

    Args:
        path: a `.toml` or `.json` file with `[section]` tables. Defaults to None.
        overrides: `{"section.key": value}` from CLI flags; None values are ignored.
        sets: `"section.key=value"` strings, applied last.

    Returns:
        The resolved, validated `Config`.

    Raises:
        ConfigError: on an unknown key, a value of the wrong type or out of range,
            or an unreadable file.
    """
    raw: dict[str, dict[str, Any]] = {}
    if path is not None:
        p = Path(path)
        try:
            text = p.read_text()
        except OSError as e:
            raise ConfigError(f"cannot read config file {p}: {e.strerror}") from None
        try:
            data = json.loads(text) if p.suffix == ".json" else tomllib.loads(text)
        except (tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
            raise ConfigError(
                f"config file {p} is not valid {'JSON' if p.suffix == '.json' else 'TOML'}: {e}"
            ) from None
        for section, table in data.items():
            if not isinstance(table, dict):
                raise ConfigError(f"config file {p}: [{section}] must be a table, got {table!r}")
            for name, value in table.items():
                _apply(raw, f"{section}.{name}", value)
    for key, value in (overrides or {}).items():
        if value is not None:
            _apply(raw, key, value)
    for item in sets:
        key, eq, value = item.partition("=")
        if not eq:
            raise ConfigError(f"--set expects section.key=value, got {item!r}")
        _apply(raw, key.strip(), value.strip())
    try:
        return Config(**{s: _SECTIONS[s](**raw.get(s, {})) for s in _SECTIONS})
    except TypeError as e:  # pragma: no cover - guarded by _apply
        raise ConfigError(str(e)) from None


def config_from_dict(d: dict) -> Config:
    """Rebuilds a `Config` from `Config.to_dict()` output (e.g. a run's config.json)."""
    return load_config(overrides={f"{s}.{k}": v for s, t in d.items() for k, v in t.items()})
