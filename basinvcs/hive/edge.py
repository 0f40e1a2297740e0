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
  as any fetch; written as read, a batch at a time: ingest.write_history), checks that the
  coordinator's key recorded at join signed it and that it contains the head synced last (else
  the transaction is undone: nothing is written), and sets
  `refs/remotes/hive/<branch>` to it. A branch untouched since the sync moves to the head; one
  left at the last submission moves once heads list every update sent since the sync as taken
  (a round of one still open: nothing changes; one refused: the work is merged, as unsubmitted
  work always is).

The coordinator being down, slow (each request has ANSWER_SECONDS in all) or refusing is one line
(RemoteError), and nothing local changes; what it says is printed with control characters
escaped (`printable`).
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import time
import urllib.parse
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..cid import CID
from ..codec.car import read_car_bytes
from ..config import write_json
from ..errors import BasinError, InputError, RemoteError, RepositoryError
from ..identity import format_key, parse_key
from ..ingest import write_history
from ..inputs import parse_json, read_file
from ..objects import Commit, Entanglement
from ..refnames import branch_ref, remote_ref
from ..repository import Repository
from . import fates
from .update import DEFAULT_ENCODING, MAX_LINKS, Compressor, Update, next_update

STATE_FILE = "hive.json"
REMOTE = "hive"
TIMEOUT = 30.0  # seconds the coordinator may keep one read or write on a request waiting
ANSWER_SECONDS = 60.0  # seconds for a whole request: its answer must be in by then
MAX_ANSWER = 4 << 20  # a coordinator's answer: a block or a small JSON document
JOIN_POLL = 0.2  # seconds between a waiting join's attempts
PAGE_TRIES, PAGE_PAUSE = 20, 0.05  # asking for a page of history again while the server is busy
PAGE_BACKOFF = 64  # blocks read one by one after a page could not be had, before asking again
PAGED_FROM = 32  # rounds behind from which sync reads pages (fewer: a few blocks, one by one)
MAX_UNSYNCED = 1000  # updates submitted between two syncs (each one's fate is kept until then)


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
    # the updates submitted since the sync, oldest first, each [CID, round it went into]: sync
    # learns the fate of all of them, not only the last (a refused earlier one is work to keep)
    updates: list[list] = field(default_factory=list)
    # of those, the ones whose answer was lost (AnswerLost): taken only if a head lists them
    unanswered: list[str] = field(default_factory=list)


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
        if isinstance(doc, dict) and "update" in doc:  # written before `updates`: one at most
            update, round_ = doc.pop("update"), doc.pop("round", None)
            doc["updates"] = [] if update is None else [[update, round_]]
        state = EdgeState(**doc)
        CID.parse(state.synced)
        parse_key(state.key)
        if not all(isinstance(u, list) and len(u) == 2 for u in state.updates):
            raise TypeError("updates that are not [CID, round] pairs")
        numbers = (state.seq, state.sent, *(r for _, r in state.updates))
        if not all(type(n) is int and n >= 0 for n in numbers) or not all(
            isinstance(v, float) for v in state.residual
        ):
            raise TypeError("bad field types")
        for cid, _ in state.updates:
            CID.parse(cid)
        if not set(state.unanswered) <= {cid for cid, _ in state.updates}:
            raise TypeError("unanswered updates that are not among the updates")
    except (TypeError, BasinError) as exc:
        raise RepositoryError(f"hive state {path} is unusable: {exc}") from None
    return state


def save_state(repo: Repository, state: EdgeState) -> None:
    write_json(_state_path(repo), asdict(state))


# -- talking to the coordinator


class Unreachable(RemoteError):
    """No answer at all from the coordinator's address (refused, timed out, no such host), as
    against an answer that refuses: only this is worth asking again (`join`'s `wait`)."""


class AnswerLost(Unreachable):
    """The request went out whole and no answer came back (the connection dropped, the answer
    timed out): the coordinator may have acted on it."""


def printable(text: object, limit: int = 300) -> str:
    """What a coordinator says, fit to print on one line of a terminal: control characters
    (escape sequences, carriage returns, newlines) shown escaped, and at most `limit` characters."""
    text = str(text)
    shown = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text[:limit])
    return shown + ("..." if len(text) > limit else "")


