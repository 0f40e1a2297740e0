"""The hive without a coordinator: replicas gossip updates on an IPFS pubsub topic and each applies
the same deterministic rule per round, so replicas that heard the same updates reach the same
head CID.

A round is keyed by its parent head. Its head is a pure function of that head and the set of
updates taken (`round_head`):

- an update counts if it is a valid signed record of the hive's chart, by a trusted signer, whose
  parent is the round's head; of several by one signer, the lowest CID counts (deterministic);
- the outlier check, the aggregation rule (the coordinator's default) and a stateless outer
  step (z + lr·Δ: no momentum buffers a late replica could not know) give the new z;
- the head commit is signed by the *hive key*, derived from the hive's genesis commit
  (`hive_identity`), with a time derived from its parent's: Ed25519 signatures are deterministic,
  so the commit's bytes, and its CID, are the same on every replica.

The hive key is public knowledge, so its signature proves nothing by itself: a replica accepts a
head only by recomputing it. Heads are announced on the topic with the CIDs of the updates they
took (`Announcement`, signed by the replica that made it); every replica keeps update blocks on
its IPFS node, so one that missed some fetches them by CID, verifies each (hash, signature,
signer) and recomputes. A replica that missed a round entirely catches up from the announcement
the same way. Anyone can publish on a topic: a replica keeps updates and acts on announcements
only from signers it trusts, so a stranger cannot make it fetch anything.

Under message loss: an update heard by some replicas and not others makes their heads differ
for that round. At the round's end each replica takes the union of the updates it heard and those
listed in the announcements it heard (fetching the missing blocks), so one announcement that
reaches everyone reconciles them; a replica that heard nothing of a round keeps its head and
catches up when it hears the next announcement whose updates it can fetch. Updates that no
replica's node can serve are left out (deterministically, for everyone who cannot fetch them),
which is the price of having no coordinator.

`follow` runs a replica over an IPFS node (`basin hive replica`), `gossip` offers an edge's local
change to the replicas (`basin hive submit --node`).
"""

from __future__ import annotations

import hashlib
import math
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from ..cid import CID
from ..codec import dagcbor
from ..errors import BasinError, RefError, RemoteError, RepositoryError, SchemaError
from ..identity import Identity, format_key
from ..objects import (
    FORMAT_VERSION,
    MAX_ROUND_ENTRIES,
    Basin,
    Commit,
    RoundRecord,
    _check_type,
    _fields,
    _signature,
    _typed,
)
from ..records import _Signed
from ..refnames import branch_ref
from ..repository import Repository
from . import adjust, fates, outliers, rules
from .edge import local_change, signed_update
from .update import DEFAULT_ENCODING, Compressor, Update

ANNOUNCE_TYPE = "basin/hive-head"
TOPIC = "basin/hive/"  # + the genesis commit's CID
LR = 1.0  # the stateless outer step: z + LR · Δ
SUBSCRIBE_SECONDS = 3600.0  # a replica's subscription is renewed this often


def hive_identity(genesis: CID) -> Identity:
    """The key every replica of the hive signs heads with, derived from its genesis commit."""
    seed = hashlib.sha256(b"basin-hive/v1\0" + genesis.buffer).digest()
    return Identity(seed, "hive")


def hive_genesis(repo: Repository, commit: CID) -> CID:
    """The root of `commit`'s first-parent history: the commit that names the hive."""
    shallow = repo.shallow()
    while parents := repo.read_commit(commit).parents:
        if commit in shallow:
            raise RepositoryError(
                f"the hive's first commit is below {commit}, where this repository's history "
                "starts (joined with --depth): replicas need the whole history"
            )
        commit = parents[0]
    return commit


MAX_ANNOUNCED = 100_000  # update CIDs an announcement may list (the decoder's bound)


