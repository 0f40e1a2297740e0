"""Moving history between machines through IPFS nodes: remotes, push, fetch and clone.
Porcelain over ipfs.Node and ingest (CAR files are carfile.py; announcements discovery.py).

Trust comes from signatures, never from where bytes came from. A heads record (records.Heads) is
accepted only when its signature verifies, its signer is trusted (a clone trusts the signer it
was told to, or the first one it meets, and says so) and its sequence number is not below the
highest already seen from that signer's repository (a replayed old record is a rollback). A remote
is bound at its first fetch to the repository its records are for, and its remote-tracking refs
never move back. Every block is re-hashed against its CID and every commit verified before
anything is written (ingest.plan_fetch), and then everything is written in one transaction.

Push sends only what the node lacks. It asks the node once for its recursive pins: a pinned
commit has all its history on the node, so the walk stops at pinned commits and everything they
reach. The missing blocks go as one CAR through `dag/import`, which also pins the new heads
(one request rather than one per block: the same path as `ipfs dag import`). Then the heads
record is put and pinned, published under the repository's IPNS key (`basin-<repo id>` in the
node's keystore) and announced on the pubsub topic `basin/heads/<IPNS name>`.

`basin pull` is `fetch` (into `refs/remotes/<remote>/<branch>`) followed by porcelain.merge; the
CLI calls the two itself so it can report the fetch before a merge that refuses.

Design notes, including why discovery uses pubsub, are in docs/design.md.
"""

from __future__ import annotations

import io
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .cid import CID, DAG_CBOR
from .codec.car import write_car
from .config import Config, Remote, SyncState, TrustedKey
from .errors import BasinError, RefError, RemoteError, RepositoryError, SchemaError
from .identity import default_name, format_key, load_or_create_identity, parse_key
from .ingest import FetchPlan, apply_plan, plan_fetch
from .ipfs import Node, check_address
from .objects import Commit
from .porcelain import now_ms
from .progress import progress_bar
from .records import Heads
from .refnames import HEAD, branch_ref, check_branch_name, remote_ref, short_name
from .repository import Repository

ENV_NODE = "BASIN_IPFS_API"
DEFAULT_REMOTE = "origin"
DEFAULT_BRANCH = "general"
HEADS_TOPIC = "basin/heads/"
CAPABILITY_TOPIC = "basin/capability/"


def connect(addr: str | None) -> Node:
    """The node at `addr` (or $BASIN_IPFS_API), checked to answer before anything else is done."""
    addr = addr or os.environ.get(ENV_NODE)
    if not addr:
        raise RemoteError(f"no IPFS node given: pass --node MULTIADDR or set {ENV_NODE}")
    node = Node(addr)
    node.id()
    return node


# -- remotes -------------------------------------------------------------------------------------


def add_remote(repo: Repository, name: str, node: str, follow: str | None = None) -> Remote:
    """Name a node (and optionally the IPNS name or heads record to pull from)."""
    check_branch_name(name)
    check_address(node)  # its form only; nothing is contacted
    remote = Remote(node, follow)

    def change(config: Config) -> None:
        if name in config.remotes:
            raise RefError(f"remote {name!r} exists already (basin remote remove {name} first)")
        config.remotes[name] = remote

    repo.change_config(change)
    return remote


def remove_remote(repo: Repository, name: str) -> Remote:
    def change(config: Config) -> Remote:
        _remote(config.remotes, name)  # refused where the file names no such remote now
        return config.remotes.pop(name)

    return repo.change_config(change)


def get_remote(repo: Repository, name: str) -> Remote:
    return _remote(repo.config.remotes, name)


def _remote(remotes: dict[str, Remote], name: str) -> Remote:
    try:
        return remotes[name]
    except KeyError:
        known = ", ".join(sorted(remotes)) or "none"
        raise RefError(f"no remote named {name!r} (remotes: {known})") from None


