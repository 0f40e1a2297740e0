"""Bringing history in from elsewhere: validated, all or nothing.

History arrives from another repository on this machine (`fetch`, below), a CAR file
(basinvcs.carfile) or an IPFS node (basinvcs.remote). Whatever the source, nothing from it is
trusted: `plan_fetch` reads every block through a `BlockSource` that re-hashes it against its
CID, decodes it strictly (`Commit.decode`, `Basin.decode`, which also require canonical form),
verifies every commit's signature and requires every packet to be in this repository's chart.
All checks run before anything is written; `apply_plan` then writes blocks, commit-graph index
and refs in one store transaction, so a refused or failed fetch changes nothing. `write_history`
does both as it reads, a batch at a time, inside one transaction: the same all or nothing, in
the memory of a batch rather than of the whole history.

Trust is not checked here: fetching is only copying. `merge` refuses commits by untrusted signers,
as it does for any incoming history.

The walk stops at commits this repository already has in its commit-graph index: an indexed commit
was validated when written, and `write_commit` only writes a commit whose parents are present.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .cid import CID
from .config import load_config
from .errors import BasinError, RefError, RepositoryError, SchemaError, SignatureError
from .objects import Basin, Commit, RoundRecord
from .refnames import branch_ref, check_branch_name
from .repository import BASIN_DIR, DB_FILE, Repository
from .store.sqlite import SQLiteStore

BlockSource = Callable[[CID], bytes]  # the block's bytes, already re-hashed against the CID
WRITE_BATCH = 256  # commits written together by write_history


@dataclass
class FetchPlan:
    """What a fetch would write: (cid, bytes) of missing packets (and round records) and
    commits, in write order."""

    heads: list[CID]
    packets: list[tuple[CID, bytes]] = field(default_factory=list)
    commits: list[tuple[CID, Commit, bytes]] = field(default_factory=list)

    @property
    def blocks(self) -> int:
        return len(self.packets) + len(self.commits)


def plan_fetch(
    repo: Repository,
    heads: Sequence[CID],
    get: BlockSource,
    on_block: Callable[[int], None] | None = None,
) -> FetchPlan:
    """Read and validate everything missing below `heads`, writing nothing.

    `on_block(n)` is told the size of every block read from the source (for progress bars).
    """
    plan = FetchPlan(list(heads))
    for cid, commit, data, attached in missing_history(repo, heads, get, on_block):
        plan.packets += attached
        plan.commits.append((cid, commit, data))
    return plan


def missing_history(
    repo: Repository,
    heads: Sequence[CID],
    get: BlockSource,
    on_block: Callable[[int], None] | None = None,
    depth: int | None = None,
    deepen: bool = False,
) -> Iterator[tuple[CID, Commit, bytes, list[tuple[CID, bytes]]]]:
    """Every commit missing below `heads` (the heads first), read and validated, as (CID,
    commit, its bytes, the blocks it links besides its parents (`Commit.attached`: its packet,
    its round record) as (CID, bytes), those neither this repository nor an earlier commit of
    the walk holds). `depth`: only commits fewer than that many links below a
    head, by the shortest path (the walk goes breadth first then). `deepen`: also everything
    missing below the commits this repository holds without their parents (shallow), which
    a walk from held heads never reaches: the whole history again."""
    chart = repo.config.chart
    seen_commits: set[CID] = set()
    seen_packets: set[CID] = set()
    seen_records: set[CID] = set()
    stack = deque((cid, 0) for cid in heads)
    if deepen:
        stack.extend((CID.parse(p), 1) for mark in repo.shallow() for p in repo.parents(mark))
    pop = stack.pop if depth is None else stack.popleft
    while stack:
        cid, below = pop()
        if cid in seen_commits or repo.is_commit(cid) or (depth is not None and below >= depth):
            continue
        seen_commits.add(cid)
        data = _read(get, cid, on_block)
        try:
            commit = Commit.decode(data)
        except SchemaError as exc:
            raise SchemaError(f"fetch refused: {cid} is not a valid commit: {exc}") from None
        if not commit.signature_valid():
            raise SignatureError(f"fetch refused: commit {cid} has a bad signature")
        attached = []
        if commit.basin not in seen_packets:
            seen_packets.add(commit.basin)
            block, have = _linked(repo, get, commit.basin, on_block)
            try:
                basin = Basin.decode(block)
            except SchemaError as exc:
                raise SchemaError(
                    f"fetch refused: {commit.basin} (basin of {cid}) is not a valid packet: {exc}"
                ) from None
            if basin.chart != chart:
                raise SchemaError(
                    f"fetch refused: the basin of {cid} is in chart {basin.chart}, this "
                    f"repository's is {chart}"
                )
            if not have:
                attached.append((commit.basin, block))
        if commit.record is not None and commit.record not in seen_records:
            # checked even when the block is here: a record CID may name any block held
            seen_records.add(commit.record)
            block, have = _linked(repo, get, commit.record, on_block)
            try:
                RoundRecord.decode(block)
            except BasinError as exc:  # the codec's errors too (non-canonical, oversized)
                raise SchemaError(
                    f"fetch refused: {commit.record} (round record of {cid}) is not valid: {exc}"
                ) from None
            if not have:
                attached.append((commit.record, block))
        yield cid, commit, data, attached
        stack.extend((parent, below + 1) for parent in commit.parents)


def write_history(
    repo: Repository,
    heads: Sequence[CID],
    get: BlockSource,
    check: Callable[[CID, Commit], None] = lambda cid, commit: None,
    depth: int | None = None,
    deepen: bool = False,
) -> int:
    """Read, validate and write everything missing below `heads`, a batch of WRITE_BATCH commits
    at a time, in one transaction (the caller's, if it holds one: its later checks can still
    undo it all); `check(cid, commit)` sees each commit before it is written and may refuse it.
    What `plan_fetch` then `apply_plan` do, holding a batch in memory instead of the history
    (a hive's coordinator commits every round: a day of rounds is 86,400 commits). The number
    of commits written.

    `depth`: only the commits fewer than `depth` links below a head (`missing_history`); those
    whose parents are then missing are written as shallow (`Repository.add_history`), and the
    repository holds the history from them on. `deepen`: also what is missing below the
    shallow commits held (their marks are cleared once their parents are in)."""
    written = 0
    needed: list[CID] = []
    edge: list[tuple[CID, Commit]] = []  # with a depth: commits whose parents may not come
    with repo.transaction():
        packets: list[tuple[CID, bytes]] = []
        commits: list[tuple[CID, Commit, bytes]] = []
        walk = missing_history(repo, heads, get, depth=depth, deepen=deepen)
        for cid, commit, data, attached in walk:
            check(cid, commit)
            packets += attached
            commits.append((cid, commit, data))
            needed += commit.attached
            if depth is None:
                needed += commit.parents
            else:
                edge.append((cid, commit))
            if len(commits) == WRITE_BATCH:
                repo.add_history(packets, commits, linked=False)
                written += len(commits)
                packets, commits = [], []
        walked = {cid for cid, _ in edge}
        shallow = [
            cid
            for cid, c in edge
            if any(p not in walked and not repo.is_commit(p) for p in c.parents)
        ]
        repo.add_history(packets, commits, linked=False, shallow=shallow)
        repo.check_links(needed)
    return written + len(commits)


def _linked(
    repo: Repository, get: BlockSource, cid: CID, on_block: Callable[[int], None] | None
) -> tuple[bytes, bool]:
    """A block a commit links and whether this repository holds it already: held, it is not
    read from the source, but its caller checks it all the same (a CID may name any block)."""
    have = repo.has_block(cid)
    return (repo.get_block(cid) if have else _read(get, cid, on_block)), have


def _read(get: BlockSource, cid: CID, on_block: Callable[[int], None] | None) -> bytes:
    data = get(cid)
    if on_block is not None:
        on_block(len(data))
    return data


def apply_plan(repo: Repository, plan: FetchPlan, refs: Iterable[tuple[str, CID, str]]) -> None:
    """Write a validated plan and set `refs` ((full ref, target, reflog message)), atomically."""
    with repo.transaction():
        repo.add_history(plan.packets, plan.commits)
        for ref, target, message in refs:
            old = repo.ref(ref)
            repo.set_ref(ref, target, old.target if old else None, message)


def open_source(path: Path | str) -> Repository:
    """The repository at `path` (its root or its .basin directory), ignoring $BASIN_DIR."""
    root = Path(path)
    basin_dir = root if root.name == BASIN_DIR else root / BASIN_DIR
    if not (basin_dir / DB_FILE).is_file():
        raise RepositoryError(f"{path} is not a basin repository: no {BASIN_DIR}/{DB_FILE}")
    return Repository(SQLiteStore.open(basin_dir / DB_FILE), load_config(basin_dir), basin_dir)


def fetch(repo: Repository, source_repo_path: Path | str, branch: str, as_branch: str) -> CID:
    """Copy `branch` of the repository at `source_repo_path` into `repo` as branch `as_branch`.

    Returns the branch head's CID. Refuses (changing nothing) a source of another chart, a bad
    signature, a malformed or non-canonical block, or an `as_branch` that exists already.
    """
    check_branch_name(as_branch)
    if repo.branch_commit(as_branch) is not None:
        raise RefError(f"a branch named {as_branch!r} already exists")
    with open_source(source_repo_path) as source:
        if source.config.chart != repo.config.chart:
            raise SchemaError(
                f"cannot fetch from {source.basin_dir}: its chart {source.config.chart} differs "
                f"from this repository's {repo.config.chart}: the coordinates mean different things"
            )
        head = source.branch_commit(branch)
        if head is None:
            raise RefError(f"{source.basin_dir} has no branch {branch!r}")
        plan = plan_fetch(repo, [head], source.get_block)  # re-hashes every block
    apply_plan(
        repo, plan, [(branch_ref(as_branch), head, f"fetch: {branch} from {source_repo_path}")]
    )
    return head