@dataclass(frozen=True)
class Announcement(_Signed):
    """ "This is the head of the round after `parent`, made of these updates", signed by the
    replica that made it. The head is adopted only by recomputing it; the signature says who asks
    the hearer to fetch blocks and recompute, which only a trusted signer may (anyone can publish
    on a pubsub topic, and every CID listed can cost a fetch that times out)."""

    TYPE = ANNOUNCE_TYPE

    parent: CID
    head: CID
    updates: tuple[CID, ...]
    author: bytes
    signature: bytes = b""

    def __post_init__(self) -> None:
        _typed(self.parent, CID, "announced parent")
        _typed(self.head, CID, "announced head")
        if len(_typed(self.updates, tuple, "announced updates")) > MAX_ANNOUNCED:
            raise SchemaError(f"hive head announcement lists over {MAX_ANNOUNCED:,} updates")
        for cid in self.updates:
            _typed(cid, CID, "announced update")
        if len(_typed(self.author, bytes, "announcement author")) != 32:
            raise SchemaError("announcement author must be a 32-byte Ed25519 public key")

    def unsigned_node(self) -> dict:
        return {
            "type": ANNOUNCE_TYPE,
            "version": FORMAT_VERSION,
            "parent": self.parent,
            "head": self.head,
            "updates": list(self.updates),
            "author": self.author,
        }

    @classmethod
    def from_node(cls, node: Any) -> Announcement:
        _check_type(node, ANNOUNCE_TYPE)
        fields = {"type", "version", "parent", "head", "updates", "author", "signature"}
        node = _fields(node, "hive head announcement", fields)
        return cls(
            parent=node["parent"],
            head=node["head"],
            updates=tuple(_typed(node["updates"], list, "announced updates")),
            author=node["author"],
            signature=_signature(node["signature"], "hive head announcement"),
        )


def _kind(message: bytes) -> str | None:
    """The `type` a pubsub message says it is (None: not a DAG-CBOR map that says)."""
    try:
        node = dagcbor.decode(message)
    except BasinError:
        return None
    kind = node.get("type") if isinstance(node, dict) else None
    return kind if isinstance(kind, str) else None


def round_head(repo: Repository, parent: CID, updates: Iterable[bytes], rule: str) -> CID:
    """The head of the round after `parent` made of `updates` (blocks), written to `repo`:
    the same CID on every replica given the same parent, updates, trust list and rule."""
    head_commit = repo.read_commit(parent)
    basin = repo.read_basin(head_commit.basin)
    taken = _eligible(repo, parent, updates)
    if not taken:
        return parent
    records = [u for _, u in taken]
    report = outliers.check([u.delta() for u in records])
    refused = {i: "outlier" for i in report.outliers}

    def combine(kept: list[int]) -> Basin:
        chosen = [records[i] for i in kept]
        delta = rules.aggregate(
            rule,
            [u.delta() for u in chosen],
            weights=rules.capped_samples([u.samples for u in chosen]),
            keys=[taken[i][0].buffer for i in kept],
        )
        z = [a + LR * d for a, d in zip(basin.z, delta, strict=True)]
        return adjust.apply(basin, z, chosen)

    new_basin, kept, dropped = adjust.storable(  # as the coordinator does
        [i for i in range(len(taken)) if i not in refused],
        lambda i: (math.hypot(*records[i].delta()), taken[i][0].buffer),
        combine,
    )
    if new_basin is None:
        return parent
    refused |= {i: "unstorable" for i, _ in dropped}
    message, record = fates.round_parts(
        f"hive round after {parent}: {len(kept)} updates taken, {len(refused)} refused",
        [(taken[i][0], records[i].author) for i in kept],
        [(taken[i][0], why) for i, why in sorted(refused.items())],
    )
    key = hive_identity(hive_genesis(repo, parent))
    metrics = {"taken": float(len(kept)), "refused": float(len(refused))}
    commit = Commit(
        repo.write_basin(new_basin),
        (parent,),
        key.public_key,
        head_commit.time + 1,
        message,
        metrics,
        record=None if record is None else repo.write_record(record),
    ).signed(key.sign)
    return repo.write_commit(commit)


def _eligible(repo: Repository, parent: CID, blocks: Iterable[bytes]) -> list[tuple[CID, Update]]:
    """The updates that count, by CID: valid, trusted, of this round, one per signer, their
    adjustments applicable (adjust.refusal)."""
    by_author: dict[bytes, tuple[CID, Update]] = {}
    basin = None  # the parent's packet, read if an update changes β
    for data in blocks:
        try:
            update = Update.decode(data, chart=repo.config.chart)
        except BasinError:
            continue
        if update.parent != parent or repo.config.trusted_key(update.author) is None:
            continue
        if update.beta is not None:
            if basin is None:
                basin = repo.read_basin(repo.read_commit(parent).basin)
            if adjust.refusal(update, basin) is not None:
                continue
        cid = CID.for_block(data)
        known = by_author.get(update.author)
        if known is None or cid.buffer < known[0].buffer:
            by_author[update.author] = (cid, update)
    # the lowest CIDs, as many as a round's record lists (the same ones on every replica)
    return sorted(by_author.values(), key=lambda t: t[0].buffer)[:MAX_ROUND_ENTRIES]


