"""CAR files: a branch's history out (`basin export`) and in (`basin import`), every block
verified on the way in (ingest.plan_fetch) and written in one transaction."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .atomic import replacing
from .cid import CID
from .codec.car import read_car, write_car
from .errors import BlockNotFound, CarError, RefError, RepositoryError, SchemaError
from .ingest import apply_plan, plan_fetch
from .objects import Commit
from .refnames import branch_ref, check_branch_name
from .repository import Repository

# -- CAR files -----------------------------------------------------------------------------------


def history_blocks(repo: Repository, head: CID) -> Iterator[tuple[CID, bytes]]:
    """Every commit reachable from `head`, each followed by its packet the first time it appears."""
    for group in history_groups(repo, head):
        yield from group


def history_groups(
    repo: Repository, head: CID, limit: int = -1
) -> Iterator[list[tuple[CID, bytes]]]:
    """`history_blocks` a commit at a time (at most `limit` commits): [(commit CID, bytes)],
    with (CID, bytes) of what it links besides its parents (`Commit.attached`: its packet, its
    round record) after it, the first time each appears."""
    seen: set[CID] = set()
    for cid, data in repo.walk_blocks([head], limit):
        group = [(cid, data)]
        for linked in Commit.decode(data, trusted=True).attached:
            if linked not in seen:
                seen.add(linked)
                group.append((linked, repo.get_block(linked)))
        yield group


def export_car(repo: Repository, rev: str, out: Path | str) -> tuple[CID, int, int]:
    """Write the history of `rev` as a CARv1 file with the commit as its root.

    Returns (root, blocks, bytes). Written to a temporary file beside `out` and renamed, so a
    failure leaves no partial file.
    """
    root = repo.resolve(rev)
    repo.read_commit(root)
    repo.require_whole([root], f"export {rev}")
    out = Path(out)
    try:
        with replacing(out, durable=True) as fh:
            blocks, size = write_car(fh, [root], history_blocks(repo, root))
    except OSError as exc:
        raise RepositoryError(f"cannot write {out}: {exc.strerror}") from None
    return root, blocks, size


@dataclass
class ImportResult:
    root: CID
    blocks: int  # blocks in the file
    written: int  # blocks this repository lacked
    ignored: int  # blocks not reachable from the root (not stored)


def import_car(repo: Repository, path: Path | str, branch: str | None = None) -> ImportResult:
    """Store the history a CARv1 file holds (its one root must be a commit) and optionally name
    it as a new branch. Every block is verified first; any bad block refuses the whole file."""
    if branch is not None and repo.branch_commit(check_branch_name(branch)) is not None:
        raise RefError(f"a branch named {branch!r} already exists")
    roots, table = _read_car_file(Path(path))
    if len(roots) != 1:
        raise SchemaError(f"{path} has {len(roots)} roots; a basin CAR has exactly one commit")
    root = roots[0]

    def get(cid: CID) -> bytes:
        try:
            return table[cid]
        except KeyError:
            raise BlockNotFound(
                f"{path} lacks block {cid}, which its history needs", subject=cid
            ) from None

    plan = plan_fetch(repo, [root], get)
    refs = [(branch_ref(branch), root, f"import: {path}")] if branch else []
    apply_plan(repo, plan, refs)
    ignored = sum(1 for cid in table if not repo.has_block(cid))  # what the history did not need
    return ImportResult(root, len(table), plan.blocks, ignored)


MAX_IMPORT_BYTES = 1 << 30  # a CAR's blocks, held in memory until every one is verified


def _read_car_file(path: Path) -> tuple[list[CID], dict[CID, bytes]]:
    """A CAR file's roots and blocks, streamed: each block within the block limit (read_car),
    all of them within MAX_IMPORT_BYTES, so no file can exhaust memory."""
    try:
        with path.open("rb") as fh:
            roots, sections = read_car(fh)
            table: dict[CID, bytes] = {}
            total = 0
            for cid, data in sections:
                total += len(data)
                if total > MAX_IMPORT_BYTES:
                    raise CarError(f"{path} holds over {MAX_IMPORT_BYTES} bytes of blocks")
                table[cid] = data
    except OSError as exc:
        raise RepositoryError(f"cannot read {path}: {exc.strerror or exc}") from None
    return roots, table