def _request(url: str, data: bytes | None = None) -> tuple[int, bytes]:
    """(status, body) of one request, the whole exchange within ANSWER_SECONDS (a coordinator
    that trickles its answer is cut off then, not only one that stops); redirects are not
    followed (a coordinator answers itself). A coordinator that cannot be reached, or whose
    answer is not HTTP, is Unreachable."""
    parts = urllib.parse.urlsplit(url)
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    headers = {"Content-Type": "application/octet-stream"} if data is not None else {}
    late = threading.Event()
    connection = kind(parts.hostname, parts.port, timeout=TIMEOUT)
    sockets: list[socket.socket] = []  # the connection's, kept: an answer that closes the
    # connection after it takes the socket from `connection` (http.client sets it to None)

    def cut() -> None:  # unblocks a read in progress: it fails, and `late` says why
        late.set()
        with contextlib.suppress(OSError, AttributeError):
            (sockets[0] if sockets else connection.sock).shutdown(socket.SHUT_RDWR)

    timer = threading.Timer(ANSWER_SECONDS, cut)
    timer.daemon = True
    timer.start()
    sent = False
    try:
        connection.request("POST" if data is not None else "GET", path, data, headers)
        sent = True
        sockets.append(connection.sock)
        answer = connection.getresponse()
        body = answer.read(MAX_ANSWER + 1)
        if late.is_set():
            raise TimeoutError("cut off")
        return answer.status, body
    except (OSError, http.client.HTTPException, ValueError) as exc:
        if late.is_set():
            reason = f"no whole answer within {ANSWER_SECONDS:g} s"
        else:
            reason = printable(getattr(exc, "reason", None) or str(exc) or type(exc).__name__)
        lost = AnswerLost if sent else Unreachable
        raise lost(f"cannot reach the hive coordinator at {url}: {reason}") from None
    finally:
        timer.cancel()
        connection.close()


def request_json(url: str, data: bytes | None = None) -> dict:
    """The coordinator's JSON answer to a GET (or a POST of `data`); a refusal, a status other
    than the coordinator's (200 for a GET, 202 for a POST), or an answer that is not a hive's is
    a RemoteError (shared with the training API's HttpTransport)."""
    expect = 200 if data is None else 202
    status, body = _request(url, data)
    try:
        doc = parse_json(body[:MAX_ANSWER], f"the answer of {url}")
    except BasinError:
        doc = None
    if not isinstance(doc, dict):
        raise RemoteError(f"{url} answered HTTP {status} with something that is not a hive's")
    if status >= 400:
        why = printable(doc.get("error"))
        raise RemoteError(f"the hive coordinator refused (HTTP {status}): {why}")
    if status != expect:
        raise RemoteError(f"{url} answered HTTP {status}, not {expect}: not a hive coordinator's")
    return doc


def block_source(url: str):
    """Blocks by CID from the coordinator at `url`, for a fetch (ingest, which re-hashes each)."""

    def get(cid: CID) -> bytes:
        status, body = _request(f"{url}/block/{cid}")
        if status != 200 or len(body) > MAX_ANSWER:
            raise RemoteError(f"the hive coordinator at {url} could not give block {cid}")
        cid.verify(body)
        return body

    return get