MAX_CATCH_UP = 1000  # rounds a replica walks back to find where it left off
MAX_PENDING = 64  # rounds after heads not yet here whose announcements a replica keeps


class Replica:
    """One replica's rounds: offer an update, hear the others', close the round, announce.

    `publish(bytes)` sends a message to every replica (pubsub); `store(bytes)` keeps a block
    where others can fetch it and `fetch(CID)` gets one (an IPFS node's blocks). Messages heard
    are given to `hear`; `close` ends the round. `identity` signs this replica's announcements:
    the others act on them only if they trust its key.
    """

    def __init__(
        self,
        repo: Repository,
        branch: str,
        publish: Callable[[bytes], None],
        store: Callable[[bytes], None],
        fetch: Callable[[CID], bytes],
        identity: Identity,
        rule: str = rules.DEFAULT_RULE,
    ):
        self.repo, self.branch, self.rule, self.identity = repo, branch, rule, identity
        self._publish, self._store, self._fetch = publish, store, fetch
        self.heard: dict[CID, bytes] = {}  # updates of trusted signers, by CID
        self.announced: dict[CID, set[CID]] = {}  # parent -> update CIDs others took
        self.taken: dict[CID, set[CID]] = {}  # parent -> the update CIDs this replica's head took
        self.tried: dict[CID, set[CID]] = {}  # parent -> every update CID asked for (once each)
        self.held: dict[CID, dict[CID, bytes]] = {}  # parent -> the blocks of those it got
        self.not_adopted: str | None = None  # why the last head others made was not adopted
        self._ignored: set[bytes] = set()  # untrusted announcers already said (at most 16)

    @property
    def head(self) -> CID:
        return self.repo.branch_commit(self.branch)

    def offer(self, update: bytes) -> CID:
        """Share this replica's own update for the current round."""
        self._store(update)
        self.heard[CID.for_block(update)] = update
        self._publish(update)
        return CID.for_block(update)

    def hear(self, message: bytes) -> str | None:
        """An update or a head announcement from the topic. Kept or acted on only if it is
        valid and signed by a trusted signer (anything else is dropped: anyone can publish on a
        topic). Returns a line to log: `not_adopted` when this message newly left a head of the
        others out (a head announced again, by another replica or pubsub's repeats, is said
        once), or that an untrusted replica's announcements are ignored (once per key, for
        the first 16 keys); else None."""
        if _kind(message) != ANNOUNCE_TYPE:
            if self._trusted_update(message):
                self.heard.setdefault(CID.for_block(message), message)
            return None
        try:
            announcement = Announcement.decode(message)
        except BasinError:
            return None
        if announcement.author == self.identity.public_key:
            return None  # pubsub's echo of this replica's own
        if (why := self._distrust(announcement)) is not None:
            return why or None
        before = self.not_adopted
        known = self.announced.setdefault(announcement.parent, set())
        known.update(announcement.updates)
        tried = self.tried.get(announcement.parent)
        if tried is not None and not known <= tried:
            # the round this replica closed without some of these (once per CID: one it cannot
            # fetch or count stays out, and is not tried again at every announcement)
            self._reconcile(announcement.parent, announcement.head)
        elif not self.repo.is_commit(announcement.parent):
            self.catch_up(announcement.parent)  # rounds this replica missed
        self._forget()
        return self.not_adopted if self.not_adopted not in (None, before) else None

    def _distrust(self, announcement: Announcement) -> str | None:
        """Why `announcement` is not acted on, its author not being trusted here ("" to say
        nothing: already said), None if it is."""
        if self.repo.config.trusted_key(announcement.author) is not None:
            return None
        if announcement.author in self._ignored or len(self._ignored) >= 16:
            return ""
        self._ignored.add(announcement.author)
        return (
            f"announcements by {format_key(announcement.author)} ignored: not a trusted signer "
            "here (basin key add it to act on the heads it announces)"
        )

    def _trusted_update(self, message: bytes) -> bool:
        """Whether `message` is a valid update in this hive's chart by a signer trusted here
        (for any round: one heard early may count for the next)."""
        try:
            update = Update.decode(message, chart=self.repo.config.chart)
        except BasinError:
            return False
        return self.repo.config.trusted_key(update.author) is not None

    def counts(self, message: bytes) -> bool:
        """Whether `message` is an update that counts for the round after the current head."""
        return bool(_eligible(self.repo, self.head, [message]))

    def close(self) -> CID:
        """End the round after the current head: the union of the updates heard and those others
        announced for it, combined by `round_head`; the new head is recorded, its commit stored
        where others can fetch it, and announced."""
        parent = self.head
        return self._settle(parent, parent, set(self.heard) | self.announced.get(parent, set()))

    def _reconcile(self, parent: CID, theirs: CID) -> None:
        """Others closed the round after `parent` with updates this replica had not heard: make
        the head again from the union (every replica that hears every announcement converges on
        the union of what anyone heard). If their head `theirs` stays out of reach because they
        took signers this replica does not trust, `not_adopted` says so."""
        if self.head != parent and self.repo.parents(self.head) != [str(parent)]:
            return  # this replica has moved on since: the next rounds' announcements carry it
        self._settle(parent, self.head, self.announced[parent])
        if self.head != theirs:
            held = self.held[parent]
            left_out = [held[c] for c in self.announced[parent] - self.taken[parent] if c in held]
            if why := self._untrusted(parent, left_out):
                self._refuse(theirs, why)

    def _settle(self, parent: CID, current: CID, cids: set[CID]) -> CID:
        """Make the head after `parent` from the updates `cids` (heard, or fetched: one no node
        serves is left out), move the branch from `current` to it and, if it changed, store its
        commit for others to fetch and announce it (a head announced again unchanged would set
        off the others' reconciling in turn)."""
        tried = self.tried.setdefault(parent, set())
        blocks = self.held.setdefault(parent, {})
        blocks.update(self._blocks(cids - tried))  # each CID asked for once per round
        tried |= cids
        head = round_head(self.repo, parent, blocks.values(), self.rule)
        taken = {c for c, _ in _eligible(self.repo, parent, blocks.values())}
        self.taken[parent] = taken
        if head != current:
            self._move(head, current)
            if head != parent:
                commit = self.repo.read_commit(head)
                if commit.record is not None:  # before the commit: fetched after it
                    self._store(self.repo.get_block(commit.record))
                self._store(self.repo.get_block(head))
                ordered = tuple(sorted(taken, key=lambda c: c.buffer))
                announcement = Announcement(parent, head, ordered, self.identity.public_key)
                self._publish(announcement.signed(self.identity.sign).encode())
        self.heard = {c: d for c, d in self.heard.items() if c not in cids}
        self._forget()
        return head

    def _forget(self) -> None:
        """Drop what is kept per round for rounds that are over: those after a known commit other
        than the head and its parent (the round just closed, which announcements may still
        reconcile), and all but the last MAX_PENDING rounds after a head not yet here."""
        keep = {self.head, *map(CID.parse, self.repo.parents(self.head))}
        tables = (self.announced, self.taken, self.tried, self.held)
        over = {p for t in tables for p in t if p not in keep and self.repo.is_commit(p)}
        for table in tables:
            for parent in over & table.keys():
                del table[parent]
        waiting = [p for p in self.announced if p not in keep]  # in the order first heard
        for parent in waiting[:-MAX_PENDING]:
            del self.announced[parent]

    def catch_up(self, target: CID) -> bool:
        """Reach `target`, a head other replicas made, from this replica's head: walk back from
        it through their stored commits to where this replica left off, then recompute every
        round forward from the updates each commit lists; adopt only what recomputes exactly.
        False when not, and `not_adopted` says why in one line (`basin hive replica` logs it)."""
        chain: list[Commit] = []
        cid = target
        while cid != self.head:
            if len(chain) >= MAX_CATCH_UP:
                return self._refuse(target, f"more than {MAX_CATCH_UP} rounds past this head")
            try:
                commit = Commit.decode(self._fetch(cid))
            except BasinError as exc:
                return self._refuse(target, f"its history cannot be read: {exc}")
            if len(commit.parents) != 1:
                return self._refuse(target, f"{cid} has {len(commit.parents)} parents, not one")
            chain.append(commit)
            cid = commit.parents[0]
        for commit in reversed(chain):
            parent = self.head
            listed = self._listed(commit)
            if listed is None:
                return self._refuse(target, "a commit of its history does not list its updates")
            signers = len(self.repo.config.trusted)  # a round counts one update per signer
            if len(listed) > signers:  # so no round made here lists more: fetch none of them
                return self._refuse(
                    target,
                    f"a commit of its history lists {len(listed)} updates, more than "
                    f"the {signers} signers trusted here could send in one round",
                )
            blocks = self._blocks(listed).values()
            head = round_head(self.repo, parent, blocks, self.rule)
            if head != CID.for_block(commit.encode()):
                return self._refuse(target, self._why_not(parent, blocks))
            self._move(head, parent)
        self.not_adopted = None
        return True

    def _listed(self, commit: Commit) -> set[CID] | None:
        """The update CIDs a round's head commit names (`fates.round_fates`: its message, or
        the round record it links, fetched), or None where they cannot be read."""

        def read(cid: CID) -> RoundRecord:
            return RoundRecord.decode(self._fetch(cid))

        try:
            return {CID.parse(c) for c in fates.round_fates(commit, read)}
        except BasinError:
            return None

    def _refuse(self, target: CID, why: str) -> bool:
        self.not_adopted = f"head {target} not adopted: {why}"
        return False

    def _why_not(self, parent: CID, blocks: Iterable[bytes]) -> str:
        """Why the round after `parent` did not recompute to what others made of it."""
        return self._untrusted(parent, blocks) or (
            f"the round after {parent} does not recompute from the updates it lists (one no "
            "node serves, or another rule)"
        )

    def _untrusted(self, parent: CID, blocks: Iterable[bytes]) -> str | None:
        """The reason, if the round after `parent` took updates (`blocks`) of signers this
        replica does not trust; None if it took none."""
        keys = set()
        for data in blocks:
            try:
                author = Update.decode(data, chart=self.repo.config.chart).author
            except BasinError:
                continue
            if self.repo.config.trusted_key(author) is None:
                keys.add(format_key(author))
        if not keys:
            return None
        listed = ", ".join(sorted(keys))
        return f"the round after {parent} took updates of signers not trusted here: {listed}"

    def _blocks(self, cids: set[CID]) -> dict[CID, bytes]:
        out = {}
        for cid in sorted(cids, key=lambda c: c.buffer):
            if cid in self.heard:
                out[cid] = self.heard[cid]
                continue
            try:
                out[cid] = self._fetch(cid)
            except BasinError:
                continue  # no replica's node could serve it: left out, for everyone who can't
        return out

    def _move(self, new: CID, old: CID) -> None:
        if self.repo.current_branch() == branch_ref(self.branch):
            self.repo.move_head(new, old, "hive round")
        else:
            self.repo.set_ref(branch_ref(self.branch), new, old, "hive round")


