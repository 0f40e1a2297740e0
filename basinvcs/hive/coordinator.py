"""The coordinator: takes signed updates in, closes rounds, and commits the shared basin's heads.

It sits in front of an ordinary repository whose branch (`general` by default) holds the
canonical head. Intake refuses, each with an HTTP status and one line:

- 413 over the size limit, 400 not a valid update record (strict decoding, signature included),
  422 another chart, 403 a signer the repository does not trust (unless the hive is open);
- 409 a replayed sequence number (not above the signer's last one, kept in the journal), or a
  stale parent (not one of the heads of the last `freshness` rounds);
- 429 a second update from one signer in one round.

A round closes after `round_updates` updates or `round_seconds` seconds (with at least one). Its
updates are screened by the outlier check (Fisher distance to the coordinate-wise median beyond
median + c·MAD of the round), combined by the aggregation rule (`rules`, weighted by samples) and
applied by the outer optimiser (`outer`); the new head is a commit signed by the coordinator whose
message lists the updates taken and refused and their signers, and whose metrics record the round.

Durability: an update is journaled, with its signer's sequence number, before it is acknowledged
(journal.py). The head commit is written first, then the round is marked closed; `recover` (run
at start) finishes a round whose commit exists but was not yet marked, from that commit's message,
so a coordinator killed mid-round loses no accepted update and counts none twice.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..cid import CID
from ..errors import BasinError
from ..identity import format_key
from ..objects import Basin, Commit
from ..refnames import branch_ref
from ..repository import Repository
from . import outer, outliers, rules
from .journal import Journal
from .update import Update, update_limit

JOURNAL_FILE = "hive.db"


class Refused(BasinError):
    """An update (or request) the coordinator refuses, with the HTTP status that says why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Settings:
    branch: str = "general"
    round_updates: int = 10  # M: a round closes once it holds this many updates
    round_seconds: float = 30.0  # T: or after this long, with at least one
    freshness: int = 2  # an update's parent must be the head of one of the last K rounds
    rule: str = rules.DEFAULT_RULE
    optimizer: str = outer.DEFAULT_OPTIMIZER
    outlier_c: float = 3.5
    open: bool = False  # take updates from any valid signer, each at weight 1

    def check(self) -> Settings:
        rules.get(self.rule)
        outer.get(self.optimizer)
        if self.round_updates < 1 or not 0 < self.round_seconds < 1e6 or self.freshness < 1:
            raise BasinError("round_updates, round_seconds and freshness must be positive")
        return self


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
        self.messages: list[str] = []
        self.recover()

    def log(self, line: str) -> None:
        self.messages.append(line)

    # -- state

    @property
    def round(self) -> int:
        return int(self.journal.get("round", 0))

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
        }

    def status(self) -> dict:
        return {"round": self.round, "head": str(self.head()), **self.journal.counts()}

    def block(self, text: str) -> bytes:
        try:
            cid = CID.parse(text)
            return self.repo.get_block(cid)
        except BasinError as exc:
            raise Refused(404, str(exc)) from None

    def _recent_heads(self) -> dict[str, int]:
        """Head CID -> the round it opened, for the last `freshness` rounds."""
        heads = self.journal.get("heads", {})
        if not heads:
            heads = {str(self.head()): self.round}
        return heads

    # -- intake

    def submit(self, data: bytes) -> dict:
        """Check an update record and journal it; its CID and round, or Refused."""
        chart = self.repo.config.chart
        if len(data) > self.max_update_bytes:
            raise Refused(413, f"update of {len(data)} bytes is over the limit")
        try:
            update = Update.decode(data, chart=None)
        except BasinError as exc:
            raise Refused(400, f"not a valid update: {exc}") from None
        if update.chart != chart:
            raise Refused(422, f"update is in chart {update.chart}, the hive's is {chart}")
        trusted = self.repo.config.trusted_key(update.author)
        if trusted is None and not self.settings.open:
            raise Refused(403, f"signer {format_key(update.author)} is not trusted by this hive")
        with self._lock:
            current = self.round
            last = self.journal.last_seq(update.author)
            if last is not None and update.seq <= last:
                raise Refused(409, f"sequence {update.seq} replayed: {last} already seen")
            opened = self._recent_heads().get(str(update.parent))
            if opened is None or opened < current - self.settings.freshness + 1:
                raise Refused(
                    409,
                    f"stale parent {update.parent}: not a head of the last "
                    f"{self.settings.freshness} rounds (now {self.head()})",
                )
            if any(j.author == update.author for j in self.journal.pending(current)):
                raise Refused(429, "one update per signer per round: wait for the next round")
            cid = CID.for_block(data)
            if not self.journal.accept(str(cid), current, update.author, update.seq, data):
                raise Refused(409, f"sequence {update.seq} replayed")
            if not self.journal.get("opened"):
                self.journal.put("opened", time.time())
            if self.journal.count_pending(current) >= self.settings.round_updates:
                self.close_round()
        return {"cid": str(cid), "round": current}

    # -- rounds

    def maybe_close(self) -> CID | None:
        """Close the round if its time is up (and it holds an update)."""
        with self._lock:
            opened = self.journal.get("opened")
            if opened and time.time() - float(opened) >= self.settings.round_seconds:
                return self.close_round()
        return None

    def close_round(self) -> CID | None:
        """Combine the round's updates into a new head; None if it holds none."""
        with self._lock:
            current = self.round
            pending = self.journal.pending(current)
            if not pending:
                self.journal.put("opened", None)
                return None
            updates = [Update.decode(j.data) for j in pending]
            taken, refused = self._screen(pending, updates)
            head = self.head()
            # every update refused: the head stays, and the round still closes
            cid = self._commit(current, head, pending, updates, taken, refused) if taken else head
            self._finish(current, cid, pending, taken, refused)
            return cid

    def _screen(self, pending, updates) -> tuple[list[int], dict[int, str]]:
        """Indices of the updates to combine, and the refused ones with why (outliers)."""
        report = outliers.check([u.delta() for u in updates], c=self.settings.outlier_c)
        refused = {
            i: f"outlier: Fisher distance {report.scores[i]:.4g} > {report.threshold:.4g}"
            for i in report.outliers
        }
        return [i for i in range(len(updates)) if i not in refused], refused

    def _commit(self, current, head, pending, updates, taken, refused) -> CID:
        head_commit = self.repo.read_commit(head)
        basin = self.repo.read_basin(head_commit.basin)
        chosen = [updates[i] for i in taken]
        delta = rules.aggregate(
            self.settings.rule,
            [u.delta() for u in chosen],
            weights=self._weights(chosen),
            keys=[pending[i].cid.encode() for i in taken],
        )
        state = self.journal.get("outer")
        optimizer = outer.restore(state) if state else outer.create(self.settings.optimizer)
        z = optimizer.step(list(basin.z), delta)
        new_basin = Basin.create(
            basin.chart,
            z,
            fisher=basin.fisher,
            beta=basin.beta,
            entanglements=list(basin.entanglements),
            labels=list(basin.labels),
            substrate=basin.substrate,
        )
        lines = [f"hive round {current}: {len(taken)} updates taken, {len(refused)} refused", ""]
        lines += [f"taken {pending[i].cid} {format_key(pending[i].author)}" for i in taken]
        lines += [f"refused {pending[i].cid} {why}" for i, why in refused.items()]
        ident = self.repo.identity()
        metrics = {
            "round": float(current),
            "taken": float(len(taken)),
            "refused": float(len(refused)),
            "samples": float(sum(u.samples for u in chosen)),
        }
        with self.repo.transaction():
            basin_cid = self.repo.write_basin(new_basin)
            commit = Commit(
                basin_cid,
                (head,),
                ident.public_key,
                int(time.time() * 1000),
                "\n".join(lines),
                metrics,
            ).signed(ident.sign)
            cid = self.repo.write_commit(commit)
            self.repo.set_ref(branch_ref(self.settings.branch), cid, head, f"hive: round {current}")
        self._pending_state = optimizer.to_dict()
        return cid

    def _weights(self, chosen: list[Update]) -> list[float]:
        """Trust weight × samples, the samples capped at twice the round's median: a count is
        the update's own claim, so an inflated one buys at most twice a typical say."""
        counts = sorted(u.samples for u in chosen)
        cap = 2 * counts[len(counts) // 2]
        out = []
        for u in chosen:
            trusted = self.repo.config.trusted_key(u.author)
            out.append((trusted.weight if trusted else 1.0) * min(u.samples, cap))
        return out

    def _finish(self, current, cid, pending, taken, refused) -> None:
        heads = {
            h: r
            for h, r in self._recent_heads().items()
            if r > current + 1 - self.settings.freshness
        }
        heads[str(cid)] = current + 1
        state = {"round": current + 1, "opened": None, "heads": heads}
        if getattr(self, "_pending_state", None) is not None:
            state["outer"] = self._pending_state
            self._pending_state = None
        self.journal.close_round(
            current,
            [pending[i].cid for i in taken],
            {pending[i].cid: why for i, why in refused.items()},
            state,
        )

    def recover(self) -> None:
        """Finish a round whose head commit was written before the coordinator stopped."""
        current = self.round
        commit = self.repo.read_commit(self.head())
        if commit.metrics.get("round") != float(current):
            return
        pending = self.journal.pending(current)
        by_cid = {j.cid: i for i, j in enumerate(pending)}
        taken, refused = [], {}
        for line in commit.message.splitlines():
            word, _, rest = line.partition(" ")
            cid, _, why = rest.partition(" ")
            if cid in by_cid and word == "taken":
                taken.append(by_cid[cid])
            elif cid in by_cid and word == "refused":
                refused[by_cid[cid]] = why
        self.log(f"recovered round {current}: its head {self.head()} was written")
        self._finish(current, self.head(), pending, taken, refused)
