"""An edge instance of a hive: join a coordinator, submit the local change as a signed update,
and sync to the head the coordinator signed.

State lives in `.basin/hive.json` (strict JSON, rewritten whole through a rename): the
coordinator's URL and key, the branch, the head last synced, the commit last submitted, the
signer's last sequence number, the updates sent, and the compressor's residual (error feedback:
what top-k quantisation left out of earlier updates goes into the next one).

- `join(repo, url)`: asks the coordinator for its head and key, fetches the head's history,
  trusts that key (as `hive`) and moves the local branch to the head; a repository that has
  joined already, or whose branch holds work the head lacks, is refused unless forced.
- `submit(repo)`: the change z(HEAD) − z(synced head), or − z(the commit last submitted) when
  one was submitted since the sync, compressed with error feedback, signed as an update whose
  parent is the synced head; the sequence number grows with every submission
  (the time in milliseconds, or one more than the last).
- `local_status(repo)`, `coordinator_status(url)`: where the edge and the coordinator stand
  (`basin hive status`).
- `sync(repo)`: fetches the coordinator's head (every block re-hashed and every commit verified,
  as any fetch: ingest.plan_fetch) into `refs/remotes/hive/<branch>`. If nothing was done locally
  since the last sync or submission, the branch moves to the head (the head already holds what
  was submitted, aggregated); otherwise the head is merged into the local work, which is kept.

The coordinator being down or refusing is one line (RemoteError), and nothing local changes.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..cid import CID
from ..config import write_json
from ..errors import BasinError, InputError, RemoteError, RepositoryError
from ..identity import format_key, parse_key
from ..ingest import apply_plan, plan_fetch
from ..inputs import parse_json, read_file
from ..objects import Entanglement
from ..refnames import branch_ref, remote_ref
from ..repository import Repository
from .update import DEFAULT_ENCODING, MAX_LINKS, Compressor, Update, next_update

STATE_FILE = "hive.json"
REMOTE = "hive"
TIMEOUT = 30.0  # seconds for one request to the coordinator
MAX_ANSWER = 4 << 20  # a coordinator's answer: a block or a small JSON document
JOIN_POLL = 0.2  # seconds between a waiting join's attempts


@dataclass
class EdgeState:
    url: str
    key: str  # the coordinator's public key, z6Mk...
    branch: str
    synced: str  # head commit last synced (CID text)
    submitted: str | None = None  # local HEAD when it was last submitted
    seq: int = 0  # the last sequence number sent
    residual: list[float] = field(default_factory=list)
    sent: int = 0  # updates sent


def _state_path(repo: Repository) -> Path:
    if repo.basin_dir is None:
        raise RepositoryError("an in-memory repository cannot join a hive")
    return Path(repo.basin_dir) / STATE_FILE


def load_state(repo: Repository) -> EdgeState:
    path = _state_path(repo)
    if not path.exists():
        raise RepositoryError("this repository has joined no hive: basin hive join URL")
    doc = parse_json(read_file(path, 1 << 20, "hive state"), str(path))
    try:
        state = EdgeState(**doc)
        CID.parse(state.synced)
        parse_key(state.key)
        numbers = (state.seq, state.sent)
        if not all(type(n) is int and n >= 0 for n in numbers) or not all(
            isinstance(v, float) for v in state.residual
        ):
            raise TypeError("bad field types")
    except (TypeError, BasinError) as exc:
        raise RepositoryError(f"hive state {path} is unusable: {exc}") from None
    return state


def save_state(repo: Repository, state: EdgeState) -> None:
    write_json(_state_path(repo), asdict(state))


# -- talking to the coordinator


class Unreachable(RemoteError):
    """No answer at all from the coordinator's address (refused, timed out, no such host), as
    against an answer that refuses: only this is worth asking again (`join`'s `wait`)."""


def _request(url: str, data: bytes | None = None) -> tuple[int, bytes]:
    """(status, body) of one request; a coordinator that cannot be reached is Unreachable."""
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    if data is not None:
        request.add_header("Content-Type", "application/octet-stream")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:
            return answer.status, answer.read(MAX_ANSWER + 1)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(MAX_ANSWER + 1)
    except (urllib.error.URLError, OSError, ValueError) as exc:  # ValueError: a malformed URL
        reason = getattr(exc, "reason", exc)
        raise Unreachable(f"cannot reach the hive coordinator at {url}: {reason}") from None


def request_json(url: str, data: bytes | None = None) -> dict:
    """The coordinator's JSON answer to a GET (or a POST of `data`); a refusal or an answer that
    is not a hive's is a RemoteError (shared with the training API's HttpTransport)."""
    status, body = _request(url, data)
    try:
        doc = parse_json(body[:MAX_ANSWER], f"the answer of {url}")
    except BasinError:
        doc = None
    if not isinstance(doc, dict):
        raise RemoteError(f"{url} answered HTTP {status} with something that is not a hive's")
    if status >= 400:
        raise RemoteError(f"the hive coordinator refused (HTTP {status}): {doc.get('error')}")
    return doc


def block_source(url: str):
    """Blocks by CID from the coordinator at `url`, for plan_fetch (which re-hashes each)."""

    def get(cid: CID) -> bytes:
        status, body = _request(f"{url}/block/{cid}")
        if status != 200 or len(body) > MAX_ANSWER:
            raise RemoteError(f"the hive coordinator at {url} could not give block {cid}")
        cid.verify(body)
        return body

    return get


# -- the edge's operations


def coordinator_url(url: str) -> str:
    """`url` checked as a coordinator's address (http or https, a host, nothing after the
    path), without a trailing slash."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number below 65536
    except ValueError as exc:
        raise InputError(f"{url!r} is not a coordinator's URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise InputError(f"{url!r} is not a coordinator's URL (http://HOST:PORT)")
    return url.rstrip("/")


def join(repo: Repository, url: str, force: bool = False, wait: float = 0.0) -> EdgeState:
    """Record the coordinator at `url`, trust its key, and start from its head.

    Refused, with nothing changed but blocks fetched, where the repository has joined a hive
    already, or where the branch holds commits the hive's head does not contain (anything but
    a fresh repository's first commit) that joining would move it off; `force` joins anyway,
    keeping the sequence number when the coordinator's key is the same, so that the updates
    sent next are not refused as replays. `wait`: seconds to keep asking a coordinator that does
    not answer yet (one starting beside its edges, as a script or a compose file starts them);
    an answer that refuses is final at once."""
    url = coordinator_url(url)
    previous = load_state(repo) if _state_path(repo).exists() else None
    if previous is not None and not force:
        raise RepositoryError(
            f"this repository has joined the hive at {previous.url} already: basin hive sync "
            "follows it (join --force joins again)"
        )
    deadline = time.monotonic() + wait
    while True:
        try:
            head = request_json(f"{url}/head")
            break
        except Unreachable:
            if time.monotonic() >= deadline:
                raise
            time.sleep(min(JOIN_POLL, max(0.0, deadline - time.monotonic())))
    try:
        key = parse_key(str(head["key"]))
        branch = str(head["branch"])
        branch_ref(branch)
        cid = CID.parse(str(head["head"]))
    except (KeyError, BasinError) as exc:
        raise RemoteError(f"{url} is not a hive coordinator: {exc}") from None
    if head.get("chart") != str(repo.config.chart):
        raise RemoteError(
            f"the hive's chart is {head.get('chart')}, this repository's is {repo.config.chart}"
        )
    apply_plan(repo, plan_fetch(repo, [cid], block_source(url)), [])  # blocks only, verified
    tip = repo.branch_commit(branch)
    if tip is not None and not force and not _replaceable(repo, tip, cid):
        raise RepositoryError(
            f"branch {branch} holds commits the hive's head does not contain, and joining moves "
            f"it to that head: keep them on another branch (basin branch NAME {branch}), then "
            "join --force"
        )
    if repo.config.trusted_key(key) is None:
        from ..porcelain import trust

        trust(repo, format_key(key), REMOTE)
    state = EdgeState(url, format_key(key), branch, str(cid))
    if previous is not None and previous.key == state.key:
        state.seq, state.sent = previous.seq, previous.sent
    _fetch(repo, state, cid)
    _move_branch(repo, state.branch, cid, "hive join")
    save_state(repo, state)
    return state


def _replaceable(repo: Repository, tip: CID, head: CID) -> bool:
    """Whether moving a branch from `tip` to the hive's `head` loses nothing: `tip` is in
    `head`'s history, or is a fresh repository's first commit."""
    from .. import history

    if not repo.read_commit(tip).parents:
        return True
    return history.is_ancestor(history.commit_graph(repo), tip, head)


@dataclass(frozen=True)
class LocalChange:
    """What HEAD changed since a hive head: everything an update sends, read from the two
    packets once."""

    z: list[float]  # z(HEAD) − z(parent)
    beta: tuple[float, ...] | None  # β(HEAD) − β(parent); None when unchanged
    links: tuple[Entanglement, ...] | None  # links HEAD holds at another strength; None if none

    @property
    def empty(self) -> bool:
        return not any(self.z) and self.beta is None and self.links is None


def local_change(repo: Repository, parent: CID) -> LocalChange:
    """HEAD's change since `parent`: z, β (hive/adjust.py applies it), and HEAD's concept links
    that `parent` lacks or holds at another strength (the MAX_LINKS strongest)."""
    base = repo.read_basin(repo.read_commit(parent).basin)
    here = repo.read_basin(repo.read_commit(repo.head_commit()).basin)
    beta = None
    if here.beta != base.beta:
        if len(here.beta) != len(base.beta):
            raise BasinError(
                f"β has {len(here.beta)} coefficients here and {len(base.beta)} in the hive's "
                "head: an update changes their values, not their number"
            )
        beta = tuple(h - b for h, b in zip(here.beta, base.beta, strict=True))
    theirs = {(e.a, e.b): e.strength for e in base.entanglements}
    changed = [e for e in here.entanglements if theirs.get((e.a, e.b)) != e.strength]
    changed = sorted(changed, key=lambda e: (-abs(e.strength), e.a, e.b))[:MAX_LINKS]
    links = tuple(sorted(changed, key=lambda e: (e.a, e.b)))
    return LocalChange(
        z=[a - b for a, b in zip(here.z, base.z, strict=True)],
        beta=beta if beta and any(beta) else None,
        links=links or None,
    )


def signed_update(
    repo: Repository,
    parent: CID,
    compressor: Compressor,
    change: LocalChange,
    *,
    round_: int,
    seq: int,
    samples: int,
) -> Update:
    """An update of this repository's chart from `parent` sending the compressor's next part of
    `change.z` (as many coordinates as fit: update.fitting_k) with its β and link adjustments,
    signed with the user's key."""
    ident = repo.identity()
    return next_update(
        compressor,
        change.z,
        chart=repo.config.chart,
        parent=parent,
        round=round_,
        seq=seq,
        samples=samples,
        author=ident.public_key,
        beta=change.beta,
        links=change.links,
    ).signed(ident.sign)


def submit(repo: Repository, samples: int = 1, encoding: str = DEFAULT_ENCODING) -> dict:
    """Send the change since the synced head (or since the last submission, if one was made
    after the sync) as the next signed update.

    Its sequence number is the time in milliseconds, or one more than the last sent where that
    is higher: it grows across repositories that share one identity and across a lost hive
    state, where a count kept here would start again below what the coordinator has seen and
    every update would be refused as a replay."""
    from ..porcelain import now_ms

    state = load_state(repo)
    synced = CID.parse(state.synced)
    # since what the hive was last told: an update sent since the sync holds the change up to it
    change = local_change(repo, CID.parse(state.submitted) if state.submitted else synced)
    if change.empty and not any(state.residual):
        raise RepositoryError(
            "nothing to submit: HEAD's basin is as last synced or submitted and no earlier "
            "change is left to send (commit some work first)"
        )
    compressor = Compressor(len(change.z), encoding)
    if state.residual:
        compressor.residual = list(state.residual)
    round_ = request_json(f"{state.url}/head").get("round")
    if type(round_) is not int or round_ < 0:
        raise RemoteError(f"{state.url}/head gives round {round_!r}: not a hive coordinator's")
    seq = max(state.seq + 1, now_ms())
    update = signed_update(
        repo, synced, compressor, change, round_=round_, seq=seq, samples=samples
    )
    data = update.encode()
    answer = request_json(f"{state.url}/update", data)
    state.seq, state.sent = seq, state.sent + 1
    state.residual = [float(v) for v in compressor.residual]
    state.submitted = str(repo.head_commit())
    save_state(repo, state)
    return {**answer, "bytes": len(data), "coordinates": update.change.k}


def sync(repo: Repository) -> tuple[str, CID]:
    """Fetch the coordinator's head and bring the local branch to it ("fast-forward", "reset"
    when the local change was submitted already, "merge" when there is unsubmitted work)."""
    from .. import porcelain

    state = load_state(repo)
    head = CID.parse(str(request_json(f"{state.url}/head")["head"]))
    _fetch(repo, state, head)
    local = repo.branch_commit(state.branch)
    if local == head:
        kind = "up-to-date"
    elif str(local) in (state.synced, state.submitted):
        _move_branch(repo, state.branch, head, "hive sync")
        kind = "reset" if str(local) == state.submitted else "fast-forward"
    else:
        porcelain.merge(repo, remote_ref(REMOTE, state.branch), into=state.branch)
        kind = "merge"
    state.synced = str(head)
    state.submitted = None
    save_state(repo, state)
    return kind, head


@dataclass(frozen=True)
class LocalStatus:
    """Where this edge stands, from its own state alone (no request)."""

    url: str
    branch: str
    synced: CID  # the coordinator's head last synced
    tip: CID | None  # the branch's tip now
    submitted: bool  # the tip is what was last submitted
    sent: int  # updates sent so far

    @property
    def work(self) -> str:
        """What `sync` would do with the branch: the words `basin hive status` prints."""
        if self.tip == self.synced:
            return "nothing new since the last sync"
        if self.submitted:
            return "submitted, waiting for the round to close"
        return "unsubmitted work (basin hive submit sends it; sync would merge it)"


@dataclass(frozen=True)
class CoordinatorStatus:
    """The coordinator's GET /status, checked: what a server says about itself is only shown,
    but a malformed answer is one RemoteError, not a crash."""

    round: int
    head: CID
    pending: int
    taken: int
    refused: int
    quarantined: int = 0  # signers; a coordinator from before quarantine does not say


def local_status(repo: Repository) -> LocalStatus:
    state = load_state(repo)
    tip = repo.branch_commit(state.branch)
    return LocalStatus(
        url=state.url,
        branch=state.branch,
        synced=CID.parse(state.synced),
        tip=tip,
        submitted=tip is not None and str(tip) == state.submitted,
        sent=state.sent,
    )


def coordinator_status(url: str) -> CoordinatorStatus:
    doc = request_json(f"{url}/status")
    try:
        counts = {k: doc[k] for k in ("round", "pending", "taken", "refused")}
        if "quarantined" in doc:
            counts["quarantined"] = doc["quarantined"]
        if not all(type(v) is int and v >= 0 for v in counts.values()):
            raise TypeError("counts that are not whole numbers")
        return CoordinatorStatus(head=CID.parse(str(doc["head"])), **counts)
    except (KeyError, TypeError, BasinError) as exc:
        raise RemoteError(f"{url}/status is not a hive coordinator's status: {exc}") from None


def _fetch(repo: Repository, state: EdgeState, head: CID) -> None:
    plan = plan_fetch(repo, [head], block_source(state.url))
    ref = remote_ref(REMOTE, state.branch)
    old = repo.ref(ref)
    apply_plan(
        repo,
        plan,
        [(ref, head, f"hive: fetch {head}")] if not old or old.target != str(head) else [],
    )


def _move_branch(repo: Repository, branch: str, target: CID, message: str) -> None:
    current = repo.branch_commit(branch)
    if current == target:
        return
    if repo.current_branch() == branch_ref(branch):
        repo.move_head(target, current, message)
    else:
        repo.set_ref(branch_ref(branch), target, current, message)
