"""The coordinator: takes signed updates in, closes rounds, and commits the shared basin's heads.

It sits in front of an ordinary repository whose branch (`general` by default) holds the
canonical head. Intake refuses, each with an HTTP status and one line:

- 413 over the size limit, 400 not a valid update record (strict decoding, signature included),
  422 another chart, 403 a signer the repository does not trust (unless the hive is open);
- 409 a replayed sequence number (not above the signer's last one, kept in the journal), or a
  stale parent (not one of the heads of the last `freshness` rounds);
- 429 a second update from one signer in one round;
- 403 a quarantined signer (quarantine.py: one working against the rest of its cohort, as the
  operator gave the cohorts; until `basin hive release`).

A round closes after `round_updates` updates (or as many as there are trusted signers not
quarantined, where that is fewer: a round takes one update per signer) or `round_seconds`
seconds (with at least one). Its
updates are screened by the outlier check (Fisher distance to the coordinate-wise median beyond
median + c·MAD of the round), combined by the aggregation rule (`rules`, weighted by samples) and
applied by the outer optimiser (`outer`); the new head is a commit signed by the coordinator whose
message lists the updates taken and refused and their signers (as many as fit in a commit message;
the journal has every one), and whose metrics record the round.

Durability: an update is journaled, with its signer's sequence number, before it is acknowledged
(journal.py; `submit_many` journals several in one transaction and acknowledges them once it is
committed). A round's decision (the updates taken and refused, the outer optimiser's next state)
is journaled first, then its head commit is written, then the round is marked closed; `recover`
(run at start) finishes a round whose commit exists but was not yet marked, from that decision,
so a coordinator killed mid-round loses no accepted update and counts none twice. A round that was
full when the coordinator stopped closes when it starts again.

The intake's working state (the round, its recent heads, its pending updates decoded once and
their signers) is read from the journal at start and kept in memory beside it, each change made
in the journal first: a submission reads the journal once, for its signer's sequence number.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..cid import CID
from ..config import TrustedKey
from ..errors import BasinError
from ..identity import format_key
from ..objects import MAX_ROUND_ENTRIES, Basin, Commit
from ..refnames import branch_ref
from ..repository import Repository
from . import adjust, fates, outer, outliers, quarantine, rules
from .journal import PENDING, REFUSED, TAKEN, Journal, Journaled
from .signers import QUARANTINED, ROUND_FULL, UNTRUSTED, unit_sums
from .update import Update, update_limit

JOURNAL_FILE = "hive.db"
MAX_MESSAGES = 1000  # log lines kept in memory


class Refused(BasinError):
    """An update (or request) the coordinator refuses, with the HTTP status that says why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


DEFAULT_FRESHNESS = fates.DEFAULT_FRESHNESS  # K


@dataclass(frozen=True)
class Settings:
    branch: str = "general"
    round_updates: int = 10  # M: a round closes once it holds this many updates
    round_seconds: float = 30.0  # T: or after this long, with at least one
    freshness: int = DEFAULT_FRESHNESS  # an update's parent: a head of one of the last K rounds
    rule: str = rules.DEFAULT_RULE
    optimizer: str = outer.DEFAULT_OPTIMIZER
    outlier_c: float = outliers.DEFAULT_C
    open: bool = False  # take updates from any valid signer, each at weight 1
    # the journal keeps the updates of this many last closed rounds (None: all, about 1 kB an
    # update); older ones are deleted, their counts kept, their signers' sequence numbers too
    keep_rounds: int | None = None
    rule_options: dict = field(default_factory=dict)  # e.g. {"trim": 0.3}: rules.Rule.options
    optimizer_options: dict = field(default_factory=dict)  # e.g. {"lr": 0.5}: outer's defaults
    # quarantine.py's τ (None: quarantine no one new) and the updates summed before judging
    quarantine_tau: float | None = quarantine.DEFAULT_TAU
    quarantine_after: int = quarantine.DEFAULT_AFTER

    def check(self) -> Settings:
        rules.aggregate(self.rule, [[0.0], [1.0]], **self.rule_options)  # refuses bad options
        outer.create(self.optimizer, **self.optimizer_options)  # refuses unknown or bad values
        if not (math.isfinite(self.outlier_c) and self.outlier_c > 0):
            raise BasinError(f"outlier factor c {self.outlier_c} must be finite and > 0")
        if self.round_updates < 1 or not 0 < self.round_seconds < 1e6 or self.freshness < 1:
            raise BasinError("round_updates, round_seconds and freshness must be positive")
        if self.round_updates > MAX_ROUND_ENTRIES:
            raise BasinError(
                f"round_updates {self.round_updates} is over {MAX_ROUND_ENTRIES:,}: the most one "
                "round's record lists"
            )
        if self.quarantine_tau is not None:
            quarantine.check(self.quarantine_tau, self.quarantine_after)
        if self.keep_rounds is not None and self.keep_rounds < 1:
            raise BasinError(f"keep_rounds {self.keep_rounds} must be at least 1 (or None: all)")
        return self


