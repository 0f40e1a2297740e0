"""One hive process per repository: `basin hive serve` and `basin hive replica` each move the
hive's branch round after round (and the coordinator writes its journal), so a second one on the
same repository would make rounds of its own over the first one's."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from ..errors import RepositoryError
from ..repository import Repository

LOCK_FILE = "hive.lock"  # in .basin/: the process holding it, "ROLE PID"


@contextlib.contextmanager
def sole(repo: Repository, role: str) -> Iterator[None]:
    """Hold `.basin/hive.lock` as `role` ("coordinator", "replica") for the block: refused in one
    line while another process holds it. The kernel releases it with the process, kill -9
    included, so a crash never leaves the repository locked."""
    with open(Path(repo.basin_dir) / LOCK_FILE, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            raise RepositoryError(
                f"a hive {holder} runs on this repository already: one coordinator or replica "
                "per repository"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{role} (process {os.getpid()})\n")
        fh.flush()
        yield
