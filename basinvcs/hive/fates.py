"""What a hive round did with each update, as its signed head says, written and read one way.

A round's head commit (the coordinator's or a replica's) names every update the round decided
on: `taken CID SIGNER` and `refused CID REASON` lines in its message while they fit in one
(16 KiB: about 140 updates), and past that a `RoundRecord` block the commit links, which lists
them all (the message then keeps the lines that fit, refusals first, for `basin log`). Either way
the head's signature covers each fate, so an edge that sent an update learns exactly what became
of it, however large the round; nothing is left to a guess or to an unsigned journal.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence

from ..cid import CID
from ..identity import format_key
from ..objects import MAX_MESSAGE_BYTES, MAX_REASON_BYTES, Commit, RoundRecord

TAKEN = "taken"
DEFAULT_FRESHNESS = 2  # K where a head does not say (coordinator.DEFAULT_FRESHNESS)


def reason(why: str) -> str:
    """`why` as a record can hold it: one line of at most MAX_REASON_BYTES bytes."""
    line = " ".join(why.split()) or "refused"
    data = line.encode()
    if len(data) <= MAX_REASON_BYTES:
        return line
    return data[: MAX_REASON_BYTES - 3].decode(errors="ignore") + "..."


def round_parts(
    head: str, taken: Sequence[tuple[CID, bytes]], refused: Sequence[tuple[CID, str]]
) -> tuple[str, RoundRecord | None]:
    """The head commit's message (`head`, the round's summary line, then a line per update)
    and, when those lines do not all fit, the record that lists every one of them. Lines are
    made only as far as they fit (a signer's key in text costs 25 µs: 1,000 of them would
    take a sixth of a round's close)."""
    refused = [(cid, reason(why)) for cid, why in refused]

    def taken_lines():
        return (f"taken {cid} {format_key(key)}" for cid, key in taken)

    def refused_lines():
        return (f"refused {cid} {why}" for cid, why in refused)

    lines, fits = _fitting(head, itertools.chain(taken_lines(), refused_lines()), MAX_MESSAGE_BYTES)
    if fits:
        return "\n".join(lines), None
    # too many for one message: every fate in the record, the lines that fit (refusals first,
    # they are the ones a reader looks for) kept above one that says where the rest are
    budget = MAX_MESSAGE_BYTES - 100
    lines, _ = _fitting(head, itertools.chain(refused_lines(), taken_lines()), budget)
    more = len(taken) + len(refused) - (len(lines) - 2)
    lines.append(f"... and {more} more: every update is in the round record this commit links")
    return "\n".join(lines), RoundRecord(tuple(taken), tuple(refused))


def _fitting(head: str, lines: Iterable[str], budget: int) -> tuple[list[str], bool]:
    """[head, "", lines...] as far as their joined form stays within `budget` bytes, and
    whether every line did."""
    kept, size = [head, ""], len(head.encode()) + 1
    for line in lines:
        size += 1 + len(line.encode())
        if size > budget:
            return kept, False
        kept.append(line)
    return kept, True


def round_fates(commit: Commit, read_record: Callable[[CID], RoundRecord]) -> dict[str, str]:
    """Update CID (text) → "taken" or "refused: REASON", for every update the round's head
    `commit` names: from its record if it links one (`read_record`), else from its message."""
    if commit.record is not None:
        return {str(cid): fate for cid, fate in read_record(commit.record).fates().items()}
    fates = {}
    for line in commit.message.splitlines():
        word, _, rest = line.partition(" ")
        named, _, why = rest.partition(" ")
        if word in (TAKEN, "refused"):  # `named` as written: a reader checks it is a CID
            fates[named] = TAKEN if word == TAKEN else f"refused: {why}"
    return fates


def window_closed(head: Commit, sent_into: int) -> bool:
    """Whether the signed head commit `head` shows that an update sent into round `sent_into`
    can no longer be taken: the round it closed is at least sent_into + K − 1, K the freshness
    it records (an update's parent must be a head of the last K rounds, so past that round the
    update is refused as stale if it ever arrives). K is read from the signed head, never from
    an unsigned answer, and from the newest one: a coordinator restarted with another K says so
    in its next head."""
    closed = head.metrics.get("round", -1.0)
    k = head.metrics.get("freshness", float(DEFAULT_FRESHNESS))
    k = int(k) if k == int(k) and 1 <= k <= 1 << 20 else DEFAULT_FRESHNESS
    return closed >= sent_into + k - 1