@dataclass
class _Staged:
    """Updates journaled in a transaction not yet committed: (index, row, update), their
    signers, and the round's opening time if the first of them opened it."""

    rows: list[tuple[int, Journaled, Update]] = field(default_factory=list)
    authors: set[bytes] = field(default_factory=set)
    opened: float | None = None


class Coordinator:
    """One hive's coordinator over `repo` (thread-safe: the server's handlers share it)."""

    def __init__(self, repo: Repository, settings: Settings, journal: Journal | None = None):
        self.repo = repo
        self.settings = settings.check()
        if repo.branch_commit(settings.branch) is None:
            raise BasinError(f"no branch {settings.branch!r} to coordinate")
        if repo.basin_dir is None and journal is None:
            raise BasinError("an in-memory repository needs a journal to coordinate")
        self.journal = journal or Journal(Path(repo.basin_dir) / JOURNAL_FILE)
        self.max_update_bytes = update_limit(repo.config.chart)
        self._lock = threading.RLock()
        # the latest lines of `log` (bounded: a coordinator runs for months), and where else
        # each goes as it is logged (the server prints them)
        self.messages: deque[str] = deque(maxlen=MAX_MESSAGES)
        self.echo: Callable[[str], None] | None = None
        self.close_seconds: float | None = None
        # called (in the coordinator's thread, under its lock: it must not wait) with each new
        # head a round makes; the server publishes heads through it
        self.on_head: Callable[[CID], None] | None = None
        self._trusted: tuple[object, int, dict[bytes, TrustedKey]] = (None, 0, {})
        self._head_packet: tuple[CID, Basin] | None = None  # _head_basin's
        self._heads_by_cid: tuple[dict | None, dict[CID, int]] = (None, {})  # _head_rounds's
        self._load()
        self.recover()
        self._judge()  # a coordinator stopped between a round's close and its judgement
        if self._filled() >= self._round_size():  # full when the last one stopped
            try:
                self.close_round()
            except BasinError as exc:
                self.log(f"round {self._round} not closed: {exc}")

    def _load(self) -> None:
        """The intake's working state, read from the journal once and then kept beside it (each
        change journaled first): the round, its recent heads, when it opened, its pending
        updates, decoded once, with their signers, and the counts /status reports (counted once
        here: a count over the journal would grow with it and hold up intake)."""
        self._round = int(self.journal.get("round", 0))
        self._heads: dict[str, int] = dict(self.journal.get("heads", {}) or {})
        self._opened = self.journal.get("opened")
        self._pending: list[tuple[Journaled, Update]] = [
            (j, Update.decode(j.data)) for j in self.journal.pending(self._round)
        ]
        self._authors = {j.author for j, _ in self._pending}
        self._counts = self.journal.counts()
        self._void: tuple = (None, None, None, 0)  # _filled's: what it counted over, and how many

    def log(self, line: str) -> None:
        """A line about the coordinator's own work (a round not closed, a round recovered)."""
        self.messages.append(line)
        if self.echo is not None:
            self.echo(line)

    # -- state

    @property
    def round(self) -> int:
        return self._round

    def head(self) -> CID:
        return self.repo.branch_commit(self.settings.branch)

    def head_info(self) -> dict:
        ident = self.repo.identity()
        return {
            "branch": self.settings.branch,
            "head": str(self.head()),
            "round": self.round,
            "key": format_key(ident.public_key),
            "chart": str(self.repo.config.chart),
            "max_update_bytes": self.max_update_bytes,
            "freshness": self.settings.freshness,
        }

    def status(self) -> dict:
        return {
            "round": self.round,
            "head": str(self.head()),
            **self._counts,
            "quarantined": len(self.journal.quarantined()),
            "close_seconds": self.close_seconds,  # the last round closed, here (None: none yet)
        }

    def block(self, text: str) -> bytes:
        try:
            cid = CID.parse(text)
        except BasinError as exc:
            raise Refused(400, str(exc)) from None
        try:
            return self.repo.get_block(cid)
        except BasinError as exc:
            raise Refused(404, str(exc)) from None

    def _head_basin(self) -> Basin:
        """The head's packet, read once per head: every update that changes β is checked
        against it, and the round's close starts from it."""
        head = self.head()
        if self._head_packet is None or self._head_packet[0] != head:
            self._head_packet = (head, self.repo.read_basin(self.repo.read_commit(head).basin))
        return self._head_packet[1]

    def _recent_heads(self) -> dict[str, int]:
        """Head CID -> the round it opened, for the last `freshness` rounds."""
        return self._heads or {str(self.head()): self._round}

    def _head_rounds(self) -> dict[CID, int]:
        """`_recent_heads` by CID (kept while the heads stay): an update's parent is looked up
        without writing it out as a string."""
        heads = self._recent_heads()
        if self._heads_by_cid[0] is not heads:
            self._heads_by_cid = (heads, {CID.parse(h): r for h, r in heads.items()})
        return self._heads_by_cid[1]

    def _refresh_trust(self) -> None:
        """Take up the trust list as `basin key add/remove` left it on disk (one stat per
        call while it is unchanged); an unusable config is logged once, the list kept."""
        try:
            if self.repo.refresh_trust():
                self.log(f"trusted signers re-read: {len(self.repo.config.trusted)}")
        except BasinError as exc:
            self.log(f"trusted signers kept as they were: {exc}")

    def _trusted_index(self) -> dict[bytes, TrustedKey]:
        """The trusted signers by key (the first entry for a key, as config.trusted_key), rebuilt
        when the list is replaced or grows."""
        trusted = self.repo.config.trusted
        source, size, index = self._trusted
        if source is not trusted or size != len(trusted):
            index = {}
            for t in trusted:
                index.setdefault(t.key, t)
            self._trusted = (trusted, len(trusted), index)
        return index

    def _trusted_key(self, author: bytes) -> TrustedKey | None:
        return self._trusted_index().get(author)

    def _round_size(self) -> int:
        """M, or the number of trusted signers not quarantined where that is fewer (a round takes
        one update per signer, so it could not fill: it would wait for its timer every time).
        The coordinator's own key, which `init` trusts and which signs heads, is not counted."""
        if self.settings.open:
            return self.settings.round_updates
        index = self._trusted_index()
        held = sum(1 for k in self.journal.quarantined() if k in index)
        senders = len(index) - held - (self.repo.identity().public_key in index)
        return max(1, min(self.settings.round_updates, senders))

    def _filled(self, staged: int = 0) -> int:
        """The round's pending updates (and `staged` more) that will count: not those of
        signers removed or quarantined since they sent (refused at the close), so that a round
        still closes with its M. Counted again whenever the trust list, the quarantine or the
        pending updates change (the objects themselves are kept, so a new one never passes for
        the old). A round holding as many as its record can list is full, whatever they are."""
        if len(self._pending) + staged >= MAX_ROUND_ENTRIES:
            return MAX_ROUND_ENTRIES + self._round_size()
        index = self._trusted_index()
        held = self.journal.quarantined()
        sizes = (len(held), len(self._pending))
        was_index, was_held, was_sizes, _ = self._void
        if was_index is not index or was_held is not held or was_sizes != sizes:
            void = sum(
                1
                for _, u in self._pending
                if u.author in held or (not self.settings.open and u.author not in index)
            )
            self._void = (index, held, sizes, void)
        return len(self._pending) + staged - self._void[3]

    # -- intake

    def submit(self, data: bytes) -> dict:
        """Check an update record and journal it; its CID and round, or Refused."""
        (answer,) = self.submit_many([data])
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def submit_many(
        self, bodies: list[bytes], close: bool = True, decoded: list | None = None
    ) -> list[dict | BasinError]:
        """`submit` for each of `bodies` in turn (each checked as if alone, after the ones before
        it), journaled in one transaction (one sync to disk) that is committed before this
        returns: the answer for each, its CID and round, or the Refused (or journal error) that
        stops it.

        A round that fills up closes right away, between two transactions; a failure to close it
        is logged (its updates stay journaled; the next submission or the timer closes it), and
        while it stays full, an update that would go in is refused (503): a round never takes
        more than its M. With `close` False it is not closed here: the call stops there, and the
        answer for each update after it is None, not taken in yet (the server answers the others
        first, then closes the round, then submits those again).

        `decoded`: `decode_many(bodies)`, done elsewhere (the server's decoding processes); each
        is then checked here for everything else, as if decoded here."""
        decoded = decoded or [None] * len(bodies)
        self._refresh_trust()
        # outside the lock: decoding, signature
        held = self.journal.quarantined()
        checked = [self._check(data, d, held) for data, d in zip(bodies, decoded, strict=True)]
        answers: list = [None] * len(checked)
        size = self._round_size()
        with self._lock:
            todo = iter(range(len(checked)))
            for first in todo:
                if self._filled() >= size and not self._close_full():
                    # a round that could not close takes no more than its M: say so, now
                    busy = Refused(503, f"round {self._round} is full and not closed yet: retry")
                    for k in itertools.chain([first], todo):
                        answers[k] = checked[k] if isinstance(checked[k], Refused) else busy
                    break
                size = self._round_size()
                staged = _Staged()
                try:
                    with self.journal.batch():
                        for k in itertools.chain([first], todo):
                            if isinstance(checked[k], Refused):
                                answers[k] = checked[k]
                            else:
                                answers[k] = self._take(bodies[k], checked[k], staged, k)
                            if self._filled(len(staged.rows)) >= size:
                                break
                except BasinError as exc:  # rolled back: none of it journaled, none acknowledged
                    rolled_back = {k for k, _, _ in staged.rows}
                    return [
                        exc if answer is None or k in rolled_back else answer
                        for k, answer in enumerate(answers)
                    ]
                # committed: now the working state follows the journal
                if staged.opened is not None:
                    self._opened = staged.opened
                self._pending += [(j, u) for _, j, u in staged.rows]
                self._counts[PENDING] += len(staged.rows)
                self._authors |= staged.authors
                if self._filled() >= size and not close:
                    break
            if close and self._filled() >= self._round_size():
                self._close_full()
        return answers

    def _close_full(self) -> bool:
        """Close the full round: whether it closed (a failure is logged; its updates stay
        journaled, and the next submission or the timer tries again)."""
        try:
            self.close_round()
        except BasinError as exc:
            self.log(f"round {self._round} not closed: {exc}")
            return False
        return True

    def room(self) -> int:
        """How many more updates the round takes before it closes (0 when full)."""
        return max(0, self._round_size() - self._filled())

    def close_if_full(self) -> CID | None:
        """Close the round if it holds its M updates (the server's half of submit_many's
        `close`)."""
        with self._lock:
            if self._filled() >= self._round_size():
                return self.close_round()
        return None

    def _check(
        self, data: bytes, decoded: Update | str | None, held: dict[bytes, tuple[int, str]]
    ) -> Update | Refused:
        """The checks that need no journal: size, strict decoding and signature (or their
        result, `decoded`, from `decode_many`), chart, trust, quarantine (`held`: the journal's
        quarantined signers, read once for a batch)."""
        chart = self.repo.config.chart
        if len(data) > self.max_update_bytes:
            return Refused(413, f"update of {len(data)} bytes is over the limit")
        if isinstance(decoded, str):
            return Refused(400, f"not a valid update: {decoded}")
        if isinstance(decoded, Update):
            update = decoded
        else:
            try:
                update = Update.decode(data, chart=None)
            except BasinError as exc:
                return Refused(400, f"not a valid update: {exc}")
        if update.chart != chart:
            return Refused(422, f"update is in chart {update.chart}, the hive's is {chart}")
        trusted = self._trusted_key(update.author)
        if trusted is None and not self.settings.open:
            return Refused(403, f"signer {format_key(update.author)} is not trusted by this hive")
        since = held.get(update.author)
        if since is not None:
            return Refused(
                403,
                f"signer {format_key(update.author)} is quarantined since round {since[0]}: "
                f"{since[1]} (the operator lifts it: basin hive release)",
            )
        if update.beta is not None:
            why = adjust.refusal(update, self._head_basin())
            if why is not None:
                return Refused(422, why)
        return update

    def _take(self, data: bytes, update: Update, staged: _Staged, k: int) -> dict | Refused:
        """The journal's checks (replay, freshness, one per signer per round) for an update
        checked by `_check`, and its row in the open transaction (`staged`: the rows before it
        in that transaction, not yet in the working state)."""
        current = self._round
        last = self.journal.last_seq(update.author)  # sees the open transaction's rows too
        if last is not None and update.seq <= last:
            return Refused(409, f"sequence {update.seq} replayed: {last} already seen")
        opened = self._head_rounds().get(update.parent)
        if opened is None or opened < current - self.settings.freshness + 1:
            return Refused(
                409,
                f"stale parent {update.parent}: not a head of the last "
                f"{self.settings.freshness} rounds (now {self.head()})",
            )
        if not opened <= update.round <= current:  # what it signed must fit where it comes in
            return Refused(
                409,
                f"update names round {update.round}; its parent opened round {opened} and this "
                f"is round {current}",
            )
        if update.author in self._authors or update.author in staged.authors:
            self.journal.spend(update.author, update.seq)  # its bytes cannot come back later
            return Refused(429, "one update per signer per round: wait for the next round")
        cid = str(CID.for_block(data))
        # the round's first update also records when the round opened, in its transaction
        opened = time.time() if self._opened is None and staged.opened is None else None
        if not self.journal.accept(cid, current, update.author, update.seq, data, opened=opened):
            return Refused(409, f"sequence {update.seq} replayed")
        staged.rows.append((k, Journaled(cid, current, update.author, update.seq, data), update))
        staged.authors.add(update.author)
        staged.opened = opened if opened is not None else staged.opened
        return {"cid": cid, "round": current}

    # -- rounds

    def maybe_close(self) -> CID | None:
        """Close the round if its time is up (and it holds an update), or if it is full: a
        signer removed or quarantined since the last update came in lowers M, and a signer
        trusted or released again makes its waiting update count, and nothing else would close
        the round before its time (its senders wait for the head, sending nothing)."""
        self._refresh_trust()
        with self._lock:
            opened = self._opened
            if opened and time.time() - float(opened) >= self.settings.round_seconds:
                return self.close_round()
            if self._pending and self._filled() >= self._round_size():
                return self.close_round()
        return None

    def close_round(self) -> CID | None:
        """Combine the round's updates into a new head; None if it holds none."""
        with self._lock:
            current = self._round
            if not self._pending:
                self.journal.put("opened", None)
                self._opened = None
                return None
            start = time.perf_counter()
            # decoded and verified once, at intake
            pending = [j for j, _ in self._pending]
            updates = [u for _, u in self._pending]
            x = _dense(updates)
            self._refresh_trust()
            taken, refused, signed = self._screen(x, updates)
            head = self.head()
            combined = self._combine(x, updates, pending, taken, refused)
            # every update refused: the head stays, and the round still closes
            cid = (
                self._commit(current, head, pending, updates, taken, refused, signed, *combined)
                if taken
                else head
            )
            directions = self._directions((updates[i].author, x[i]) for i in signed)
            self._finish(current, cid, pending, taken, refused, head, directions)
            self.close_seconds = time.perf_counter() - start
            moved = f"new head {cid}" if cid != head else "head unchanged"
            self.log(
                f"round {current} closed: {len(taken)} taken, {len(refused)} refused; {moved} "
                f"({self.close_seconds:.3f} s)"
            )
            self._judge()  # as the next round opens
            if self.on_head is not None and cid != head:
                self.on_head(cid)
            return cid

    def _screen(
        self, x: np.ndarray, updates: list[Update]
    ) -> tuple[list[int], dict[int, str], list[int]]:
        """Indices of the updates (the rows of x) to combine, the refused ones with why (signers
        no longer trusted, a key removed while its update waited, or quarantined since; those
        past the round's M, by arrival, where a signer trusted or released again after the
        round filled made more count; then outliers among the rest), and those whose signers
        may send: what the signers' summed directions count (an outlier too says where its
        signer pushes)."""
        held = self.journal.quarantined()
        refused = {
            i: UNTRUSTED
            for i, u in enumerate(updates)
            if not self.settings.open and self._trusted_key(u.author) is None
        }
        refused |= {
            i: QUARANTINED for i, u in enumerate(updates) if i not in refused and u.author in held
        }
        rest = [i for i in range(len(x)) if i not in refused]
        refused |= dict.fromkeys(rest[self.settings.round_updates :], ROUND_FULL)
        rest = rest[: self.settings.round_updates]
        if rest:
            report = outliers.check(x[rest], c=self.settings.outlier_c)
            for j in report.outliers:
                refused[rest[j]] = (
                    f"outlier: Fisher distance {report.scores[j]:.4g} > {report.threshold:.4g}"
                )
        return [i for i in range(len(x)) if i not in refused], refused, rest

    def _combine(
        self, x: np.ndarray, updates: list[Update], pending, taken: list[int], refused: dict
    ) -> tuple[Basin | None, outer.OuterOptimizer | None]:
        """The new basin and the outer optimiser after the `taken` updates (the rows of x),
        refusing the largest (by norm; ties: the highest CID) while the result cannot be stored
        (`adjust.storable`; `taken` and `refused` are updated)."""
        basin = self._head_basin()
        state = self.journal.get("outer")

        def combine(kept: list[int]) -> tuple[Basin, outer.OuterOptimizer]:
            chosen = [updates[i] for i in kept]
            optimizer = (
                outer.restore(state)
                if state
                else outer.create(self.settings.optimizer, **self.settings.optimizer_options)
            )
            delta = rules.aggregate(
                self.settings.rule,
                x[kept],
                weights=self._weights(chosen),
                fishers=_fishers(chosen) if self.settings.rule == "fisher_mean" else None,
                keys=[pending[i].cid.encode() for i in kept],
                **self.settings.rule_options,
            )
            return adjust.apply(basin, optimizer.step(list(basin.z), delta), chosen), optimizer

        result, kept, dropped = adjust.storable(
            taken, lambda i: (float(np.linalg.norm(x[i])), pending[i].cid), combine
        )
        taken[:] = kept
        for i, exc in dropped:
            refused[i] = f"the round's result cannot be stored with it ({exc})"
        return result or (None, None)

    def _commit(
        self, current, head, pending, updates, taken, refused, signed, new_basin, optimizer
    ) -> CID:
        chosen = [updates[i] for i in taken]
        ident = self.repo.identity()
        metrics = {
            "round": float(current),
            "taken": float(len(taken)),
            "refused": float(len(refused)),
            "samples": float(sum(u.samples for u in chosen)),
            "freshness": float(self.settings.freshness),  # K, signed: edges time lost answers by it
        }
        # the round's decision, journaled before its commit: what `recover` finishes from
        self.journal.put(
            "closing",
            {
                "round": current,
                "parent": str(head),
                "taken": [pending[i].cid for i in taken],
                "refused": {pending[i].cid: why for i, why in refused.items()},
                "signed": [pending[i].cid for i in signed],
                "outer": optimizer.to_dict(),
            },
        )
        message, record = fates.round_parts(
            f"hive round {current}: {len(taken)} updates taken, {len(refused)} refused",
            [(CID.parse(pending[i].cid), pending[i].author) for i in taken],
            [(CID.parse(pending[i].cid), why) for i, why in refused.items()],
        )
        with self.repo.transaction():
            basin_cid = self.repo.write_basin(new_basin)
            commit = Commit(
                basin_cid,
                (head,),
                ident.public_key,
                int(time.time() * 1000),
                message,
                metrics,
                record=None if record is None else self.repo.write_record(record),
            ).signed(ident.sign)
            cid = self.repo.write_commit(commit)
            self.repo.set_ref(branch_ref(self.settings.branch), cid, head, f"hive: round {current}")
        self._pending_state = optimizer.to_dict()
        return cid

    def _weights(self, chosen: list[Update]) -> list[float]:
        """Trust weight × samples (`rules.capped_samples`)."""
        samples = rules.capped_samples([u.samples for u in chosen])
        out = []
        for u, s in zip(chosen, samples, strict=True):
            trusted = self._trusted_key(u.author)
            out.append((trusted.weight if trusted else 1.0) * s)
        return out

    def _directions(
        self, signed: Iterable[tuple[bytes, np.ndarray]]
    ) -> dict[bytes, tuple[str, np.ndarray]]:
        """Of the round's (signer, change) pairs that count (`_screen`'s third list), each one of
        a signer with a cohort, with that cohort, at unit norm: what the round adds to the
        summed directions quarantine judges by."""
        if self.settings.quarantine_tau is None:
            return {}
        index = self._trusted_index()
        signed = list(signed)
        cohorts = {a: index[a].cohort for a, _ in signed if a in index and index[a].cohort}
        units = unit_sums((a, delta) for a, delta in signed if a in cohorts)
        return {a: (cohorts[a], unit) for a, unit in units.items()}

    def _judge(self) -> None:
        """Quarantine, as a round opens, whoever quarantine.judge finds against its cohort."""
        if self.settings.quarantine_tau is None:
            return
        held = self.journal.quarantined()
        index = self._trusted_index()
        cohorts = {k: t.cohort for k, t in index.items() if t.cohort and k not in held}
        if len(cohorts) < quarantine.MIN_COHORT:
            return
        sums = {  # a sum made in another cohort than the signer's now does not count
            a: (total, count)
            for a, (cohort, total, count) in self.journal.directions(sorted(cohorts)).items()
            if cohort == cohorts[a]
        }
        found = quarantine.judge(
            sums,
            cohorts,
            self.settings.quarantine_tau,
            self.settings.quarantine_after,
        )
        for author, why in sorted(found.items()):
            self.journal.quarantine(author, self._round, why)
            who = index[author].name
            self.log(f"round {self._round}: quarantined {who} ({format_key(author)}): {why}")

    def _finish(
        self, current, cid, pending, taken, refused, previous: CID, directions=None
    ) -> None:
        """Mark the round closed with `cid` its new head (`previous` the head it opened with),
        adding `directions` (`_directions`) to the signers' sums."""
        recent = self._heads or {str(previous): current}  # (none before the first close)
        heads = {h: r for h, r in recent.items() if r > current + 1 - self.settings.freshness}
        heads[str(cid)] = current + 1
        state = {"round": current + 1, "opened": None, "heads": heads, "closing": None}
        if getattr(self, "_pending_state", None) is not None:
            state["outer"] = self._pending_state
            self._pending_state = None
        keep = self.settings.keep_rounds
        self.journal.close_round(
            current,
            [pending[i].cid for i in taken],
            {pending[i].cid: why for i, why in refused.items()},
            state,
            forget_before=None if keep is None else current + 1 - keep,
            directions=directions,
        )
        self._round, self._heads, self._opened = current + 1, heads, None
        self._pending, self._authors = [], set()
        self._counts[PENDING] -= len(taken) + len(refused)
        self._counts[TAKEN] += len(taken)
        self._counts[REFUSED] += len(refused)

    def recover(self) -> None:
        """Finish a round whose head commit was written before the coordinator stopped."""
        current = self.round
        commit = self.repo.read_commit(self.head())
        if commit.metrics.get("round") != float(current):
            return
        pending = self.journal.pending(current)
        by_cid = {j.cid: i for i, j in enumerate(pending)}
        taken, refused, signed = [], {}, None
        closing = self.journal.get("closing")
        if (
            isinstance(closing, dict)
            and closing.get("round") == current
            and commit.parents
            and closing.get("parent") == str(commit.parents[0])
        ):
            taken = [by_cid[cid] for cid in closing["taken"] if cid in by_cid]
            refused = {by_cid[c]: why for c, why in closing["refused"].items() if c in by_cid}
            if "signed" in closing:
                signed = [by_cid[c] for c in closing["signed"] if c in by_cid]
            self._pending_state = closing.get("outer")
        else:  # a journal from before the decision was journaled: the head's own account
            for cid, fate in fates.round_fates(commit, self.repo.read_record).items():
                if cid in by_cid and fate == fates.TAKEN:
                    taken.append(by_cid[cid])
                elif cid in by_cid:
                    refused[by_cid[cid]] = fate.removeprefix("refused: ")
        self.log(f"recovered round {current}: its head {self.head()} was written")
        previous = commit.parents[0] if commit.parents else self.head()
        directions = self._directions(  # an older journal's decision: its taken updates
            (pending[i].author, np.asarray(Update.decode(pending[i].data).delta()))
            for i in (taken if signed is None else signed)
        )
        self._finish(current, self.head(), pending, taken, refused, previous, directions)