def history_source(url: str, have: CID | None = None):
    """Blocks by CID for a fetch (ingest), read a page of history at a time (GET /history/CID: a CAR
    of the commits below CID down to `have`, the commit held here, with their packets; every
    block re-hashed as the CAR is read and again by the fetch): a long history in a few
    requests instead of two per commit. A page the server is too busy for (503) is asked for
    again every PAGE_PAUSE seconds, PAGE_TRIES times, and if it still is, the next PAGE_BACKOFF
    blocks come one by one. A block no page holds comes from GET /block/CID (and the next block
    asks for a page again); so does everything from a coordinator that answers no pages, or a
    page that does not start at what it was asked for."""
    single = block_source(url)
    page: dict[CID, bytes] = {}
    paged, skip = True, 0

    def get(cid: CID) -> bytes:
        nonlocal page, paged, skip
        if cid not in page and paged and skip:
            skip -= 1
        elif cid not in page and paged:
            query = f"?have={have}" if have is not None else ""
            for _ in range(PAGE_TRIES):  # 503: pages are being read for others, or resting
                status, body = _request(f"{url}/history/{cid}{query}")
                if status != 503:
                    break
                time.sleep(PAGE_PAUSE)
            if status in (404, 405):  # a coordinator without pages: block by block from here
                paged = False
            elif status == 503:  # busy all along: the next blocks one by one
                skip = PAGE_BACKOFF
            elif status == 200:  # else (400: a packet's CID, after a block came alone) ask later
                if len(body) > MAX_ANSWER:
                    raise RemoteError(f"the hive coordinator at {url} sent a page over 4 MiB")
                try:
                    page = dict(read_car_bytes(body)[1])
                except BasinError as exc:
                    raise RemoteError(
                        f"the hive coordinator at {url} sent a bad page of history: "
                        f"{printable(exc)}"
                    ) from None
                paged = cid in page  # a page starts at what was asked for; if not, no more pages
        data = page.pop(cid, None)
        return data if data is not None else single(cid)

    return get


# -- the edge's operations


