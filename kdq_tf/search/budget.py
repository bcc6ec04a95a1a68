"""A device budget: flash and RAM of the whole image, instructions per inference.

Pure Python, so the CLI can reject a bad budget before TensorFlow loads.
"""

import re
from dataclasses import dataclass

from kdq_tf.errors import ConfigError

_BYTES = {"b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2}
_COUNT = {"": 1, "k": 1000, "m": 1000**2, "g": 1000**3}
_NUMBER = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*$")


def _parse(text: str, units: dict[str, int], what: str, example: str) -> int:
    m = _NUMBER.match(str(text))
    if not m:
        raise ConfigError(
            f"{what} must be a positive number with a unit, e.g. {example}; got {text!r}"
        )
    unit = m[2].lower()
    if unit not in units:
        raise ConfigError(
            f"{what}: unknown unit {m[2]!r} in {text!r}; use one of "
            f"{', '.join(u or '(none)' for u in units)} (e.g. {example})"
        )
    value = float(m[1]) * units[unit]
    if value <= 0:
        raise ConfigError(f"{what} must be greater than zero, got {text!r}")
    return int(round(value))


def parse_bytes(text: str, what: str = "size") -> int:
    """'192KiB' -> 196608. Units: B, KB, KiB, MB, MiB (case-insensitive); a bare number is
    refused, because 192 bytes and 192 KiB are both plausible typos."""
    if re.match(r"^\s*-", str(text)):
        raise ConfigError(f"{what} must be greater than zero, got {text!r}")
    m = _NUMBER.match(str(text))
    if m and not m[2]:
        raise ConfigError(f"{what} needs a unit (B, KiB, MiB, KB, MB), got {text!r}; e.g. 192KiB")
    return _parse(text, {k: v for k, v in _BYTES.items()}, what, "192KiB")


def parse_count(text: str, what: str = "instructions") -> int:
    """'12M' -> 12000000; K, M, G are powers of 1000, a bare number is a plain count."""
    if re.match(r"^\s*-", str(text)):
        raise ConfigError(f"{what} must be greater than zero, got {text!r}")
    return _parse(text, _COUNT, what, "12M")


@dataclass(frozen=True)
class Budget:
    """What the image a user flashes may take. None: no limit on that figure.

    flash: text + rodata + .data's initial values of the whole image (model, TFLM, the
    application and one input); ram: .data + .bss (the tensor arena lives in .bss).
    """

    flash: int | None = None
    ram: int | None = None
    instructions: int | None = None

    def __post_init__(self):
        for name in ("flash", "ram", "instructions"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v <= 0):
                raise ConfigError(f"budget {name} must be a positive integer, got {v!r}")
        if self.flash is None and self.ram is None and self.instructions is None:
            raise ConfigError("give a budget: at least one of --flash, --ram, --instructions")

    def limits(self) -> dict[str, int]:
        return {k: v for k, v in self.to_dict().items() if v is not None}

    def to_dict(self) -> dict:
        return {"flash": self.flash, "ram": self.ram, "instructions": self.instructions}

    def misses(self, figures: dict) -> dict[str, int]:
        """By how much each limited figure is over budget (0 or less: it fits).

        A limited figure that is missing (None) counts as unknown, not as fitting."""
        out = {}
        for name, limit in self.limits().items():
            got = figures.get(name)
            if got is not None:
                out[name] = int(got) - limit
        return out

    def fits(self, figures: dict) -> bool:
        misses = self.misses(figures)
        return len(misses) == len(self.limits()) and all(v <= 0 for v in misses.values())

    def constraints(self, figures: dict) -> list[float]:
        """Optuna's constraint values, one per limited figure: the relative excess (> 0:
        violated). A figure not measured (the trial stopped before it) counts as violated by 1,
        so an unmeasured trial is never taken as feasible."""
        misses = self.misses(figures)
        return [
            misses[name] / limit if name in misses else 1.0 for name, limit in self.limits().items()
        ]

    def describe(self) -> str:
        parts = []
        if self.flash:
            parts.append(f"flash <= {fmt_bytes(self.flash)}")
        if self.ram:
            parts.append(f"RAM <= {fmt_bytes(self.ram)}")
        if self.instructions:
            parts.append(f"<= {self.instructions / 1e6:g} M instructions per inference")
        return ", ".join(parts)


def fmt_bytes(n: int | float | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1024:.1f} KiB" if abs(n) >= 1024 else f"{int(n)} B"
