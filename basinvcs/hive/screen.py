"""The checks a round's updates pass when it closes, in order: the outlier check (size, by the
round's robust statistics; basinvcs.hive.outliers), then the opposition check on what it left
(direction; basinvcs.hive.opposition). The coordinator and every replica screen a round here, so
they refuse the same updates for the same reasons."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import opposition, outliers


def screen(
    x: np.ndarray,
    keys: Sequence[Any],
    weigh: Callable[[list[int]], list[float]],
    c: float = outliers.DEFAULT_C,
    tau: float = opposition.DEFAULT_TAU,
) -> tuple[list[int], dict[int, str]]:
    """The rows of `x` (the round's dense updates) to combine, ascending, and the refused ones
    with a one-line reason. `keys`: each row's canonical-order key; `weigh(rows)`: the weights
    the rule will give those rows."""
    report = outliers.check(x, c=c)
    refused = {
        i: f"outlier: Fisher distance {report.scores[i]:.4g} > {report.threshold:.4g}"
        for i in report.outliers
    }
    left = [i for i in range(len(x)) if i not in refused]
    if left:
        against = opposition.check(x[left], weigh(left), [keys[i] for i in left], tau)
        for j in against.refused:
            refused[left[j]] = (
                f"opposition: cosine {against.scores[j]:.3g} with the rest of the round < {-tau:g}"
            )
    return [i for i in left if i not in refused], dict(sorted(refused.items()))