def coordinator_url(url: str) -> str:
    """`url` checked as a coordinator's address (http or https, a host, nothing after the
    path, no user or password, no spaces or control characters), without a trailing slash."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number below 65536
    except ValueError as exc:
        raise InputError(f"{url!r} is not a coordinator's URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise InputError(f"{url!r} is not a coordinator's URL (http://HOST:PORT)")
    if parts.username is not None or parts.password is not None:
        raise InputError(f"{parts.hostname!r}: a coordinator's URL carries no user or password")
    if not all(c.isprintable() and not c.isspace() for c in url):
        raise InputError(f"{url!r} is not a coordinator's URL: it holds spaces or control codes")
    return url.rstrip("/")


def join(
    repo: Repository, url: str, force: bool = False, wait: float = 0.0, depth: int | None = None
) -> tuple[EdgeState, bool]:
    """Record the coordinator at `url`, trust its key, and start from its head: the state and
    whether the key was trusted here (False: it was already).

    The key is the one the coordinator names, and its head must be signed by it; from here on
    `sync` takes only heads signed by that key that contain the head synced before. A `force`d
    join to another key stops trusting the key the last join trusted (as `hive`).

    Refused, with nothing changed but blocks fetched, where the repository has joined a hive
    already, or where the branch holds commits the hive's head does not contain (anything but
    a fresh repository's first commit) that joining would move it off; `force` joins anyway,
    keeping the sequence number when the coordinator's key is the same, so that the updates
    sent next are not refused as replays. `wait`: seconds to keep asking a coordinator that does
    not answer yet (one starting beside its edges, as a script or a compose file starts them);
    an answer that refuses is final at once. `depth`: only the head and the commits fewer than
    `depth` rounds below it (a shallow history: joining takes the same time however old the
    hive is; `sync` then takes the rounds from there on, and push and export are refused)."""
    if depth is not None and depth < 1:
        raise BasinError(f"depth {depth}: must be at least 1")
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
            doc = request_json(f"{url}/head")
            break
        except Unreachable:
            if time.monotonic() >= deadline:
                raise
            time.sleep(min(JOIN_POLL, max(0.0, deadline - time.monotonic())))
    key, branch, cid = _head_of(url, doc)
    if doc.get("chart") != str(repo.config.chart):
        raise RemoteError(
            f"the hive's chart is {printable(doc.get('chart'))}, this repository's is "
            f"{repo.config.chart}"
        )

    def signed_by_key(commit_cid: CID, commit: Commit) -> None:
        if commit_cid == cid and commit.author != key:
            raise RemoteError(
                f"{url} names key {format_key(key)}, but its head {cid} is signed by "
                f"{format_key(commit.author)}: not joined"
            )

    if repo.is_commit(cid):
        signed_by_key(cid, repo.read_commit(cid))
    # every block re-hashed, every commit verified, written a batch at a time: blocks only, the
    # refs move below
    paged = depth is None or depth >= PAGED_FROM
    source = history_source(url) if paged else block_source(url)
    # without a depth, the whole history: below commits an earlier --depth left shallow too
    write_history(repo, [cid], source, signed_by_key, depth=depth, deepen=depth is None)
    tip = repo.branch_commit(branch)
    if tip is not None and not force and not _replaceable(repo, tip, cid):
        raise RepositoryError(
            f"branch {branch} holds commits the hive's head does not contain, and joining moves "
            f"it to that head: keep them on another branch (basin branch NAME {branch}), then "
            "join --force"
        )
    from ..porcelain import trust, untrust

    if previous is not None and previous.key != format_key(key):
        entry = repo.config.trusted_key(parse_key(previous.key))
        if entry is not None and entry.name == REMOTE:  # the key the last join trusted
            untrust(repo, previous.key)
    trusted = repo.config.trusted_key(key) is None
    if trusted:
        trust(repo, format_key(key), REMOTE)
    state = EdgeState(url, format_key(key), branch, str(cid))
    if previous is not None and previous.key == state.key:
        state.seq, state.sent = previous.seq, previous.sent
    _set_remote(repo, state, cid)
    _move_branch(repo, state.branch, cid, "hive join")
    save_state(repo, state)
    return state, trusted


def _head_of(url: str, doc: dict) -> tuple[bytes, str, CID]:
    """The coordinator's key, branch and head from its GET /head answer, checked."""
    try:
        key = parse_key(str(doc["key"]))
        branch = str(doc["branch"])
        branch_ref(branch)
        return key, branch, CID.parse(str(doc["head"]))
    except (KeyError, BasinError) as exc:
        raise RemoteError(f"{url} is not a hive coordinator: {printable(exc)}") from None


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
    if len(state.updates) >= MAX_UNSYNCED:
        raise RepositoryError(
            f"{len(state.updates)} updates sent since the last sync: basin hive sync first"
        )
    compressor = Compressor(len(change.z), encoding)
    if state.residual:
        compressor.residual = list(state.residual)
    doc = request_json(f"{state.url}/head")
    round_ = _round_of(state.url, doc)
    fresh = _freshness_of(doc)
    seq = max(state.seq + 1, now_ms())
    update = signed_update(
        repo, synced, compressor, change, round_=round_, seq=seq, samples=samples
    )
    data = update.encode()
    cid = CID.for_block(data)

    def record(into: int) -> None:  # sent: sync learns its fate from the heads
        state.seq, state.sent = seq, state.sent + 1
        state.residual = [float(v) for v in compressor.residual]
        state.submitted = str(repo.head_commit())
        state.updates.append([str(cid), into])
        save_state(repo, state)

    try:
        answer = request_json(f"{state.url}/update", data)
    except AnswerLost as exc:
        # it went out and may have been taken: sending its change again would count it twice.
        # Recorded as sent into the round it names; `sync` waits until a signed head names it
        # or shows round R + K − 1 closed (its parent must be a head of the last K rounds:
        # however long it waits in the coordinator's intake, it is taken by then or never;
        # `fates.window_closed`), then merges the work back
        state.unanswered.append(str(cid))
        record(round_)
        raise AnswerLost(
            f"{exc}; update {cid} went out and no answer came back: recorded as sent, and "
            "basin hive sync learns from the signed heads whether it was taken, by round "
            f"{round_ + fresh - 1} at the latest (if not, the work is kept and merged back)"
        ) from None
    except Unreachable as exc:
        raise Unreachable(f"{exc}; nothing sent, nothing recorded") from None
    if answer.get("cid") != str(cid):
        raise RemoteError(
            f"{state.url} answered update {cid} with {printable(answer)}: not acknowledged, "
            "nothing recorded as sent"
        )
    record(_round_of(state.url, answer))
    return {
        "cid": str(cid),
        "round": state.updates[-1][1],
        "bytes": len(data),
        "coordinates": update.change.k,
    }


