"""Files replaced whole: written to a temporary file beside the target and renamed over it, so a
reader, or a crash, sees the old file or the new one and never part of one.

One implementation for every writer (config, hive state, CAR exports, model files, the Gram
cache). Temporary names carry the writer's process id, so a writer killed mid-write (kill -9,
power loss), which cannot remove its own, has its leftovers removed by the next writer into that
folder.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

TEMP_PREFIX = ".basin-tmp."
_TEMP_NAME = re.compile(r"\.basin-tmp\.(\d+)\.")


def temp_beside(target: Path) -> tuple[int, Path]:
    """A new hidden temporary file next to `target` (descriptor, path), with the mode any new
    file gets (mkstemp's own is 0600); stale ones of dead writers in that folder are removed."""
    _sweep(target.parent)
    prefix = f"{TEMP_PREFIX}{os.getpid()}.{target.name}."
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=prefix, suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)
    return fd, Path(name)


@contextmanager
def replacing(target: Path, *, durable: bool = False) -> Iterator[BinaryIO]:
    """A binary file that takes `target`'s place when the block ends without an exception (with
    `durable`, synced to disk first); on an exception nothing changes and the exception, an
    OSError included, goes to the caller."""
    fd, tmp = temp_beside(target)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _sweep(folder: Path) -> None:
    """Remove temporary files that writers which no longer run left in `folder`."""
    try:
        names = [p for p in folder.iterdir() if p.name.startswith(TEMP_PREFIX)]
    except OSError:
        return  # no folder yet, or unreadable: the write itself will say so
    for path in names:
        found = _TEMP_NAME.match(path.name)
        if found and not _running(int(found.group(1))):
            path.unlink(missing_ok=True)


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # someone else's process (or no pid we can ask about): leave its files
    return True
