"""`ours` and `theirs`: take one side's basin whole, deliberately (a resolution, not a blend)."""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import BasinError
from .sides import Side
from .strategy import Strategy, register


@register
class Ours(Strategy):
    name = "ours"
    summary = "our basin, whole"
    picks = True

    def pick(self, sides: Sequence[Side]) -> list[float]:
        return list(sides[0].z)


@register
class Theirs(Strategy):
    name = "theirs"
    summary = "their basin, whole (one incoming side only)"
    picks = True

    def pick(self, sides: Sequence[Side]) -> list[float]:
        if len(sides) != 2:
            raise BasinError(f"'theirs' takes one incoming side; this merge has {len(sides) - 1}")
        return list(sides[1].z)