def _freshness_of(doc: dict) -> int:
    """K, from a coordinator's `/head` (older coordinators do not say: the default). Unsigned:
    only for telling the user when to expect an answer, never for deciding one."""
    fresh = doc.get("freshness")
    return fresh if type(fresh) is int and 1 <= fresh <= 1 << 20 else fates.DEFAULT_FRESHNESS


def _round_of(url: str, doc: dict) -> int:
    round_ = doc.get("round")
    if type(round_) is not int or not 0 <= round_ < 1 << 63:
        raise RemoteError(f"{url} gives round {printable(round_)}: not a hive coordinator's")
    return round_


@dataclass(frozen=True)
class SyncResult:
    """What `sync` did: `kind` is "up-to-date", "fast-forward", "reset" (the local change was
    submitted and the head took it), "merge" (local work kept, merged with the head), "refused"
    (the submitted update was refused: the local work is kept, merged with the head) or
    "waiting" (the submitted update's round has not closed: nothing changed); `note` says more."""

    kind: str
    head: CID
    note: str | None = None


def sync(repo: Repository) -> SyncResult:
    """Fetch the coordinator's head, check it (signed by the coordinator's key recorded at
    join, containing the head synced last: an older head, or another history, is refused with
    nothing changed) and bring the local branch to it. Local work is never dropped: a branch
    left at the last submission is reset to the head only once a head lists that update as
    taken, with every update sent before it since the sync; while one's round is open nothing
    changes, and if one was refused the work (all of it: the branch holds every change sent) is
    merged."""
    from .. import porcelain

    state = load_state(repo)
    doc = request_json(f"{state.url}/head")
    key, _, head = _head_of(state.url, doc)
    if format_key(key) != state.key:
        raise RemoteError(
            f"the coordinator at {state.url} now names key {format_key(key)}, not {state.key} "
            "(the key joined): refused; basin hive join --force follows another coordinator"
        )
    synced = CID.parse(state.synced)
    # rounds closed since the head synced: after one round (as every edge syncs, all at once)
    # a few blocks, one by one; pages for an edge that was away (either way each is verified)
    behind = _round_of(state.url, doc) - 1 - repo.read_commit(synced).metrics.get("round", -1)
    source = history_source(state.url, synced) if behind >= PAGED_FROM else block_source(state.url)
    with repo.transaction():  # written as read (re-hashed, verified), undone if refused
        write_history(repo, [head], source)
        _check_head(repo, state, head, synced)
    _set_remote(repo, state, head)
    local = repo.branch_commit(state.branch)
    note = None
    if local == head:
        kind = "up-to-date"
    elif str(local) == state.submitted:
        fates = _fates(repo, state, synced, head)
        for cid, round_ in state.updates:
            if fates[cid] is None and cid in state.unanswered:
                note = f"update {cid} (its answer was lost) could still be taken after round "
                note += f"{round_}: no signed head names it or shows its window over yet"
                return SyncResult("waiting", head, note)
            if fates[cid] is None:  # no head lists it, and its round is open
                note = f"update {cid} is in round {round_}, not closed yet"
                return SyncResult("waiting", head, note)
        refused = [f"update {cid} {fate}" for cid, fate in fates.items() if fate != "taken"]
        if not refused:
            _move_branch(repo, state.branch, head, "hive sync")
            kind = "reset"
        else:  # the branch holds every submitted change: merged, the refused ones are kept
            porcelain.merge(repo, remote_ref(REMOTE, state.branch), into=state.branch)
            kind, note = "refused", "; ".join(refused) + "; the work is kept, merged"
            state.residual = []  # the whole change is in the branch again, its unsent part too
    elif str(local) == state.synced:
        _move_branch(repo, state.branch, head, "hive sync")
        kind = "fast-forward"
    else:
        porcelain.merge(repo, remote_ref(REMOTE, state.branch), into=state.branch)
        kind = "merge"
    state.synced = str(head)
    state.submitted, state.updates, state.unanswered = None, [], []
    save_state(repo, state)
    return SyncResult(kind, head, note)