def current_branch(repo: Repository) -> str:
    branch = repo.current_branch()
    if branch is None:
        raise RefError("HEAD is detached: name the branch")
    return short_name(branch)


# -- heads records ------------------------------------------------------------------------------


def resolve_source(node: Node, source: str) -> CID:
    """A heads record's CID from its CID (or /ipfs/CID) or an IPNS name (or /ipns/NAME)."""
    text = source.strip()
    if not text.startswith("/ipns/"):
        try:
            cid = CID.parse(text.removeprefix("/ipfs/"))
        except BasinError:
            cid = None
        if cid is not None and cid.codec == DAG_CBOR:
            return cid
    return node.name_resolve(text)


def read_heads(node: Node, cid: CID) -> Heads:
    """The heads record `cid`, fetched through the node, strictly decoded and signature-checked."""
    data = node.block_get(cid)
    try:
        return Heads.decode(data)
    except SchemaError as exc:
        raise SchemaError(f"{cid} is not a valid heads record: {exc}") from None


def _check_heads(repo: Repository, heads: Heads, cid: CID) -> None:
    """Refuse a record this repository must not act on: untrusted, other chart, or a rollback."""
    if repo.config.trusted_key(heads.author) is None:
        raise RemoteError(
            f"heads record {cid} is signed by {format_key(heads.author)}, which this repository "
            "does not trust (basin key add KEY NAME, if you do)"
        )
    if heads.chart != repo.config.chart:
        raise SchemaError(
            f"heads record {cid} is for chart {heads.chart}; this repository's is "
            f"{repo.config.chart}"
        )
    seen = repo.config.sync.seen.get(heads.scope)
    if seen is not None and heads.seq < seen:
        raise RemoteError(
            f"heads record {cid} has sequence {heads.seq}, older than {seen} already seen from "
            "that repository: refusing a rollback"
        )


# -- push ----------------------------------------------------------------------------------------


@dataclass
class PushResult:
    name: str  # IPNS name the heads record was published under
    heads: CID  # the heads record
    seq: int
    branches: dict[str, CID]
    blocks: int  # blocks sent to the node (history blocks and the heads record)
    bytes: int
    announced: bool  # whether a pubsub peer of the node listened for the heads


def push(repo: Repository, remote: str = DEFAULT_REMOTE, branch: str | None = None) -> PushResult:
    """Send `branch` (default: the current one) to the remote's node and publish the heads."""
    ident = repo.identity()
    target = get_remote(repo, remote)
    branch = branch or current_branch(repo)
    head = repo.branch_commit(branch)
    if head is None:
        raise RefError(f"no branch named {branch!r}")
    repo.require_whole([head], f"push {branch}")
    node = connect(target.node)
    blocks = missing_blocks(repo, node, [head])
    sent_blocks = sent_bytes = 0
    if blocks:
        car = io.BytesIO()
        with progress_bar(len(blocks), "push", unit="blocks") as update:
            sent_blocks, _ = write_car(car, [head], _counted(blocks, update))
        sent_bytes = sum(len(data) for _, data in blocks)
        node.dag_import(car.getvalue(), pin_roots=True)
    else:
        node.pin_add(head)  # present but perhaps unpinned (another repository sent it)

    sync = repo.config.sync
    repo_id = sync.repo or uuid.uuid4().hex
    published = {name: CID.parse(cid) for name, cid in sync.published.items()} | {branch: head}
    record = Heads(
        repo=repo_id,
        chart=repo.config.chart,
        heads=dict(sorted(published.items())),
        seq=sync.seq + 1,
        author=ident.public_key,
        time=now_ms(),
    ).signed(ident.sign)
    data = record.encode()
    heads_cid = node.block_put(data)
    node.pin_add(heads_cid)
    key = f"basin-{repo_id}"
    node.key_ensure(key)
    name = node.name_publish(heads_cid, key)
    announced = broadcast(node, HEADS_TOPIC + name, data)

    state = SyncState(
        repo_id,
        record.seq,
        {b: str(c) for b, c in published.items()},
        sync.seen | {record.scope: record.seq},
        str(heads_cid),
    )
    repo.change_config(lambda config: setattr(config, "sync", state))
    old = repo.ref(remote_ref(remote, branch))
    repo.set_ref(
        remote_ref(remote, branch), str(head), old.target if old else None, f"push: {branch}"
    )
    return PushResult(
        name, heads_cid, record.seq, published, sent_blocks + 1, sent_bytes + len(data), announced
    )


