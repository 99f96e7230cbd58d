"""Range checks for the config dataclasses: the environment's (``RewardConfig``, ``ActionLimits``)
and the agents' (``GRPOConfig``, ``PPOConfig``, ``SFTConfig``, ``PolicyConfig``).

A value outside its range is refused when the config is built (``leser train --set
learning_rate=-1``, ``GRPOConfig(num_generations=1)``, ``RewardConfig(size_weight=-1)``), with the
field and the range named, rather than crashing or training nothing steps later. Every config calls
``check_ranges`` from its ``__post_init__``.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Mapping


class Range(typing.NamedTuple):
    low: float
    high: float = math.inf
    closed_low: bool = True
    closed_high: bool = True

    def holds(self, value: float) -> bool:
        above = value >= self.low if self.closed_low else value > self.low
        below = value <= self.high if self.closed_high else value < self.high
        return above and below

    def __str__(self) -> str:
        if self.high == math.inf:
            return f"{'>=' if self.closed_low else '>'} {self.low:g}"
        if self.low == -math.inf:
            return f"{'<=' if self.closed_high else '<'} {self.high:g}"
        return f"in {'[' if self.closed_low else '('}{self.low:g}, {self.high:g}{']' if self.closed_high else ')'}"


POSITIVE = Range(0.0, closed_low=False)
NON_NEGATIVE = Range(0.0)
UNIT_INTERVAL = Range(0.0, 1.0)


def check_ranges(config: object, ranges: Mapping[str, Range]) -> None:
    """Raise ``ValueError`` naming the first field outside its range. A field annotated ``int`` must
    hold an int (not a bool or a float); ``None`` passes where the annotation allows it; NaN and
    infinity never pass."""
    hints = typing.get_type_hints(type(config))
    name_of = type(config).__name__
    for name, allowed in ranges.items():
        value = getattr(config, name)
        options = typing.get_args(hints[name]) or (hints[name],)
        if value is None and type(None) in options:
            continue
        integer = int in options and float not in options
        kind_ok = isinstance(value, int) if integer else isinstance(value, int | float)
        if isinstance(value, bool) or not kind_ok or not math.isfinite(value) or not allowed.holds(value):
            kind = "an integer" if integer else "a finite number"
            raise ValueError(f"{name_of}.{name} must be {kind} {allowed}, got {value!r}")
