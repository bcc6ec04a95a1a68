"""The search space, declared in TOML, and the candidates it holds.

A candidate is a stack of the zoo's blocks (kdq_tf.models.students): a plain k x k conv stem,
then plain or depthwise-separable blocks, some of them stride 2, then the GAP + 1x1-conv head.
"hybrid" follows the Cortex-M profile's rule (docs/firmware.md): separable blocks before the
last stage, where the maps are large and a plain k x k conv costs the most, plain ones in it.
Every layer is one TF-MOT quantizes and TFLite-Micro runs in int8, so every candidate converts
to full int8 and runs on the firmware.

`estimate` counts a candidate with no TensorFlow: what Keras's `count_params` gives, the MACs,
the int8 weight bytes, and a lower bound on the tensor arena. A lower bound is what lets the
search reject a candidate before it trains without ever rejecting one that fits.
"""

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from kdq_tf.errors import ConfigError

BLOCKS = ("plain", "separable", "hybrid")
COMPRESSIONS = {"none": 0, "lut16": 16, "lut8": 8}  # clusters per kernel (0: no LUT)
KERNEL_SETS = ("cmsis-nn", "reference")
_BN_PARAMS = 4  # gamma, beta, moving mean, moving variance per channel (count_params counts all)
# The zoo's plain five-block CNNs (kdq_tf.models.students): 3x3 blocks, stride 2 at blocks 1 and
# 3, these widths. Written out here because the zoo module imports Keras; a test builds both.
ZOO_PLAIN = {"tiny_cnn": (16, 32, 32, 48, 48), "small_cnn": (24, 48, 48, 64, 64)}


