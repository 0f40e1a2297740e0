"""basinvcs: content-addressed version control for basins.

A basin is a small signed packet (<= 4 KiB at d = 1024) of coordinates in a chart that turn into a
change of a model's weights. Python users start from `Repository` and the functions in `porcelain`.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["Basin", "Chart", "Commit", "Repository"]


def __getattr__(name: str):
    # Lazy, so `basin --help` does not pay for the store and codecs.
    if name == "Repository":
        from .repository import Repository

        return Repository
    if name in ("Basin", "Chart", "Commit"):
        from . import objects

        return getattr(objects, name)
    raise AttributeError(f"module 'basinvcs' has no attribute {name!r}")