def broadcast(node: Node, topic: str, data: bytes) -> bool:
    """Publish on a pubsub topic; False when no peer listens (js-ipfs refuses to publish then,
    Kubo drops the message): an announcement nobody hears is not an error."""
    try:
        node.pubsub_publish(topic, data)
    except RemoteError as exc:
        if "InsufficientPeers" in str(exc):
            return False
        raise
    return True


def missing_blocks(repo: Repository, node: Node, heads: list[CID]) -> list[tuple[CID, bytes]]:
    """Blocks of the history below `heads` that the node lacks, stopping at its pinned commits."""
    local_pins = [cid for cid in node.pinned_roots() if repo.is_commit(cid)]
    have: set[CID] = set()
    have_packets: set[CID] = set()
    for cid, commit in repo.walk(local_pins):
        have.add(cid)
        have_packets.update(commit.attached)
    out: list[tuple[CID, bytes]] = []
    for cid, data in repo.walk_blocks(heads):
        if cid in have:
            continue
        out.append((cid, data))
        for linked in Commit.decode(data, trusted=True).attached:
            if linked not in have_packets:
                have_packets.add(linked)
                out.append((linked, repo.get_block(linked)))
    return out


def _counted(blocks: list[tuple[CID, bytes]], update) -> Iterator[tuple[CID, bytes]]:
    for block in blocks:
        update(1)
        yield block


# -- pull and clone ------------------------------------------------------------------------------


@dataclass
class FetchResult:
    heads: CID  # the heads record
    seq: int
    branch: str
    head: CID
    fetched: int  # blocks fetched through the node


def fetch(repo: Repository, remote: str = DEFAULT_REMOTE, branch: str | None = None) -> FetchResult:
    """Bring `branch` of the heads the remote follows into `refs/remotes/<remote>/<branch>`.

    Refused, with nothing changed: an unreachable node, a heads record that is malformed, signed
    by an untrusted key, of another chart or older than one seen before, and any block that fails
    its hash, decoding or signature.
    """
    target = get_remote(repo, remote)
    if not target.follow:
        raise RemoteError(
            f"remote {remote!r} follows no heads: basin remote add NAME MULTIADDR --follow "
            "IPNS_NAME_OR_CID"
        )
    branch = branch or current_branch(repo)
    node = connect(target.node)
    heads_cid = resolve_source(node, target.follow)
    heads = read_heads(node, heads_cid)
    _check_heads(repo, heads, heads_cid)
    if target.bound is not None and heads.scope != target.bound:
        raise RemoteError(
            f"heads record {heads_cid} is for repository {heads.scope}; remote {remote!r} has "
            f"served {target.bound} since its first fetch: refusing another repository's record"
        )
    if branch not in heads.heads:
        raise RefError(
            f"the heads record {heads_cid} has no branch {branch!r} "
            f"(it has: {', '.join(sorted(heads.heads))})"
        )
    head = heads.heads[branch]
    _check_not_backwards(repo, remote_ref(remote, branch), head, heads_cid)
    plan = _fetch(repo, node, [head], "pull")
    apply_plan(repo, plan, [(remote_ref(remote, branch), head, f"pull: {branch} from {remote}")])

    def change(config: Config) -> None:
        config.sync.seen[heads.scope] = max(heads.seq, config.sync.seen.get(heads.scope, 0))
        if remote in config.remotes:  # removed meanwhile: nothing to bind
            config.remotes[remote].bound = heads.scope

    repo.change_config(change)
    return FetchResult(heads_cid, heads.seq, branch, head, plan.blocks)