@dataclass(frozen=True)
class SearchSpace:
    """What `space.toml` may hold: every key is a list of the values to try.

    Widths: block i has `stage_widths[s] * width` channels, rounded to a multiple of 8 (what
    CMSIS-NN's kernels are fastest on), where s counts the stride-2 blocks up to and including
    block i. With the defaults, 5 plain 3x3 blocks and stride2 [1, 3] are small_cnn at width
    1.0 and tiny_cnn at width 0.7.
    """

    # 0.7 is there for tiny_cnn: it rounds (24, 48, 64) to its 16-32-48 stages, so the zoo's
    # smaller student is a seed of the default space too (and 1.0 is small_cnn).
    width: tuple[float, ...] = (0.5, 0.7, 0.75, 1.0, 1.25)
    blocks: tuple[int, ...] = (4, 5, 6)
    block: tuple[str, ...] = BLOCKS
    kernel: tuple[int, ...] = (3, 5)
    stride2: tuple[tuple[int, ...], ...] = ((1, 3), (1, 2), (0, 2), (2, 3))
    compression: tuple[str, ...] = ("none", "lut16", "lut8")
    kernels: tuple[str, ...] = KERNEL_SETS
    stage_widths: tuple[int, ...] = (24, 48, 64)

    def __post_init__(self):
        for name in ("width", "blocks", "block", "kernel", "stride2", "compression", "kernels"):
            if not getattr(self, name):
                raise ConfigError(f"search space: {name} is empty; give at least one value")
        _all(self.width, lambda v: isinstance(v, (int, float)) and 0 < v <= 8, "width", "in (0, 8]")
        _all(self.blocks, lambda v: _int(v) and 2 <= v <= 16, "blocks", "an integer in 2..16")
        _all(self.block, lambda v: v in BLOCKS, "block", f"one of {', '.join(BLOCKS)}")
        _all(self.kernel, lambda v: _int(v) and v in (1, 3, 5, 7), "kernel", "1, 3, 5 or 7")
        _all(self.compression, lambda v: v in COMPRESSIONS, "compression", ", ".join(COMPRESSIONS))
        _all(self.kernels, lambda v: v in KERNEL_SETS, "kernels", ", ".join(KERNEL_SETS))
        _all(self.stage_widths, lambda v: _int(v) and 1 <= v <= 1024, "stage_widths", "1..1024")
        for s in self.stride2:
            if not all(_int(i) and i >= 0 for i in s) or len(set(s)) != len(s):
                raise ConfigError(
                    f"search space: stride2 entries are lists of distinct block indices >= 0 "
                    f"(0 is the stem), got {list(s)}"
                )
            if s and max(s) >= min(self.blocks):
                raise ConfigError(
                    f"search space is contradictory: stride2 {list(s)} puts a stride-2 block at "
                    f"index {max(s)}, but blocks can be {min(self.blocks)} (indices 0.."
                    f"{min(self.blocks) - 1}); drop that entry or the smaller block counts"
                )
            if len(s) >= len(self.stage_widths):
                raise ConfigError(
                    f"search space is contradictory: stride2 {list(s)} makes {len(s) + 1} stages "
                    f"but stage_widths has {len(self.stage_widths)} widths; give one per stage"
                )

    @classmethod
    def from_toml(cls, path: str | Path) -> "SearchSpace":
        """Reads `[space]` from a TOML file. Unknown keys and tables are errors: a typo would
        otherwise search a space the user did not ask for."""
        p = Path(path)
        try:
            raw = tomllib.loads(p.read_text())
        except OSError as e:
            raise ConfigError(f"cannot read search space {p}: {e.strerror}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"search space {p} is not valid TOML: {e}") from None
        extra = set(raw) - {"space"}
        if extra:
            raise ConfigError(
                f"search space {p}: unknown table(s) {', '.join(sorted(extra))}; "
                "put the keys under [space]"
            )
        return cls.from_dict(raw.get("space", {}), str(p))

    @classmethod
    def from_dict(cls, table: dict, source: str = "search space") -> "SearchSpace":
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(table) - known)
        if unknown:
            raise ConfigError(
                f"{source}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        kw = {}
        for k, v in table.items():
            if not isinstance(v, list):
                raise ConfigError(f"{source}: {k} must be a list of values, got {v!r}")
            if k == "stride2":
                if not all(isinstance(s, list) for s in v):
                    raise ConfigError(f"{source}: stride2 is a list of lists, e.g. [[1, 3]]")
                v = [tuple(s) for s in v]
            kw[k] = tuple(dict.fromkeys(v))  # duplicates would bias the sampler
        return cls(**kw)

    def to_dict(self) -> dict:
        return {
            k: [list(s) if isinstance(s, tuple) else s for s in getattr(self, k)]
            for k in self.__dataclass_fields__
        }

    def choices(self) -> dict[str, list]:
        """The sampled dimensions and their values, as Optuna categorical choices (which must be
        plain scalars: stride-2 positions are spelled "1-3")."""
        return {
            "width": list(self.width),
            "blocks": list(self.blocks),
            "block": list(self.block),
            "kernel": list(self.kernel),
            "stride2": [_stride_key(s) for s in self.stride2],
            "compression": list(self.compression),
        }

    def zoo_seeds(self) -> list[tuple[str, dict]]:
        """The zoo's students that this space holds, as (name, Optuna params): the search tries
        them first, so it never ends below a zoo student it could have measured. Compression
        variants the space allows are seeds too ("small_cnn+lut16")."""
        out = []
        for name, widths in ZOO_PLAIN.items():
            for width in self.width:
                c = Candidate(width, len(widths), "plain", 3, (1, 3), "none", self.stage_widths)
                if not (
                    c.widths() == list(widths)
                    and c.blocks in self.blocks
                    and "plain" in self.block
                    and 3 in self.kernel
                    and (1, 3) in self.stride2
                ):
                    continue
                for comp in self.compression:
                    params = {
                        "width": width,
                        "blocks": c.blocks,
                        "block": "plain",
                        "kernel": 3,
                        "stride2": _stride_key(c.stride2),
                        "compression": comp,
                    }
                    out.append((name + ("" if comp == "none" else f"+{comp}"), params))
        return out

    def size(self) -> int:
        """How many distinct candidates the space holds."""
        return math.prod(len(v) for v in self.choices().values())

    def candidate(self, params: dict) -> "Candidate":
        stride2 = tuple(int(i) for i in params["stride2"].split("-") if i)
        block = params["block"]
        if block == "hybrid" and max(stride2, default=0) == 0:  # one stage: all of it plain
            block = "plain"
        return Candidate(
            width=float(params["width"]),
            blocks=int(params["blocks"]),
            block=block,
            kernel=int(params["kernel"]),
            stride2=stride2,
            compression=params["compression"],
            stage_widths=self.stage_widths,
        )


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _all(values, ok, name: str, want: str) -> None:
    bad = [v for v in values if not ok(v)]
    if bad:
        raise ConfigError(f"search space: {name} must be {want}; got {bad[0]!r}")


def _stride_key(s) -> str:
    return "-".join(str(i) for i in s)


@dataclass(frozen=True)
class Candidate:
    """One point of the space: the student's architecture and its weight compression."""

    width: float
    blocks: int
    block: str
    kernel: int
    stride2: tuple[int, ...]
    compression: str = "none"
    stage_widths: tuple[int, ...] = field(default=(24, 48, 64), repr=False)

    @property
    def key(self) -> str:
        """A readable name, also the trial's folder: "sep-w0.75-b5-k3-s1-3-lut16"."""
        kind = {"plain": "plain", "separable": "sep", "hybrid": "hyb"}[self.block]
        return (
            f"{kind}-w{self.width:g}-b{self.blocks}-k{self.kernel}-"
            f"s{_stride_key(self.stride2) or 'none'}-{self.compression}"
        )

    @property
    def clusters(self) -> int:
        return COMPRESSIONS[self.compression]

    def plain_at(self, i: int) -> bool:
        """Whether block i is a plain k x k conv (else depthwise-separable). The stem always is:
        a depthwise conv on 1-3 input channels would learn little."""
        if i == 0 or self.block == "plain":
            return True
        return self.block == "hybrid" and i >= max(self.stride2, default=0)

    def widths(self) -> list[int]:
        out, stage = [], 0
        for i in range(self.blocks):
            stage += i in self.stride2
            out.append(max(8, int(self.stage_widths[stage] * self.width / 8 + 0.5) * 8))
        return out

    def to_dict(self) -> dict:
        return {
            "key": self.key,
            "width": self.width,
            "blocks": self.blocks,
            "block": self.block,
            "kernel": self.kernel,
            "stride2": list(self.stride2),
            "compression": self.compression,
            "widths": self.widths(),
        }


def build_model(c: Candidate, input_shape, num_classes: int):
    """The candidate as a flat Functional Keras model of the zoo's blocks."""
    from kdq_tf._keras import keras
    from kdq_tf.models.students import conv_bn_relu, depthwise_bn_relu, gap_head

    inputs = keras.Input(tuple(input_shape), name="image")
    x = inputs
    for i, w in enumerate(c.widths()):
        stride = 2 if i in c.stride2 else 1
        if c.plain_at(i):
            x = conv_bn_relu(x, w, kernel=c.kernel, stride=stride, name=f"b{i}")
        else:
            x = depthwise_bn_relu(x, stride, name=f"b{i}", kernel=c.kernel)
            x = conv_bn_relu(x, w, kernel=1, name=f"b{i}_pw")
    return keras.Model(inputs, gap_head(x, num_classes), name=c.key.replace(".", "_"))


def estimate(c: Candidate, input_shape, num_classes: int) -> dict:
    """Counts the candidate without building it.

    Returns:
        params: what Keras's count_params gives (kernels, the head's bias, 4 per BN channel);
        macs: multiply-accumulates per inference (as kdq_tf.models.students.count_macs counts);
        int8_weight_bytes: int8 kernels plus int32 biases (BN folds into a bias per channel),
            the part of the flatbuffer that quantization cannot shrink further;
        weight_bytes: the same with LUT: kernels at log2(clusters) bits per weight;
        arena_floor: the largest input + output pair of one layer in int8, which any tensor
            arena must hold at once.
    """
    h, w, cin = (int(v) for v in input_shape)
    params = macs = kernel_w = bias_n = 0
    act = 0
    for i, cout in enumerate(c.widths()):
        stride = 2 if i in c.stride2 else 1
        ho, wo = math.ceil(h / stride), math.ceil(w / stride)
        if c.plain_at(i):
            k = c.kernel * c.kernel * cin * cout
            params += k + _BN_PARAMS * cout
            macs += ho * wo * k
            kernel_w, bias_n = kernel_w + k, bias_n + cout
            act = max(act, h * w * cin + ho * wo * cout)
        else:
            dw, pw = c.kernel * c.kernel * cin, cin * cout
            params += dw + _BN_PARAMS * cin + pw + _BN_PARAMS * cout
            macs += ho * wo * dw + ho * wo * pw
            kernel_w, bias_n = kernel_w + dw + pw, bias_n + cin + cout
            act = max(act, h * w * cin + ho * wo * cin, ho * wo * (cin + cout))
        h, w, cin = ho, wo, cout
    head = cin * num_classes
    params += head + num_classes
    macs += head
    kernel_w, bias_n = kernel_w + head, bias_n + num_classes
    act = max(act, h * w * cin + cin)  # the pooling reads the last map, writes C values
    bits = math.ceil(math.log2(c.clusters)) if c.clusters else 8
    return {
        "params": params,
        "macs": macs,
        "int8_weight_bytes": kernel_w + 4 * bias_n,
        "weight_bytes": math.ceil(kernel_w * bits / 8) + 4 * bias_n,
        "arena_floor": act,
    }