def _check_head(repo: Repository, state: EdgeState, head: CID, synced: CID) -> None:
    """`head` (its history just written, in a transaction this undoes) contains `synced`, and
    the rounds between are a chain of commits the coordinator's key signed, one parent each
    (what a coordinator makes: each round's head on the last); else RemoteError. The walks
    from `head` visit the rounds since `synced`, not the repository's whole history (as a
    graph of it would)."""
    from .. import history

    author = format_key(repo.read_commit(head).author)
    if author != state.key:
        raise RemoteError(
            f"the hive's head {head} is signed by {author}, not by the coordinator's key "
            f"{state.key}: refused"
        )
    if not history.reaches(repo, head, synced):
        raise RemoteError(
            f"the hive's head {head} does not contain the head synced last, {synced}: an older "
            "head or another history, refused (basin hive join --force follows it)"
        )
    cid = head
    while cid != synced:
        commit = repo.read_commit(cid)
        author = format_key(commit.author)
        if author != state.key:
            raise RemoteError(
                f"the hive's head {head} holds {cid} since the head synced, signed by "
                f"{author}, not by the coordinator's key {state.key}: refused"
            )
        if len(commit.parents) != 1:
            raise RemoteError(
                f"the hive's head {head} holds since the head synced {cid}, a commit with "
                f"{len(commit.parents)} parents, not a round: refused"
            )
        cid = commit.parents[0]


def _fates(repo: Repository, state: EdgeState, synced: CID, head: CID) -> dict[str, str | None]:
    """What became of each update submitted since the sync, by the head commits from `synced`
    to `head`, each signed by the coordinator's key (`_check_head`; `fates.round_fates`: each
    lists every update its round decided on): per CID "taken", "refused: REASON", or None
    where no head lists it and its round is open (once closed, "refused: ...": it never
    arrived, or came too late; for one whose answer was lost, once the newest head shows its
    window over: `fates.window_closed`)."""
    found: dict[str, str] = {}
    wanted = {cid for cid, _ in state.updates}
    cid = head
    while cid != synced and len(found) < len(wanted):
        commit = repo.read_commit(cid)
        for update, fate in fates.round_fates(commit, repo.read_record).items():
            if update in wanted and update not in found:
                why = fate.removeprefix("refused: ")
                found[update] = fate if fate == fates.TAKEN else f"refused: {printable(why)}"
        if not commit.parents:
            break
        cid = commit.parents[0]
    newest = repo.read_commit(head)  # signed by the coordinator's key (_check_head)
    closed = newest.metrics.get("round", -1.0)  # the round that made it
    unlisted = "refused: no round since lists it"
    lost = f"{unlisted} (its answer was lost: it did not arrive)"

    def unnamed(cid: str, round_: int) -> str | None:
        if cid in state.unanswered:
            return lost if fates.window_closed(newest, round_) else None
        return unlisted if round_ <= closed else None

    return {cid: found.get(cid) or unnamed(cid, round_) for cid, round_ in state.updates}


@dataclass(frozen=True)
class LocalStatus:
    """Where this edge stands, from its own state alone (no request)."""

    url: str
    branch: str
    synced: CID  # the coordinator's head last synced
    tip: CID | None  # the branch's tip now
    submitted: bool  # the tip is what was last submitted
    sent: int  # updates sent so far
    unsynced: int = 0  # updates sent since the last sync

    @property
    def work(self) -> str:
        """What `sync` would do with the branch: the words `basin hive status` prints."""
        if self.tip == self.synced:
            return "nothing new since the last sync"
        if self.submitted and self.unsynced > 1:
            return f"submitted ({self.unsynced} updates since the last sync), waiting for rounds"
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
        unsynced=len(state.updates),
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


def _set_remote(repo: Repository, state: EdgeState, head: CID) -> None:
    ref = remote_ref(REMOTE, state.branch)
    old = repo.ref(ref)
    if not old or old.target != str(head):
        repo.set_ref(ref, head, CID.parse(old.target) if old else None, f"hive: fetch {head}")


def _move_branch(repo: Repository, branch: str, target: CID, message: str) -> None:
    current = repo.branch_commit(branch)
    if current == target:
        return
    if repo.current_branch() == branch_ref(branch):
        repo.move_head(target, current, message)
    else:
        repo.set_ref(branch_ref(branch), target, current, message)
