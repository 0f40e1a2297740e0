"""Progress bars on stderr that stay silent when nobody is watching.

Long model reads and writes show one line, redrawn with `\\r` at most ten times a second: label,
percent, done/total, rate and time left (time taken once done). Logs, pipes and scripts get no
output at all. `BASIN_PROGRESS` decides: `auto` (the default) draws only when stderr is a
terminal, `always` draws anyway, `never` never draws.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

from .errors import BasinError

MODES = ("auto", "always", "never")
REDRAW_SECONDS = 0.1
_PREFIXES = ("", "Ki", "Mi", "Gi", "Ti", "Pi")


def progress_enabled(stream: TextIO) -> bool:
    """Whether a bar should be drawn on `stream`, per `BASIN_PROGRESS`."""
    mode = os.environ.get("BASIN_PROGRESS", "auto") or "auto"
    if mode not in MODES:
        raise BasinError(f"BASIN_PROGRESS is {mode!r}; use auto, always or never")
    return mode == "always" or (mode == "auto" and stream.isatty())


@contextmanager
def progress_bar(total: int, label: str, unit: str = "B") -> Iterator[Callable[[int], None]]:
    """Yield `update(n)`, which advances the bar by n units; the last line ends on exit."""
    stream = sys.stderr
    if not progress_enabled(stream):
        yield _ignore
        return
    bar = _Bar(stream, total, label, unit)
    try:
        yield bar.update
    finally:
        bar.finish()


def _ignore(n: int) -> None:
    """The update of a bar nobody sees."""


class _Bar:
    def __init__(self, stream: TextIO, total: int, label: str, unit: str) -> None:
        self.stream, self.total, self.label, self.unit = stream, total, label, unit
        self.done = 0
        self.started = self.drawn_at = time.monotonic()
        self.width = 0
        self.draw(self.started)

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.drawn_at >= REDRAW_SECONDS:
            self.draw(now)

    def draw(self, now: float) -> None:
        line = render(self.label, self.done, self.total, self.unit, now - self.started)
        self.stream.write("\r" + line.ljust(self.width))  # blank out a longer previous line
        self.stream.flush()
        self.width = len(line)
        self.drawn_at = now

    def finish(self) -> None:
        self.draw(time.monotonic())
        self.stream.write("\n")
        self.stream.flush()


def render(label: str, done: int, total: int, unit: str, elapsed: float) -> str:
    """One bar line, e.g. `writing  42% 1.1 GiB/2.5 GiB 310.2 MiB/s ETA 0:05`.

    A total of 0 means unknown (blocks fetched while walking a history): the count, rate and time
    so far are shown instead."""
    parts = [label]
    if total > 0:
        parts.append(f"{min(done / total, 1.0):4.0%}")
    rate = done / elapsed if elapsed > 0 else 0.0
    if unit == "B":
        parts.append(f"{size(done)}/{size(total)}" if total > 0 else size(done))
        if rate > 0:
            parts.append(f"{size(rate)}/s")
    else:
        parts.append(f"{done}/{total} {unit}" if total > 0 else f"{done} {unit}")
        if rate > 0:
            parts.append(f"{rate:.1f} {unit}/s")
    if total <= 0:
        parts.append(clock(elapsed))
    elif done >= total:
        parts.append(f"in {clock(elapsed)}")
    elif rate > 0:
        parts.append(f"ETA {clock((total - done) / rate)}")
    return " ".join(parts)


def size(n: float) -> str:
    """Bytes with binary prefixes: `512 B`, `1.5 GiB`."""
    for prefix in _PREFIXES:
        if n < 1024 or prefix == _PREFIXES[-1]:
            break
        n /= 1024
    return f"{n:.1f} {prefix}B" if prefix else f"{n:.0f} B"


def clock(seconds: float) -> str:
    """`m:ss`, or `h:mm:ss` from an hour on."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