def topic(genesis: CID) -> str:
    return TOPIC + str(genesis)


def ipfs_transport(node, genesis: CID, timeout: float = 10.0):
    """(publish, store, fetch) for a replica through an IPFS node: pubsub on the hive's topic
    (a message nobody listens to is dropped, as pubsub does: publish says False when the node
    knows it was), the node's blocks for updates and heads (fetched from its peers by bitswap,
    re-hashed against the CID)."""
    from ..remote import broadcast

    name = topic(genesis)

    def publish(message: bytes) -> bool:
        return broadcast(node, name, message)

    def store(data: bytes) -> None:
        node.block_put(data)  # updates and commits are DAG-CBOR blocks

    def fetch(cid: CID) -> bytes:
        return node.block_get(cid, timeout=timeout)

    return publish, store, fetch


@dataclass(frozen=True)
class Event:
    """What a running replica did: closed a round ("round": from `parent` to `head`, made of
    `taken` updates) or adopted a head other replicas made ("adopted": reconciled or caught
    up; `parent` is the head it had)."""

    kind: str
    parent: CID
    head: CID
    taken: int


def follow(
    repo: Repository,
    node,
    branch: str,
    rule: str,
    window: float,
    log: Callable[[str], None] = lambda line: None,
) -> Iterator[Event]:
    """Run a replica of `branch` over the IPFS `node` until the caller stops: listen on the
    hive's topic, close each round `window` seconds after its first update (or the first
    announcement of it) was heard, and say what happened. A subscription that fails is a
    RemoteError; one that ends is renewed. The trust list is re-read from the config file
    whenever `basin key add/remove` changed it (an unusable one is `log`ged, the list kept)."""
    head = repo.branch_commit(branch)
    if head is None:
        raise RefError(f"no branch named {branch!r}")
    genesis = hive_genesis(repo, head)
    transport = ipfs_transport(node, genesis)
    replica = Replica(repo, branch, *transport, identity=repo.identity(), rule=rule)
    inbox: queue.Queue[bytes | BasinError] = queue.Queue()

    def listen() -> None:
        try:
            while True:
                for data, _ in node.pubsub_subscribe(topic(genesis), SUBSCRIBE_SECONDS):
                    inbox.put(data)
        except BasinError as exc:
            inbox.put(exc)

    threading.Thread(target=listen, name=f"pubsub {topic(genesis)}", daemon=True).start()
    deadline: float | None = None
    while True:
        try:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            message = inbox.get(timeout=left)
        except queue.Empty:
            message = None
        try:
            if repo.refresh_trust():
                log(f"trusted signers re-read: {len(repo.config.trusted)}")
        except RepositoryError as exc:
            log(f"trusted signers kept as they were: {exc}")
        if message is None:
            parent = replica.head
            deadline = None
            try:
                head = replica.close()
            except BasinError as exc:  # a repository that cannot be written, say: the next try
                log(f"round after {parent} not closed: {exc}")
                continue
            yield Event("round", parent, head, _taken(repo, parent, head))
            continue
        if isinstance(message, BasinError):
            raise RemoteError(f"the hive's subscription through {node.addr} failed: {message}")
        before = replica.head
        try:
            why = replica.hear(message)
        except BasinError as exc:  # what a message led to failed: the replica goes on
            why = f"a message could not be handled: {exc}"
        if why:
            log(why)
        if replica.head != before:
            deadline = None  # what was heard for the old head no longer counts
            yield Event("adopted", before, replica.head, _taken(repo, before, replica.head))
        if deadline is None and (replica.counts(message) or replica.announced.get(replica.head)):
            deadline = time.monotonic() + window