def decode_many(bodies: list[bytes], limit: int) -> list[Update | str | None]:
    """`Update.decode` (strict, signature verified) of each body: the record, or why it is not
    one; None for a body over `limit` (refused before decoding). Stateless: the server runs it
    in processes of their own, beside the coordinator's thread, and hands the result to
    `submit_many`."""
    out: list[Update | str | None] = []
    for data in bodies:
        if len(data) > limit:
            out.append(None)
            continue
        try:
            out.append(Update.decode(data, chart=None))
        except BasinError as exc:
            out.append(str(exc))
    return out


def _dense(updates: list[Update]) -> np.ndarray:
    """The updates' changes of z as one (n, d) array, row k equal to `updates[k].delta()`
    (each value code × scale, one multiplication, as `delta` makes it), filled in one go."""
    x = np.zeros((len(updates), updates[0].change.dim))
    counts = [len(u.change.indices) for u in updates]
    rows = np.repeat(np.arange(len(updates)), counts)
    columns = np.fromiter(itertools.chain.from_iterable(u.change.indices for u in updates), np.intp)
    codes = np.fromiter(itertools.chain.from_iterable(u.change.codes for u in updates), np.float64)
    x[rows, columns] = codes * np.repeat([u.change.scale for u in updates], counts)
    return x


def _fishers(updates: list[Update]) -> list[list[float] | None]:
    """Each update's Fisher values as a dense diagonal: its sent coordinates' values, 0 ("no
    information") on the rest; None for an update without them."""
    out: list[list[float] | None] = []
    for u in updates:
        values = u.fisher_values()
        if values is None:
            out.append(None)
            continue
        dense = [0.0] * u.change.dim
        for i, v in zip(u.change.indices, values, strict=True):
            dense[i] = v
        out.append(dense)
    return out
