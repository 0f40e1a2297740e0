"""Fetching a branch from another repository on this machine: a local stand-in for `basin pull`.

`fetch` copies every block reachable from the source branch's head (its commits and their basin
packets) that this repository lacks, and creates a branch at that head. Nothing from the source is
trusted: each block is re-hashed against its CID as it is read, decoded strictly (`Commit.decode`,
`Basin.decode`, which also require canonical form), every commit's signature is verified, and every
packet must be in this repository's chart. All checks run before anything is written; the writes
(blocks, commit-graph index, the new branch) happen in one store transaction, so a refused or failed
fetch changes nothing.

Trust is not checked here: fetching is only copying. `merge` refuses commits by untrusted signers,
as it does for any incoming history.

The walk stops at commits this repository already has in its commit-graph index: an indexed commit
was validated when written, and `write_commit` only writes a commit whose parents are present.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .cid import CID
from .config import load_config
from .errors import RefError, RepositoryError, SchemaError, SignatureError
from .identity import verify_signature
from .objects import Basin, Commit
from .refnames import check_branch_name
from .repository import BASIN_DIR, DB_FILE, Repository
from .store.sqlite import SQLiteStore


@dataclass
class FetchPlan:
    """What a fetch would write: (cid, bytes) of missing packets and commits, in write order."""

    head: CID
    packets: list[tuple[CID, bytes]] = field(default_factory=list)
    commits: list[tuple[CID, Commit, bytes]] = field(default_factory=list)


def plan_fetch(repo: Repository, source: Repository, branch: str) -> FetchPlan:
    """Read and validate everything `fetch` would copy, writing nothing."""
    if source.config.chart != repo.config.chart:
        raise SchemaError(
            f"cannot fetch from {source.basin_dir}: its chart {source.config.chart} differs from "
            f"this repository's {repo.config.chart}: the coordinates mean different things"
        )
    head = source.branch_commit(branch)
    if head is None:
        raise RefError(f"{source.basin_dir} has no branch {branch!r}")
    plan = FetchPlan(head)
    seen_commits: set[CID] = set()
    seen_packets: set[CID] = set()
    stack = [head]
    while stack:
        cid = stack.pop()
        if cid in seen_commits or repo.store.is_indexed_commit(cid):
            continue
        seen_commits.add(cid)
        data = source.store.get(cid)  # re-hashed against its CID
        try:
            commit = Commit.decode(data)
        except SchemaError as exc:
            raise SchemaError(f"fetch refused: {cid} is not a valid commit: {exc}") from None
        if not verify_signature(commit.author, commit.signing_bytes(), commit.signature):
            raise SignatureError(f"fetch refused: commit {cid} has a bad signature")
        if commit.basin not in seen_packets:
            seen_packets.add(commit.basin)
            have = repo.store.has(commit.basin)
            packet = (repo if have else source).store.get(commit.basin)
            try:
                basin = Basin.decode(packet)
            except SchemaError as exc:
                raise SchemaError(
                    f"fetch refused: {commit.basin} (basin of {cid}) is not a valid packet: {exc}"
                ) from None
            if basin.chart != repo.config.chart:
                raise SchemaError(
                    f"fetch refused: the basin of {cid} is in chart {basin.chart}, this "
                    f"repository's is {repo.config.chart}"
                )
            if not have:
                plan.packets.append((commit.basin, packet))
        plan.commits.append((cid, commit, data))
        stack.extend(commit.parents)
    return plan


def open_source(path: Path | str) -> Repository:
    """The repository at `path` (its root or its .basin directory), ignoring $BASIN_DIR."""
    root = Path(path)
    basin_dir = root if root.name == BASIN_DIR else root / BASIN_DIR
    if not (basin_dir / DB_FILE).is_file():
        raise RepositoryError(f"{path} is not a basin repository: no {BASIN_DIR}/{DB_FILE}")
    return Repository(basin_dir, SQLiteStore.open(basin_dir / DB_FILE), load_config(basin_dir))


def fetch(repo: Repository, source_repo_path: Path | str, branch: str, as_branch: str) -> CID:
    """Copy `branch` of the repository at `source_repo_path` into `repo` as branch `as_branch`.

    Returns the branch head's CID. Refuses (changing nothing) a source of another chart, a bad
    signature, a malformed or non-canonical block, or an `as_branch` that exists already.
    """
    check_branch_name(as_branch)
    if repo.branch_commit(as_branch) is not None:
        raise RefError(f"a branch named {as_branch!r} already exists")
    with open_source(source_repo_path) as source:
        plan = plan_fetch(repo, source, branch)
    with repo.store.transaction():
        for cid, data in plan.packets:
            if repo.store.put(data) != cid:  # cannot happen: get() re-hashed it
                raise SchemaError(f"block {cid} changed on the way in")
        for cid, commit, data in plan.commits:
            if repo.store.put(data) != cid:
                raise SchemaError(f"block {cid} changed on the way in")
            repo.store.index_commit(cid, commit.parents, commit.time)
        repo.create_branch(as_branch, plan.head, f"fetch: {branch} from {source_repo_path}")
    return plan.head