def _taken(repo: Repository, parent: CID, head: CID) -> int:
    """How many updates the head commit of a round combined (its metrics; 0 for no change)."""
    return 0 if head == parent else int(repo.read_commit(head).metrics.get("taken", 0))


def gossip(
    repo: Repository, node, branch: str, samples: int = 1, encoding: str = DEFAULT_ENCODING
) -> tuple[CID, Update]:
    """Offer the change of HEAD since the hive's head (the tip of `branch`, where `basin hive
    replica` keeps it) to the replicas as a signed update: its block stored on the node, the
    update published on the hive's topic. HEAD must contain that head (else the change would
    undo the rounds since). Without a coordinator there is no sequence to keep: the sequence
    number is the time in milliseconds, and no compression residual is carried over."""
    from .. import history
    from ..porcelain import now_ms

    parent = repo.branch_commit(branch)
    if parent is None:
        raise RefError(f"no branch named {branch!r}")
    here = repo.head_commit()
    if not history.is_ancestor(history.commit_graph(repo), parent, here):
        raise RefError(
            f"HEAD does not contain {branch}'s head {parent}: merge it first (basin merge {branch})"
        )
    change = local_change(repo, parent)
    if change.empty:
        raise RefError(f"nothing to gossip: HEAD has {branch}'s basin (commit some work first)")
    # replicas key rounds by their parent, not by a round number
    compressor = Compressor(len(change.z), encoding)
    update = signed_update(
        repo, parent, compressor, change, round_=0, seq=now_ms(), samples=samples
    )
    genesis = hive_genesis(repo, parent)
    publish, store, _ = ipfs_transport(node, genesis)
    data = update.encode()
    store(data)
    if not publish(data):
        raise RemoteError(
            f"no replica listens on {topic(genesis)} through {node.addr}: the update was not heard"
        )
    return CID.for_block(data), update
