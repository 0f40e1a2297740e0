"""Edge training from any training loop: every H local steps, send the change of z as a signed
update and restart from the head the coordinator signed (DiLoCo over the hive's protocol).

    hive = HiveTrainer(model, HttpTransport("http://coordinator:8765"), identity, every=1)
    opt = torch.optim.Adam([model.z], lr=0.1)
    for batch in batches:
        loss = loss_fn(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        hive.step()      # every H-th call (here every call): send, wait for the round, sync z
    hive.finish()        # the steps left since the last sync, as a last (shorter) round

`model` is a `BasinModel` (basinvcs.model.train): z moves, and β if the model trains it (its change
goes out with z's; the round moves β only as most of its updates say: hive/adjust.py). At every
H-th `step()` the trainer

1. takes the change of z since the head it last synced to (`z − z_sync`), adds what error feedback
   kept from earlier updates and encodes it (`update.Compressor`: top-k, 8 or 4 bits; what is left
   out stays in the residual, on this instance only);
2. signs an `Update` (parent = the head synced to, round = the round the coordinator has open,
   seq = the signer's next sequence number, samples = local steps × `samples_per_step`) and hands
   its bytes to a transport;
3. waits until the coordinator closes that round, reads the new head's basin, and sets z (and β)
   to it.
   The optimiser is not touched: its state (Adam's moments) stays local, as DiLoCo's inner state.

Before sending, the head is read: if it moved since the last sync without this instance (a round
closed while it was away), the local change is carried onto the new head first
(z ← z_head + (z − z_sync)), so the parent is never stale and no local work is dropped.

Transports: `LocalTransport` talks to a `Coordinator` object in this process (the real signed bytes
through `Coordinator.submit`, the head read back from its repository; it also plays the server's
round timer while it waits), `HttpTransport` to `basin hive serve` through edge.py's request
helpers (the head commit's signature checked against the coordinator's key, every block re-hashed).

Failures are `HiveError` (a `RemoteError`), one line, and lose nothing local:

- coordinator down or update refused: z, the synced head and the residual are as before the
  attempt; training can go on and the next H-th `step()` (or `finish()`) sends the whole change
  since the last sync (the sequence number still advances: a number used once is never reused);
- round not closed within `timeout`: the update was taken in; training can go on, every later
  `step()` checks the head (without waiting) and syncs when the round closes, carrying the steps
  made meanwhile onto the new head (z ← z_head + (z − z at sending)).

An update whose answer was lost (it went out whole, no answer came back) is not an error: it may
have been taken, so its change is not simply sent again (that would count it twice). It waits like
any other; `sync` sends its bytes again first (the coordinator counts one sequence number once) and
then goes by the signed heads alone: named (taken or refused) as any update, or, once the last round
that could take it (K − 1 after the one it was sent into) closed without naming it, never arrived:
its change is kept and goes out with the next update (`Synced.kept`).

The signer's sequence number must grow across restarts, or the coordinator refuses the update as
a replay (409): by default each is the time in milliseconds (or one more than the last, if
higher), which grows across restarts and processes sharing an identity; `seq=N` counts up from N
instead (reproducible bytes, for experiments), and then a restart must pass the last one used
(`trainer.seq`).
An update refused at the round's close (an outlier) is not sent again; `Synced.taken` says which.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from typing import Protocol

import torch

from ..cid import CID
from ..errors import BasinError, RemoteError, SchemaError
from ..identity import Identity, format_key, parse_key
from ..objects import Basin, Commit, RoundRecord
from ..porcelain import now_ms
from ..repository import Repository
from . import edge, fates
from .update import DEFAULT_ENCODING, Compressor, next_update

# H, local steps between syncs: 1 kept the most of joint training on MiniLM with three non-IID
# instances (0.87 of it, against 0.74 at H = 10 and 0.65 at H = 50, with plain averaging;
# docs/experiments/hive.md)
DEFAULT_EVERY = 1
DEFAULT_TIMEOUT = 600.0  # seconds to wait for a round to close


class HiveError(RemoteError):
    """The coordinator could not be reached, refused an update, or did not close a round in time;
    nothing local was lost (see the module's docstring)."""


class AnswerLost(HiveError):
    """An update went out whole and no answer came back: it may have been taken."""


@dataclass(frozen=True)
class Head:
    """The coordinator's head commit, the round it has open (the next update joins that round)
    and its chart (as text)."""

    cid: CID
    round: int
    chart: str


@dataclass(frozen=True)
class Sent:
    """An update sent to the coordinator: taken in, or (`answered` False) gone out with its
    answer lost, so that only the signed heads can say whether it arrived."""

    cid: str
    round: int  # the round it joined (answer lost: the round open when it was sent)
    seq: int
    bytes: int  # its encoded size
    coordinates: int  # k: coordinates it carries
    steps: int  # local steps behind it
    answered: bool = True


@dataclass(frozen=True)
class Synced:
    """One round of this instance: what it sent and the head it restarted from."""

    sent: Sent
    head: Head
    taken: bool | None  # combined into the head (False: refused, an outlier; None: unknown)
    kept: bool = False  # it never arrived (its answer was lost): its change goes out again


class Transport(Protocol):
    """How an instance talks to its coordinator."""

    poll: float  # seconds between looks while waiting for a round

    def head(self) -> Head:
        """The current head and open round."""
        ...

    def read(self, cid: CID) -> tuple[Commit, Basin]:
        """The head commit `cid` (signed by the coordinator) and its basin."""
        ...

    def record(self, cid: CID) -> RoundRecord:
        """The round record `cid` a head commit read links."""
        ...

    def submit(self, data: bytes) -> dict:
        """Send an encoded update; the coordinator's answer ({"cid", "round"}), or HiveError
        (AnswerLost where the update went out and no answer came back)."""
        ...

    def wait(self, after: int, timeout: float) -> Head:
        """The head once the coordinator's round is above `after` (HiveError after `timeout`
        seconds; 0 checks once)."""
        ...


def _deadline_passed(deadline: float, what: str, timeout: float) -> None:
    if time.monotonic() >= deadline:
        raise HiveError(f"{what} has not closed after {timeout:g} s")


class LocalTransport:
    """A `Coordinator` object in this process (experiments, tests): updates go through
    `Coordinator.submit` as bytes, the head is read back from its repository, and while waiting
    for a round it closes rounds whose time is up (`maybe_close`), as the server's timer does.
    Thread-safe: several instances (threads) may share one."""

    def __init__(self, coordinator, poll: float = 0.005):
        self.coordinator = coordinator
        self.poll = poll
        self._closed = threading.Condition()

    def head(self) -> Head:
        info = self.coordinator.head_info()
        return Head(CID.parse(info["head"]), int(info["round"]), str(info["chart"]))

    def read(self, cid: CID) -> tuple[Commit, Basin]:
        repo = self.coordinator.repo
        commit = repo.read_commit(cid)
        return commit, repo.read_basin(commit.basin)

    def record(self, cid: CID) -> RoundRecord:
        return self.coordinator.repo.read_record(cid)

    def submit(self, data: bytes) -> dict:
        try:
            answer = self.coordinator.submit(data)
        except BasinError as exc:
            status = getattr(exc, "status", None)
            why = f" (HTTP {status})" if status else ""
            raise HiveError(f"the hive coordinator refused{why}: {exc}") from None
        with self._closed:
            self._closed.notify_all()
        return answer

    def wait(self, after: int, timeout: float) -> Head:
        deadline = time.monotonic() + timeout
        while True:
            if self.coordinator.round > after:
                return self.head()
            self.coordinator.maybe_close()
            if self.coordinator.round > after:
                return self.head()
            _deadline_passed(deadline, f"round {after}", timeout)
            with self._closed:
                self._closed.wait(min(self.poll, max(0.0, deadline - time.monotonic())))


class HttpTransport:
    """`basin hive serve` at `url`, through edge.py's request helpers. The coordinator's key is
    `key` (z6Mk...) or, if None, the one its first answer names; a head commit signed by any other
    key, or an answer naming another key, is refused."""

    def __init__(self, url: str, key: str | None = None, poll: float = 0.5):
        self.url = url.rstrip("/")
        self.key = parse_key(key) if key is not None else None
        self.poll = poll
        self._blocks = edge.block_source(self.url)
        self._last: tuple[CID, tuple[Commit, Basin]] | None = None  # read again by `sync`

    @classmethod
    def joined(cls, repo: Repository, poll: float = 0.5) -> HttpTransport:
        """The coordinator `repo` joined (`basin hive join`), its key the one recorded then."""
        state = edge.load_state(repo)
        return cls(state.url, state.key, poll)

    def head(self) -> Head:
        try:
            doc = edge.request_json(f"{self.url}/head")
        except RemoteError as exc:
            raise HiveError(str(exc)) from None
        try:
            key = parse_key(str(doc["key"]))
            head = Head(CID.parse(str(doc["head"])), int(doc["round"]), str(doc["chart"]))
        except (KeyError, TypeError, ValueError, BasinError) as exc:
            raise HiveError(f"{self.url} is not a hive coordinator: {exc}") from None
        if self.key is None:
            self.key = key
        elif key != self.key:
            raise HiveError(
                f"the coordinator at {self.url} now names key {format_key(key)}, "
                f"not {format_key(self.key)}"
            )
        return head

    def read(self, cid: CID) -> tuple[Commit, Basin]:
        if self.key is None:
            self.head()
        if self._last is not None and self._last[0] == cid:  # content-addressed: the same
            return self._last[1]
        try:
            commit = Commit.decode(self._blocks(cid))
            if commit.author != self.key or not commit.signature_valid():
                raise HiveError(f"head {cid} is not signed by the coordinator's key")
            self._last = (cid, (commit, Basin.decode(self._blocks(commit.basin))))
            return self._last[1]
        except HiveError:
            raise
        except BasinError as exc:
            raise HiveError(f"head {cid} from {self.url} is unusable: {exc}") from None

    def record(self, cid: CID) -> RoundRecord:
        try:  # the block re-hashed against `cid`, which the signed commit names
            return RoundRecord.decode(self._blocks(cid))
        except BasinError as exc:
            raise HiveError(f"round record {cid} from {self.url} is unusable: {exc}") from None

    def submit(self, data: bytes) -> dict:
        try:
            answer = edge.request_json(f"{self.url}/update", data)
        except edge.AnswerLost as exc:
            raise AnswerLost(str(exc)) from None
        except RemoteError as exc:
            raise HiveError(str(exc)) from None
        if type(answer.get("round")) is not int or answer.get("cid") != str(CID.for_block(data)):
            shown = edge.printable(answer)
            raise HiveError(f"{self.url} answered an update with {shown}: not a coordinator's")
        return answer

    def wait(self, after: int, timeout: float) -> Head:
        deadline = time.monotonic() + timeout
        while True:
            head = self.head()
            if head.round > after:
                return head
            _deadline_passed(deadline, f"round {after}", timeout)
            time.sleep(min(self.poll, max(0.0, deadline - time.monotonic())))


class HiveTrainer:
    """The callback: call `step()` after every optimiser step of `model` (see the module's
    docstring). Starts by setting z to the coordinator's head.

    `every`: H, local steps per round. `encoding`, `k`: the update's encoding (update.ENCODINGS)
    and coordinates per update (if None, as many as fit in 600 bytes: update.fitting_k).
    `samples_per_step`: what one step is worth in the update's `samples` (e.g. the batch size).
    `seq`: None (sequence numbers from the clock), or the last sequence number this identity used
    with this coordinator (counting up from it). `timeout`: seconds to wait for a round to close.
    """

    def __init__(
        self,
        model,
        transport: Transport,
        identity: Identity,
        *,
        every: int = DEFAULT_EVERY,
        encoding: str = DEFAULT_ENCODING,
        k: int | None = None,
        samples_per_step: int = 1,
        seq: int | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ):
        if not isinstance(every, int) or every < 1:
            raise SchemaError(f"every (H) must be an integer >= 1, not {every!r}")
        if not isinstance(samples_per_step, int) or samples_per_step < 1:
            raise SchemaError(f"samples_per_step must be an integer >= 1, not {samples_per_step!r}")
        self.model = model
        self.transport = transport
        self.identity = identity
        self.every = every
        self.samples_per_step = samples_per_step
        self.clock = seq is None  # sequence numbers from the clock (see the module's docstring)
        self.seq = seq or 0  # the last one used
        self.timeout = timeout
        self.compressor = Compressor(model.chart.dim, encoding, k)
        self.k = k  # None: as many coordinates as fit (update.fitting_k)
        self.steps = 0  # local steps taken
        self.history: list[Synced] = []
        self.bytes_sent = 0
        self.pending: Sent | None = None  # sent, its round not yet closed
        # pending's answer lost: (its bytes, the residual and _since before it)
        self._lost: tuple[bytes, list[float], int] | None = None
        self._since = 0  # self.steps at the last sync (or sending)
        self._sent: tuple[torch.Tensor, torch.Tensor] | None = None  # (z, β) at sending `pending`
        self.head: Head | None = None  # the head last synced to (below: the coordinator's)
        self._signed_round = -1.0  # the round its commit says it closed (genesis: none)
        head = transport.head()
        if head.chart != str(model.chart):
            raise HiveError(f"the hive's chart is {head.chart}, the model's is {model.chart}")
        self._move_to(head, carry=None)

    # -- state

    @property
    def residual(self) -> list[float]:
        """What error feedback holds back for the next update (d floats)."""
        return list(self.compressor.residual)

    @property
    def parent(self) -> CID:
        """The head last synced to: the parent of the next update."""
        return self.head.cid

    def change(self) -> list[float]:
        """The change of z since the head last synced to, d floats (before error feedback)."""
        with torch.no_grad():
            now = self.model.z.detach().cpu().double()
        return (now - self._z_sync).tolist()

    # -- the callback

    def step(self) -> Synced | None:
        """Count one local step; on every `every`-th since the last sync, send the update and
        sync (the Synced record), else None. With an update waiting for its round (an earlier
        timeout), checks the head without waiting and syncs once the round has closed."""
        self.steps += 1
        due = self.steps - self._since >= self.every
        last = None
        if self.pending is not None:
            last = self.sync(timeout=self.timeout if due else 0.0, quiet=not due)
            if last is None:
                return None
        return self.round() if due else last

    def finish(self) -> Synced | None:
        """Sync an update still waiting for its round, then send the steps left since the last
        sync as a last round; None if nothing was left."""
        last = None
        if self.pending is not None:
            last = self.sync()
        if self.steps > self._since:
            last = self.round()
        return last

    def round(self) -> Synced:
        """Send the change since the last sync and wait for its round to close."""
        self.submit()
        return self.sync()

    def submit(self) -> Sent:
        """Send the change since the last sync as the next signed update (after carrying it onto
        a newer head if the head moved without this instance)."""
        if self.pending is not None:
            sent = self.pending
            raise HiveError(
                f"update {sent.cid} is still waiting for round {sent.round}: sync first"
            )
        steps = self.steps - self._since
        plural = "s" if steps != 1 else ""
        kept = f"the local work ({steps} step{plural}) is kept for the next update"
        try:
            head = self.transport.head()
            if head.cid != self.head.cid:
                self._move_to(head, carry=(self._z_sync, self._beta_sync))
        except HiveError as exc:
            raise HiveError(f"{exc}; {kept}") from None
        saved = list(self.compressor.residual)
        self.seq = max(self.seq + 1, now_ms()) if self.clock else self.seq + 1
        answer = None
        try:
            update = next_update(
                self.compressor,
                self.outgoing(self.change()),
                k=self.k,
                chart=self.model.chart,
                parent=self.head.cid,
                round=head.round,
                seq=self.seq,
                samples=max(1, steps * self.samples_per_step),
                author=self.identity.public_key,
                beta=self.beta_change(),
            )
            data = update.signed(self.identity.sign).encode()
            answer = self.transport.submit(data)
        except AnswerLost:
            # it went out and may have been taken: sending its change again would count it
            # twice. It waits like any other; `sync` learns from the signed heads whether it
            # arrived (sending the same bytes again meanwhile, which the coordinator counts
            # once: their sequence number is spent), and if it never did, its change is kept
            self._lost = (data, saved, self._since)
        except BaseException as exc:
            self.compressor.residual = saved  # nothing sent: the change is still all in z
            if isinstance(exc, HiveError):
                raise HiveError(f"{exc}; {kept}") from None
            raise
        sent = Sent(
            str(CID.for_block(data)),
            head.round if answer is None else int(answer.get("round", head.round)),
            self.seq,
            len(data),
            update.change.k,
            steps,
            answered=answer is not None,
        )
        self.bytes_sent += sent.bytes
        self.pending = sent
        self._since = self.steps
        self._sent = self._point()
        return sent

    def outgoing(self, change: list[float]) -> list[float]:
        """The change to send (before error feedback): `change` itself. Experiments override it
        to play a poisoned instance."""
        return change

    def sync(self, timeout: float | None = None, *, quiet: bool = False) -> Synced | None:
        """Wait (up to `timeout`, default the trainer's) for the pending update's round to close,
        then restart from the new head. `quiet`: return None instead of raising on a timeout.

        An update whose answer was lost is first sent again (by a sync that waits, not by the
        quiet checks of `step()`), the same bytes: taken now if it never arrived, refused as a
        replay if it did, counted once either way. Then it is waited for until a signed head
        names it, or a signed head shows the last round that could take it closed without one
        naming it (`fates.window_closed`: its parent must be a head of the last K rounds, K as
        the head records it): then it never arrived, and its change is carried onto the head
        to go out with the next update. Round numbers and K from unsigned answers decide
        nothing here: they only say when to look again."""
        if self.pending is None:
            raise HiveError("no update is waiting for its round")
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        try:
            if self._lost is not None and not quiet:
                self._resend()
            sent = self.pending
            head = self.transport.wait(sent.round, timeout)
            fate, newest = self._fate(head, sent)
            while (
                fate is None
                and self._lost is not None
                and not fates.window_closed(newest, sent.round)
            ):
                seen = head.cid
                head = self.transport.wait(head.round, max(0.0, deadline - time.monotonic()))
                if head.cid == seen:  # a round closed without a new head (or said it did)
                    _deadline_passed(deadline, f"round {sent.round}'s window", timeout)
                    time.sleep(min(self.transport.poll, max(0.0, deadline - time.monotonic())))
                fate, newest = self._fate(head, sent)
        except HiveError as exc:
            if quiet:
                return None
            went = "taken in" if self._lost is None else "sent (its answer was lost)"
            raise HiveError(
                f"{exc}; update {self.pending.cid} was {went}: training may go on, and a later "
                "step() syncs when the round closes"
            ) from None
        if fate is None and self._lost is not None:  # it never arrived: its change is kept
            _, residual, since = self._lost
            self._move_to(head, carry=(self._z_sync, self._beta_sync))
            self.compressor.residual = residual
            self._since = since
            record = Synced(sent, head, False, kept=True)
        else:
            self._move_to(head, carry=self._sent)
            record = Synced(sent, head, None if fate is None else fate == fates.TAKEN)
        self.pending, self._sent, self._lost = None, None, None
        self.history.append(record)
        return record

    def _resend(self) -> None:
        """Send the bytes of the update whose answer was lost again. Answered: it had not
        arrived, and is taken in now. Refused (a replay: it had; stale: its window is over) or
        lost again: the signed heads say which."""
        data = self._lost[0]
        try:
            answer = self.transport.submit(data)
        except HiveError:
            return
        self.pending = replace(self.pending, round=int(answer["round"]), answered=True)
        self._lost = None

    def _fate(self, head: Head, sent: Sent) -> tuple[str | None, Commit]:
        """What the signed heads from `head` back to the round `sent` joined say of it:
        "taken", "refused: REASON", or None where none of them names it; and `head`'s commit
        (signed by the coordinator, as every commit a transport reads)."""
        newest, _ = self.transport.read(head.cid)
        commit, at = newest, head.cid
        while at != self.head.cid and commit.metrics.get("round", -1.0) >= sent.round:
            fate = fates.round_fates(commit, self.transport.record).get(sent.cid)
            if fate is not None:
                return fate, newest
            if not commit.parents:
                break
            at = commit.parents[0]
            if at != self.head.cid:
                commit, _ = self.transport.read(at)
        return None, newest

    def _move_to(self, head: Head, carry: tuple[torch.Tensor, torch.Tensor] | None) -> Commit:
        """z, β ← the head's (+ z − carry's z, β − carry's β: the local steps made since `carry`;
        β's only when the model trains it)."""
        commit, basin = self.transport.read(head.cid)
        signed_round = commit.metrics.get("round", -1.0)  # the round the coordinator signed
        moved = self.head is not None and head.cid != self.head.cid
        if moved and signed_round <= self._signed_round:
            raise HiveError(
                f"head {head.cid} closed round {signed_round:g}, not one after the head synced "
                f"(round {self._signed_round:g}): an older head, refused"
            )
        if basin.chart != self.model.chart:
            raise HiveError(f"head {head.cid} is in chart {basin.chart}, not {self.model.chart}")
        if len(basin.beta) != len(self.model.beta):
            raise HiveError(
                f"head {head.cid} has {len(basin.beta)} β coefficients; the model has "
                f"{len(self.model.beta)}"
            )
        target = torch.tensor(basin.z, dtype=torch.float64)
        beta = torch.tensor(basin.beta, dtype=torch.float64)
        with torch.no_grad():
            if carry is not None:
                z, b = self._point()
                target = target + (z - carry[0])
                beta = beta + (b - carry[1]) if self._trains_beta else beta
            self.model.z.copy_(target.to(self.model.z.dtype))
            self.model.beta.copy_(beta.to(self.model.beta.dtype))
        self.head = head
        self._signed_round = signed_round
        self._z_sync = torch.tensor(basin.z, dtype=torch.float64)
        self._beta_sync = torch.tensor(basin.beta, dtype=torch.float64)
        return commit

    @property
    def _trains_beta(self) -> bool:
        return bool(getattr(self.model.beta, "requires_grad", False))

    def _point(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(z, β) now, as float64 copies."""
        with torch.no_grad():
            z = self.model.z.detach().cpu().double().clone()
            return z, self.model.beta.detach().cpu().double().clone()

    def beta_change(self) -> tuple[float, ...] | None:
        """The change of β since the head last synced to, as an update carries it: None when β
        is not trained or has not moved."""
        if not self._trains_beta:
            return None
        change = tuple((self._point()[1] - self._beta_sync).tolist())
        return change if any(change) else None