def _check_not_backwards(repo: Repository, ref: str, head: CID, heads_cid: CID) -> None:
    """Refuse to move a remote-tracking ref to an ancestor of where it is: that is a rollback
    (a replayed or forged record), whatever its sequence number says."""
    from . import history

    old = repo.ref(ref)
    if old is None or old.target == str(head) or not repo.is_commit(head):
        return  # new, unchanged, or a commit we never had: not behind anything we hold
    if history.is_ancestor(history.commit_graph(repo), head, CID.parse(old.target)):
        raise RemoteError(
            f"heads record {heads_cid} would move {ref} back from {old.target} to its ancestor "
            f"{head}: refusing a rollback"
        )


def _fetch(repo: Repository, node: Node, heads: list[CID], label: str) -> FetchPlan:
    """Plan a fetch through the node, then pin the heads there: the node now holds this history
    for us (and a later push from here knows it need not send it again)."""
    with progress_bar(0, label, unit="blocks") as update:
        plan = plan_fetch(repo, heads, node.block_get, on_block=lambda _n: update(1))
    for head in heads:
        node.pin_add(head)
    return plan


@dataclass
class CloneResult:
    path: Path
    heads: CID
    seq: int
    branches: dict[str, CID]
    checked_out: str
    fetched: int
    trusted: str  # the signer now trusted, as z6Mk…
    trusted_new: bool  # the signer was not trusted before (it is not our own key)


def clone(
    source: str, path: Path | str, node: str | None = None, trust: str | None = None
) -> CloneResult:
    """A new repository at `path` holding every branch of the heads record `source` names.

    The signer of the heads record becomes trusted: the one `trust` names (anyone else is
    refused), or, without `trust`, whoever signed it, which the caller must tell the user.
    Nothing is left behind on failure: the repository is built beside `path` and renamed into
    place at the end.
    """
    target = Path(path).resolve()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise RepositoryError(f"{target} exists and is not an empty directory")
    expected = parse_key(trust) if trust else None
    client = connect(node)
    heads_cid = resolve_source(client, source)
    heads = read_heads(client, heads_cid)
    if expected is not None and heads.author != expected:
        raise RemoteError(
            f"heads record {heads_cid} is signed by {format_key(heads.author)}, not by "
            f"{format_key(expected)} as --trust requires"
        )
    ident, _ = load_or_create_identity(default_name())
    trusted = [TrustedKey(ident.public_key, ident.name, 1.0)]
    trusted_new = heads.author != ident.public_key
    if trusted_new:
        trusted.append(TrustedKey(heads.author, DEFAULT_REMOTE, 1.0))
    config = Config(
        heads.chart,
        trusted,
        remotes={DEFAULT_REMOTE: Remote(client.addr, source, heads.scope)},
        sync=SyncState(seen={heads.scope: heads.seq}),
    )
    staging = target.parent / f".{target.name}.clone-{uuid.uuid4().hex[:8]}"
    try:
        with Repository.create(staging, config) as repo:
            plan = _fetch(repo, client, list(heads.heads.values()), "clone")
            refs = [(branch_ref(b), c, f"clone: {b} from {source}") for b, c in heads.heads.items()]
            refs += [(remote_ref(DEFAULT_REMOTE, b), c, "clone") for b, c in heads.heads.items()]
            apply_plan(repo, plan, refs)
            checked_out = DEFAULT_BRANCH if DEFAULT_BRANCH in heads.heads else min(heads.heads)
            repo.set_ref(HEAD, branch_ref(checked_out), None, "clone", symbolic=True)
        if target.exists():
            target.rmdir()
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return CloneResult(
        target,
        heads_cid,
        heads.seq,
        dict(heads.heads),
        checked_out,
        plan.blocks,
        format_key(heads.author),
        trusted_new,
    )
