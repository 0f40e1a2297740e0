"""The operations people run (`init`, `commit`, `fork`, `log`, `verify`, ...) as plain functions.

The CLI is a thin layer over these; Python users call them directly. Each one either does all of
its work or, on bad input, raises a BasinError before anything in the repository changed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .cid import CID, DAG_CBOR, DAG_JSON
from .codec import dagcbor, dagjson
from .config import Config, TrustedKey
from .errors import (
    BasinError,
    CodecError,
    MergeRefused,
    RefError,
    RepositoryError,
    SchemaError,
    SignatureError,
)
from .identity import (
    Identity,
    default_name,
    format_key,
    load_or_create_identity,
    parse_key,
)
from .metrics import mean_fisher
from .objects import (
    COMMIT_TYPE,
    PACKET_TYPE,
    ROUND_TYPE,
    Basin,
    Chart,
    Commit,
    RoundRecord,
    kind_of,
)
from .refnames import HEAD, REMOTES, branch_ref, check_branch_name, short_name, shown
from .repository import BASIN_DIR, IndexEntry, Repository

GENESIS_BRANCH = "general"


def now_ms() -> int:
    return int(time.time() * 1000)


# -- init ---------------------------------------------------------------------------------------


def init(
    path: Path | str = ".",
    *,
    dim: int = 1024,
    seed: int = 0,
    exclude: Sequence[str] = (),
    name: str | None = None,
    identity: Identity | None = None,
) -> Repository:
    """A new repository at `path`: its chart, genesis (z = 0) on `general`, signed by `identity`
    (default: the user's, made with `name` if they have none), who is its first trusted signer.

    `exclude` is the chart's mask: tensor-name patterns the projection leaves at θ0.
    """
    chart = Chart.masked("srht", seed, dim, exclude)
    target = Path(path).resolve()
    if (target / BASIN_DIR).exists():
        raise RepositoryError(f"{target / BASIN_DIR} already exists: this is a repository already")
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RepositoryError(f"cannot create {target}: {exc.strerror}") from None
    ident = identity or load_or_create_identity(name or default_name())[0]
    config = Config(chart, [TrustedKey(ident.public_key, ident.name, 1.0)])
    repo = Repository.create(target, config, identity=ident)
    genesis = Basin.create(chart, labels=[GENESIS_BRANCH])
    with repo.transaction():
        basin_cid = repo.write_basin(genesis)
        commit = _sign(ident, Commit(basin_cid, (), ident.public_key, now_ms(), "genesis"))
        cid = repo.write_commit(commit)
        repo.set_ref(branch_ref(GENESIS_BRANCH), str(cid), None, "init: genesis")
        repo.set_ref(HEAD, branch_ref(GENESIS_BRANCH), None, "init", symbolic=True)
    return repo


def _sign(ident: Identity, commit: Commit) -> Commit:
    return commit.signed(ident.sign)


# -- commit / fork ------------------------------------------------------------------------------


_JSON_STARTS = b'{["-0123456789tfn'  # none of them starts a DAG-CBOR map (0xa0-0xbb)


def load_packet(data: bytes) -> Basin:
    """A basin packet from a file's bytes, DAG-CBOR or DAG-JSON, told apart by the first byte:
    a packet is a map, so DAG-CBOR starts with 0xa0-0xbb and anything JSON can start with is
    read as DAG-JSON (a JSON list is then called a list, not a truncated byte string)."""
    first = data.lstrip()[:1]
    if not first:
        raise SchemaError("the input is empty, not a basin packet")
    if first in _JSON_STARTS:
        node = dagjson.decode(data.strip())
        if not isinstance(node, dict):
            raise SchemaError(f"the input is DAG-JSON holding {_kind(node)}, not a basin packet")
        return Basin.from_node(node)
    if not 0xA0 <= data[0] <= 0xBB:
        raise SchemaError(
            f"the input is not a basin packet: it starts with byte 0x{data[0]:02x}, and a packet "
            "is a DAG-CBOR map (0xa0-0xbb) or DAG-JSON"
        )
    return Basin.decode(data)


def _kind(node: object) -> str:
    kinds = {
        list: "a list",
        str: "a string",
        bytes: "bytes",
        bool: "a boolean",
        int: "an integer",
        float: "a float",
        type(None): "null",
    }
    return kinds.get(type(node), "a link" if isinstance(node, CID) else type(node).__name__)


def commit(
    repo: Repository,
    basin: Basin,
    message: str,
    *,
    metrics: dict[str, float] | None = None,
    specialize: str | None = None,
    allow_empty: bool = False,
) -> CID:
    """Record `basin` as a new commit on the current branch (or detached HEAD).

    A packet without labels takes those of HEAD's basin, so committing on a specialisation branch
    keeps the branch's specialisation.

    The head is read and moved inside one write transaction, so concurrent committers serialise
    and every commit lands on top of the previous one.
    """
    if basin.chart != repo.config.chart:
        raise SchemaError(
            f"basin chart {basin.chart} differs from the repository's {repo.config.chart}: "
            "its coordinates mean something else here"
        )
    if not message.strip():
        raise BasinError("empty commit message: say what changed with -m")
    ident = repo.identity()
    with repo.transaction():
        parent = repo.head_commit()
        parent_commit = repo.read_commit(parent)
        if not basin.labels:  # a bare packet stays on its branch's specialisation
            basin = basin.with_labels(repo.read_basin(parent_commit.basin).labels)
        basin_cid = repo.write_basin(basin)
        if not allow_empty and parent_commit.basin == basin_cid:
            raise BasinError("nothing to commit: the basin is the same as HEAD's")
        new = _sign(
            ident,
            Commit(
                basin_cid, (parent,), ident.public_key, now_ms(), message, metrics or {}, specialize
            ),
        )
        cid = repo.write_commit(new)
        repo.move_head(cid, parent, f"commit: {message.splitlines()[0]}")
    return cid


def fork(repo: Repository, source: str, specialization: str, branch: str | None = None) -> CID:
    """A new branch from `source` whose fork commit labels the basin with `specialization`."""
    name = check_branch_name(branch or specialization)
    src = repo.resolve(source)
    parent = repo.read_commit(src)
    basin = repo.read_basin(parent.basin)
    if repo.branch_commit(name) is not None:
        raise RefError(f"a branch named {name!r} already exists")
    labels = [*basin.labels, specialization] if specialization not in basin.labels else basin.labels
    forked = basin.with_labels(labels)
    ident = repo.identity()
    message = f"fork {short_name(source)} -> {name}: specialize {specialization}"
    with repo.transaction():
        basin_cid = repo.write_basin(forked)
        new = _sign(
            ident,
            Commit(basin_cid, (src,), ident.public_key, now_ms(), message, {}, specialization),
        )
        cid = repo.write_commit(new)
        repo.create_branch(name, cid, f"fork: from {source}")
        old_head = repo.head()
        repo.set_ref(
            HEAD, branch_ref(name), old_head.target, f"fork: switch to {name}", symbolic=True
        )
    return cid


# -- history ------------------------------------------------------------------------------------


def log(
    repo: Repository, rev: str = HEAD, limit: int = -1, all_refs: bool = False
) -> Iterator[tuple[CID, Commit]]:
    """Commits reachable from `rev` (or every branch), newest first, each block re-hashed and
    decoded; `log_entries` lists the same commits from the commit-graph index alone."""
    yield from repo.walk(log_heads(repo, rev, all_refs), limit)


def log_entries(
    repo: Repository, rev: str = HEAD, limit: int = -1, all_refs: bool = False
) -> Iterator[IndexEntry]:
    """What `basin log` lists: `log`'s commits in its order, as the commit-graph index holds
    them (parents, time, author, message), without reading a block (`verify` checks the index)."""
    return repo.log_entries(log_heads(repo, rev, all_refs), limit)


def log_heads(repo: Repository, rev: str = HEAD, all_refs: bool = False) -> list[CID]:
    """Where a log starts: `rev`, or every branch; refused unless each is a commit of history."""
    heads = [cid for _, cid in repo.branches()] if all_refs else [repo.resolve(rev)]
    for head in heads:
        if not repo.is_commit(head):
            repo.read_commit(head)  # says precisely what a non-commit start is
    return heads


def reflog(repo: Repository, ref: str = HEAD, limit: int = -1) -> tuple[str, list]:
    """How `ref` (HEAD, a branch, or a full ref name) moved, newest first: its full name and
    its entries. A deleted branch still has its reflog; a ref that never existed is refused."""
    name = ref if ref == HEAD or ref.startswith("refs/") else branch_ref(ref)
    entries = repo.reflog(name, limit)
    if not entries and repo.ref(name) is None:
        raise RefError(f"no such ref {shown(ref)}")
    return name, entries


def decorations(repo: Repository) -> dict[str, list[str]]:
    """CID text -> names pointing at it (HEAD -> branch first), as `git log --decorate` shows."""
    out: dict[str, list[str]] = {}
    head = repo.head()
    for name, cid in repo.branches():
        label = f"HEAD -> {name}" if head.symbolic and short_name(head.target) == name else name
        out.setdefault(str(cid), []).append(label)
    for name, cid in tags(repo):
        out.setdefault(str(cid), []).append(f"tag: {name}")
    for ref in repo.refs(REMOTES):
        out.setdefault(ref.target, []).append(short_name(ref.name))
    if not head.symbolic:
        out.setdefault(head.target, []).insert(0, "HEAD")
    for labels in out.values():
        labels.sort(key=lambda s: not s.startswith("HEAD"))
    return out


def checkout(repo: Repository, rev: str) -> str:
    """Move HEAD: onto a branch when `rev` names one, else detached at the commit it resolves to."""
    head = repo.head()
    if _is_branch_name(rev) and repo.branch_commit(rev) is not None:
        repo.set_ref(
            HEAD, branch_ref(rev), head.target, f"checkout: moving to {rev}", symbolic=True
        )
        return f"branch '{rev}'"
    cid = repo.resolve(rev)
    repo.read_commit(cid)
    repo.set_ref(HEAD, str(cid), head.target, f"checkout: moving to {cid}")
    return f"detached HEAD at {cid}"


def _is_branch_name(name: str) -> bool:
    try:
        check_branch_name(name)
    except RefError:
        return False
    return True


# -- branches and status ------------------------------------------------------------------------


def create_branch(repo: Repository, name: str, start: str = HEAD) -> CID:
    cid = repo.resolve(start)
    repo.read_commit(cid)
    repo.create_branch(name, cid, f"branch: created from {start}")
    return cid


def delete_branch(repo: Repository, name: str, force: bool = False) -> CID:
    """Delete branch `name`; unless `force`, only if HEAD holds all of its commits (git's -d)."""
    cid = repo.branch_commit(check_branch_name(name))
    if cid is None:
        raise RefError(f"branch {name!r} not found")
    if repo.current_branch() == branch_ref(name):
        raise RefError(f"cannot delete branch {name!r}: it is checked out")
    if not force:
        from . import history

        if not history.is_ancestor(history.commit_graph(repo), cid, repo.head_commit()):
            raise RefError(
                f"the branch '{name}' is not fully merged. If you are sure you want to delete "
                f"it, run 'basin branch -D {name}'."
            )
    repo.set_ref(branch_ref(name), None, str(cid), "branch: deleted")
    return cid


@dataclass
class Status:
    branch: str | None
    head: CID
    commit: Commit
    basin: Basin
    chart: Chart
    branches: int


def status(repo: Repository) -> Status:
    branch = repo.current_branch()
    head = repo.head_commit()
    commit_ = repo.read_commit(head)
    return Status(
        short_name(branch) if branch else None,
        head,
        commit_,
        repo.read_basin(commit_.basin),
        repo.config.chart,
        len(repo.branches()),
    )


# -- tags, switch, reset, revert: git's verbs on basin history ---------------------------------


def tags(repo: Repository) -> list[tuple[str, CID]]:
    """Every tag (refs/tags/NAME) with the commit it names, by name."""
    from .refnames import TAGS

    return [(r.name[len(TAGS) :], CID.parse(r.target)) for r in repo.refs(TAGS)]


def create_tag(
    repo: Repository, name: str, rev: str = HEAD, force: bool = False
) -> tuple[CID, CID | None]:
    """Tag the commit `rev` names as `name` (a lightweight tag); an existing tag is replaced only
    with `force`. Returns the commit tagged and the one the tag named before (or None)."""
    from .refnames import tag_ref

    ref = tag_ref(name)
    cid = repo.resolve(rev)
    repo.read_commit(cid)
    old = repo.ref(ref)
    if old is not None and not force:
        raise RefError(f"tag '{name}' already exists")
    what = f"moved to {rev}" if old else f"created at {rev}"
    repo.set_ref(ref, cid, old.target if old else None, f"tag: {what}")
    return cid, CID.parse(old.target) if old else None


def delete_tag(repo: Repository, name: str) -> CID:
    """Delete tag `name`; returns the commit it named."""
    from .refnames import tag_ref

    ref = tag_ref(name)
    old = repo.ref(ref)
    if old is None:
        raise RefError(f"tag '{name}' not found")
    repo.set_ref(ref, None, old.target, "tag: deleted")
    return CID.parse(old.target)


@dataclass(frozen=True)
class Switched:
    """Where `switch` (or `checkout -b`) left HEAD: kind is "branch", "new-branch", "already"
    (on that branch already) or "detached"."""

    kind: str
    name: str
    cid: CID


def switch(
    repo: Repository,
    name: str,
    *,
    create: bool = False,
    start: str = HEAD,
    detach: bool = False,
) -> Switched:
    """`git switch`: HEAD onto branch `name`; with `create`, a new branch `name` at `start` first
    (both in one transaction); with `detach`, HEAD detached at the commit `name` resolves to."""
    head = repo.head()
    message = f"checkout: moving to {name}"
    if detach:
        cid = repo.resolve(name)
        repo.read_commit(cid)
        repo.set_ref(HEAD, str(cid), head.target, message)
        return Switched("detached", name, cid)
    if create:
        check_branch_name(name)
        if repo.branch_commit(name) is not None:
            raise RefError(f"a branch named '{name}' already exists")
        cid = repo.resolve(start)
        repo.read_commit(cid)
        with repo.transaction():
            repo.create_branch(name, cid, f"branch: Created from {start}")
            repo.set_ref(HEAD, branch_ref(name), head.target, message, symbolic=True)
        return Switched("new-branch", name, cid)
    cid = repo.branch_commit(name) if _is_branch_name(name) else None
    if cid is None:
        try:
            repo.resolve(name)
        except BasinError:
            raise RefError(f"invalid reference: {name}") from None
        raise RefError(
            f"a branch is expected, got {name!r}: to detach HEAD at it, run "
            f"'basin switch --detach {name}'"
        )
    if head.symbolic and head.target == branch_ref(name):
        return Switched("already", name, cid)
    repo.set_ref(HEAD, branch_ref(name), head.target, message, symbolic=True)
    return Switched("branch", name, cid)


def reset(repo: Repository, rev: str = HEAD) -> tuple[CID, CID]:
    """`git reset REV`: the current branch (or a detached HEAD) moves to the commit `rev` names,
    compare-and-swap, logged as "reset: moving to REV". Basin has no working tree or index, so
    --soft, --mixed and --hard all come to this. Returns (old, new)."""
    target = repo.resolve(rev)
    repo.read_commit(target)
    with repo.transaction():
        old = repo.head_commit()
        repo.move_head(target, old, f"reset: moving to {rev}")
    return old, target


def revert(repo: Repository, rev: str, mainline: int | None = None) -> CID:
    """`git revert REV`: a new signed commit on HEAD whose basin undoes REV's change,
    z = z_HEAD - (z_REV - z_parent), the parent being REV's only one or, for a merge, parent
    number `mainline` (git's -m). β, labels, Fisher, entanglements and substrate stay HEAD's."""
    from dataclasses import replace

    from .numeric import quantize

    cid = repo.resolve(rev)
    undone = repo.read_commit(cid)
    parents = undone.parents
    if not parents:
        raise BasinError(f"cannot revert {cid}: it is a root commit, with no parent to undo it to")
    if len(parents) > 1 and mainline is None:
        raise BasinError(f"commit {cid} is a merge but no -m option was given")
    if len(parents) == 1 and mainline is not None:
        raise BasinError(f"mainline was specified but commit {cid} is not a merge")
    if mainline is not None and not 1 <= mainline <= len(parents):
        raise BasinError(f"commit {cid} does not have parent {mainline}")
    parent = parents[(mainline or 1) - 1]
    after = repo.read_basin(undone.basin)
    before = repo.read_basin(repo.read_commit(parent).basin)
    for basin in (after, before):
        if basin.chart != repo.config.chart:
            raise SchemaError(
                f"cannot revert {cid}: a basin in chart {basin.chart} is not in the "
                f"repository's {repo.config.chart}"
            )
    subject = undone.message.partition("\n")[0]
    reverses = f", reversing\nchanges made to {parent}." if mainline is not None else "."
    message = f'Revert "{subject}"\n\nThis reverts commit {cid}{reverses}'
    ident = repo.identity()
    with repo.transaction():
        head = repo.head_commit()
        head_basin = repo.read_basin(repo.read_commit(head).basin)
        if head_basin.chart != repo.config.chart:
            raise SchemaError(f"HEAD's basin is in chart {head_basin.chart}, not the repository's")
        z = [h - (a - b) for h, a, b in zip(head_basin.z, after.z, before.z, strict=True)]
        basin = replace(head_basin, z=quantize(z))
        basin_cid = repo.write_basin(basin)
        if basin_cid == repo.read_commit(head).basin:
            raise BasinError(
                f"nothing to commit: reverting {cid} leaves HEAD's basin as it is "
                "(that commit did not change the coordinates)"
            )
        new = _sign(ident, Commit(basin_cid, (head,), ident.public_key, now_ms(), message))
        new_cid = repo.write_commit(new)
        repo.move_head(new_cid, head, f"revert: {message.partition(chr(10))[0]}")
    return new_cid


# -- revision ranges: A..B, A...B ---------------------------------------------------------------


def is_range(spec: str) -> bool:
    """Whether `spec` is a range `A..B` or `A...B` (no ref name or CID contains '..')."""
    return ".." in spec


def range_commits(
    repo: Repository, spec: str, *, all_refs: bool = False, topo: bool = False
) -> list[CID]:
    """The commits of the range `spec`, newest first (with `topo`, in `--graph`'s order).

    `A..B`: reachable from B, not from A; `A...B`: reachable from either, not from both. An empty
    side is HEAD (`..B`, `A..`), as in git. With `all_refs`, every branch counts as a B too.
    """
    from . import history

    symmetric = "..." in spec
    left, _, right = spec.partition("..." if symmetric else "..")
    a, b = repo.resolve(left or HEAD), repo.resolve(right or HEAD)
    for cid in (a, b):
        repo.read_commit(cid)  # says precisely what a non-commit end is
    graph = history.commit_graph(repo)
    heads, hidden = [b], [a]
    if symmetric:
        heads, hidden = [a, b], history.merge_bases(graph, a, b)
    if all_refs:
        heads += [cid for _, cid in repo.branches()]
    order = history.range_order(graph, heads, hidden, repo.commit_times(), topo=topo)
    return [CID.parse(c) for c in order]


def log_range(
    repo: Repository, spec: str, limit: int = -1, all_refs: bool = False
) -> Iterator[tuple[CID, Commit]]:
    """`log A..B`: the range's commits, newest first, at most `limit` (-1: all), each re-hashed."""
    order = range_commits(repo, spec, all_refs=all_refs)
    for cid in order if limit < 0 else order[:limit]:
        yield cid, repo.read_commit(cid)


# -- verify -------------------------------------------------------------------------------------


@dataclass
class VerifyReport:
    commits: int = 0
    packets: int = 0
    records: int = 0  # round records of hive heads (Commit.record)
    shallow: int = 0  # commits reached whose parents the repository does not hold (--depth)
    problems: list[tuple[str, str]] = field(default_factory=list)
    untrusted: dict[bytes, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(repo: Repository) -> VerifyReport:
    """Check everything reachable from every ref: hashes, links, packets, signatures, trust;
    of a shallow commit's parents, those held (the history held starts where they are not),
    and the shallow marks themselves."""
    report = VerifyReport()
    _check_database(repo, report)
    if report.problems:  # a damaged file: every read below would only repeat it
        return report
    _check_shallow_marks(repo, report)
    pending: list[CID] = []
    for ref in [repo.head(), *repo.refs()]:
        if ref.symbolic:
            if repo.ref(ref.target) is None:
                report.problems.append((ref.name, f"points at missing ref {ref.target}"))
            continue
        try:
            pending.append(CID.parse(ref.target))
        except BasinError as exc:
            report.problems.append((ref.name, str(exc)))
    seen_commits: set[CID] = set()
    seen_packets: set[CID] = set()
    shallow = repo.shallow()
    while pending:
        cid = pending.pop()
        if cid in seen_commits:
            continue
        seen_commits.add(cid)
        commit_ = _verify_commit(repo, cid, report, cid in shallow)
        if commit_ is None:
            continue
        held = [p for p in commit_.parents if cid not in shallow or repo.has_block(p)]
        report.shallow += len(held) < len(commit_.parents)
        pending.extend(held)
        if commit_.basin not in seen_packets:
            seen_packets.add(commit_.basin)
            _verify_packet(repo, commit_.basin, cid, report)
        if commit_.record is not None:
            report.records += 1
            _verify_record(repo, commit_.record, cid, report)
    report.commits = len(seen_commits)
    report.packets = len(seen_packets)
    return report


def _check_database(repo: Repository, report: VerifyReport) -> None:
    finding = repo.check_integrity()
    if finding:
        report.problems.append((repo.location, f"database check failed: {finding}"))


def _check_shallow_marks(repo: Repository, report: VerifyReport) -> None:
    """Each shallow mark names a commit held here whose parents are not all here."""
    for text in sorted(repo.shallow_marks()):
        try:
            cid = CID.parse(text)
        except BasinError as exc:
            report.problems.append(("shallow marks", f"{text!r} is not a CID: {exc}"))
            continue
        if repo.index_entry(cid) is None:
            report.problems.append((text, "marked shallow, but not a commit of this repository"))
        elif repo.parents_held(cid):
            report.problems.append((text, "marked shallow, but its parents are all here"))


def _verify_commit(
    repo: Repository, cid: CID, report: VerifyReport, shallow: bool = False
) -> Commit | None:
    """Check one commit (`shallow`: held without its parents, which are then not looked for)."""
    try:
        data = repo.get_block(cid)
        commit_ = Commit.decode(data)
    except BasinError as exc:
        report.problems.append((str(cid), str(exc)))
        return None
    if not commit_.signature_valid():
        report.problems.append((str(cid), f"bad signature by {format_key(commit_.author)}"))
    if repo.config.trusted_key(commit_.author) is None:
        report.untrusted.setdefault(commit_.author, []).append(str(cid))
    problem = _index_problem(repo, cid, commit_)
    if problem:
        report.problems.append((str(cid), problem))
    for parent in () if shallow else commit_.parents:
        if not repo.has_block(parent):
            report.problems.append((str(cid), f"parent {parent} is missing"))
    return commit_


def _index_problem(repo: Repository, cid: CID, commit_: Commit) -> str | None:
    """How the commit-graph index (its parent rows, and the entry `log` lists) differs from the
    commit block, if it does."""
    entry = repo.index_entry(cid)
    if entry is None:
        return "commit is not in the commit-graph index"
    parents = [str(p) for p in commit_.parents]
    same = {
        "parents": parents == repo.parents(cid) and tuple(parents) == entry.parents,
        "time": entry.time == commit_.time,
        "author": entry.author == commit_.author,
        "message": entry.message == commit_.message,
    }
    wrong = [name for name, ok in same.items() if not ok]
    if not wrong:
        return None
    return f"commit-graph index disagrees with the commit's {', '.join(wrong)}"


def _verify_packet(repo: Repository, cid: CID, owner: CID, report: VerifyReport) -> None:
    try:
        basin = Basin.decode(repo.get_block(cid))
    except BasinError as exc:
        report.problems.append((str(cid), f"basin of commit {owner}: {exc}"))
        return
    if basin.chart != repo.config.chart:
        report.problems.append((str(cid), f"basin chart {basin.chart} is not the repository's"))


def _verify_record(repo: Repository, cid: CID, owner: CID, report: VerifyReport) -> None:
    try:
        RoundRecord.decode(repo.get_block(cid))
    except BasinError as exc:
        report.problems.append((str(cid), f"round record of commit {owner}: {exc}"))


# -- keys ---------------------------------------------------------------------------------------


def trust(
    repo: Repository, key: str, name: str, weight: float = 1.0, cohort: str | None = None
) -> TrustedKey:
    """Add (or update: the entry is replaced whole) a trusted signer."""
    entry = TrustedKey(parse_key(key), name, weight, cohort)

    def change(config: Config) -> None:
        config.trusted = [t for t in config.trusted if t.key != entry.key] + [entry]

    repo.change_config(change)
    return entry


def trusted_entry(repo: Repository, key_or_name: str) -> TrustedKey:
    """The trusted signer `key_or_name` names (its name, its key, or did:key:...)."""
    return _named(repo.config.trusted, key_or_name)


def _named(trusted: list[TrustedKey], key_or_name: str) -> TrustedKey:
    text = key_or_name.removeprefix("did:key:")
    matches = [
        t
        for t in trusted
        if key_or_name in (t.name, format_key(t.key)) or text == format_key(t.key)
    ]
    if not matches:
        raise SignatureError(f"no trusted key named {key_or_name!r}")
    if len(matches) > 1:
        raise SignatureError(f"{key_or_name!r} names several trusted keys: give the key itself")
    return matches[0]


def untrust(repo: Repository, key_or_name: str) -> TrustedKey:
    def change(config: Config) -> TrustedKey:
        entry = _named(config.trusted, key_or_name)  # as the file names it now
        config.trusted = [t for t in config.trusted if t is not entry]
        return entry

    return repo.change_config(change)


def generate_identity(name: str | None = None) -> tuple[Identity, bool]:
    """The user's identity, made now if there was none."""
    return load_or_create_identity(name or default_name())


# -- blocks and DAG plumbing --------------------------------------------------------------------

CODEC_CHOICES = {"dag-cbor": DAG_CBOR, "dag-json": DAG_JSON}


def dag_put(
    repo: Repository,
    inputs: list[bytes],
    input_codec: str = "dag-json",
    store_codec: str = "dag-cbor",
) -> list[CID]:
    """Decode each input strictly, re-encode in `store_codec`, store all or none, return CIDs.

    Input that is not in its codec's canonical form is refused rather than silently rewritten:
    whoever sends bytes gets the CID of those bytes' meaning, stated exactly once.
    """
    encoded = []
    for i, data in enumerate(inputs):
        node = _decode(data, input_codec)
        canonical = _encode(node, input_codec)
        if data != canonical and not (input_codec == "dag-json" and data == canonical + b"\n"):
            where = f"input {i + 1}: " if len(inputs) > 1 else ""
            raise CodecError(
                f"{where}non-canonical {input_codec.upper()}: it encodes as {len(canonical)} "
                f"bytes, not the {len(data)} given (key order, spacing or number form)"
            )
        encoded.append(_encode(node, store_codec))
    with repo.transaction():
        return [repo.put_block(data, CODEC_CHOICES[store_codec]) for data in encoded]


def dag_get(repo: Repository, path: str, output_codec: str = "dag-json") -> bytes:
    """The node at `ROOT[/path...]`, following links (the last one too, as `ipfs dag get` does).

    ROOT is a CID or revision; `refs/...` roots take as many components as name an existing ref.
    """
    parts = [p for p in path.split("/") if p]
    if not parts:
        raise BasinError("empty DAG path")
    take = 1
    if parts[0] == "refs":
        named = (n for n in range(2, len(parts) + 1) if repo.ref("/".join(parts[:n])))
        take = next(named, 0)
        if not take:
            raise RefError(f"no ref names the start of {path!r}")
    root, rest = "/".join(parts[:take]), parts[take:]
    node = _load_node(repo, repo.resolve(root))
    for i, part in enumerate(rest):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise BasinError(f"no link named {'/'.join(rest[: i + 1])!r} under {root}")
        if isinstance(node, CID):
            node = _load_node(repo, node)
    return _encode(node, output_codec)


def _load_node(repo: Repository, cid: CID):
    data = repo.get_block(cid)
    if cid.codec == DAG_CBOR:
        return dagcbor.decode_trusted(data)
    if cid.codec == DAG_JSON:
        return dagjson.decode(data)
    return data  # raw and other codecs: the bytes themselves, as `ipfs dag get` shows them


def _decode(data: bytes, codec: str):
    return (dagcbor.decode if codec == "dag-cbor" else dagjson.decode)(data)


def _encode(node, codec: str) -> bytes:
    return (dagcbor.encode if codec == "dag-cbor" else dagjson.encode)(node)


def describe_block(repo: Repository, cid: CID) -> tuple[str, object]:
    """What a stored block is: ('commit', Commit), ('basin', Basin), ('round', RoundRecord) or
    ('block', node or bytes)."""
    node = _load_node(repo, cid)
    kind = kind_of(node)
    if kind == COMMIT_TYPE:
        return "commit", Commit.from_node(node)
    if kind == PACKET_TYPE:
        return "basin", Basin.from_node(node)
    if kind == ROUND_TYPE:
        return "round", RoundRecord.from_node(node)
    return "block", node


# -- merge --------------------------------------------------------------------------------------


@dataclass
class MergeResult:
    kind: str  # "merge", "fast-forward" or "up-to-date"
    cid: CID
    strategy: str | None = None
    assessments: list = field(default_factory=list)  # one per incoming side, in order
    weights: list[float] = field(default_factory=list)  # ours first, then each incoming side
    bases: int = 0
    notes: list[str] = field(default_factory=list)  # what the user should know about the weights
    revs: list[str] = field(default_factory=list)  # the incoming sides merged, as named

    @property
    def assessment(self):
        """The conflict assessment of a two-sided merge (the only incoming side's)."""
        return self.assessments[0] if self.assessments else None


def merge(
    repo: Repository,
    revs: str | Sequence[str],
    *,
    into: str | None = None,
    strategy: str | None = None,
    weight: float = 1.0,
    max_distance: float | None = None,
    max_interference: float | None = None,
    force: bool = False,
    no_ff: bool = False,
    message: str | None = None,
    allow_untrusted: bool = False,
) -> MergeResult:
    """Merge `revs` (one or more) into branch `into` (default: HEAD's branch, or a detached HEAD);
    see basinvcs.merge for the rules and docs/merge.md. `weight` is each incoming side's extra.

    This function resolves, checks and commits; the arithmetic is basinvcs.merge's. Everything is
    checked first (signatures and trust of the incoming history, charts, each incoming side's
    conflict assessment against ours); a refusal raises before anything is written.
    """
    from . import history
    from . import merge as mm
    from .concepts import refresh_links

    strategy = strategy or mm.DEFAULT_STRATEGY
    rule = mm.get(strategy)
    weight = mm.check_weight(weight, "--weight")
    limit_d, limit_i = _thresholds(repo, max_distance, max_interference)
    revs = [revs] if isinstance(revs, str) else list(revs)
    if not revs:
        raise BasinError("nothing to merge: name at least one revision")
    target, ours = _merge_target(repo, into)
    heads = [repo.resolve(rev) for rev in revs]
    graph = history.commit_graph(repo)
    incoming = set().union(*(history.ancestors(graph, h) for h in heads))
    _check_incoming(repo, incoming - history.ancestors(graph, ours), allow_untrusted)
    basins = [repo.read_basin(repo.read_commit(h).basin) for h in heads]
    for rev, basin in zip(revs, basins, strict=True):
        if basin.chart != repo.config.chart:
            raise BasinError(
                f"cannot merge {rev}: its basin is in chart {basin.chart}, this repository's "
                f"is {repo.config.chart}: the coordinates mean different things"
            )
    pending = [
        (rev, head, basin)
        for rev, head, basin in zip(revs, heads, basins, strict=True)
        if not history.is_ancestor(graph, head, ours)
    ]
    if not pending:
        return MergeResult("up-to-date", ours)
    if len(pending) == 1 and history.is_ancestor(graph, ours, pending[0][1]) and not no_ff:
        rev, head, _ = pending[0]
        _move(repo, target, head, ours, f"merge {rev}: fast-forward")
        return MergeResult("fast-forward", head, revs=[rev])

    revs, heads, basins = ([p[k] for p in pending] for k in range(3))
    bases = history.merge_bases(graph, ours, *heads)
    base_z = _virtual_base(repo, bases)
    our_commit = repo.read_commit(ours)
    our_basin = repo.read_basin(our_commit.basin)
    notes: list[str] = []
    names = ["theirs"] if len(revs) == 1 else [f"theirs {rev}" for rev in revs]
    sides = [_side(repo, our_commit.author, our_basin, 1.0, "ours", notes)]
    sides += [
        _side(repo, repo.read_commit(head).author, basin, weight, name, notes)
        for head, basin, name in zip(heads, basins, names, strict=True)
    ]
    verdicts = [mm.assess(base_z, sides[0], side) for side in sides[1:]]
    if not force and not rule.picks:
        for rev, verdict in zip(revs, verdicts, strict=True):
            if why := verdict.refused(limit_d, limit_i):
                raise MergeRefused(
                    f"merge of {rev} refused: {why}", _conflict_report(verdict, limit_d, limit_i)
                )

    z = mm.combine(base_z, sides, strategy)
    every = [our_basin, *basins]
    # the merged diagonal: the sides' on the common scale, averaged (a side without one has none
    # to give, so it does not dilute the others')
    fisher = mean_fisher([b.fisher for b in every if b.fisher is not None], len(base_z))
    labels = list(dict.fromkeys(label for b in every for label in b.labels))
    ents = {(e.a, e.b): e for b in reversed(every) for e in b.entanglements}  # ours win
    merged = Basin.create(
        repo.config.chart,
        z,
        fisher=fisher,
        beta=mm.merge_beta(sides),
        entanglements=list(ents.values()),
        labels=labels,
        substrate=our_basin.substrate,
    )
    merged = refresh_links(repo, merged)  # the concepts it now carries, linked afresh
    ident = repo.identity()
    where = short_name(target) if target != HEAD else "HEAD"
    text = message or f"Merge {_listed(revs)} into {where}"
    with repo.transaction():
        basin_cid = repo.write_basin(merged)
        metrics = _merge_metrics(verdicts, sides, len(bases))
        commit_ = Commit(
            basin_cid, (ours, *heads), ident.public_key, now_ms(), text, metrics, None, strategy
        )
        cid = repo.write_commit(_sign(ident, commit_))
        _move(repo, target, cid, ours, f"merge {_listed(revs)}: {strategy}")
    return MergeResult(
        "merge", cid, strategy, verdicts, [s.weight for s in sides], len(bases), notes, revs
    )


def _thresholds(
    repo: Repository, max_distance: float | None, max_interference: float | None
) -> tuple[float, float]:
    """The conflict check's limits: given, else from the config's settings, else the defaults."""
    from . import merge as mm

    settings = repo.config.settings.get("merge", {})
    if max_distance is None:
        max_distance = settings.get("max_distance", mm.DEFAULT_MAX_DISTANCE)
    if max_interference is None:
        max_interference = settings.get("max_interference", mm.DEFAULT_MAX_INTERFERENCE)
    return (
        mm.check_threshold(max_distance, "maximum Fisher distance"),
        mm.check_threshold(max_interference, "maximum interference"),
    )


def _merge_target(repo: Repository, into: str | None) -> tuple[str, CID]:
    """The ref a merge moves (a branch, or HEAD when detached) and the commit it is at."""
    if into is None:
        return repo.current_branch() or HEAD, repo.head_commit()
    head = repo.branch_commit(into)
    if head is None:
        raise RefError(f"cannot merge into {into!r}: no such branch")
    return branch_ref(into), head


def _move(repo: Repository, target: str, new: CID, old: CID, message: str) -> None:
    """Move the merge's target: through HEAD when it is HEAD's branch (both reflogs say so)."""
    if target in (HEAD, repo.current_branch()):
        repo.move_head(new, old, message)
    else:
        repo.set_ref(target, new, old, message)


def _listed(revs: Sequence[str]) -> str:
    return revs[0] if len(revs) == 1 else f"{', '.join(revs[:-1])} and {revs[-1]}"


def _merge_metrics(verdicts: list, sides: list, bases: int) -> dict[str, float]:
    """What the merge commit records: each incoming side's assessment and weight (keys numbered
    from 1 when there are several), our weight and how many merge bases there were."""
    out = {"weight_ours": sides[0].weight, "merge_bases": float(bases)}
    for k, (verdict, side) in enumerate(zip(verdicts, sides[1:], strict=True), start=1):
        suffix = "" if len(verdicts) == 1 else f"_{k}"
        out |= {
            f"distance{suffix}": verdict.distance,
            f"relative_distance{suffix}": verdict.relative,
            f"interference{suffix}": verdict.interference,
            f"shared_coordinates{suffix}": float(verdict.shared),
            f"weight_theirs{suffix}": side.weight,
        }
    return out


def _check_incoming(repo: Repository, incoming: set[str], allow_untrusted: bool) -> None:
    """Every commit a merge would bring in must be signed correctly, by a trusted key."""
    for text in sorted(incoming):
        commit_ = repo.read_commit(CID.parse(text))
        if not commit_.signature_valid():
            raise BasinError(f"merge refused: commit {text} has a bad signature")
        if not allow_untrusted and repo.config.trusted_key(commit_.author) is None:
            raise BasinError(
                f"merge refused: commit {text} is signed by untrusted key "
                f"{format_key(commit_.author)} (trust it with 'basin key add' or use "
                "--allow-untrusted)"
            )


def _virtual_base(repo: Repository, bases: list[CID]) -> list[float]:
    """The merge base's coordinates; with several best common ancestors, their mean."""
    zs = [repo.read_basin(repo.read_commit(b).basin).z for b in bases]
    return [sum(v) / len(zs) for v in zip(*zs, strict=True)]


def _side(repo: Repository, author: bytes, basin: Basin, extra: float, which: str, notes):
    from .merge import Side, capacity

    trusted = repo.config.trusted_key(author)
    weight = (trusted.weight if trusted else 1.0) * capacity(_params(basin, which, notes)) * extra
    return Side(
        list(basin.z), list(basin.fisher) if basin.fisher is not None else None, basin.beta, weight
    )


def _params(basin: Basin, which: str, notes: list[str]) -> int | None:
    """The parameter count a side's capacity may use: that of the registered substrate with the
    packet's fingerprint, counted here. What the packet claims only says whether to look (up to
    1M counts 1 anyway); a substrate this machine does not have counts 1, and the notes say so."""
    from .merge import capacity

    ref = basin.substrate
    if ref is None or capacity(ref.params) == 1.0:
        return None
    from .model.registry import registered_params

    counted = registered_params(ref.fingerprint)
    if counted is None:
        notes.append(
            f"{which}: substrate {ref.name} is not registered here: its claimed {ref.params:,} "
            "parameters are not counted (capacity 1)"
        )
    elif counted != ref.params:
        notes.append(
            f"{which}: substrate {ref.name} claims {ref.params:,} parameters; counted "
            f"{counted:,} from the registered substrate"
        )
    return counted


def _conflict_report(verdict, max_distance: float, max_interference: float) -> list[str]:
    lines = [
        f"shared coordinates: {verdict.shared}",
        f"Fisher distance: {verdict.distance:.6g} ({verdict.relative:.3g}x the smaller change; "
        f"threshold {max_distance:g}x)",
        f"interference: {verdict.interference:.3g} (threshold {max_interference:g})",
        "most conflicting coordinates (index, Fisher, ours, theirs):",
    ]
    lines += [f"  {i:5d}  {f:.4g}  {a:+.4g}  {b:+.4g}" for i, f, a, b in verdict.worst]
    lines.append("resolve deliberately with --force, or --strategy ours|theirs")
    return lines
