"""Merging basins: the arithmetic, with no repository in sight (porcelain.merge is the operation).

Given a base and any number of sides (ours first), each side's change is δ = z_side − z_base. A
coordinate only one side changed takes that side's change whole; coordinates several sides changed
are combined by the strategy (one module each, registered in `strategy.REGISTRY`):

- ``add`` (default): the changes added, what they share counted once (orthogonal ones whole,
  equal ones once);
- ``fisher``: each side weighted by its Fisher information there and its side weight,
  Σ w F δ / Σ w F (Matena & Raffel 2022, restricted to the shared coordinates);
- ``linear``: weighted task arithmetic, Σ w δ / Σ w;
- ``ties``: TIES-merging (Yadav et al. 2023);
- ``ours`` / ``theirs``: take one side's basin, deliberately.

Before anything is combined, `assess` measures how much each incoming side disagrees with ours
(conflict.py). Every Fisher diagonal is on the common scale (basinvcs.metrics), side weights are
bounded (sides.py), and a non-finite intermediate result refuses the merge. See docs/merge.md.
"""

from . import add, fisher, linear, ties, pick  # noqa: F401, I001  (registers them in this order)
from .conflict import DEFAULT_MAX_DISTANCE, DEFAULT_MAX_INTERFERENCE, Assessment, assess
from .sides import (
    MAX_WEIGHT,
    MIN_WEIGHT,
    MergeArithmeticError,
    Side,
    capacity,
    check_threshold,
    check_weight,
    merge_beta,
)
from .strategy import DEFAULT_STRATEGY, REGISTRY, Strategy, combine, get

STRATEGIES = tuple(REGISTRY)  # in registration order: add (the default) first

__all__ = [
    "DEFAULT_MAX_DISTANCE",
    "DEFAULT_STRATEGY",
    "DEFAULT_MAX_INTERFERENCE",
    "MAX_WEIGHT",
    "MIN_WEIGHT",
    "REGISTRY",
    "STRATEGIES",
    "Assessment",
    "MergeArithmeticError",
    "Side",
    "Strategy",
    "assess",
    "capacity",
    "check_threshold",
    "check_weight",
    "combine",
    "get",
    "merge_beta",
]
